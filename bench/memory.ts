/**
 * Issue 8's memory and restart figures, on one service process and one database:
 *
 *   1. RSS and heap (after full GCs) before and after --reservations reservations
 *      of one unit from distinct shoppers on one SKU (holdSeconds 1, so every
 *      hold expires; RESERVATION_MEMORY_SECONDS --memory-seconds, so they leave
 *      memory), plus what the shards still hold (allocators, reservations,
 *      remembered idempotency keys): bytes per remembered key.
 *   2. --live live holds (holdSeconds 3600) on a second SKU: bytes per live hold.
 *   3. Restart with that log (≥ 2 × --reservations events): spawn → first
 *      `/readyz` 200 and the recovery log line, --restarts times with the
 *      snapshots (default SNAPSHOT_EVERY_EVENTS), then once with every snapshot
 *      deleted (full replay: the baseline of the same run).
 *
 *   node --import tsx bench/memory.ts [--reservations 1000000] [--live 100000]
 *        [--memory-seconds 2] [--connections 256] [--restarts 2] [--full-replay 1]
 *        [--rss-settle-seconds 60] [--database-url postgres://…] [--keep] [--out FILE]
 *
 * Uses a fresh database on --database-url / DATABASE_URL (default
 * postgres://postgres@127.0.0.1:5432/postgres), dropped at the end unless
 * --keep. Prints progress on stderr and one JSON object on stdout; --out FILE
 * also writes it there.
 */
import { writeFileSync } from 'node:fs';
import pg from 'pg';
import { createSkus } from './lib/admin.js';
import { runLoad, type LoadResult } from './lib/loadgen.js';
import { probeGet } from './lib/probe.js';
import { argValue, cpuMsOf, freshDatabase, loadAverage, numberArg, secrets, sleep, startProbedService, type ProbedService } from './lib/service.js';

type Stats = Record<string, number | null>;

const reservations = numberArg('reservations', 1_000_000);
const live = numberArg('live', 100_000);
const memorySeconds = numberArg('memory-seconds', 2);
const connections = numberArg('connections', 256);
const restarts = numberArg('restarts', 2);
const threads = numberArg('threads', 1);
const fullReplay = numberArg('full-replay', 1) !== 0;
const readyTimeoutSeconds = numberArg('ready-timeout-seconds', 300);
const rssSettleSeconds = numberArg('rss-settle-seconds', 60);
const say = (line: string): void => void process.stderr.write(`[memory ${new Date().toISOString().slice(11, 19)}] ${line}\n`);

async function drive(service: ProbedService, sku: string, total: number, runId: string): Promise<LoadResult> {
  return runLoad({
    url: service.url,
    scenario: 'distinct-shoppers',
    params: { sku, total },
    finite: true,
    mode: 'closed',
    connections,
    rate: 0,
    durationMs: 0,
    timeoutMs: 30_000,
    threads,
    jwtSecret: secrets.jwtSecret,
    runId,
  });
}

const summary = (r: LoadResult) => ({
  requests: r.requests,
  acknowledged: r.acknowledged,
  elapsedMs: Math.round(r.elapsedMs),
  reservationsPerSec: Math.round(r.reservationsPerSec),
  statuses: r.statuses,
  codes: r.codes,
  p99Ms: r.latency.p99 / 1000,
});

/** Waits until the shards hold no reservation (they expired and left memory), or the deadline. */
async function settle(service: ProbedService, deadlineMs: number): Promise<Stats> {
  const until = Date.now() + deadlineMs;
  for (;;) {
    const s = await probeGet<Stats>(service.probePort, '/stats');
    if (s.reservationsInMemory === 0 && s.pendingEvents === 0) break;
    if (Date.now() > until) {
      say(`still ${s.reservationsInMemory} reservations in memory after ${deadlineMs} ms`);
      break;
    }
    await sleep(250);
  }
  return probeGet<Stats>(service.probePort, '/stats?gc=1');
}

/**
 * RSS falls back lazily after a load (V8 gives pages back on its memory reducer's
 * schedule, glibc trims its arenas when it frees): samples it every 5 s (after
 * full GCs) for --rss-settle-seconds and returns the series; the last is "after".
 */
async function rssSeries(service: ProbedService): Promise<Stats[]> {
  const series: Stats[] = [await probeGet<Stats>(service.probePort, '/stats?gc=1')];
  for (let waited = 0; waited < rssSettleSeconds; waited += 5) {
    await sleep(5000);
    series.push(await probeGet<Stats>(service.probePort, '/stats?gc=1'));
  }
  return series;
}

async function restartOnce(databaseUrl: string, label: string): Promise<Record<string, unknown>> {
  let service: ProbedService;
  try {
    service = await startProbedService(databaseUrl, { reservationMemorySeconds: memorySeconds }, [], readyTimeoutSeconds * 1000);
  } catch (error) {
    say(`restart (${label}): ${(error as Error).message.split('\n')[0]}`);
    return { label, readyMs: null, notReadyWithinSeconds: readyTimeoutSeconds };
  }
  const cpuMsAtReady = cpuMsOf(service.child.pid);
  const line = service.logs.find((l) => l.msg === 'shards recovered from the event log');
  const stats = await probeGet<Stats>(service.probePort, '/stats?gc=1');
  await service.stop();
  const figures = { label, readyMs: Math.round(service.readyMs), cpuMsAtReady, recoveryLogMs: line?.ms ?? null, recoveredSkus: line?.skus ?? null, rssMiB: stats.rssMiB, heapUsedMiB: stats.heapUsedMiB };
  say(`restart (${label}): ready in ${figures.readyMs} ms (${String(cpuMsAtReady)} ms of CPU), recovery ${String(figures.recoveryLogMs)} ms, RSS ${stats.rssMiB} MiB`);
  return figures;
}

