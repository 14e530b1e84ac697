import path from 'node:path';
import { defaultShardCount, maxShardCount } from './shard/placement.js';

/**
 * Every setting, from the environment, with its default and its bounds.
 * README.md's configuration table lists the same names: keep them together.
 */
export interface Config {
  port: number;
  host: string;
  /** Unset: start an embedded PostgreSQL under `dataDir`. */
  databaseUrl: string | null;
  dataDir: string;
  /** Unset in the embedded default: generated once and kept under `dataDir`. */
  adminToken: string | null;
  jwtSecret: string | null;
  logLevel: string;
  redisUrl: string | null;
  pgPoolMax: number;
  batchMaxEvents: number;
  maxPendingEvents: number;
  commitTimeoutMs: number;
  maxQuantityPerRequest: number;
  maxLiveHoldsPerSku: number;
  maxBodyBytes: number;
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
  /** A settled reservation leaves memory this long after it settled (then it is read from the log). */
  reservationMemorySeconds: number;
  /** How long a request's Idempotency-Key is honoured. */
  idempotencyKeyTtlSeconds: number;
  /** A SKU is snapshotted every this many events (and when passivated). */
  snapshotEveryEvents: number;
  /** An ended sale (or an archived one) leaves memory once nothing has changed in it for this long. */
  passivateAfterSeconds: number;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

type Env = Record<string, string | undefined>;

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(`${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(raw)}`);
  }
  return value;
}

function oneOf<const T extends readonly string[]>(env: Env, name: string, values: T, fallback: T[number]): T[number] {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!values.includes(raw)) throw new ConfigError(`${name} must be one of ${values.join(', ')}, got ${JSON.stringify(raw)}`);
  return raw as T[number];
}

function text(env: Env, name: string): string | null {
  const raw = env[name];
  return raw === undefined || raw === '' ? null : raw;
}

export function loadConfig(env: Env = process.env, overrides: Partial<Config> = {}): Config {
  const config: Config = {
    port: integer(env, 'PORT', 8080, 0, 65535),
    host: text(env, 'HOST') ?? '0.0.0.0',
    databaseUrl: text(env, 'DATABASE_URL'),
    dataDir: path.resolve(text(env, 'DATA_DIR') ?? '.data'),
    adminToken: text(env, 'ADMIN_TOKEN'),
    jwtSecret: text(env, 'JWT_SECRET'),
    logLevel: text(env, 'LOG_LEVEL') ?? 'info',
    redisUrl: text(env, 'REDIS_URL'),
    pgPoolMax: integer(env, 'PG_POOL_MAX', 8, 2, 100),
    batchMaxEvents: integer(env, 'BATCH_MAX_EVENTS', 4096, 1, 65_536),
    maxPendingEvents: integer(env, 'MAX_PENDING_EVENTS', 50_000, 1, 1_000_000),
    commitTimeoutMs: integer(env, 'COMMIT_TIMEOUT_MS', 5_000, 100, 60_000),
    maxQuantityPerRequest: integer(env, 'MAX_QUANTITY_PER_REQUEST', 100, 1, 1_000_000),
    maxLiveHoldsPerSku: integer(env, 'MAX_LIVE_HOLDS_PER_SKU', 1_000_000, 1, 100_000_000),
    maxBodyBytes: integer(env, 'MAX_BODY_BYTES', 16 * 1024, 256, 1024 * 1024),
    expirySweepIntervalMs: integer(env, 'EXPIRY_SWEEP_INTERVAL_MS', 100, 5, 10_000),
    retryAfterSeconds: integer(env, 'RETRY_AFTER_SECONDS', 1, 1, 3600),
    shutdownTimeoutMs: integer(env, 'SHUTDOWN_TIMEOUT_MS', 10_000, 100, 120_000),
    paymentWebhookSecret: text(env, 'PAYMENT_WEBHOOK_SECRET'),
    paymentProvider: oneOf(env, 'PAYMENT_PROVIDER', ['simulated'] as const, 'simulated'),
    simulatedPaymentLatencyMs: integer(env, 'SIMULATED_PAYMENT_LATENCY_MS', 3, 0, 60_000),
    paymentRetryLimit: integer(env, 'PAYMENT_RETRY_LIMIT', 5, 0, 50),
    paymentRetryDelaySeconds: integer(env, 'PAYMENT_RETRY_DELAY_SECONDS', 1, 1, 3600),
    paymentJobExpireSeconds: integer(env, 'PAYMENT_JOB_EXPIRE_SECONDS', 60, 1, 3600),
    // pg-boss 10 sorts every queued job on each fetch: big batches keep a backlog from snowballing.
    paymentWorkerBatchSize: integer(env, 'PAYMENT_WORKER_BATCH_SIZE', 500, 1, 1000),
    paymentWorkers: integer(env, 'PAYMENT_WORKERS', 2, 1, 32),
    pgBossMaintenanceIntervalSeconds: integer(env, 'PGBOSS_MAINTENANCE_INTERVAL_SECONDS', 10, 1, 3600),
    auditCron: env.AUDIT_CRON === undefined ? '*/5 * * * *' : text(env, 'AUDIT_CRON'),
    faultCrashPoint: env.FAULT_CRASH_POINT
      ? oneOf(env, 'FAULT_CRASH_POINT', ['before_charge', 'after_charge', 'after_settle'] as const, 'after_charge')
      : null,
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
    shardCount: integer(env, 'SHARD_COUNT', defaultShardCount, 1, maxShardCount),
    reservationMemorySeconds: integer(env, 'RESERVATION_MEMORY_SECONDS', 300, 0, 7 * 24 * 3600),
    idempotencyKeyTtlSeconds: integer(env, 'IDEMPOTENCY_KEY_TTL_SECONDS', 86_400, 1, 30 * 24 * 3600),
    snapshotEveryEvents: integer(env, 'SNAPSHOT_EVERY_EVENTS', 100_000, 100, 100_000_000),
    passivateAfterSeconds: integer(env, 'PASSIVATE_AFTER_SECONDS', 60, 0, 86_400),
    ...overrides,
  };
  return config;
}
