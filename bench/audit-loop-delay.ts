/**
 * The ledger audit's cost to the allocators' thread: the main event loop's
 * delay (perf_hooks.monitorEventLoopDelay) while the audit of a large log runs
 *   1. in-thread, the old way (the whole log replayed on the main thread: the baseline),
 *   2. in its worker thread, from no snapshot (the whole log, folded in the worker),
 *   3. the snapshot worker writing every SKU's snapshot (the whole log folded there),
 *   4. in its worker thread after every SKU was snapshotted (only the tail is folded).
 *
 *   node --import tsx bench/audit-loop-delay.ts [--events 1000000] [--skus 4]
 *
 * With DATABASE_URL (a server where the user may CREATE DATABASE) a fresh
 * database on it is used and dropped afterwards; without it, an embedded
 * PostgreSQL in a temporary directory. The log is written by SQL alone
 * (generate_series): per SKU one `configured`, then reserved/released pairs.
 */
import { mkdtempSync } from 'node:fs';
import os, { tmpdir } from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import pg from 'pg';
import { SkuAllocator } from '../src/allocator/allocator.js';
import type { AllocatorLimits } from '../src/allocator/types.js';
import { migrate } from '../src/db/migrate.js';
import { createLogger } from '../src/log.js';
import { readEvents } from '../src/outbox/event-log.js';
import { runLedgerAudit } from '../src/payments/audit.js';
import { SimulatedPaymentProvider } from '../src/payments/simulated-provider.js';
import { SnapshotWorkers } from '../src/snapshot/workers.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? fallback : Number(process.argv[i + 1]);
}

const log = createLogger('warn');
const replayLimits: AllocatorLimits = {
  maxQuantityPerRequest: Number.MAX_SAFE_INTEGER,
  maxLiveHoldsPerSku: Number.MAX_SAFE_INTEGER,
  maxEventsPerBatch: Number.MAX_SAFE_INTEGER,
};

async function fill(pool: pg.Pool, events: number, skus: number): Promise<number> {
  const pairs = Math.floor((events - skus) / 2 / skus);
  const config = { stock: 1000, perShopperLimit: 1000, holdSeconds: 60, priceCents: 100, currency: 'USD', startsAtMs: null, endsAtMs: null };
  await pool.query(
    `INSERT INTO stock_events (sku, seq, kind, at_ms, config)
     SELECT 'AUDIT-' || s, 1, 'configured', 1000, $2::jsonb FROM generate_series(1, $1::int) s`,
    [skus, JSON.stringify(config)],
  );
  // Reserved at seq 2i, released at 2i+1, 10 ms apart: ids are md5 UUIDs of (sku, i).
  await pool.query(
    `INSERT INTO stock_events (sku, seq, kind, at_ms, reservation_id, shopper_id, quantity, expires_at_ms, idempotency_key)
     SELECT 'AUDIT-' || s, 2 * i, 'reserved', 1000 + 10 * i, md5('AUDIT-' || s || '-' || i)::uuid, 's' || i, 1,
            61000 + 10 * i, 'k' || i
     FROM generate_series(1, $1::int) s, generate_series(1, $2::int) i`,
    [skus, pairs],
  );
  await pool.query(
    `INSERT INTO stock_events (sku, seq, kind, at_ms, reservation_id)
     SELECT 'AUDIT-' || s, 2 * i + 1, 'released', 1005 + 10 * i, md5('AUDIT-' || s || '-' || i)::uuid
     FROM generate_series(1, $1::int) s, generate_series(1, $2::int) i`,
    [skus, pairs],
  );
  await pool.query('ANALYZE stock_events');
  return skus * (1 + 2 * pairs);
}

/** The old audit's core, on this thread: every event replayed here. */
async function inThreadReplay(pool: pg.Pool): Promise<number> {
  let current: SkuAllocator | null = null;
  let n = 0;
  for await (const page of readEvents(pool)) {
    for (const event of page) {
      if (current === null || current.sku !== event.sku) current = new SkuAllocator(event.sku, replayLimits);
      current.apply(event);
      n += 1;
    }
  }
  return n;
}

