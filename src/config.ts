import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { defaultShardCount, maxShardCount } from './shard/placement.js';
import { parseTrustProxy, type TrustedProxies } from './ratelimit/client-ip.js';

/**
 * Every setting, from the environment, with its default and its bounds.
 * docs/configuration.md's settings tables list the same names: keep them together.
 */
/** Front-end threads at most (HTTP_THREADS). */
export const maxHttpThreads = 64;
/** METRICS_PORT by default (the port Prometheus' own exporters conventionally leave to applications). */
export const defaultMetricsPort = 9464;
/** Shard threads at most (SHARD_THREADS): each is an event loop with its own pool and outbox. */
export const maxShardThreads = 16;

/**
 * HTTP_THREADS by default: one front-end thread per core the process may use
 * beside the main thread, which keeps the shards (at least 1, at most
 * maxHttpThreads). A front-end thread per core left the allocators' thread no
 * core of its own: on 2 cores, 2 front-end threads cost ~25% more CPU and ~50%
 * more garbage per reservation than 1 for no more throughput
 * (docs/performance.md#threads-and-nodes).
 */
export function defaultHttpThreads(cores = availableParallelism()): number {
  return Math.min(maxHttpThreads, Math.max(1, cores - 1));
}

export interface Config {
  port: number;
  host: string;
  /** `GET /metrics` listens here, never on PORT: the numbers are for the operator's Prometheus, not the public. 0: any free port. */
  metricsPort: number;
  /** Default 127.0.0.1 (only this machine); a Prometheus in another container or pod needs 0.0.0.0 on a private network. */
  metricsHost: string;
  /** Unset: start an embedded PostgreSQL under `dataDir`. */
  databaseUrl: string | null;
  dataDir: string;
  /** Unset in the embedded default: generated once and kept under `dataDir`. */
  adminToken: string | null;
  jwtSecret: string | null;
  /** A shopper token's `exp` may be at most this far ahead (tokens without `exp` are refused). */
  jwtMaxLifetimeSeconds: number;
  logLevel: string;
  redisUrl: string | null;
  pgPoolMax: number;
  batchMaxEvents: number;
  maxPendingEvents: number;
  commitTimeoutMs: number;
  maxQuantityPerRequest: number;
  maxLiveHoldsPerSku: number;
  /** Tickets one SKU's waiting room holds at most (QUEUE_MAX_TICKETS); past it joins get 503 queue_full. */
  queueMaxTickets: number;
  /** How long an admission token is good for after it was issued (QUEUE_ADMISSION_TOKEN_SECONDS). */
  queueAdmissionTokenSeconds: number;
  /** Open waitlist entries (waiting or offered) per SKU; past it joins get 409 `waitlist_full`. */
  waitlistMaxEntries: number;
  maxBodyBytes: number;
  /** Most lines one cart may hold (CART_MAX_LINES). */
  cartMaxLines: number;
  /** A tentative cart line whose cart has not decided for this long is aborted by its shard (CART_DECISION_TIMEOUT_MS). */
  cartDecisionTimeoutMs: number;
  expirySweepIntervalMs: number;
  retryAfterSeconds: number;
  shutdownTimeoutMs: number;
  /** HMAC secret of payment webhooks; unset with DATABASE_URL set: webhooks are refused. */
  paymentWebhookSecret: string | null;
  paymentProvider: 'simulated';
  simulatedPaymentLatencyMs: number;
  paymentRetryLimit: number;
  paymentRetryDelaySeconds: number;
  paymentJobExpireSeconds: number;
  paymentWorkerBatchSize: number;
  paymentWorkers: number;
  pgBossMaintenanceIntervalSeconds: number;
  /** Cron for the scheduled ledger audit; empty disables it. */
  auditCron: string | null;
  /** Fault injection (tests): SIGKILL the process at this point of a payment. */
  faultCrashPoint: 'before_charge' | 'after_charge' | 'after_settle' | null;
  /** Fault injection (tests): front-end thread 0 throws an uncaught error once it listens (a thread that fails). */
  faultThreadFailure: boolean;
  /** WebSocket `/v1/stream` (src/ws): every per-socket resource is bounded. */
  wsMaxMessageBytes: number;
  wsMaxSubscriptions: number;
  wsIdleTimeoutSeconds: number;
  wsMaxBackpressureBytes: number;
  wsBackpressureTimeoutMs: number;
  wsMaxMessagesPerSecond: number;
  wsMaxInvalidMessages: number;
  wsMaxConnections: number;
  wsCoalesceMs: number;
  /** Redis pub/sub channel for stock updates: deployments sharing a Redis use different ones. */
  redisStockChannel: string;
  /** Shards SKUs are spread over (by fnv1a32 of the name); the unit that moves between threads and nodes. */
  shardCount: number;
  /** Front-end threads (uWS apps on one port, SO_REUSEPORT; default: the cores); 1 = the front end runs on the main thread. */
  httpThreads: number;
  /** Threads the shards run on (shard s on thread s mod N); 1 = the shards run on the main thread. */
  shardThreads: number;
  /** A settled reservation leaves memory this long after it settled (then it is read from the log). */
  reservationMemorySeconds: number;
  /** How long a request's Idempotency-Key is honoured. */
  idempotencyKeyTtlSeconds: number;
  /** A SKU is snapshotted every this many events (and when passivated). */
  snapshotEveryEvents: number;
  /** An ended sale (or an archived one) leaves memory once nothing has changed in it for this long. */
  passivateAfterSeconds: number;
  /** Shared secret of the coming cluster (nodes authenticating each other); read and checked like the others. */
  clusterSecret: string | null;
  /** Accept short or placeholder secrets (demos only). */
  allowWeakSecrets: boolean;
  /** Payment provider circuit breaker (opossum): see src/payments/breaker.ts. */
  paymentBreakerVolumeThreshold: number;
  paymentBreakerErrorPercent: number;
  paymentBreakerWindowSeconds: number;
  paymentBreakerResetSeconds: number;
  paymentBreakerMaxDeferSeconds: number;
  paymentProviderTimeoutMs: number;
  /** /readyz: consecutive failed PostgreSQL probes before it answers 503, and each probe's deadline. */
  readyzFailureThreshold: number;
  readyzDbTimeoutMs: number;
  /** Shutdown budgets, carved out of shutdownTimeoutMs: see src/shutdown-budget.ts. */
  shutdownPaymentsTimeoutMs: number;
  shutdownJobsTimeoutMs: number;
  /** Rate limits (src/ratelimit): per second, burst twice it; 0 = off. */
  rateLimitShopperPerSecond: number;
  rateLimitIpPerSecond: number;
  /** Whom to believe in X-Forwarded-For (see src/ratelimit/client-ip.ts); null = nobody. */
  trustProxy: TrustedProxies;
  /** Cluster (src/cluster); CLUSTER_SECRET unset: this node runs alone. */
  /** How other nodes reach this one; null: http://<HOST>:<PORT> (127.0.0.1 for 0.0.0.0), see advertiseUrl(). */
  nodeAdvertiseUrl: string | null;
  /** This node's name in the cluster; null: the advertised URL's host:port. */
  nodeId: string | null;
  clusterHeartbeatMs: number;
  /** A node whose heartbeat is older than this is dead: its lease session is ended and its shards taken. */
  clusterLeaseTimeoutMs: number;
  clusterMaxMovesPerRound: number;
  /** Advisory-lock namespace (int4) of the shard leases: clusters sharing one database use different ones. */
  clusterLockNamespace: number;
  clusterForwardTimeoutMs: number;
  clusterMaxInFlight: number;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

type Env = Record<string, string | undefined>;

/**
 * Every name a loader reads, recorded by the readers below, so the list of known
 * settings is the code itself (a setting added with `integer(env, 'X', …)` is known).
 */
const knownNames = new Set<string>();

function read(env: Env, name: string): string | undefined {
  knownNames.add(name);
  return env[name];
}

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = read(env, name);
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(`${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(raw)}`);
  }
  return value;
}

