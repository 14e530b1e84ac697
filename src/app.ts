import type pg from 'pg';
import { loadConfig, configWarnings, type Config } from './config.js';
import { createLogger, type Logger } from './log.js';
import { createOrderWriter } from './payments/orders.js';
import { finalizeQueue } from './payments/finalizer.js';
import type { Payments } from './payments/payments.js';
import type { Router } from './shard/router.js';
import type { LiveStock } from './ws/index.js';
import { startStorage } from './services/storage.js';
import { preparePayments, startBoss } from './services/payments.js';
import type uWS from 'uWebSockets.js';
import { startShards, type LocalShardHost, type Shards } from './services/shards.js';
import { clusterShardsService, startClusterNode, type ClusterNode } from './cluster/node.js';
import type { NodeShards } from './cluster/owned-shards.js';
import { databaseProbe, startFrontEnd, type FrontEnd } from './services/front-end.js';
import { startFrontEndThreads } from './threads/front-end-threads.js';
import { Metrics } from './metrics/metrics.js';
import { listenMetrics } from './metrics/listener.js';
import { deadLetterQueue } from './payments/finalizer.js';
import { Drops, defaultDropsOptions } from './drops/drops.js';

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
  /** The front ends' Inventory: routes every command to its SKU's shard. */
  inventory: Router;
  /** This process's shards (single-process mode: all of them, on the main thread or SHARD_THREADS threads). */
  shards: LocalShardHost | NodeShards;
  payments: Payments;
  /** `/v1/stream`, the stock fan-out and the page at `/` (null with HTTP_THREADS > 1: each thread has its own). */
  live: LiveStock | null;
  /** This service's Prometheus registry (`GET /metrics` on `metricsUrl`). */
  metrics: Metrics;
  /** The metrics listener (METRICS_HOST:METRICS_PORT), never the public port: scrape `${metricsUrl}/metrics`. */
  metricsUrl: string;
  /** Recurring sale cycles (drops) and their pg-boss scheduler. */
  drops: Drops;
  /** Graceful: stop accepting, commit the open batch, answer in-flight requests, close everything. */
  stop(): Promise<void>;
}

export interface StartOptions {
  env?: Record<string, string | undefined>;
  /** Test hook: the clock the allocators are handed (default Date.now). */
  nowMs?: () => number;
  /**
   * Test hook: the clock the front end measures by — rate-limit windows (memory store), stream message
   * rates and the slow-consumer timeout (default Date.now; a front end on the main thread only).
   */
  frontEndNowMs?: () => number;
  /** What to do when an invariant breaks (default: log and exit the process). */
  onFatal?: (error: unknown) => void;
  /** Clone every router↔shard message (tests: the boundary carries plain data only). */
  cloneMessages?: boolean;
}

/**
 * Starts the services in dependency order — storage, pg-boss, shards,
 * payments, front end — then recovers the shards (the port is open meanwhile
 * and answers 503) and starts the payment workers. Stops them in reverse.
 */
