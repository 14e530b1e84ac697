/**
 * Postgres CPU per logged event, by shape of the log: which columns, which
 * indexes, which statement. Each variant is the `stock_events` table in its own
 * schema of one fresh embedded Postgres; the same hot-SKU `reserved` events
 * (one SKU, distinct shoppers, random reservation ids, as the service writes
 * them) go in as serial group commits of --batch events, each its own
 * autocommitted statement, like src/outbox. Variants are alternated round by
 * round (--rounds) so that a noisy machine skews them alike. Postgres CPU is
 * every process under the postmaster (utime + stime from /proc, as the bench
 * reads it); bytes per row are the table's and its indexes' sizes at the end.
 *
 *   node --import tsx bench/log-shape.ts [--events 60000] [--batch 64] [--rounds 3] [--variants a,b,…]
 */
import { mkdtempSync, chmodSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import pg from 'pg';
import pino from 'pino';
import { startEmbeddedPostgres } from '../src/db/embedded.js';
import { int4Array, int8Array, jsonbArray, textArray, uuidArray } from '../src/outbox/pg-binary-array.js';
import { argValue, numberArg } from './lib/service.js';

const eventsPerRound = numberArg('events', 60_000);
const batch = numberArg('batch', 64);
const rounds = numberArg('rounds', 3);
const say = (line: string): void => void process.stderr.write(`[log-shape ${new Date().toISOString().slice(11, 19)}] ${line}\n`);

const kindCheck = `CHECK (kind IN ('configured','reserved','released','expired','checkout_started','committed','payment_failed','archived'))`;

/** The table of migrations 001–008. */
const currentTable = `
  sku text NOT NULL, seq bigint NOT NULL, kind text NOT NULL ${kindCheck}, at_ms bigint NOT NULL,
  reservation_id uuid, shopper_id text, quantity integer CHECK (quantity > 0), expires_at_ms bigint,
  idempotency_key text, order_id uuid, config jsonb, payment_method text, PRIMARY KEY (sku, seq)`;

const reservationIndex = `CREATE INDEX ON stock_events (reservation_id) WHERE reservation_id IS NOT NULL`;
const keyIndex = `CREATE INDEX ON stock_events (sku, shopper_id, idempotency_key) WHERE kind = 'reserved'`;
const keyIndexNoSku = `CREATE INDEX ON stock_events (shopper_id, idempotency_key) WHERE kind = 'reserved'`;
const keyHashIndexUsingHash = `CREATE INDEX ON stock_events USING hash ((shopper_id || ' ' || idempotency_key)) WHERE kind = 'reserved'`;
const keyHashIndex = `CREATE INDEX ON stock_events (hashtext(shopper_id || ' ' || idempotency_key)) WHERE kind = 'reserved'`;

const unnestInsert = `INSERT INTO stock_events
  (sku, seq, kind, at_ms, reservation_id, shopper_id, quantity, expires_at_ms, idempotency_key, order_id, config, payment_method)
  SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::uuid[], $6::text[],
                       $7::int[], $8::bigint[], $9::text[], $10::uuid[], $11::jsonb[], $12::text[])`;

/** Only the columns a reservation has: the others are NULL by default. */
const narrowInsert = `INSERT INTO stock_events
  (sku, seq, kind, at_ms, reservation_id, shopper_id, quantity, expires_at_ms, idempotency_key)
  SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::uuid[], $6::text[],
                       $7::int[], $8::bigint[], $9::text[])`;

interface Variant {
  name: string;
  what: string;
  ddl: string[];
  /**
   * 'unnest': 12 array parameters; 'narrow': 9; 'values': one row of parameters per event;
   * 'copy': COPY … FROM STDIN (text format) per batch, sent by psql (no COPY client in the dependencies).
   */
  statement: 'unnest' | 'narrow' | 'values' | 'copy';
  /** Session setting for the statement's plan. */
  generic?: boolean;
  /** synchronous_commit = off for this session (diagnosis only: the service never runs so). */
  asyncCommit?: boolean;
  /** Reservation ids ordered by time within a SKU (default: random after the SKU prefix, as today). */
  orderedIds?: boolean;
}

const variants: Variant[] = [
  { name: 'current', what: 'migrations 001–008: pkey + reservation + key indexes, unnest of 12 arrays', ddl: [`CREATE TABLE stock_events (${currentTable})`, reservationIndex, keyIndex], statement: 'unnest' },
  { name: 'pkey-only', what: 'no secondary index (lower bound)', ddl: [`CREATE TABLE stock_events (${currentTable})`], statement: 'unnest' },
  { name: 'no-key-index', what: 'pkey + reservation index', ddl: [`CREATE TABLE stock_events (${currentTable})`, reservationIndex], statement: 'unnest' },
  { name: 'no-reservation-index', what: 'pkey + key index', ddl: [`CREATE TABLE stock_events (${currentTable})`, keyIndex], statement: 'unnest' },
  { name: 'key-hash', what: 'pkey + reservation index + int4 hash of the key instead of (sku, shopper, key)', ddl: [`CREATE TABLE stock_events (${currentTable})`, reservationIndex, keyHashIndex], statement: 'unnest' },
  { name: 'no-checks', what: 'current without the CHECKs on kind and quantity', ddl: [`CREATE TABLE stock_events (${currentTable.replace(kindCheck, '').replace('CHECK (quantity > 0)', '')})`, reservationIndex, keyIndex], statement: 'unnest' },
  { name: 'narrow-insert', what: 'current, insert names only the 9 columns a reservation has', ddl: [`CREATE TABLE stock_events (${currentTable})`, reservationIndex, keyIndex], statement: 'narrow' },
  { name: 'values', what: 'current, multi-row INSERT … VALUES with 12 parameters per row', ddl: [`CREATE TABLE stock_events (${currentTable})`, reservationIndex, keyIndex], statement: 'values' },
  { name: 'key-no-sku', what: 'pkey + reservation index + (shopper, key) without the SKU', ddl: [`CREATE TABLE stock_events (${currentTable})`, reservationIndex, keyIndexNoSku], statement: 'unnest' },
  { name: 'ordered-ids', what: 'current, reservation ids ordered by time within the SKU', ddl: [`CREATE TABLE stock_events (${currentTable})`, reservationIndex, keyIndex], statement: 'unnest', orderedIds: true },
  { name: 'ordered-key-no-sku', what: 'ordered ids + (shopper, key) without the SKU', ddl: [`CREATE TABLE stock_events (${currentTable})`, reservationIndex, keyIndexNoSku], statement: 'unnest', orderedIds: true },
  { name: 'ordered-no-key-index', what: 'ordered ids, pkey + reservation index only', ddl: [`CREATE TABLE stock_events (${currentTable})`, reservationIndex], statement: 'unnest', orderedIds: true },
  { name: 'hash-key', what: 'pkey + reservation index + hash index on shopper and key', ddl: [`CREATE TABLE stock_events (${currentTable})`, reservationIndex, keyHashIndexUsingHash], statement: 'unnest' },
  { name: 'ordered-hash-key', what: 'ordered ids + hash index on shopper and key', ddl: [`CREATE TABLE stock_events (${currentTable})`, reservationIndex, keyHashIndexUsingHash], statement: 'unnest', orderedIds: true },
  { name: 'ordered-key-int-hash', what: 'ordered ids + btree on an int4 hash of shopper and key', ddl: [`CREATE TABLE stock_events (${currentTable})`, reservationIndex, keyHashIndex], statement: 'unnest', orderedIds: true },
  { name: 'ordered-key-no-dedup', what: 'ordered ids + (shopper, key) without the SKU, deduplicate_items off on both indexes', ddl: [`CREATE TABLE stock_events (${currentTable})`, `${reservationIndex.replace(' WHERE', ' WITH (deduplicate_items = off) WHERE')}`, `${keyIndexNoSku.replace(' WHERE', ' WITH (deduplicate_items = off) WHERE')}`], statement: 'unnest', orderedIds: true },
  { name: 'async-commit', what: 'current, synchronous_commit = off (diagnosis: what the commit flush costs)', ddl: [`CREATE TABLE stock_events (${currentTable})`, reservationIndex, keyIndex], statement: 'unnest', asyncCommit: true },
  { name: 'copy', what: 'current, COPY FROM STDIN (text) per batch instead of INSERT', ddl: [`CREATE TABLE stock_events (${currentTable})`, reservationIndex, keyIndex], statement: 'copy' },
  { name: 'generic-plan', what: 'current, plan_cache_mode = force_generic_plan', ddl: [`CREATE TABLE stock_events (${currentTable})`, reservationIndex, keyIndex], statement: 'unnest', generic: true },
];

const ticksPerSecond = 100;

/** CPU seconds of `root` and every process below it. */
function treeCpuSeconds(root: number): number {
  const procs = new Map<number, { ppid: number; ticks: number }>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'latin1');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // utime + stime, and cutime + cstime: a backend that ended (psql's) was reaped by the postmaster
      procs.set(Number(name), { ppid: Number(fields[1]), ticks: Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]) });
    } catch {
      // gone
    }
  }
  let ticks = 0;
  const stack = [root];
  while (stack.length > 0) {
    const pid = stack.pop()!;
    ticks += procs.get(pid)?.ticks ?? 0;
    for (const [child, p] of procs) if (p.ppid === pid) stack.push(child);
  }
  return ticks / ticksPerSecond;
}

