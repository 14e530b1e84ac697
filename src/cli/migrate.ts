/**
 * `npm run migrate`: applies pending migrations to DATABASE_URL, or, when it is
 * unset, to the embedded PostgreSQL under DATA_DIR (started and stopped here).
 */
import { ConfigError, loadConfig } from '../config.js';
import type { EmbeddedPostgres } from '../db/embedded.js';
import { loadEmbeddedPostgres } from '../db/embedded-loader.js';
import { migrate } from '../db/migrate.js';
import { createPool } from '../db/pool.js';
import { createLogger } from '../log.js';

async function main(): Promise<number> {
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`configuration error: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  const log = createLogger(config.logLevel, 'flashstock-migrate');

  let embedded: EmbeddedPostgres | null = null;
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (interrupted) return;
    interrupted = true;
    log.warn({ signal }, 'interrupted: the running migration (if any) is rolled back');
    // Stopping postgres aborts the in-flight transaction; then exit.
    void (embedded?.stop() ?? Promise.resolve()).finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onSignal);

  try {
    let url = config.databaseUrl;
    if (url === null) {
      const { startEmbeddedPostgres } = await loadEmbeddedPostgres();
      embedded = await startEmbeddedPostgres({ dataDir: config.dataDir, log });
      url = embedded.url;
    }
    const pool = createPool(url, 2, log);
    try {
      const applied = await migrate(pool, log);
      log.info({ applied }, applied.length > 0 ? `applied ${applied.length} migration(s): ${applied.join(', ')}` : 'schema is up to date');
    } finally {
      await pool.end();
    }
    return 0;
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`configuration error: ${err.message}\n`);
      return 2;
    }
    log.error({ err }, 'migration failed');
    return 1;
  } finally {
    await embedded?.stop();
  }
}

process.exitCode = await main();
