/**
 * What SKUs on sale cost when nobody buys: the service's CPU while idle with
 * --skus SKUs in memory (configured over HTTP, open sales with no end, nothing
 * held), beside the same service with none, in the same run. Each shard's
 * sweeper runs every EXPIRY_SWEEP_INTERVAL_MS (100 ms by default); a SKU it has
 * nothing to do for should cost next to nothing, so idle CPU follows the SKUs
 * with work, not the catalogue.
 *
 *   node --import tsx bench/idle-skus.ts [--skus 20000] [--seconds 10] [--database-url postgres://…]
 *   npm run build && node dist/bench/idle-skus.js …   (compiled, as the service runs)
 *
 * Idle CPU is read from /proc (all threads of the service) over --seconds,
 * after the SKUs are made and a 3 s pause. Both services run the bench's probe
 * (bench/lib/probe.ts), whose 1 ms loop-delay histogram wakes the loop ~750
 * times a second when idle: part of the baseline, the same in both.
 */
import { createSkus } from './lib/admin.js';
import { cpuMsOf, freshDatabase, loadAverage, numberArg, secrets, sleep, startProbedService } from './lib/service.js';

const skus = numberArg('skus', 20_000);
const seconds = numberArg('seconds', 10);
const say = (line: string): void => void process.stderr.write(`[idle-skus ${new Date().toISOString().slice(11, 19)}] ${line}\n`);

/** Percent of one core the service used while idle, with `count` open sales in memory. */
async function idleCpu(count: number): Promise<number> {
  const db = await freshDatabase('idle_skus');
  const service = await startProbedService(db.url, {});
  try {
    const specs = Array.from({ length: count }, (_, i) => ({ sku: `idle-${i}`, stock: 100, perShopperLimit: 2, holdSeconds: 600, priceCents: 100, currency: 'EUR' }));
    const started = Date.now();
    await createSkus(service.url, secrets.adminToken, specs);
    if (count > 0) say(`${count} SKUs made in ${Date.now() - started} ms`);
    await sleep(3000);
    const before = cpuMsOf(service.child.pid);
    await sleep(seconds * 1000);
    const after = cpuMsOf(service.child.pid);
    if (before === null || after === null) throw new Error('the service is gone');
    return ((after - before) / (seconds * 1000)) * 100;
  } finally {
    await service.stop();
    await db.drop();
  }
}

async function main(): Promise<void> {
  say(`load average ${loadAverage()}`);
  const none = await idleCpu(0);
  say(`no SKUs: ${none.toFixed(1)}% of a core`);
  const many = await idleCpu(skus);
  say(`${skus} SKUs: ${many.toFixed(1)}% of a core`);
  process.stdout.write(`${JSON.stringify({ skus, seconds, idleCpuPercentNone: Number(none.toFixed(2)), idleCpuPercent: Number(many.toFixed(2)), node: process.version }, null, 1)}\n`);
}

await main();