/** Diagnosis: CPU ticks per postgres process title (per event, against `before`). */
function byProcess(root: number, before: Record<string, number> | null, events: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'latin1');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) !== root && Number(name) !== root) continue;
      const title = readFileSync(`/proc/${name}/cmdline`, 'latin1').split('\0')[0]!.replace(/postgres: /, '').split(' ').slice(0, 2).join(' ');
      const key = `${title} u/s`;
      out[key] = (out[key] ?? 0) + Number(fields[11]) * 1000 + Number(fields[12]);
    } catch {
      // gone
    }
  }
  if (before === null) return out;
  const delta: Record<string, number> = {};
  for (const [k, v] of Object.entries(out)) {
    const d = v - (before[k] ?? 0);
    const user = Math.floor(d / 1000);
    const sys = d - user * 1000;
    if (d !== 0) delta[k] = Number((((user + sys) * 1e4) / events).toFixed(1));
    if (d !== 0) delta[`${k} sys`] = Number(((sys * 1e4) / events).toFixed(1));
  }
  return delta;
}

interface Event {
  seq: number;
  atMs: number;
  reservationId: string;
  shopperId: string;
  expiresAtMs: number;
  key: string;
}

/** The SKU prefix, 7 hex digits of a counter, the version nibble 8, then random digits. */
function orderedId(counter: number, random: string): string {
  const hex = counter.toString(16).padStart(7, '0');
  return `7d2f61c0-${hex.slice(0, 4)}-8${hex.slice(4, 7)}-${random.slice(19)}`;
}

