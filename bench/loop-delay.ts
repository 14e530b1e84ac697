/**
 * Issue 8's event-loop figure: the delay of the thread that runs the allocators
 * (perf_hooks.monitorEventLoopDelay inside the service process, bench/lib/probe.ts)
 * during hot-sku load, in two service processes of the same run:
 *
 *   baseline  hot-sku load alone (SNAPSHOT_EVERY_EVENTS 100,000,000: no snapshot, no audit)
 *   busy      the same load with SNAPSHOT_EVERY_EVENTS --snapshot-every (default 20,000,
 *             so the snapshot worker runs all along) and GET /v1/admin/audit called
 *             back to back (each audit folds the log in its worker thread)
 *
 * Each: --warmup s of load, then the histogram is reset and --seconds s measured.
 *
 *   node --import tsx bench/loop-delay.ts [--seconds 15] [--warmup 3] [--connections 256]
 *        [--snapshot-every 20000] [--database-url postgres://…] [--out FILE]
 */
import { writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { createSkus } from './lib/admin.js';
import { runLoad } from './lib/loadgen.js';
import { probeGet } from './lib/probe.js';
import { argValue, freshDatabase, loadAverage, numberArg, secrets, sleep, startProbedService } from './lib/service.js';

const seconds = numberArg('seconds', 15);
const warmup = numberArg('warmup', 3);
const connections = numberArg('connections', 256);
const snapshotEvery = numberArg('snapshot-every', 20_000);
const threads = numberArg('threads', 1);
const say = (line: string): void => void process.stderr.write(`[loop-delay ${new Date().toISOString().slice(11, 19)}] ${line}\n`);

async function audit(url: string): Promise<{ ms: number; status: number; ok: unknown; violations: number }> {
  const t = performance.now();
  const r = await fetch(`${url}/v1/admin/audit`, { headers: { authorization: `Bearer ${secrets.adminToken}` } });
  const body = (await r.json()) as Record<string, unknown>;
  return { ms: Math.round(performance.now() - t), status: r.status, ok: body.ok, violations: Array.isArray(body.violations) ? body.violations.length : -1 };
}

async function phase(label: string, snapshotEveryEvents: number, withAudit: boolean): Promise<Record<string, unknown>> {
  const db = await freshDatabase('loop');
  try {
    const service = await startProbedService(db.url, { snapshotEveryEvents });
    const sku = `loop-${Date.now().toString(36)}`;
    await createSkus(service.url, secrets.adminToken, [{ sku, stock: 1_000_000_000, perShopperLimit: 1000, holdSeconds: 3600, priceCents: 1999, currency: 'USD' }]);
    const loadAvg = loadAverage();
    const load = runLoad({
      url: service.url,
      scenario: 'hot-sku',
      params: { sku, shoppersPerThread: 50_000 },
      finite: false,
      mode: 'closed',
      connections,
      rate: 0,
      durationMs: (warmup + seconds) * 1000,
      timeoutMs: 30_000,
      threads,
      jwtSecret: secrets.jwtSecret,
      runId: Date.now().toString(36),
    });
    await sleep(warmup * 1000);
    await probeGet(service.probePort, '/loop?reset=1');
    const start = await probeGet(service.probePort, '/stats');
    const audits: Array<Record<string, unknown>> = [];
    const until = performance.now() + seconds * 1000 - 500;
    while (withAudit && performance.now() < until) audits.push(await audit(service.url));
    const result = await load;
    const loop = await probeGet(service.probePort, '/loop');
    const end = await probeGet(service.probePort, '/stats');
    await service.stop();
    const snapshots = (end.snapshotsWritten ?? 0) - (start.snapshotsWritten ?? 0);
    say(`${label}: loop p50 ${loop.p50Ms} ms p99 ${loop.p99Ms} ms max ${loop.maxMs} ms; ${Math.round(result.reservationsPerSec)} reservations/s; ${snapshots} snapshots, ${audits.length} audits (load avg ${loadAvg})`);
    return {
      label,
      snapshotEveryEvents,
      loadAverageAtStart: loadAvg,
      loop,
      reservationsPerSec: Math.round(result.reservationsPerSec),
      reserveP99Ms: result.latency.p99 / 1000,
      statuses: result.statuses,
      snapshotsWrittenInWindow: snapshots,
      snapshotsFailedInWindow: (end.snapshotsFailed ?? 0) - (start.snapshotsFailed ?? 0),
      audits,
    };
  } finally {
    await db.drop();
  }
}

const out = {
  seconds,
  warmup,
  connections,
  node: process.version,
  phases: [await phase('baseline: load only', 100_000_000, false), await phase(`busy: load + snapshots every ${snapshotEvery} events + audits`, snapshotEvery, true)],
  loadAverageAtEnd: loadAverage(),
};
const json = JSON.stringify(out, null, 2);
process.stdout.write(`${json}\n`);
const file = argValue('out');
if (file !== undefined) writeFileSync(file, `${json}\n`);