function oneOf<const T extends readonly string[]>(env: Env, name: string, values: T, fallback: T[number]): T[number] {
  const raw = read(env, name);
  if (raw === undefined || raw === '') return fallback;
  if (!values.includes(raw)) throw new ConfigError(`${name} must be one of ${values.join(', ')}, got ${JSON.stringify(raw)}`);
  return raw as T[number];
}

function text(env: Env, name: string): string | null {
  const raw = read(env, name);
  return raw === undefined || raw === '' ? null : raw;
}

/** A URL whose scheme is one of `schemes` (e.g. postgres:, postgresql:), or null when unset. */
function url(env: Env, name: string, schemes: readonly string[]): string | null {
  const raw = text(env, name);
  if (raw === null) return null;
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new ConfigError(`${name} is not a URL (expected ${schemes[0]}//host:port/…)`);
  }
  if (!schemes.includes(parsed.protocol)) {
    throw new ConfigError(`${name} must be a ${schemes.join(' or ')}// URL, got one starting ${JSON.stringify(parsed.protocol)}`);
  }
  if (parsed.hostname === '' && !parsed.searchParams.has('host')) throw new ConfigError(`${name} has no host`);
  return raw;
}

/**
 * A secret from NAME or from the file named by NAME_FILE (Docker/Kubernetes
 * secrets), never both. The file's trailing newline is not part of the secret.
 */
