import type { Test } from 'tap';
import { defaultAllocatorLimits } from '../../src/allocator/types.js';
import type { ShardHostOptions } from '../../src/shard/shard-host.js';
import { loadSkuState, loadSkuStates } from '../../src/snapshot/load.js';
import { SnapshotWorkers } from '../../src/snapshot/workers.js';
import type { TestDatabase } from './db.js';

/**
 * Everything a ShardHost takes but its shards, for tests on a test database:
 * real snapshot workers (stopped at teardown), a fast sweeper, a fatal error
 * thrown where the test sees it. `overrides` changes any of it.
 */
export function testHostOptions(
  db: Pick<TestDatabase, 'pool' | 'url'>,
  t: Pick<Test, 'teardown'>,
  overrides: Partial<Omit<ShardHostOptions, 'shards' | 'shardCount'>> = {},
): Omit<ShardHostOptions, 'shards' | 'shardCount'> {
  const limits = { ...defaultAllocatorLimits };
  const pool = db.pool;
  const workers = new SnapshotWorkers();
  workers.start();
  t.teardown(() => workers.stop());
  return {
    limits,
    outbox: { batchMaxEvents: 100, maxPendingEvents: 1000, commitTimeoutMs: 5000 },
    expirySweepIntervalMs: 50,
    rebuildRetryMs: 50,
    idempotencyKeyTtlMs: 86_400_000,
    nowMs: Date.now,
    writeOrders: null,
    loadSku: (sku) => loadSkuState(pool, sku, limits),
    loadSkus: (skus) => loadSkuStates(pool, skus, limits),
    snapshotEveryEvents: 100,
    passivateAfterMs: 0,
    onFatal: (error) => {
      throw error;
    },
    ...overrides,
  };
}
