/**
 * What recovering many small SKUs costs, by how their states are read: one
 * SKU at a time (`loadSkuState`: a snapshot COPY and a tail query each, what a
 * rebuild does) against a shard's SKUs at once (`loadSkuStates`: one COPY for
 * their snapshots, their tails in shared rounds, what recovery does).
 *
 * A fresh database gets --skus SKUs of --holds live holds each, a snapshot
 * each, and --tail events after it. Then both ways load every SKU, alternated
 * --repeat times, on one connection: CPU milliseconds of this process and of
 * that connection's Postgres backend (/proc: not stretched by other work on
 * the machine, as the wall clock is), and the wall clock.
 *
 *   node --import tsx bench/recovery-skus.ts [--skus 2000] [--holds 5] [--tail 2] [--repeat 3]
 */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import pg from 'pg';
import pino from 'pino';
import { SkuAllocator } from '../src/allocator/allocator.js';
import { defaultAllocatorLimits, type StockEvent } from '../src/allocator/types.js';
import { migrate } from '../src/db/migrate.js';
import { insertEventsQuery } from '../src/outbox/event-log.js';
import { newReservationId } from '../src/shard/placement.js';
import { encodeSnapshot, snapshotFormatVersion } from '../src/snapshot/codec.js';
import { loadSkuState, loadSkuStates } from '../src/snapshot/load.js';
import { insertSnapshotQuery } from '../src/snapshot/sql.js';
import { freshDatabase, loadAverage, numberArg } from './lib/service.js';

const skuCount = numberArg('skus', 2000);
const holds = numberArg('holds', 5);
const tail = numberArg('tail', 2);
const repeat = numberArg('repeat', 3);
const limits = defaultAllocatorLimits;
const startMs = Date.UTC(2026, 0, 1);
const say = (line: string): void => void process.stderr.write(`[recovery-skus] ${line}\n`);

/** `n` reservations of one unit from distinct shoppers, applied and returned as events. */
function reserve(allocator: SkuAllocator, n: number, atMs: number): StockEvent[] {
  const events: StockEvent[] = [];
  for (let i = 0; i < n; i++) {
    const cmd = { reservationId: newReservationId(allocator.sku), shopperId: `s-${allocator.seq}`, quantity: 1, idempotencyKey: `k-${allocator.seq}` };
    const decision = allocator.reserve(cmd, atMs);
    if (!decision.ok || decision.kind !== 'new') throw new Error(`reserve refused: ${JSON.stringify(decision)}`);
    allocator.apply(decision.event);
    events.push(decision.event);
  }
  return events;
}

async function fill(client: pg.Client): Promise<string[]> {
  const skus: string[] = [];
  let batch: StockEvent[] = [];
  for (let s = 0; s < skuCount; s++) {
    const allocator = new SkuAllocator(`recovery-${s}`, limits);
    const configured = allocator.configure({ stock: 1000, perShopperLimit: 100, holdSeconds: 86_400, priceCents: 100, currency: 'USD', startsAtMs: null, endsAtMs: null }, startMs);
    if (!configured.ok) throw new Error('configure refused');
    allocator.apply(configured.event);
    batch.push(configured.event, ...reserve(allocator, holds, startMs + 1));
    const state = encodeSnapshot(allocator);
    batch.push(...reserve(allocator, tail, startMs + 2));
    await client.query(insertSnapshotQuery({ sku: allocator.sku, seq: allocator.seq - tail, formatVersion: snapshotFormatVersion, state, passivated: false }));
    skus.push(allocator.sku);
    if (batch.length >= 2000) {
      await client.query(insertEventsQuery(batch));
      batch = [];
    }
  }
  if (batch.length > 0) await client.query(insertEventsQuery(batch));
  return skus;
}

function processCpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/** CPU ms of a process from /proc (10 ms ticks). */
function procCpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

async function timed(label: string, backendPid: number, run: () => Promise<number>): Promise<Record<string, number | string>> {
  const client0 = processCpuMs();
  const backend0 = procCpuMs(backendPid);
  const wall0 = performance.now();
  const loaded = await run();
  const figures = {
    way: label,
    loaded,
    clientCpuMs: Math.round(processCpuMs() - client0),
    postgresCpuMs: procCpuMs(backendPid) - backend0,
    wallMs: Math.round(performance.now() - wall0),
  };
  say(JSON.stringify(figures));
  return figures;
}

async function main(): Promise<void> {
  const db = await freshDatabase('recovery');
  const client = new pg.Client({ connectionString: db.url });
  try {
    await client.connect();
    const pool = new pg.Pool({ connectionString: db.url, max: 1 });
    await migrate(pool, pino({ level: 'silent' }));
    await pool.end();
    const skus = await fill(client);
    say(`${skuCount} SKUs of ${holds} holds, a snapshot and ${tail} events after it each (load average ${loadAverage()})`);
    const backendPid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
    const oneByOne = async () => {
      let n = 0;
      for (const sku of skus) if ((await loadSkuState(client, sku, limits))?.liveHolds === holds + tail) n += 1;
      return n;
    };
    const together = async () => [...(await loadSkuStates(client, skus, limits)).values()].filter((a) => a.liveHolds === holds + tail).length;
    await oneByOne(); // warm-up: JIT, the backend's caches
    await together();
    const runs: Record<string, number | string>[] = [];
    for (let i = 0; i < repeat; i++) {
      runs.push(await timed('one by one', backendPid, oneByOne));
      runs.push(await timed('together', backendPid, together));
    }
    const result = { skus: skuCount, holds, tail, machine: { cpu: os.cpus()[0]?.model.split(' ').slice(0, 2).join(' '), cores: os.cpus().length, node: process.version }, loadAverageAtEnd: loadAverage(), runs };
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  } finally {
    await client.end().catch(() => undefined);
    await db.drop();
  }
}

await main();