function makeEvents(from: number, count: number, orderedIds: boolean): Event[] {
  const events: Event[] = [];
  const atMs = Date.now();
  for (let i = 0; i < count; i++) {
    const random = randomUUID();
    events.push({
      seq: from + i,
      atMs: atMs + i,
      reservationId: orderedIds
        ? orderedId(from + i, random)
        : `7d2f61c0${random.slice(8, 14)}8${random.slice(15)}`,
      shopperId: `shopper-${(from + i) % 100_000}`,
      expiresAtMs: atMs + i + 600_000,
      key: `bench-k${from.toString(36)}-0-${i.toString(36)}`,
    });
  }
  return events;
}

const sku = 'bench-hot-sku-lt3k9x';

function statementOf(variant: Variant, events: Event[]): pg.QueryConfig {
  const n = events.length;
  const nulls = new Array<null>(n).fill(null);
  // Binary arrays, as the service sends them (src/outbox/event-log.ts).
  const columns = [
    textArray(events.map(() => sku)),
    int8Array(events.map((e) => e.seq)),
    textArray(events.map(() => 'reserved')),
    int8Array(events.map((e) => e.atMs)),
    uuidArray(events.map((e) => e.reservationId)),
    textArray(events.map((e) => e.shopperId)),
    int4Array(events.map(() => 1)),
    int8Array(events.map((e) => e.expiresAtMs)),
    textArray(events.map((e) => e.key)),
  ];
  if (variant.statement === 'narrow') return { name: `${variant.name}-insert`, text: narrowInsert, values: columns };
  if (variant.statement === 'unnest') {
    return { name: `${variant.name}-insert`, text: unnestInsert, values: [...columns, uuidArray(nulls), jsonbArray(nulls), textArray(nulls)] };
  }
  const values: unknown[] = [];
  const rows: string[] = [];
  for (const e of events) {
    const p = values.length;
    rows.push(`($${p + 1}, $${p + 2}, $${p + 3}, $${p + 4}, $${p + 5}, $${p + 6}, $${p + 7}, $${p + 8}, $${p + 9}, $${p + 10}, $${p + 11}::jsonb, $${p + 12})`);
    values.push(sku, e.seq, 'reserved', e.atMs, e.reservationId, e.shopperId, 1, e.expiresAtMs, e.key, null, null, null);
  }
  return {
    name: `${variant.name}-insert-${n}`,
    text: `INSERT INTO stock_events (sku, seq, kind, at_ms, reservation_id, shopper_id, quantity, expires_at_ms, idempotency_key, order_id, config, payment_method) VALUES ${rows.join(',')}`,
    values,
  };
}

/** One COPY per batch through psql, each its own transaction like a group commit. */
function copyScript(schema: string, events: Event[]): string {
  const lines: string[] = [`SET search_path = ${schema};`];
  for (let i = 0; i < events.length; i += batch) {
    lines.push('COPY stock_events (sku, seq, kind, at_ms, reservation_id, shopper_id, quantity, expires_at_ms, idempotency_key) FROM STDIN;');
    for (const e of events.slice(i, i + batch)) {
      lines.push([sku, e.seq, 'reserved', e.atMs, e.reservationId, e.shopperId, 1, e.expiresAtMs, e.key].join('\t'));
    }
    lines.push('\\.');
  }
  return lines.join('\n') + '\n';
}

