import type pg from 'pg';
import { SkuAllocator } from '../allocator/allocator.js';
import type { AllocatorLimits } from '../allocator/types.js';
import type { Config } from '../config.js';
import type { OrderAttachment } from '../inventory/inventory.js';
import type { Logger } from '../log.js';
import type { AttachmentWriter } from '../outbox/outbox.js';
import { readEvents } from '../outbox/event-log.js';
import { InProcessChannel } from '../shard/in-process-channel.js';
import { Router } from '../shard/router.js';
import { ShardHost } from '../shard/shard-host.js';

/**
 * The allocators' side in single-process mode: every shard on this thread in
 * one ShardHost, and the Router the front ends use, joined by the in-process
 * channel (the same messages a worker thread or another node would get).
 */
export interface Shards {
  router: Router;
  host: ShardHost;
  /** Load every shard from the log; readiness waits for it. */
  recover(): Promise<void>;
  /** Stop taking work, commit the open batch, stop timers. */
  stop(): Promise<void>;
}

export interface ShardsOptions {
  nowMs: () => number;
  writeOrders: AttachmentWriter<OrderAttachment> | null;
  /** Clone every message (tests: proves the boundary carries plain data only). */
  cloneMessages?: boolean;
}

export function allocatorLimits(config: Config): AllocatorLimits {
  return {
    maxQuantityPerRequest: config.maxQuantityPerRequest,
    maxLiveHoldsPerSku: config.maxLiveHoldsPerSku,
    maxEventsPerBatch: config.batchMaxEvents,
  };
}

export function startShards(config: Config, pool: pg.Pool, log: Logger, options: ShardsOptions): Shards {
  const limits = allocatorLimits(config);
  const channel = new InProcessChannel({ clone: options.cloneMessages ?? false });
  const host = new ShardHost(
    pool,
    log,
    {
      shards: Array.from({ length: config.shardCount }, (_, shard) => shard),
      shardCount: config.shardCount,
      limits,
      outbox: {
        batchMaxEvents: config.batchMaxEvents,
        maxPendingEvents: config.maxPendingEvents,
        commitTimeoutMs: config.commitTimeoutMs,
      },
      expirySweepIntervalMs: config.expirySweepIntervalMs,
      rebuildRetryMs: 500,
      idempotencyKeyTtlMs: config.idempotencyKeyTtlSeconds * 1000,
      nowMs: options.nowMs,
      writeOrders: options.writeOrders,
      loadSku: (sku) => loadSkuFromLog(pool, sku, limits),
    },
    (notice) => channel.notify(notice),
  );
  channel.connect(host);
  const router = new Router(channel, { shardCount: config.shardCount, shardsReady: () => host.isReady(), pool });
  return {
    router,
    host,
    recover: () => host.recover(),
    stop: async () => {
      await router.close();
      await host.close();
      await channel.close();
    },
  };
}

/** CORE-MERGE: becomes latest snapshot + tail. */
async function loadSkuFromLog(pool: pg.Pool, sku: string, limits: AllocatorLimits): Promise<SkuAllocator | null> {
  const allocator = new SkuAllocator(sku, limits);
  for await (const page of readEvents(pool, { sku })) for (const event of page) allocator.apply(event);
  return allocator.seq === 0 ? null : allocator;
}
