/**
 * Restart time with many live holds: one SKU (holdSeconds a day) gets --holds
 * live holds of one unit from distinct shoppers, written straight into a fresh
 * database the way the service writes them (the allocator decides and applies,
 * the event log's own insert and the snapshot's own insert and codec), without
 * HTTP, so a million holds take a minute, not an hour. Then the service starts
 * --restarts times on that database: spawn → first `/readyz` 200, listening
 * to ready (the log's `listening…` line to its `ready` line: the time the port
 * answers 503), and the recovery (`shards recovered from the event log`). The empty
 * database's start in the same run is the baseline (process start alone).
 * Also the service's CPU time at ready (/proc): on a busy machine the wall clock
 * measures the machine's queue, the CPU time the work.
 *
 *   node --import tsx bench/restart-live.ts [--holds 1000000] [--restarts 2] [--database-url postgres://…] [--keep]
 *   node --import tsx bench/restart-live.ts --reuse postgres://…/bench_restart_… [--restarts 2]
 *
 * --keep leaves the database for --reuse, which only restarts the service on it
 * (another build against the same log: a before/after of the same state).
 * --cpu-prof DIR runs the service under `node --cpu-prof`, its profiles in DIR.
 *
 * Compiled (`npm run build && node dist/bench/restart-live.js …`) the service
 * runs without tsx, as `npm start` does.
 */
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { SkuAllocator } from '../src/allocator/allocator.js';
import { defaultAllocatorLimits, type StockEvent } from '../src/allocator/types.js';
import { insertEventsQuery, readEvents } from '../src/outbox/event-log.js';
import { newReservationId, reservationIdPrefix } from '../src/shard/placement.js';
import { encodeSnapshot, snapshotFormatVersion } from '../src/snapshot/codec.js';
import { insertSnapshotQuery } from '../src/snapshot/sql.js';
import { createSkus } from './lib/admin.js';
import { probeGet } from './lib/probe.js';
import { argValue, cpuMsOf, freshDatabase, loadAverage, numberArg, secrets, startProbedService } from './lib/service.js';

const holds = numberArg('holds', 1_000_000);
const restarts = numberArg('restarts', 2);
const cpuProfDir = argValue('cpu-prof');
const serviceNodeArgs = cpuProfDir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`];
const eventsPerInsert = 5000;
const say = (line: string): void => void process.stderr.write(`[restart-live ${new Date().toISOString().slice(11, 19)}] ${line}\n`);

async function writeHolds(client: pg.Client, sku: string): Promise<number> {
  const limits = { ...defaultAllocatorLimits, maxLiveHoldsPerSku: Math.max(holds, defaultAllocatorLimits.maxLiveHoldsPerSku) };
  const allocator = new SkuAllocator(sku, limits);
  for await (const page of readEvents(client as unknown as pg.Pool, { sku })) for (const event of page) allocator.apply(event);
  const prefix = reservationIdPrefix(sku);
  let batch: StockEvent[] = [];
  for (let i = 0; i < holds; i++) {
    const nowMs = Date.now();
    const cmd = { reservationId: newReservationId(sku, prefix, nowMs), shopperId: `restart-shopper-${i}`, quantity: 1, idempotencyKey: randomUUID() };
    const decision = allocator.reserve(cmd, nowMs);
    if (!decision.ok || decision.kind !== 'new') throw new Error(`reserve refused: ${JSON.stringify(decision)}`);
    allocator.apply(decision.event);
    batch.push(decision.event);
    if (batch.length === eventsPerInsert || i === holds - 1) {
      await client.query(insertEventsQuery(batch));
      batch = [];
    }
  }
  const state = encodeSnapshot(allocator);
  await client.query(insertSnapshotQuery({ sku, seq: allocator.seq, formatVersion: snapshotFormatVersion, state, passivated: false }));
  return state.length;
}

/** From the log line that says the port is open to the one that says ready: what a restart keeps shoppers waiting (503s). */
function listeningToReadyMs(logs: Array<Record<string, unknown>>): number | null {
  const at = (msg: string): number => {
    const time = logs.find((l) => l.msg === msg)?.time;
    return typeof time === 'number' ? time : typeof time === 'string' ? Date.parse(time) : NaN;
  };
  const ms = at('ready') - at('listening; recovering shards from the event log');
  return Number.isFinite(ms) ? ms : null;
}

async function start(url: string, label: string): Promise<Record<string, unknown>> {
  const service = await startProbedService(url, {}, serviceNodeArgs, 600_000);
  const cpuMs = cpuMsOf(service.child.pid);
  const line = service.logs.find((l) => l.msg === 'shards recovered from the event log');
  const stats = await probeGet<Record<string, number>>(service.probePort, '/stats?gc=1');
  await service.stop();
  const figures = { label, readyMs: Math.round(service.readyMs), listeningToReadyMs: listeningToReadyMs(service.logs), cpuMsAtReady: cpuMs, recoveryLogMs: line?.ms ?? null, liveHolds: stats.liveHolds, rssMiB: stats.rssMiB, heapUsedMiB: stats.heapUsedMiB };
  say(`${label}: ready in ${figures.readyMs} ms (${String(cpuMs)} ms of CPU), listening to ready ${String(figures.listeningToReadyMs)} ms, recovery ${String(figures.recoveryLogMs)} ms, ${stats.liveHolds} live holds, RSS ${stats.rssMiB} MiB`);
  return figures;
}

async function restartsOn(url: string): Promise<Record<string, unknown>[]> {
  const figures: Record<string, unknown>[] = [];
  for (let i = 0; i < restarts; i++) figures.push(await start(url, `restart #${i + 1}`));
  return figures;
}

async function main(): Promise<void> {
  const reuse = argValue('reuse');
  if (reuse !== undefined) {
    const result = { holds: 'as logged', loadAverageAtStart: loadAverage(), node: process.version, restarts: await restartsOn(reuse), loadAverageAtEnd: loadAverage() };
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    return;
  }
  const db = await freshDatabase('restart');
  const result: Record<string, unknown> = { holds, loadAverageAtStart: loadAverage(), node: process.version };
  const sku = `restart-${Date.now().toString(36)}`;
  try {
    const service = await startProbedService(db.url, {});
    result.emptyStartMs = Math.round(service.readyMs);
    result.emptyStartCpuMs = cpuMsOf(service.child.pid);
    result.emptyListeningToReadyMs = listeningToReadyMs(service.logs);
    say(`empty database: ready in ${result.emptyStartMs} ms (${String(result.emptyStartCpuMs)} ms of CPU), listening to ready ${String(result.emptyListeningToReadyMs)} ms`);
    await createSkus(service.url, secrets.adminToken, [{ sku, stock: 1_000_000_000, perShopperLimit: 1, holdSeconds: 86_400, priceCents: 100, currency: 'USD' }]);
    await service.stop();
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    const t0 = performance.now();
    result.snapshotBytes = await writeHolds(client, sku);
    await client.end();
    say(`${holds} holds logged and snapshotted (${result.snapshotBytes} bytes) in ${Math.round(performance.now() - t0)} ms`);
    result.restarts = await restartsOn(db.url);
    result.loadAverageAtEnd = loadAverage();
  } finally {
    if (!process.argv.includes('--keep')) await db.drop();
    else say(`kept database ${db.url}`);
  }
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

await main();
