import type pg from 'pg';
import type { AllocatorLimits } from '../allocator/types.js';
import type { Config } from '../config.js';
import type { OrderAttachment } from '../inventory/inventory.js';
import type { OutboxMetrics } from '../metrics/metrics.js';
import type { AttachmentWriter, OutboxObserver } from '../outbox/outbox.js';
import type { ShardHostOptions } from '../shard/shard-host.js';
import { loadSkuState, loadSkuStates } from '../snapshot/load.js';
import type { SnapshotWorkers } from '../snapshot/workers.js';

/**
 * A ShardHost's settings from the configuration: the same wherever the host
 * runs (the main thread, a shard thread, a cluster node).
 */

export interface ShardsOptions {
  databaseUrl: string;
  /** A broken invariant anywhere in the shards: stop rather than sell what is not there. */
  onFatal: (error: unknown) => void;
  nowMs: () => number;
  writeOrders: AttachmentWriter<OrderAttachment> | null;
  /** Clone every message (tests: proves the boundary carries plain data only). */
  cloneMessages?: boolean;
  /** Told about every group commit (metrics); with shard threads, handed their tallies (`addTally`). */
  outboxObserver?: OutboxObserver | OutboxMetrics;
}

export function allocatorLimits(config: Config): AllocatorLimits {
  return {
    maxQuantityPerRequest: config.maxQuantityPerRequest,
    maxLiveHoldsPerSku: config.maxLiveHoldsPerSku,
    maxEventsPerBatch: config.batchMaxEvents,
    reservationMemoryMs: config.reservationMemorySeconds * 1000,
    idempotencyKeyTtlMs: config.idempotencyKeyTtlSeconds * 1000,
    maxQueueTicketsPerSku: config.queueMaxTickets,
    waitlistMaxEntries: config.waitlistMaxEntries,
  };
}

/** Everything a ShardHost takes but the shards it hosts: the same in single-process and cluster mode. */
export function shardHostSettings(
  config: Config,
  pool: pg.Pool,
  workers: SnapshotWorkers,
  options: ShardsOptions,
): Omit<ShardHostOptions, 'shards' | 'shardCount'> {
  const limits = allocatorLimits(config);
  return {
    limits,
    outbox: {
      batchMaxEvents: config.batchMaxEvents,
      maxPendingEvents: config.maxPendingEvents,
      commitTimeoutMs: config.commitTimeoutMs,
      ...(options.outboxObserver === undefined ? {} : { observer: options.outboxObserver }),
    },
    expirySweepIntervalMs: config.expirySweepIntervalMs,
    rebuildRetryMs: 500,
    idempotencyKeyTtlMs: config.idempotencyKeyTtlSeconds * 1000,
    nowMs: options.nowMs,
    writeOrders: options.writeOrders,
    loadSku: (sku) => loadSkuState(pool, sku, limits),
    loadSkus: (skus) => loadSkuStates(pool, skus, limits),
    snapshotEveryEvents: config.snapshotEveryEvents,
    passivateAfterMs: config.passivateAfterSeconds * 1000,
    onFatal: options.onFatal,
    cartDecisionTimeoutMs: config.cartDecisionTimeoutMs,
  };
}
