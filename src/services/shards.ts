import type pg from 'pg';
import type { AllocatorLimits } from '../allocator/types.js';
import type { Config } from '../config.js';
import type { OrderAttachment } from '../inventory/inventory.js';
import type { Logger } from '../log.js';
import type { AttachmentWriter, OutboxObserver } from '../outbox/outbox.js';
import { InProcessChannel } from '../shard/in-process-channel.js';
import type { ShardNotice } from '../shard/messages.js';
import { Router } from '../shard/router.js';
import { ShardHost, type ShardHostOptions } from '../shard/shard-host.js';
import { loadSkuState } from '../snapshot/load.js';
import { SnapshotWorkers } from '../snapshot/workers.js';

/**
 * The allocators' side in single-process mode: every shard on this thread in
 * one ShardHost, and the Router the front ends use, joined by the in-process
 * channel (the same messages a worker thread or another node would get). The
 * background threads (snapshots, the audit) belong here too.
 */
export interface Shards {
  router: Router;
  host: ShardHost;
  /** Snapshot and audit worker threads (piscina). */
  workers: SnapshotWorkers;
  /** Every notice of these shards (front-end threads get them over their ports). */
  onNotice(listener: (notice: ShardNotice) => void): void;
  /** Load every shard from the log; readiness waits for it. */
  recover(): Promise<void>;
  /** Stop taking work, commit the open batch, stop timers and worker threads. */
  stop(): Promise<void>;
}

export interface ShardsOptions {
  databaseUrl: string;
  /** A broken invariant anywhere in the shards: stop rather than sell what is not there. */
  onFatal: (error: unknown) => void;
  nowMs: () => number;
  writeOrders: AttachmentWriter<OrderAttachment> | null;
  /** Clone every message (tests: proves the boundary carries plain data only). */
  cloneMessages?: boolean;
  /** Told about every group commit (metrics). */
  outboxObserver?: OutboxObserver;
}

export function allocatorLimits(config: Config): AllocatorLimits {
  return {
    maxQuantityPerRequest: config.maxQuantityPerRequest,
    maxLiveHoldsPerSku: config.maxLiveHoldsPerSku,
    maxEventsPerBatch: config.batchMaxEvents,
    reservationMemoryMs: config.reservationMemorySeconds * 1000,
    idempotencyKeyTtlMs: config.idempotencyKeyTtlSeconds * 1000,
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
    snapshot: (task) => workers.snapshot({ ...task, databaseUrl: options.databaseUrl, limits }),
    snapshotEveryEvents: config.snapshotEveryEvents,
    passivateAfterMs: config.passivateAfterSeconds * 1000,
    onFatal: options.onFatal,
  };
}

export function startShards(config: Config, pool: pg.Pool, log: Logger, options: ShardsOptions): Shards {
  const workers = new SnapshotWorkers({ threads: 1 });
  workers.start();
  const channel = new InProcessChannel({ clone: options.cloneMessages ?? false });
  const host = new ShardHost(
    pool,
    log,
    {
      shards: Array.from({ length: config.shardCount }, (_, shard) => shard),
      shardCount: config.shardCount,
      ...shardHostSettings(config, pool, workers, options),
    },
    (notice) => channel.notify(notice),
  );
  channel.connect(host);
  const router = new Router(channel, { shardCount: config.shardCount, shardsReady: () => host.isReady(), pool });
  return {
    router,
    host,
    workers,
    onNotice: (listener) => channel.onNotice(listener),
    recover: () => host.recover(),
    stop: async () => {
      await router.close();
      await host.close();
      await channel.close();
      await workers.stop();
    },
  };
}
