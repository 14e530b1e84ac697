import uWS from 'uWebSockets.js';
import type pg from 'pg';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import { createAdminCheck, createShopperVerifier } from '../auth/auth.js';
import { databaseReadiness } from '../http/readiness.js';
import { createHttpApp } from '../http/server.js';
import type { DropsApi, PaymentsApi } from '../http/dependencies.js';
import type { Router } from '../shard/router.js';
import type { ClusterSnapshot } from '../cluster/membership.js';
import { attachLiveStock, type LiveStock } from '../ws/index.js';
import type { Metrics } from '../metrics/metrics.js';
import { RateLimits } from '../ratelimit/rate-limits.js';
import { createAdmissionTokens } from '../queue/admission.js';

/** The uWebSockets.js app: HTTP routes, `/v1/stream`, the page; listening on HOST:PORT. */
export interface FrontEnd {
  url: string;
  port: number;
  /** The live stock of this front end; null with front-end threads (each thread has its own). */
  live: LiveStock | null;
  /** The shards have recovered: tell front ends on other threads (their /readyz). */
  shardsRecovered?(): void;
  /** Readiness as /readyz decides it (the metrics' readiness gauge). */
  ready(): Promise<boolean>;
  /** Stop accepting connections (in-flight requests still get their answers). */
  stopListening(): void;
  /** Close the stream sockets with 1001, then every socket. */
  stop(): Promise<void>;
  /**
   * The process is about to exit on a fatal error: close every socket now, with
   * no goodbye (a worker thread whose uWS app is still open when the process
   * exits makes Node abort natively). Idempotent.
   */
  halt(): Promise<void>;
}

export interface FrontEndDependencies {
  config: Config;
  log: Logger;
  /** Postgres answers (/readyz): `databaseProbe` on the main thread, a forwarded call on a front-end thread. */
  databaseAlive: () => Promise<boolean>;
  inventory: Router;
  payments: PaymentsApi;
  drops: DropsApi;
  adminToken: string;
  jwtSecret: string;
  onFatal: (error: unknown) => void;
  metrics: Metrics;
  /** More routes on the app before it listens (the cluster endpoint). */
  attach?: (app: uWS.TemplatedApp) => void;
  /** A cluster node's membership view, for the cluster admin routes. */
  cluster?: () => Promise<ClusterSnapshot>;
  /** A cluster node: the first socket here follows a SKU, or the last one let it go (the owners push its changes to the nodes that follow). */
  onFollow?: (sku: string, following: boolean) => void;
  /** The clock rate-limit windows, stream message rates and the slow-consumer timeout are measured by (default Date.now). */
  nowMs?: () => number;
  /** Other front-end threads will listen on this port too (PORT=0 is then resolved to a shareable port). */
  sharedPort?: boolean;
}

function listen(app: uWS.TemplatedApp, host: string, port: number): Promise<uWS.us_listen_socket> {
  return new Promise((resolve, reject) =>
    app.listen(host, port, (socket) => (socket ? resolve(socket) : reject(new Error(`cannot listen on ${host}:${port}`)))),
  );
}

/** Readiness's Postgres probe (front-end threads forward to the main thread's: one probe, shared). */
export function databaseProbe(config: Config, pool: pg.Pool, log: Logger): () => Promise<boolean> {
  return databaseReadiness(
    // pg honours a per-query `query_timeout` its typings do not list.
    () => pool.query({ text: 'SELECT 1', query_timeout: config.readyzDbTimeoutMs } as pg.QueryConfig),
    { failureThreshold: config.readyzFailureThreshold, timeoutMs: config.readyzDbTimeoutMs },
    log,
  );
}

