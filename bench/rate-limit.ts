/**
 * What one rate-limit check costs, old against new in the same process:
 * CPU ns per check (process.cpuUsage, robust on a busy machine) and V8 heap
 * bytes allocated per check (the GC's own accounting, as bench/lib/alloc-probe.cjs).
 *
 *   node --import tsx bench/rate-limit.ts [--checks 2000000] [--keys 50000]
 *
 * - `library`: rate-limiter-flexible's memory store, used as the service used
 *   it before its own buckets (consume → promise → verdict; a timer per key);
 * - `windows`: RateWindows.take (src/ratelimit/windows.ts), the same fixed windows;
 * - `rateLimits`: RateLimits.checkNow, the service's per-request call (per-shopper
 *   limit, the default; includes the clock read).
 *
 * Keys cycle through --keys distinct shoppers (the bench's hot-sku pool), at
 * 10/s per shopper (the default limit), so nearly every check is admitted, as
 * in the service under load.
 */
import { parseArgs } from 'node:util';
import { allocationCounter } from './lib/allocation.js';
import pino from 'pino';
import { RateLimiterMemory } from 'rate-limiter-flexible';
import { RateLimits, windowSeconds, maxTrackedKeys } from '../src/ratelimit/rate-limits.js';
import { RateWindows } from '../src/ratelimit/windows.js';

const { values } = parseArgs({ options: { checks: { type: 'string' }, keys: { type: 'string' } } });
const checks = Number(values.checks ?? 2_000_000);
const keyCount = Number(values.keys ?? 50_000);
const perSecond = 10;
const keys = Array.from({ length: keyCount }, (_, i) => `shopper-${String(i).padStart(8, '0')}-${'x'.repeat(20)}`);

const allocated = allocationCounter();

interface Figures {
  nsPerCheck: number;
  bytesPerCheck: number;
  admitted: number;
}

/** `run(n, admitted)` performs n checks; CPU and allocation measured around it (after a warm-up of n/10). */
async function measure(run: (n: number) => Promise<number> | number): Promise<Figures> {
  await run(Math.ceil(checks / 10));
  const bytesBefore = allocated();
  const cpuBefore = process.cpuUsage();
  const admitted = await run(checks);
  const cpu = process.cpuUsage(cpuBefore);
  const bytes = allocated() - bytesBefore;
  return { nsPerCheck: Math.round(((cpu.user + cpu.system) * 1000) / checks), bytesPerCheck: Math.round((bytes / checks) * 10) / 10, admitted };
}

// A steady clock: the requests of the run spread over (checks ÷ 100,000) seconds, as at 100,000 checks/s.
const startMs = Date.now();
const clockAt = (i: number): number => startMs + i / 100;

const library = new RateLimiterMemory({ points: perSecond * windowSeconds, duration: windowSeconds });
const libraryFigures = await measure(async (n) => {
  let admitted = 0;
  // In batches: the library answers with promises, as the service awaited them.
  const batch = 1000;
  for (let i = 0; i < n; i += batch) {
    const verdicts = [];
    for (let j = i; j < Math.min(n, i + batch); j++) {
      verdicts.push(library.consume(keys[j % keyCount]!).then(() => null, (res: unknown) => res));
    }
    for (const v of await Promise.all(verdicts)) if (v === null) admitted++;
  }
  return admitted;
});

const windows = new RateWindows({ points: perSecond * windowSeconds, windowMs: windowSeconds * 1000, maxKeys: maxTrackedKeys }, startMs);
let offset = 0;
const windowFigures = await measure((n) => {
  let admitted = 0;
  for (let i = 0; i < n; i++) if (windows.take(keys[i % keyCount]!, clockAt(offset + i)) === 0) admitted++;
  offset += n;
  return admitted;
});

let tick = 0;
const limits = new RateLimits({ shopperPerSecond: perSecond, ipPerSecond: 0, redisUrl: null, nowMs: () => clockAt(tick++) }, pino({ level: 'silent' }));
const rateLimitsFigures = await measure((n) => {
  let admitted = 0;
  for (let i = 0; i < n; i++) if (limits.checkNow(keys[i % keyCount]!, null) === null) admitted++;
  return admitted;
});

console.log(
  JSON.stringify(
    {
      checks,
      keys: keyCount,
      library: libraryFigures,
      windows: windowFigures,
      rateLimits: rateLimitsFigures,
      keysHeld: windows.size,
      speedup: Math.round((libraryFigures.nsPerCheck / rateLimitsFigures.nsPerCheck) * 10) / 10,
    },
    null,
    1,
  ),
);
process.exit(0);