async function round(pool: pg.Pool, postmaster: number, variant: Variant, fromSeq: number, url: string): Promise<number> {
  if (variant.statement === 'copy') {
    const all = makeEvents(fromSeq, eventsPerRound, variant.orderedIds === true);
    const script = copyScript(`v_${variant.name.replace(/-/g, '_')}`, all);
    const before = treeCpuSeconds(postmaster);
    const r = spawnSync('psql', [url, '-q', '-v', 'ON_ERROR_STOP=1', '-f', '-'], { input: script, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`psql failed: ${r.stderr}`);
    return ((treeCpuSeconds(postmaster) - before) * 1e6) / all.length;
  }
  const client = await pool.connect();
  try {
    await client.query(`SET search_path = v_${variant.name.replace(/-/g, '_')}`);
    if (variant.generic === true) await client.query('SET plan_cache_mode = force_generic_plan');
    if (variant.asyncCommit === true) await client.query('SET synchronous_commit = off');
    const all = makeEvents(fromSeq, eventsPerRound, variant.orderedIds === true);
    const breakdownBefore = byProcess(postmaster, null, 1);
    const before = treeCpuSeconds(postmaster);
    for (let i = 0; i < all.length; i += batch) await client.query(statementOf(variant, all.slice(i, i + batch)));
    const spent = ((treeCpuSeconds(postmaster) - before) * 1e6) / all.length;
    if (process.env.LOG_SHAPE_BREAKDOWN === '1') say(`${variant.name} by process: ${JSON.stringify(byProcess(postmaster, breakdownBefore, all.length))}`);
    return spent;
  } finally {
    client.release(true);
  }
}

async function main(): Promise<void> {
  const wanted = argValue('variants')?.split(',');
  const chosen = wanted === undefined ? variants : variants.filter((v) => wanted.includes(v.name));
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'flashstock-log-shape-'));
  chmodSync(dataDir, 0o755);
  const log = pino({ level: 'warn' });
  // --pg name=value,… : server settings for this run (e.g. wal_sync_method=open_datasync)
  const settings = Object.fromEntries((argValue('pg') ?? '').split(',').filter((kv) => kv.includes('=')).map((kv) => kv.split('=') as [string, string]));
  const server = await startEmbeddedPostgres({ dataDir, log, settings });
  const pool = new pg.Pool({ connectionString: server.url, max: 2 });
  pool.on('error', () => undefined); // the server stopping ends idle clients
  try {
    const postmaster = Number(readFileSync(path.join(server.dataDir, 'pg', 'postmaster.pid'), 'latin1').split('\n')[0]);
    for (const v of chosen) {
      const schema = `v_${v.name.replace(/-/g, '_')}`;
      await pool.query(`CREATE SCHEMA ${schema}`);
      for (const ddl of v.ddl) await pool.query(`SET search_path = ${schema}; ${ddl}`);
    }
    const cpu = new Map<string, number[]>(chosen.map((v) => [v.name, []]));
    for (let r = 0; r < rounds; r++) {
      for (const v of chosen) {
        const us = await round(pool, postmaster, v, 1 + r * eventsPerRound, server.url);
        cpu.get(v.name)!.push(us);
        say(`round ${r + 1} ${v.name}: ${us.toFixed(2)} µs/event`);
      }
      await pool.query('CHECKPOINT');
    }
    const report = [];
    for (const v of chosen) {
      const schema = `v_${v.name.replace(/-/g, '_')}`;
      const sizes = await pool.query<{ heap: string; indexes: string; rows: string }>(
        `SELECT pg_relation_size('${schema}.stock_events') AS heap, pg_indexes_size('${schema}.stock_events') AS indexes,
                (SELECT count(*) FROM ${schema}.stock_events) AS rows`,
      );
      const s = sizes.rows[0]!;
      const runs = cpu.get(v.name)!;
      const sorted = [...runs].sort((a, b) => a - b);
      report.push({
        variant: v.name,
        what: v.what,
        pgCpuUsPerEvent: runs.map((x) => Number(x.toFixed(2))),
        medianUs: Number(sorted[Math.floor(sorted.length / 2)]!.toFixed(2)),
        heapBytesPerRow: Math.round(Number(s.heap) / Number(s.rows)),
        indexBytesPerRow: Math.round(Number(s.indexes) / Number(s.rows)),
      });
    }
    process.stdout.write(JSON.stringify({ eventsPerRound, batch, rounds, settings, load: os.loadavg()[0], report }, null, 2) + '\n');
  } finally {
    await pool.end();
    await server.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

await main();