async function main(): Promise<void> {
  const db = await freshDatabase('mem');
  const result: Record<string, unknown> = { reservations, live, memorySeconds, connections, threads, loadAverageAtStart: loadAverage(), node: process.version };
  const runId = Date.now().toString(36);
  const hot = `mem-${runId}-expiring`;
  const held = `mem-${runId}-live`;
  try {
    const service = await startProbedService(db.url, { reservationMemorySeconds: memorySeconds });
    result.emptyStartCpuMs = cpuMsOf(service.child.pid);
    say(`service ready in ${Math.round(service.readyMs)} ms, ${String(result.emptyStartCpuMs)} ms of CPU (load average ${loadAverage()})`);
    await createSkus(service.url, secrets.adminToken, [
      { sku: hot, stock: 1_000_000_000, perShopperLimit: 1, holdSeconds: 1, priceCents: 100, currency: 'USD' },
      { sku: held, stock: 1_000_000_000, perShopperLimit: 1, holdSeconds: 3600, priceCents: 100, currency: 'USD' },
    ]);
    // Warm-up (JIT, pools, first snapshot worker) so "before" is a steady process, not a cold one.
    await drive(service, hot, 20_000, `${runId}w`);
    const before = await settle(service, 60_000);
    say(`before: RSS ${before.rssMiB} MiB, heap ${before.heapUsedMiB} MiB, remembered keys ${before.rememberedKeys}`);

    const run = await drive(service, hot, reservations, `${runId}m`);
    say(`${run.acknowledged} reservations acknowledged in ${Math.round(run.elapsedMs)} ms (${Math.round(run.reservationsPerSec)}/s)`);
    const peak = await probeGet<Stats>(service.probePort, '/stats');
    const settled = await settle(service, 120_000);
    say(`all left memory: RSS ${settled.rssMiB} MiB, heap ${settled.heapUsedMiB} MiB; sampling RSS for ${rssSettleSeconds} s`);
    const series = await rssSeries(service);
    const after = series[series.length - 1]!;
    result.rssAfterSeriesMiB = series.map((x) => x.rssMiB);
    result.settledAt = settled;
    say(`after: RSS ${after.rssMiB} MiB, heap ${after.heapUsedMiB} MiB, in memory ${after.reservationsInMemory}, remembered keys ${after.rememberedKeys}`);

    const liveRun = await drive(service, held, live, `${runId}l`);
    await sleep(500);
    const withLive = await probeGet<Stats>(service.probePort, '/stats?gc=1');
    say(`${live} live holds: RSS ${withLive.rssMiB} MiB, heap ${withLive.heapUsedMiB} MiB, live ${withLive.liveHolds}`);
    await service.stop();

    const perKey = (after.heapUsedBytes! - before.heapUsedBytes!) / Math.max(1, after.rememberedKeys! - before.rememberedKeys!);
    const perHold = (withLive.heapUsedBytes! - after.heapUsedBytes!) / Math.max(1, withLive.liveHolds!);
    Object.assign(result, {
      load: summary(run),
      liveLoad: summary(liveRun),
      before,
      peakRight: peak,
      after,
      withLive,
      rssDeltaMiB: Math.round((after.rssMiB! - before.rssMiB!) * 10) / 10,
      heapDeltaMiB: Math.round((after.heapUsedMiB! - before.heapUsedMiB!) * 10) / 10,
      heapBytesPerSettledReservation: Math.round(perKey),
      heapBytesPerLiveHold: Math.round(perHold),
      rssBytesPerLiveHold: Math.round((withLive.rssBytes! - after.rssBytes!) / Math.max(1, withLive.liveHolds!)),
    });

    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    const counts = await client.query<{ events: string; snapshots: string }>(
      'SELECT (SELECT count(*) FROM stock_events) AS events, (SELECT count(*) FROM sku_snapshots) AS snapshots',
    );
    result.eventsInLog = Number(counts.rows[0]!.events);
    result.snapshotsInTable = Number(counts.rows[0]!.snapshots);
    say(`log: ${result.eventsInLog} events, ${result.snapshotsInTable} snapshot rows (load average ${loadAverage()})`);
    const restartFigures: Record<string, unknown>[] = [];
    for (let i = 0; i < restarts; i++) restartFigures.push(await restartOnce(db.url, `snapshot + tail #${i + 1}`));
    if (fullReplay) {
      await client.query('DELETE FROM sku_snapshots');
      restartFigures.push(await restartOnce(db.url, 'full replay (snapshots deleted)'));
    }
    await client.end();
    result.restarts = restartFigures;
    result.loadAverageAtEnd = loadAverage();
  } finally {
    if (!process.argv.includes('--keep')) await db.drop();
    else say(`kept database ${db.url}`);
  }
  const json = JSON.stringify(result, null, 2);
  process.stdout.write(`${json}\n`);
  const out = argValue('out');
  if (out !== undefined) writeFileSync(out, `${json}\n`);
}

await main();
