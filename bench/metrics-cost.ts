/**
 * What metrics cost, in CPU time (robust on a busy machine, unlike
 * throughput): the per-request instruments on the hot path, and one scrape of
 * a registry populated like a running service's.
 *
 *   node --import tsx bench/metrics-cost.ts
 */
import pino from 'pino';
import { Metrics } from '../src/metrics/metrics.js';
import { RateLimits } from '../src/ratelimit/rate-limits.js';

function cpuMicros(run: () => void): number {
  const before = process.cpuUsage();
  run();
  const used = process.cpuUsage(before);
  return used.user + used.system;
}

const metrics = new Metrics();
const routes = ['/v1/skus/:sku/reservations', '/v1/skus/:sku', '/v1/reservations/:id', '/v1/reservations/:id/checkout', '/readyz'];
for (const route of routes) for (const status of [200, 201, 404, 409, 429, 503]) metrics.route(route, 'POST').done(status, 0.002);
metrics.provide({
  inventory: () => ({ pendingEvents: 10, allocators: 1000, liveHolds: null, snapshotsWritten: null }),
  pool: { totalCount: 8, idleCount: 4, waitingCount: 0 },
  queues: ['payment-finalize', 'payment-finalize-dead'],
  queueSize: async () => 0,
  payments: () => ({ paid: 1, declined: 0, transientFailures: 0, compensated: 0, deferred: 0 }),
  live: () => ({ stream: { connections: 10, lagging: 0, closedSlow: 0, closedPolicy: 0 }, feed: { redis: 'none' } }),
  ready: async () => true,
});

const requests = 2_000_000;
const route = metrics.route('/v1/skus/:sku/reservations', 'POST');
// What Exchange does per response: a clock read at start and end, one counter, one histogram.
const perRequestUs = cpuMicros(() => {
  for (let i = 0; i < requests; i++) {
    const started = performance.now();
    route.done(201, (performance.now() - started) / 1000 + 0.001);
    metrics.reservationAnswered(true);
  }
}) / requests;

const batch = Array.from({ length: 500 }, (_, i) => ({ kind: 'reserved', sku: 'S', seq: i + 1, atMs: 0 }) as never);
const commits = 20_000;
const perCommitUs = cpuMicros(() => {
  for (let i = 0; i < commits; i++) metrics.commitSucceeded(batch, 0.004);
}) / commits;

await metrics.text(); // warm
const scrapes = 200;
const started = process.cpuUsage();
let bytes = 0;
for (let i = 0; i < scrapes; i++) bytes = (await metrics.text()).length;
const used = process.cpuUsage(started);
const perScrapeMs = (used.user + used.system) / 1000 / scrapes;

// The default per-shopper limit (memory store), shoppers cycling through 50,000 like the bench's.
const limits = new RateLimits({ shopperPerSecond: 10, ipPerSecond: 0, redisUrl: null }, pino({ level: 'silent' }));
const checks = 300_000;
const limitStarted = process.cpuUsage();
for (let i = 0; i < checks; i += 1000) {
  await Promise.all(Array.from({ length: 1000 }, (_, j) => limits.check(`s-${(i + j) % 50_000}`, null)));
}
const limitUsed = process.cpuUsage(limitStarted);
const perCheckNs = Math.round(((limitUsed.user + limitUsed.system) * 1000) / checks);

console.log(JSON.stringify({
  rateLimitCheckNs: perCheckNs,
  perRequestNs: Math.round(perRequestUs * 1000),
  perCommitOf500EventsUs: Math.round(perCommitUs * 10) / 10,
  perScrapeCpuMs: Math.round(perScrapeMs * 100) / 100,
  scrapeBytes: bytes,
  scrapeEverySecondShareOfACore: `${Math.round(perScrapeMs / 10 * 100) / 100}%`,
}, null, 1));
process.exit(0);