function secret(env: Env, name: string): string | null {
  const direct = text(env, name);
  const fileName = text(env, `${name}_FILE`);
  if (fileName === null) return direct;
  if (direct !== null) throw new ConfigError(`${name} and ${name}_FILE are both set: set only one`);
  let content: string;
  try {
    content = readFileSync(fileName, 'utf8');
  } catch (error) {
    throw new ConfigError(`${name}_FILE: cannot read ${fileName}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
  }
  const value = content.replace(/\r?\n$/, '');
  if (value === '') throw new ConfigError(`${name}_FILE: ${fileName} is empty`);
  return value;
}

function trustProxy(env: Env): TrustedProxies {
  try {
    return parseTrustProxy(text(env, 'TRUST_PROXY'));
  } catch (error) {
    throw new ConfigError((error as Error).message);
  }
}

export function loadConfig(env: Env = process.env, overrides: Partial<Config> = {}): Config {
  const config: Config = {
    ...serverSettings(env),
    ...paymentSettings(env),
    ...faultSettings(env),
    ...liveStockSettings(env),
    ...shardSettings(env),
    ...secretPolicySettings(env),
    ...paymentBreakerSettings(env),
    ...healthSettings(env),
    ...clientTrustSettings(env),
    ...clusterSettings(env),
    ...overrides,
  };
  checkConsistency(config);
  if (config.metricsPort !== 0 && config.metricsPort === config.port) {
    throw new ConfigError(`METRICS_PORT must differ from PORT (${config.port}): /metrics is never served on the public port`);
  }
  validateCluster(config);
  validateShardThreads(config);
  return config;
}

/** Listening, storage, secrets, logging and the limits of the request path. */
function serverSettings(env: Env) {
  return {
    port: integer(env, 'PORT', 8080, 0, 65535),
    host: text(env, 'HOST') ?? '0.0.0.0',
    metricsPort: integer(env, 'METRICS_PORT', defaultMetricsPort, 0, 65535),
    metricsHost: text(env, 'METRICS_HOST') ?? '127.0.0.1',
    databaseUrl: url(env, 'DATABASE_URL', ['postgres:', 'postgresql:']),
    dataDir: path.resolve(text(env, 'DATA_DIR') ?? '.data'),
    adminToken: secret(env, 'ADMIN_TOKEN'),
    jwtSecret: secret(env, 'JWT_SECRET'),
    jwtMaxLifetimeSeconds: integer(env, 'JWT_MAX_LIFETIME_SECONDS', 86_400, 60, 31_536_000),
    logLevel: oneOf(env, 'LOG_LEVEL', logLevels, 'info'),
    redisUrl: url(env, 'REDIS_URL', ['redis:', 'rediss:']),
    pgPoolMax: integer(env, 'PG_POOL_MAX', 8, 2, 100),
    batchMaxEvents: integer(env, 'BATCH_MAX_EVENTS', 4096, 1, 65_536),
    maxPendingEvents: integer(env, 'MAX_PENDING_EVENTS', 50_000, 1, 1_000_000),
    commitTimeoutMs: integer(env, 'COMMIT_TIMEOUT_MS', 5_000, 100, 60_000),
    maxQuantityPerRequest: integer(env, 'MAX_QUANTITY_PER_REQUEST', 100, 1, 1_000_000),
    maxLiveHoldsPerSku: integer(env, 'MAX_LIVE_HOLDS_PER_SKU', 1_000_000, 1, 100_000_000),
    queueMaxTickets: integer(env, 'QUEUE_MAX_TICKETS', 250_000, 1, 10_000_000),
    queueAdmissionTokenSeconds: integer(env, 'QUEUE_ADMISSION_TOKEN_SECONDS', 300, 10, 86_400),
    waitlistMaxEntries: integer(env, 'WAITLIST_MAX_ENTRIES', 10_000, 1, 1_000_000),
    maxBodyBytes: integer(env, 'MAX_BODY_BYTES', 16 * 1024, 256, 1024 * 1024),
    cartMaxLines: integer(env, 'CART_MAX_LINES', 20, 1, 1000),
    cartDecisionTimeoutMs: integer(env, 'CART_DECISION_TIMEOUT_MS', 10_000, 100, 600_000),
    expirySweepIntervalMs: integer(env, 'EXPIRY_SWEEP_INTERVAL_MS', 100, 5, 10_000),
    retryAfterSeconds: integer(env, 'RETRY_AFTER_SECONDS', 1, 1, 3600),
    shutdownTimeoutMs: integer(env, 'SHUTDOWN_TIMEOUT_MS', 10_000, 100, 120_000),
  };
}

/** Payments: provider, pg-boss workers and the audit schedule. */
function paymentSettings(env: Env) {
  return {
    paymentWebhookSecret: secret(env, 'PAYMENT_WEBHOOK_SECRET'),
    paymentProvider: oneOf(env, 'PAYMENT_PROVIDER', ['simulated'] as const, 'simulated'),
    simulatedPaymentLatencyMs: integer(env, 'SIMULATED_PAYMENT_LATENCY_MS', 3, 0, 60_000),
    paymentRetryLimit: integer(env, 'PAYMENT_RETRY_LIMIT', 5, 0, 50),
    paymentRetryDelaySeconds: integer(env, 'PAYMENT_RETRY_DELAY_SECONDS', 1, 1, 3600),
    paymentJobExpireSeconds: integer(env, 'PAYMENT_JOB_EXPIRE_SECONDS', 60, 1, 3600),
    // pg-boss 10 sorts every queued job on each fetch: big batches keep a backlog from snowballing.
    paymentWorkerBatchSize: integer(env, 'PAYMENT_WORKER_BATCH_SIZE', 500, 1, 1000),
    paymentWorkers: integer(env, 'PAYMENT_WORKERS', 2, 1, 32),
    pgBossMaintenanceIntervalSeconds: integer(env, 'PGBOSS_MAINTENANCE_INTERVAL_SECONDS', 10, 1, 3600),
    auditCron: cron(env, 'AUDIT_CRON', '*/5 * * * *'),
  };
}

/** Fault injection points used by the crash tests. */
function faultSettings(env: Env) {
  return {
    faultCrashPoint: read(env, 'FAULT_CRASH_POINT')
      ? oneOf(env, 'FAULT_CRASH_POINT', ['before_charge', 'after_charge', 'after_settle'] as const, 'after_charge')
      : null,
    faultThreadFailure: read(env, 'FAULT_THREAD_FAILURE') === 'front_end',
  };
}

/** Live stock over WebSocket and its cross-node fan-out. */
function liveStockSettings(env: Env) {
  return {
    wsMaxMessageBytes: integer(env, 'WS_MAX_MESSAGE_BYTES', 4096, 512, 64 * 1024),
    wsMaxSubscriptions: integer(env, 'WS_MAX_SUBSCRIPTIONS', 100, 1, 10_000),
    // uWebSockets.js accepts 0 or 9–960 s; 0 (never) is not offered: dead peers must go.
    wsIdleTimeoutSeconds: integer(env, 'WS_IDLE_TIMEOUT_SECONDS', 60, 16, 960),
    wsMaxBackpressureBytes: integer(env, 'WS_MAX_BACKPRESSURE_BYTES', 64 * 1024, 1024, 16 * 1024 * 1024),
    wsBackpressureTimeoutMs: integer(env, 'WS_BACKPRESSURE_TIMEOUT_MS', 10_000, 100, 600_000),
    wsMaxMessagesPerSecond: integer(env, 'WS_MAX_MESSAGES_PER_SECOND', 20, 1, 10_000),
    wsMaxInvalidMessages: integer(env, 'WS_MAX_INVALID_MESSAGES', 5, 1, 1000),
    wsMaxConnections: integer(env, 'WS_MAX_CONNECTIONS', 100_000, 1, 1_000_000),
    wsCoalesceMs: integer(env, 'WS_COALESCE_MS', 100, 10, 10_000),
    redisStockChannel: text(env, 'REDIS_STOCK_CHANNEL') ?? 'flashstock:stock:v1',
  };
}

/** Shards, threads and what the allocators remember. */
function shardSettings(env: Env) {
  return {
    shardCount: integer(env, 'SHARD_COUNT', defaultShardCount, 1, maxShardCount),
    httpThreads: integer(env, 'HTTP_THREADS', defaultHttpThreads(), 1, maxHttpThreads),
    shardThreads: integer(env, 'SHARD_THREADS', 1, 1, maxShardThreads),
    reservationMemorySeconds: integer(env, 'RESERVATION_MEMORY_SECONDS', 300, 0, 7 * 24 * 3600),
    idempotencyKeyTtlSeconds: integer(env, 'IDEMPOTENCY_KEY_TTL_SECONDS', 86_400, 1, 30 * 24 * 3600),
    snapshotEveryEvents: integer(env, 'SNAPSHOT_EVERY_EVENTS', 100_000, 100, 100_000_000),
    passivateAfterSeconds: integer(env, 'PASSIVATE_AFTER_SECONDS', 60, 0, 86_400),
  };
}

/** The cluster secret and whether weak secrets are allowed. */
function secretPolicySettings(env: Env) {
  return {
    clusterSecret: secret(env, 'CLUSTER_SECRET'),
    allowWeakSecrets: oneOf(env, 'ALLOW_WEAK_SECRETS', ['0', '1'] as const, '0') === '1',
  };
}

/** The payment provider circuit breaker and its timeout. */
function paymentBreakerSettings(env: Env) {
  return {
    // Opens when, within the window, at least VOLUME calls were made and more than PERCENT % failed transiently.
    paymentBreakerVolumeThreshold: integer(env, 'PAYMENT_BREAKER_VOLUME_THRESHOLD', 20, 1, 100_000),
    paymentBreakerErrorPercent: integer(env, 'PAYMENT_BREAKER_ERROR_PERCENT', 50, 1, 99),
    paymentBreakerWindowSeconds: integer(env, 'PAYMENT_BREAKER_WINDOW_SECONDS', 10, 1, 3600),
    paymentBreakerResetSeconds: integer(env, 'PAYMENT_BREAKER_RESET_SECONDS', 10, 1, 3600),
    paymentBreakerMaxDeferSeconds: integer(env, 'PAYMENT_BREAKER_MAX_DEFER_SECONDS', 3600, 1, 7 * 24 * 3600),
    paymentProviderTimeoutMs: integer(env, 'PAYMENT_PROVIDER_TIMEOUT_MS', 10_000, 10, 600_000),
  };
}

/** Readiness and shutdown. */
function healthSettings(env: Env) {
  return {
    readyzFailureThreshold: integer(env, 'READYZ_FAILURE_THRESHOLD', 2, 1, 100),
    readyzDbTimeoutMs: integer(env, 'READYZ_DB_TIMEOUT_MS', 2_000, 10, 60_000),
    shutdownPaymentsTimeoutMs: integer(env, 'SHUTDOWN_PAYMENTS_TIMEOUT_MS', 2_000, 0, 120_000),
    shutdownJobsTimeoutMs: integer(env, 'SHUTDOWN_JOBS_TIMEOUT_MS', 1_000, 1_000, 120_000),
  };
}

/** Rate limits and which proxies are trusted for client addresses. */
function clientTrustSettings(env: Env) {
  return {
    rateLimitShopperPerSecond: integer(env, 'RATE_LIMIT_SHOPPER_PER_SECOND', 10, 0, 1_000_000),
    rateLimitIpPerSecond: integer(env, 'RATE_LIMIT_IP_PER_SECOND', 0, 0, 1_000_000),
    trustProxy: trustProxy(env),
  };
}

/** Cluster membership and forwarding. */
function clusterSettings(env: Env) {
  return {
    nodeAdvertiseUrl: httpUrl(env, 'NODE_ADVERTISE_URL'),
    nodeId: text(env, 'NODE_ID'),
    clusterHeartbeatMs: integer(env, 'CLUSTER_HEARTBEAT_MS', 1_000, 50, 60_000),
    clusterLeaseTimeoutMs: integer(env, 'CLUSTER_LEASE_TIMEOUT_MS', 5_000, 200, 600_000),
    clusterMaxMovesPerRound: integer(env, 'CLUSTER_MAX_MOVES_PER_ROUND', 8, 1, 4096),
    clusterLockNamespace: integer(env, 'CLUSTER_LOCK_NAMESPACE', 0x46_53_48_44, 1, 2 ** 31 - 1),
    clusterForwardTimeoutMs: integer(env, 'CLUSTER_FORWARD_TIMEOUT_MS', 5_000, 100, 60_000),
    clusterMaxInFlight: integer(env, 'CLUSTER_MAX_IN_FLIGHT', 10_000, 1, 1_000_000),
  };
}

function validateShardThreads(config: Config): void {
  if (config.shardThreads > config.shardCount) {
    throw new ConfigError(`SHARD_THREADS (${config.shardThreads}) must not exceed SHARD_COUNT (${config.shardCount}): a thread without a shard would idle`);
  }
}

function httpUrl(env: Env, name: string): string | null {
  const raw = text(env, name);
  if (raw === null) return null;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(`${name} must be an http:// URL, got ${JSON.stringify(raw)}`);
  }
  if (url.protocol !== 'http:' || url.pathname !== '/' || url.search !== '' || url.hash !== '' || url.username !== '') {
    throw new ConfigError(`${name} must be http://host:port with nothing after it, got ${JSON.stringify(raw)}`);
  }
  return url.origin;
}

function validateCluster(config: Config): void {
  if (config.clusterLeaseTimeoutMs < 3 * config.clusterHeartbeatMs) {
    throw new ConfigError('CLUSTER_LEASE_TIMEOUT_MS must be at least 3 × CLUSTER_HEARTBEAT_MS (a late heartbeat is not a death)');
  }
}

/** NODE_ADVERTISE_URL, or http://<HOST>:<port> with 127.0.0.1 for a wildcard HOST. */
export function advertiseUrl(config: Config, listeningPort: number): string {
  if (config.nodeAdvertiseUrl !== null) return config.nodeAdvertiseUrl;
  const host = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host;
  return `http://${host.includes(':') ? `[${host}]` : host}:${listeningPort}`;
}

export const logLevels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

function cron(env: Env, name: string, fallback: string): string | null {
  const raw = read(env, name);
  if (raw === undefined) return fallback;
  if (raw.trim() === '') return null;
  const fields = raw.trim().split(/\s+/).length;
  if (fields !== 5 && fields !== 6) throw new ConfigError(`${name} must be a cron expression of 5 or 6 fields, got ${JSON.stringify(raw)}`);
  return raw;
}

/** Rules across settings, checked on the final values (environment and overrides alike). */
function checkConsistency(config: Config): void {
  if (!config.allowWeakSecrets) {
    const secrets: [string, string | null][] = [
      ['ADMIN_TOKEN', config.adminToken],
      ['JWT_SECRET', config.jwtSecret],
      ['PAYMENT_WEBHOOK_SECRET', config.paymentWebhookSecret],
      ['CLUSTER_SECRET', config.clusterSecret],
    ];
    for (const [name, value] of secrets) {
      const weakness = value === null ? null : secretWeakness(value);
      if (weakness !== null) {
        throw new ConfigError(`${name} is weak (${weakness}): use at least ${minSecretBytes} random bytes, e.g. \`openssl rand -base64 48\` (ALLOW_WEAK_SECRETS=1 accepts it, for demos only)`);
      }
    }
  }
  // The outbox must keep time to commit the open batch after payments and pg-boss had theirs.
  const carved = config.shutdownPaymentsTimeoutMs + config.shutdownJobsTimeoutMs + config.commitTimeoutMs;
  if (carved >= config.shutdownTimeoutMs) {
    throw new ConfigError(
      `SHUTDOWN_TIMEOUT_MS (${config.shutdownTimeoutMs}) must exceed SHUTDOWN_PAYMENTS_TIMEOUT_MS + SHUTDOWN_JOBS_TIMEOUT_MS + COMMIT_TIMEOUT_MS (${carved})`,
    );
  }
}

export const minSecretBytes = 32;
const placeholderPattern = /change[-_ .]?me|replace[-_ .]?me|placeholder|your[-_ .]?(secret|token|key)|^(secret|password|token|test|example|default)$/i;

/** Why a secret is unacceptable (without echoing it), or null when it is fine. */
export function secretWeakness(value: string): string | null {
  if (placeholderPattern.test(value)) return 'a placeholder value';
  const bytes = Buffer.byteLength(value, 'utf8');
  if (bytes < minSecretBytes) return `${bytes} bytes, fewer than ${minSecretBytes}`;
  if (new Set(value).size < 8) return 'fewer than 8 distinct characters';
  return null;
}

const ourNamePattern = /^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$/;

/**
 * Warnings about the environment (the service still starts): FLASHSTOCK_*
 * variables it does not know, and names a typo away from a known setting
 * (Damerau-Levenshtein distance ≤ 2, ≤ 1 for names under 8 characters, so PGPORT
 * or HOME are not taken for PORT or HOST). Call after loadConfig (it records the names).
 */
export function configWarnings(env: Env = process.env): string[] {
  const warnings: string[] = [];
  for (const name of Object.keys(env)) {
    if (knownNames.has(name) || !ourNamePattern.test(name)) continue;
    const near = nearestKnown(name);
    if (near !== null) warnings.push(`${name} is not a flashstock setting: did you mean ${near}?`);
    else if (name.startsWith('FLASHSTOCK_')) warnings.push(`${name} is not a flashstock setting (ignored)`);
  }
  return warnings;
}

function nearestKnown(name: string): string | null {
  let best: string | null = null;
  let bestDistance = Infinity;
  for (const known of knownNames) {
    const limit = Math.min(known.length, name.length) >= 8 ? 2 : 1;
    const d = editDistance(name, known, limit);
    if (d <= limit && d < bestDistance) {
      best = known;
      bestDistance = d;
    }
  }
  return best;
}

/** Optimal-string-alignment distance (a swap of neighbours costs 1), giving up past `limit`. */
export function editDistance(a: string, b: string, limit = Infinity): number {
  if (Math.abs(a.length - b.length) > limit) return limit + 1;
  const rows: number[][] = [];
  for (let i = 0; i <= a.length; i++) rows.push([i]);
  for (let j = 1; j <= b.length; j++) rows[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min(rows[i - 1]![j]! + 1, rows[i]![j - 1]! + 1, rows[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d = Math.min(d, rows[i - 2]![j - 2]! + 1);
      rows[i]![j] = d;
    }
  }
  return rows[a.length]![b.length]!;
}