export async function startFlashstock(overrides: Partial<Config> = {}, options: StartOptions = {}): Promise<Flashstock> {
  const config = loadConfig(options.env ?? process.env, overrides);
  const log = createLogger(config.logLevel);
  for (const warning of configWarnings(options.env ?? process.env)) log.warn(warning);
  const metrics = new Metrics();
  const stops: (() => Promise<void>)[] = [];
  /** What a fatal exit closes first (the front end, once it exists). */
  let haltFrontEnd = async (): Promise<void> => undefined;
  const stop = async () => {
    for (const step of stops.reverse()) await step().catch((err: unknown) => log.error({ err }, 'shutdown step failed'));
    stops.length = 0;
  };
  try {
    const storage = await startStorage(config, log);
    stops.push(() => storage.stop());
    const boss = await startBoss(config, storage.databaseUrl, log);
    // Until the payments service owns it (its stop stops pg-boss too).
    let bossOwned = false;
    stops.push(async () => {
      if (!bossOwned) await boss.stop({ graceful: true, wait: true, timeout: config.shutdownJobsTimeoutMs });
    });
    const onFatal = options.onFatal ?? fatalExit(log, () => haltFrontEnd());
    const { cluster, local, shards } = startShardsService(config, storage, boss, metrics, options, onFatal, log);
    stops.push(() => shards.stop());
    const payments = await preparePaymentsFor(config, log, storage, boss, shards);
    bossOwned = true;
    const drops = new Drops(storage.pool, boss, shards.router, log, { ...defaultDropsOptions, nowMs: options.nowMs ?? Date.now });
    shards.router.onCheckoutDurable(() => payments.payments.finalizer.wake());
    const databaseAlive = databaseProbe(config, storage.pool, log);
    const frontEnd = await openFrontEnd({ config, log, options, storage, cluster, local, shards, payments, drops, metrics, databaseAlive, onFatal });
    haltFrontEnd = () => frontEnd.halt();
    provideMetrics(metrics, { cluster, shards, storage, boss, payments, frontEnd });
    const metricsListener = await listenMetrics(config.metricsHost, config.metricsPort, metrics, log);
    stops.push(() => metricsListener.close());
    stops.push(() => stopServing(frontEnd, payments, shards));
    log.info({ url: frontEnd.url, metricsUrl: metricsListener.url }, 'listening; recovering shards from the event log');
    await recoverShards(cluster, shards, frontEnd, log);
    await payments.start();
    // Drops (src/drops): they configure cycle SKUs through the router, so they
    // start after recovery and stop before pg-boss and the shards (a stop step
    // pushed last runs first).
    await drops.start();
    stops.push(() => drops.stop());
    log.info({ url: frontEnd.url, metricsUrl: metricsListener.url }, 'ready');
    return {
      config,
      url: frontEnd.url,
      port: frontEnd.port,
      databaseUrl: storage.databaseUrl,
      adminToken: storage.adminToken,
      jwtSecret: storage.jwtSecret,
      log,
      pool: storage.pool,
      inventory: shards.router,
      shards: shards.host,
      payments: payments.payments,
      live: frontEnd.live,
      metrics,
      metricsUrl: metricsListener.url,
      drops,
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

type Storage = Awaited<ReturnType<typeof startStorage>>;
type Boss = Awaited<ReturnType<typeof startBoss>>;
type ShardsService = Shards | ReturnType<typeof clusterShardsService>;
type PreparedPayments = Awaited<ReturnType<typeof preparePayments>>;

/** CLUSTER_SECRET set: this node joins the cluster on DATABASE_URL (src/cluster); otherwise it owns every shard. */
function startShardsService(
  config: Config,
  storage: Storage,
  boss: Boss,
  metrics: Metrics,
  options: StartOptions,
  onFatal: (error: unknown) => void,
  log: Logger,
): { cluster: ClusterNode | null; local: Shards | null; shards: ShardsService } {
  const shardsOptions = {
    onFatal,
    databaseUrl: storage.databaseUrl,
    nowMs: options.nowMs ?? Date.now,
    writeOrders: createOrderWriter(boss, finalizeQueue),
    cloneMessages: options.cloneMessages ?? false,
    outboxObserver: metrics.outboxObserver(),
  };
  const cluster = config.clusterSecret === null ? null : startClusterNode(config, storage.pool, log, shardsOptions);
  const local = cluster === null ? startShards(config, storage.pool, log, shardsOptions) : null;
  const shards = local ?? clusterShardsService(cluster!);
  return { cluster, local, shards };
}

function preparePaymentsFor(config: Config, log: Logger, storage: Storage, boss: Boss, shards: ShardsService): Promise<PreparedPayments> {
  return preparePayments({
    config,
    log,
    pool: storage.pool,
    boss,
    inventory: shards.router,
    ledger: {
      stockState: (sku) => shards.host.stockState(sku),
      settled: () => shards.host.settled(),
      databaseUrl: storage.databaseUrl,
      workers: shards.workers,
    },
    webhookSecret: storage.paymentWebhookSecret,
  });
}

/** What a front end is built from. */
interface FrontEndParts {
  config: Config;
  log: Logger;
  options: StartOptions;
  storage: Storage;
  cluster: ClusterNode | null;
  local: Shards | null;
  shards: ShardsService;
  payments: PreparedPayments;
  drops: Drops;
  metrics: Metrics;
  databaseAlive: ReturnType<typeof databaseProbe>;
  onFatal: (error: unknown) => void;
}

/** One front end on the main thread (HTTP_THREADS=1), or HTTP_THREADS front-end threads. */
async function openFrontEnd(parts: FrontEndParts): Promise<FrontEnd> {
  const { config, log, options, storage, cluster, local, shards, payments, drops, metrics, databaseAlive, onFatal } = parts;
  return config.httpThreads === 1
    ? await startFrontEnd({
        config,
        log,
        databaseAlive,
        inventory: shards.router,
        payments: payments.payments,
        drops,
        metrics,
        adminToken: storage.adminToken,
        jwtSecret: storage.jwtSecret,
        onFatal,
        ...(options.frontEndNowMs === undefined ? {} : { nowMs: options.frontEndNowMs }),
        ...(cluster === null
          ? {}
          : {
              attach: (app: uWS.TemplatedApp) => cluster.attach(app),
              cluster: async () => cluster.snapshot(),
              onFollow: (sku: string, following: boolean) => cluster.threadCalls.follow(sku, following),
            }),
      })
    : await startFrontEndThreads({
        config,
        log,
        // A cluster node's threads are served through its channel (its shards, or forwarded to their owner).
        host: cluster?.endpoint ?? local!.host,
        onNotice: (listener) => (cluster ?? local!).onNotice(listener),
        stockState: (sku) => shards.router.stockState(sku),
        ...(local?.shardPorts === undefined ? {} : { shardPorts: local.shardPorts }),
        ...(cluster === null ? {} : { cluster: cluster.threadCalls }),
        ...(cluster?.directRoutes == null ? {} : { direct: cluster.directRoutes }),
        payments: payments.payments,
        drops,
        metrics,
        databaseAlive,
        legacySku: (reservationId) => shards.router.legacySku(reservationId),
        adminToken: storage.adminToken,
        jwtSecret: storage.jwtSecret,
        webhookSecret: storage.paymentWebhookSecret,
        onFatal,
      });
}

function provideMetrics(
  metrics: Metrics,
  parts: { cluster: ClusterNode | null; shards: ShardsService; storage: Storage; boss: Boss; payments: PreparedPayments; frontEnd: FrontEnd },
): void {
  const { cluster, shards, storage, boss, payments, frontEnd } = parts;
  metrics.provide({
    ...(cluster === null ? {} : { cluster: () => cluster.stats(), frameRefusals: () => cluster.stats().refusals }),
    inventory: () => ({
      pendingEvents: shards.host.pendingEvents,
      allocators: shards.host.allocatorCount,
      liveHolds: shards.host.liveHolds,
      ...(shards.host.queueTickets === undefined ? {} : { queueTickets: shards.host.queueTickets }),
      snapshotsWritten: shards.host.stats.snapshotsWritten,
      waitlist: 'waitlist' in shards.host ? (shards.host.waitlist ?? null) : null,
    }),
    pool: storage.pool,
    queues: [finalizeQueue, deadLetterQueue],
    queueSize: (queue) => boss.getQueueSize(queue),
    payments: () => payments.payments.finalizer.stats,
    breakerState: () => payments.payments.breaker.state,
    ...(frontEnd.live === null ? {} : { live: () => frontEnd.live!.stats }),
    ready: () => frontEnd.ready(),
  });
}

/**
 * Order on the way out: stop accepting; let payment jobs finish (they settle
 * through the shards); commit and answer what is in flight; close sockets.
 */
async function stopServing(frontEnd: FrontEnd, payments: PreparedPayments, shards: ShardsService): Promise<void> {
  frontEnd.stopListening();
  await payments.stop();
  await shards.stop();
  await frontEnd.stop();
}

async function recoverShards(cluster: ClusterNode | null, shards: ShardsService, frontEnd: FrontEnd, log: Logger): Promise<void> {
  const recoveryStartedMs = Date.now();
  if (cluster !== null) await cluster.start(frontEnd.port);
  const recovered = await shards.recover();
  if (recovered !== null) log.info({ ...recovered, ms: Date.now() - recoveryStartedMs }, 'shards recovered from the event log');
  frontEnd.shardsRecovered?.();
}

/**
 * The process's fatal path (a broken invariant, a thread that failed): one
 * fatal log line, every socket closed (front-end threads' too: a worker thread
 * with an open uWS app makes Node abort natively at exit), exit code 70. Later
 * calls while exiting are ignored.
 */
function fatalExit(log: Logger, halt: () => Promise<void>): (error: unknown) => void {
  let exiting = false;
  return (error) => {
    if (exiting) return;
    exiting = true;
    log.fatal({ err: error }, 'fatal: stopping rather than serving in a broken state');
    void halt()
      .catch(() => undefined)
      .finally(() => process.exit(70));
  };
}
