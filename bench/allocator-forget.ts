/**
 * What forgetting settled reservations costs the allocator's thread: CPU time
 * per reserve + release pair on one SKU, with forgetting (the default 300 s
 * memory) and without it (memory = forever, the old behaviour: the baseline),
 * and the heap left afterwards.
 *
 *   node --expose-gc --import tsx bench/allocator-forget.ts [--reservations 1000000] [--per-second 1000]
 *
 * Time is simulated: `--per-second` reservations per simulated second, each
 * released at once, so after 300 simulated seconds every apply also forgets one.
 */
import { SkuAllocator } from '../src/allocator/allocator.js';
import type { AllocatorLimits } from '../src/allocator/types.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? fallback : Number(process.argv[i + 1]);
}

function run(label: string, limits: AllocatorLimits, n: number, perSecond: number): void {
  const a = new SkuAllocator('HOT', limits);
  const c = a.configure({ stock: n, perShopperLimit: 2, holdSeconds: 60, priceCents: 1, currency: 'USD', startsAtMs: null, endsAtMs: null }, 0);
  if (!c.ok) throw new Error('configure');
  a.apply(c.event);
  const stepMs = 1000 / perSecond;
  let now = 1000;
  let collisions = 0;
  const cpu = process.cpuUsage();
  for (let i = 0; i < n; i++) {
    now += stepMs;
    const cmd = { reservationId: `r-${i}`, shopperId: `shopper-${i}`, quantity: 1, idempotencyKey: `key-${i}` };
    let d = a.reserve(cmd, now);
    if (d.ok && d.kind === 'key_remembered') {
      collisions += 1;
      d = a.reserve(cmd, now, { keyChecked: true });
    }
    if (!d.ok || d.kind !== 'new') throw new Error(JSON.stringify(d));
    a.apply(d.event);
    const r = a.release(d.event.reservationId, d.event.shopperId, now);
    if (!r.ok || r.event === null) throw new Error('release');
    a.apply(r.event);
  }
  const used = process.cpuUsage(cpu);
  globalThis.gc?.();
  const usPerPair = (used.user + used.system) / n;
  console.log(
    `| ${label} | ${usPerPair.toFixed(2)} µs | ${a.reservations.size} | ${a.rememberedKeys.size} | ${collisions} | ${Math.round(process.memoryUsage().heapUsed / 2 ** 20)} MiB |`,
  );
}

const n = arg('reservations', 1_000_000);
const perSecond = arg('per-second', 1000);
const base = { maxQuantityPerRequest: 100, maxLiveHoldsPerSku: n, maxEventsPerBatch: 4096 };
const which = process.argv.includes('--only-forever') ? 'forever' : process.argv.includes('--only-forget') ? 'forget' : 'both';
if (which === 'both') {
  // Each mode in its own process, so one's heap does not tax the other.
  const { execFileSync } = await import('node:child_process');
  console.log('| mode | CPU per reserve+release | reservations in memory | remembered keys | hash collisions | heap after |\n|---|---|---|---|---|---|');
  for (const mode of ['--only-forever', '--only-forget']) {
    process.stdout.write(execFileSync(process.execPath, [...process.execArgv, process.argv[1]!, ...process.argv.slice(2), mode]));
  }
} else if (which === 'forever') {
  run('kept forever (old, baseline)', { ...base, reservationMemoryMs: Number.MAX_SAFE_INTEGER }, n, perSecond);
} else {
  run('forgotten after 300 s (default)', base, n, perSecond);
}