interface Row {
  run: string;
  ms: number;
  p50: number;
  p99: number;
  max: number;
}

/** Sampling interval of the delay histogram; what it records includes it, so it is subtracted. */
const resolutionMs = 10;

async function measure(run: string, work: () => Promise<unknown>): Promise<Row> {
  const h = monitorEventLoopDelay({ resolution: resolutionMs });
  h.enable();
  const start = performance.now();
  await work();
  const ms = performance.now() - start;
  h.disable();
  const toMs = (ns: number) => Number(Math.max(0, ns / 1e6 - resolutionMs).toFixed(2));
  return { run, ms: Math.round(ms), p50: toMs(h.percentile(50)), p99: toMs(h.percentile(99)), max: toMs(h.max) };
}

async function main(): Promise<void> {
  const events = arg('events', 1_000_000);
  const skus = arg('skus', 4);
  let embedded: { url: string; stop(): Promise<void> } | null = null;
  let serverUrl = process.env.DATABASE_URL;
  if (!serverUrl) {
    const { startEmbeddedPostgres } = await import('../src/db/embedded.js');
    embedded = await startEmbeddedPostgres({ dataDir: mkdtempSync(path.join(tmpdir(), 'audit-bench-pg-')), log });
    serverUrl = embedded.url;
  }
  const dbName = `flashstock_bench_audit_${Date.now().toString(36)}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${dbName}`);
  const dbUrl = new URL(serverUrl);
  dbUrl.pathname = `/${dbName}`;
  const pool = new pg.Pool({ connectionString: dbUrl.toString(), max: 4 });
  let dropping = false;
  pool.on('error', (err) => {
    if (!dropping) log.error({ err }, 'idle client error');
  });
  const workers = new SnapshotWorkers();
  try {
    await migrate(pool, log);
    const fillStart = performance.now();
    const total = await fill(pool, events, skus);
    console.log(`log: ${total} events over ${skus} SKUs, written in ${Math.round(performance.now() - fillStart)} ms; load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
    workers.start();
    const deps = {
      pool,
      databaseUrl: dbUrl.toString(),
      stockState: () => null,
      settled: async () => undefined,
      provider: new SimulatedPaymentProvider(pool, 0),
      log,
      workers,
    };
    const rows: Row[] = [];
    rows.push(await measure('in-thread replay (old audit, baseline)', () => inThreadReplay(pool)));
    let report = await runLedgerAudit(deps); // warm the worker thread and its connection
    rows.push(await measure('worker audit, no snapshot', async () => (report = await runLedgerAudit(deps))));
    if (!report.ok || report.skus !== skus) throw new Error(`audit not clean: ${JSON.stringify(report).slice(0, 500)}`);
    rows.push(
      await measure(`worker snapshot of every SKU (the whole log folded)`, async () => {
        for (let s = 1; s <= skus; s++) await workers.snapshot({ databaseUrl: dbUrl.toString(), sku: `AUDIT-${s}`, limits: replayLimits });
      }),
    );
    rows.push(await measure('worker audit, from snapshots', async () => (report = await runLedgerAudit(deps))));
    if (!report.ok) throw new Error('audit not clean');
    console.log(`\nmain-thread event-loop delay beyond the ${resolutionMs} ms sampling interval (perf_hooks.monitorEventLoopDelay)`);
    console.log('\n| run | ms | loop delay p50 ms | p99 ms | max ms |\n|---|---|---|---|---|');
    for (const r of rows) console.log(`| ${r.run} | ${r.ms} | ${r.p50} | ${r.p99} | ${r.max} |`);
  } finally {
    dropping = true;
    await workers.stop();
    await pool.end();
    await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
    await admin.end();
    await embedded?.stop();
  }
}

await main();
