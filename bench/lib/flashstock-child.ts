/**
 * Runs the service in its own process for the harness: starts it through
 * src/app.ts's startFlashstock (embedded Postgres unless DATABASE_URL is set),
 * prints one JSON line with what the harness needs, stops it on SIGTERM.
 */
import { startProbe } from './probe.js';

type Started = { url: string; metricsUrl: string; port: number; databaseUrl: string; adminToken: string; jwtSecret: string; config: Record<string, unknown>; shards?: unknown; stop(): Promise<void> };

const appModule = '../../src/app.js';
const { startFlashstock } = (await import(appModule)) as { startFlashstock(overrides?: Record<string, unknown>): Promise<Started> };

const overrides: Record<string, unknown> = { port: 0, metricsPort: 0, host: '127.0.0.1', logLevel: process.env.LOG_LEVEL ?? 'warn' };
if (process.env.BENCH_DATA_DIR) overrides.dataDir = process.env.BENCH_DATA_DIR;
if (process.env.DATABASE_URL) overrides.databaseUrl = process.env.DATABASE_URL;
// The scenarios' overrides (e.g. checkout: simulated payments at zero latency), then the user's on top.
for (const name of ['BENCH_SCENARIO_OVERRIDES', 'BENCH_OVERRIDES']) {
  if (process.env[name]) Object.assign(overrides, JSON.parse(process.env[name]) as Record<string, unknown>);
}

// BENCH_PROBE=1: sample this thread's event-loop delay from the start and serve memory/loop figures (bench/lib/probe.ts).
const probe = process.env.BENCH_PROBE === '1' ? await startProbe() : null;
const app = await startFlashstock(overrides);
probe?.attach(app.shards);

/** The effective settings a benchmark's figures depend on (for the report). */
function reported(config: Record<string, unknown>): Record<string, unknown> {
  const keys = ['httpThreads', 'shardCount', 'pgPoolMax', 'batchMaxEvents', 'simulatedPaymentLatencyMs', 'paymentWorkerBatchSize', 'paymentWorkers', 'paymentJobExpireSeconds', 'pgBossMaintenanceIntervalSeconds', 'auditCron'];
  return Object.fromEntries(keys.filter((k) => k in config).map((k) => [k, config[k]]));
}
process.stdout.write(
  `${JSON.stringify({ ready: true, url: app.url, metricsUrl: app.metricsUrl, port: app.port, databaseUrl: app.databaseUrl, adminToken: app.adminToken, jwtSecret: app.jwtSecret, config: reported(app.config), ...(probe !== null ? { probePort: probe.port } : {}) })}\n`,
);

let stopping = false;
const stop = (): void => {
  if (stopping) return;
  stopping = true;
  probe?.close();
  app.stop().then(
    () => process.exit(0),
    (error: unknown) => {
      console.error(error);
      process.exit(1);
    },
  );
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