/** The per-shopper and per-IP limits of this front end, counted in its metrics. */
function rateLimitsOf({ config, log, metrics, nowMs }: FrontEndDependencies): RateLimits {
  return new RateLimits(
    {
      shopperPerSecond: config.rateLimitShopperPerSecond,
      ipPerSecond: config.rateLimitIpPerSecond,
      redisUrl: config.redisUrl,
      ...(nowMs === undefined ? {} : { nowMs }),
    },
    log,
    { limited: (limit) => metrics.rateLimited.inc({ limit }), fellBack: () => metrics.rateLimiterFallbacks.inc() },
  );
}

export async function startFrontEnd(deps: FrontEndDependencies): Promise<FrontEnd> {
  const { config, log, inventory, databaseAlive } = deps;
  const { metrics } = deps;
  const verifyShopper = createShopperVerifier(deps.jwtSecret, { maxLifetimeSeconds: config.jwtMaxLifetimeSeconds });
  const rateLimits = rateLimitsOf(deps);
  const admission = createAdmissionTokens(deps.jwtSecret, config.queueAdmissionTokenSeconds, deps.nowMs);
  const app = createHttpApp({
    inventory,
    payments: deps.payments,
    drops: deps.drops,
    log,
    verifyShopper,
    isAdmin: createAdminCheck(deps.adminToken),
    databaseAlive,
    metrics,
    rateLimits,
    admission,
    trustProxy: config.trustProxy,
    maxBodyBytes: config.maxBodyBytes,
    carts: inventory.carts,
    cartMaxLines: config.cartMaxLines,
    retryAfterSeconds: config.retryAfterSeconds,
    onFatal: deps.onFatal,
    ...(deps.cluster === undefined ? {} : { cluster: deps.cluster }),
  });
  const live = attachLiveStock(app, {
    config,
    inventory,
    verifyShopper,
    log,
    onFatal: deps.onFatal,
    rateLimits,
    trustProxy: config.trustProxy,
    ...(deps.nowMs === undefined ? {} : { nowMs: deps.nowMs }),
    onReservationAnswer: (ok, code) => metrics.reservationAnswered(ok, code),
    carts: inventory.carts,
    cartMaxLines: config.cartMaxLines,
    onCartAnswer: (outcome) => metrics.carts.inc({ outcome }),
    admission,
    ...(deps.onFollow === undefined ? {} : { onFollow: deps.onFollow }),
  });
  inventory.onStock((state) => live.changed(state.sku));
  inventory.onWaitlistOffer((notice) => live.offered(notice.shopperId, notice.view));
  deps.attach?.(app);
  const listenSocket = await listenShared(app, config.host, config.port, deps.sharedPort === true);
  let listening = true;
  const stopListening = () => {
    if (listening) uWS.us_listen_socket_close(listenSocket);
    listening = false;
  };
  const closeApp = appCloser(app);
  const port = uWS.us_socket_local_port(listenSocket);
  const host = config.host === '0.0.0.0' ? '127.0.0.1' : config.host;
  return {
    url: `http://${host}:${port}`,
    port,
    live,
    ready: async () => inventory.isReady() && (await databaseAlive()),
    stopListening,
    stop: async () => {
      stopListening();
      await live.close();
      await rateLimits.close();
      closeApp();
    },
    halt: async () => void [stopListening(), closeApp()],
  };
}

async function listenShared(app: uWS.TemplatedApp, host: string, port: number, shared: boolean): Promise<uWS.us_listen_socket> {
  const listenSocket = await listen(app, host, port);
  if (!shared || port !== 0) return listenSocket;
  // uSockets sets SO_REUSEPORT only on a non-zero port: take the port the
  // kernel picked, then listen again on it, shareable by the other threads.
  const picked = uWS.us_socket_local_port(listenSocket);
  uWS.us_listen_socket_close(listenSocket);
  return listen(app, host, picked);
}

/** Closes every open socket of `app`, once (uWS's close is not in the typings of this build; twice could crash the process). */
function appCloser(app: uWS.TemplatedApp): () => void {
  let closed = false;
  return () => {
    if (!closed) (app as unknown as { close(): void }).close();
    closed = true;
  };
}
