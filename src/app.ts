import uWS from 'uWebSockets.js';
import type pg from 'pg';
import { loadConfig, ConfigError, type Config } from './config.js';
import { createLogger, type Logger } from './log.js';
import { startEmbeddedPostgres, type EmbeddedPostgres } from './db/embedded.js';
import { createPool } from './db/pool.js';
import { migrate } from './db/migrate.js';
import { loadOrCreateSecrets } from './secrets.js';
import { LocalInventory } from './inventory/local-inventory.js';
import { createHttpApp } from './http/server.js';
import { createAdminCheck, createShopperVerifier } from './auth/auth.js';
import { attachLiveStock, type LiveStock } from './ws/index.js';

/** A running flashstock: what tests, the bench harness and main() get back. */
export interface Flashstock {
  config: Config;
  url: string;
  port: number;
  databaseUrl: string;
  adminToken: string;
  jwtSecret: string;
  log: Logger;
  pool: pg.Pool;
  inventory: LocalInventory;
  /** `/v1/stream`, the stock fan-out and the page at `/`. */
  live: LiveStock;
  /** Graceful: stop accepting, commit the open batch, answer in-flight requests, close everything. */
  stop(): Promise<void>;
}

export interface StartOptions {
  env?: Record<string, string | undefined>;
  /** Test hook: the clock the allocators are handed (default Date.now). */
  nowMs?: () => number;
  /** What to do when an invariant breaks (default: log and exit the process). */
  onFatal?: (error: unknown) => void;
}

export async function startFlashstock(overrides: Partial<Config> = {}, options: StartOptions = {}): Promise<Flashstock> {
  const config = loadConfig(options.env ?? process.env, overrides);
  const log = createLogger(config.logLevel);
  const cleanups: (() => Promise<void>)[] = [];
  const cleanup = async () => {
    for (const step of cleanups.reverse()) await step().catch((err: unknown) => log.error({ err }, 'shutdown step failed'));
    cleanups.length = 0;
  };
  try {
    let embedded: EmbeddedPostgres | null = null;
    if (config.databaseUrl === null) {
      embedded = await startEmbeddedPostgres({ dataDir: config.dataDir, log });
      const started = embedded;
      cleanups.push(() => started.stop());
      log.info({ dataDir: embedded.dataDir }, 'embedded PostgreSQL started (DATABASE_URL unset)');
    }
    const databaseUrl = config.databaseUrl ?? embedded!.url;

    let { adminToken, jwtSecret } = config;
    if (adminToken === null || jwtSecret === null) {
      if (embedded === null) {
        throw new ConfigError('ADMIN_TOKEN and JWT_SECRET must be set when DATABASE_URL is set');
      }
      const secrets = await loadOrCreateSecrets(config.dataDir, { adminToken, jwtSecret });
      adminToken = secrets.adminToken;
      jwtSecret = secrets.jwtSecret;
      log.info(
        { file: secrets.file, generatedNow: secrets.generated },
        'ADMIN_TOKEN / JWT_SECRET not set: using the ones kept in this file',
      );
    }

    const pool = createPool(databaseUrl, config.pgPoolMax, log);
    cleanups.push(() => pool.end());
    const applied = await migrate(pool, log);
    if (applied.length > 0) log.info({ applied }, 'migrations applied');

    // Set once the app exists; changes before that (none: recovery comes later) have no subscribers.
    let live: LiveStock | null = null;
    const inventory = new LocalInventory(pool, log, {
      limits: {
        maxQuantityPerRequest: config.maxQuantityPerRequest,
        maxLiveHoldsPerSku: config.maxLiveHoldsPerSku,
        maxEventsPerBatch: config.batchMaxEvents,
      },
      outbox: {
        batchMaxEvents: config.batchMaxEvents,
        maxPendingEvents: config.maxPendingEvents,
        commitTimeoutMs: config.commitTimeoutMs,
      },
      expirySweepIntervalMs: config.expirySweepIntervalMs,
      rebuildRetryMs: 500,
      nowMs: options.nowMs ?? Date.now,
      onSkuChanged: (sku) => live?.changed(sku),
    });
    cleanups.push(() => inventory.close());

    const onFatal =
      options.onFatal ??
      ((error: unknown) => {
        log.fatal({ err: error }, 'invariant violated: stopping rather than selling what is not there');
        process.exit(70);
      });
    const verifyShopper = createShopperVerifier(jwtSecret);
    const app = createHttpApp({
      inventory,
      log,
      verifyShopper,
      isAdmin: createAdminCheck(adminToken),
      databaseAlive: () =>
        // pg honours a per-query `query_timeout` its typings do not list.
        pool.query({ text: 'SELECT 1', query_timeout: 2000 } as pg.QueryConfig).then(
          () => true,
          () => false,
        ),
      maxBodyBytes: config.maxBodyBytes,
      retryAfterSeconds: config.retryAfterSeconds,
      onFatal,
    });
    const liveStock = attachLiveStock(app, { config, inventory, verifyShopper, log, onFatal });
    live = liveStock;
    cleanups.push(() => liveStock.close());
    const listenSocket = await new Promise<uWS.us_listen_socket>((resolve, reject) =>
      app.listen(config.host, config.port, (socket) =>
        socket ? resolve(socket) : reject(new Error(`cannot listen on ${config.host}:${config.port}`)),
      ),
    );
    let listening = true;
    const stopListening = () => {
      if (listening) uWS.us_listen_socket_close(listenSocket);
      listening = false;
    };
    // Order matters on the way out: stop accepting, let the inventory commit and
    // answer what is in flight, then drop connections, then the pool and Postgres.
    cleanups.push(async () => {
      stopListening();
      await inventory.close();
      // In-flight stream replies are out: close the sockets with 1001 before the app drops them.
      await liveStock.close();
      // Not in the typings of this uWS build, but present: closes every open socket.
      (app as unknown as { close(): void }).close();
    });
    const port = uWS.us_socket_local_port(listenSocket);
    const host = config.host === '0.0.0.0' ? '127.0.0.1' : config.host;
    const url = `http://${host}:${port}`;
    log.info({ url }, 'listening; recovering allocators from the event log');

    await inventory.recover();
    log.info({ url }, 'ready');

    return {
      config,
      url,
      port,
      databaseUrl,
      adminToken,
      jwtSecret,
      log,
      pool,
      inventory,
      live: liveStock,
      stop: cleanup,
    };
  } catch (error) {
    await cleanup();
    throw error;
  }
}
