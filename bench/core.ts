/**
 * The allocator + outbox without HTTP: how many durable reservations per second
 * the single writer and its group commit sustain on this machine, so the HTTP
 * front end's share of the cost can be told apart.
 *
 *   node --import tsx bench/core.ts [--reservations 200000] [--in-flight 512]
 *
 * Uses DATABASE_URL when set (a database it may write to), else an embedded
 * PostgreSQL in a temporary directory.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startFlashstock } from '../src/app.js';
import { startEmbeddedPostgres } from '../src/db/embedded.js';
import { createLogger } from '../src/log.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? fallback : Number(process.argv[i + 1]);
}

const reservations = arg('reservations', 200_000);
const inFlight = arg('in-flight', 512);
const tmp = mkdtempSync(path.join(tmpdir(), 'flashstock-core-bench-'));
const embedded = process.env.DATABASE_URL ? null : await startEmbeddedPostgres({ dataDir: tmp, log: createLogger('warn') });
const service = await startFlashstock({
  databaseUrl: process.env.DATABASE_URL ?? embedded!.url,
  adminToken: randomBytes(32).toString('base64url'),
  jwtSecret: randomBytes(32).toString('base64url'),
  port: 0,
  metricsPort: 0,
  logLevel: 'warn',
  auditCron: null,
  // The core alone: no HTTP is measured, so no front-end threads either.
  httpThreads: 1,
});
try {
  const configured = await service.inventory.configureSku('CORE', {
    stock: 1_000_000_000, perShopperLimit: 1_000_000_000, holdSeconds: 3600, priceCents: 1, currency: 'USD', startsAtMs: null, endsAtMs: null,
  });
  if (!configured.ok) throw new Error(configured.detail);
  let next = 0;
  let done = 0;
  const started = performance.now();
  await new Promise<void>((resolve, reject) => {
    const one = (): void => {
      if (next >= reservations) return;
      const i = next++;
      service.inventory.reserve({ sku: 'CORE', shopperId: `s${i % 10_000}`, quantity: 1, idempotencyKey: `k${i}` }).then((outcome) => {
        if (!outcome.ok) return reject(new Error(`${outcome.code}: ${outcome.detail}`));
        if (++done === reservations) resolve();
        else one();
      }, reject);
    };
    for (let i = 0; i < inFlight; i++) one();
  });
  const seconds = (performance.now() - started) / 1000;
  const stats = service.shards.outboxStats;
  console.log(
    JSON.stringify({
      reservations,
      inFlight,
      seconds: Number(seconds.toFixed(2)),
      reservationsPerSecond: Math.round(reservations / seconds),
      batches: stats.batches,
      meanBatchEvents: Math.round(stats.events / stats.batches),
      maxBatchEvents: stats.maxBatchEvents,
    }),
  );
} finally {
  await service.stop();
  await embedded?.stop();
  rmSync(tmp, { recursive: true, force: true });
}
