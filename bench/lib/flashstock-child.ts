/**
 * Runs the service in its own process for the harness: starts it through
 * src/app.ts's startFlashstock (embedded Postgres unless DATABASE_URL is set),
 * prints one JSON line with what the harness needs, stops it on SIGTERM.
 */
type Started = { url: string; port: number; databaseUrl: string; adminToken: string; jwtSecret: string; stop(): Promise<void> };

const appModule = '../../src/app.js';
const { startFlashstock } = (await import(appModule)) as { startFlashstock(overrides?: Record<string, unknown>): Promise<Started> };

const overrides: Record<string, unknown> = { port: 0, host: '127.0.0.1', logLevel: process.env.LOG_LEVEL ?? 'warn' };
if (process.env.BENCH_DATA_DIR) overrides.dataDir = process.env.BENCH_DATA_DIR;
if (process.env.DATABASE_URL) overrides.databaseUrl = process.env.DATABASE_URL;
if (process.env.BENCH_OVERRIDES) Object.assign(overrides, JSON.parse(process.env.BENCH_OVERRIDES) as Record<string, unknown>);

const app = await startFlashstock(overrides);
process.stdout.write(
  `${JSON.stringify({ ready: true, url: app.url, port: app.port, databaseUrl: app.databaseUrl, adminToken: app.adminToken, jwtSecret: app.jwtSecret })}\n`,
);

let stopping = false;
const stop = (): void => {
  if (stopping) return;
  stopping = true;
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
