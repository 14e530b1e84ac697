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
import { createBoss, finalizeQueue } from './payments/finalizer.js';
import { createOrderWriter } from './payments/orders.js';
import { Payments } from './payments/payments.js';
import { SimulatedPaymentProvider } from './payments/simulated-provider.js';
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
  payments: Payments;
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

    let { adminToken, jwtSecret, paymentWebhookSecret } = config;
    if (adminToken === null || jwtSecret === null) {
      if (embedded === null) {
        throw new ConfigError('ADMIN_TOKEN and JWT_SECRET must be set when DATABASE_URL is set');
      }
    }
    if (embedded !== null && (adminToken === null || jwtSecret === null || paymentWebhookSecret === null)) {
      const secrets = await loadOrCreateSecrets(config.dataDir, { adminToken, jwtSecret, paymentWebhookSecret });
      ({ adminToken, jwtSecret, paymentWebhookSecret } = secrets);
      log.info(
        { file: secrets.file, generatedNow: secrets.generated },
        'secrets not set in the environment: using the ones kept in this file',
      );
    }
    if (paymentWebhookSecret === null) log.warn('PAYMENT_WEBHOOK_SECRET is not set: payment webhooks will be refused');
    if (adminToken === null || jwtSecret === null) throw new ConfigError('ADMIN_TOKEN and JWT_SECRET are required');

    const pool = createPool(databaseUrl, config.pgPoolMax, log);
    cleanups.push(() => pool.end());
    const applied = await migrate(pool, log);
    if (applied.length > 0) log.info({ applied }, 'migrations applied');

    // pg-boss keeps its own schema; it starts before the inventory so that the
    // first checkout after recovery can already insert its job.
    const boss = createBoss(databaseUrl, log, config.pgBossMaintenanceIntervalSeconds);
    await boss.start();
    cleanups.push(() => boss.stop({ graceful: true, wait: true, timeout: config.shutdownTimeoutMs }));
    let payments: Payments | null = null;

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
      writeOrders: createOrderWriter(boss, finalizeQueue),
      onCheckoutDurable: () => payments?.finalizer.wake(),
      onSkuChanged: (sku) => live?.changed(sku),
    });
    cleanups.push(() => inventory.close());
    const provider = new SimulatedPaymentProvider(pool, config.simulatedPaymentLatencyMs);
    payments = new Payments(boss, pool, inventory, provider, log, paymentWebhookSecret, {
      retryLimit: config.paymentRetryLimit,
      retryDelaySeconds: config.paymentRetryDelaySeconds,
      jobExpireSeconds: config.paymentJobExpireSeconds,
      batchSize: config.paymentWorkerBatchSize,
      workers: config.paymentWorkers,
      crashPoint: config.faultCrashPoint,
    }, config.auditCron);
    await payments.prepare();

    const onFatal =
      options.onFatal ??
      ((error: unknown) => {
        log.fatal({ err: error }, 'invariant violated: stopping rather than selling what is not there');
        process.exit(70);
      });
    const verifyShopper = createShopperVerifier(jwtSecret);
    const app = createHttpApp({
      inventory,
      payments,
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
    const startedPayments = payments;
    cleanups.push(async () => {
      stopListening();
      // Let in-flight payment jobs finish (they settle through the inventory) before closing it.
      await startedPayments.stop();
      await boss.stop({ graceful: true, wait: true, timeout: config.shutdownTimeoutMs });
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
    await payments.start();
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
      payments,
      live: liveStock,
      stop: cleanup,
    };
  } catch (error) {
    await cleanup();
    throw error;
  }
}
