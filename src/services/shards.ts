import type { QueueTicketCounts } from '../queue/view.js';
import type { WaitlistTotals } from '../metrics/waitlist-metrics.js';
import type pg from 'pg';
import type { Config } from '../config.js';
import { ConfigError } from '../config.js';
import type { StockState } from '../inventory/inventory.js';
import type { Logger } from '../log.js';
import type { OutboxStats } from '../outbox/outbox.js';
import { InProcessLink } from '../road/in-process-link.js';
import type { ShardEndpoint, ShardNotice } from '../shard/messages.js';
import type { Link } from '../road/link.js';
import { Router } from '../shard/router.js';
import { ShardHost, type RecoverySummary } from '../shard/shard-host.js';
import { shardHostSettings, type ShardsOptions } from './shard-settings.js';
import type { ShardStats } from '../shard/shard.js';
import { SnapshotWorkers } from '../snapshot/workers.js';
import { sharedClockBuffer } from '../threads/shared-clock.js';
import { ShardThreads } from '../threads/shard-threads.js';
import type { ShardPort } from '../road/port-link.js';

/**
 * The shards of this process as the rest of it sees them: a ShardHost on the
 * main thread (SHARD_THREADS=1), or the ShardThreads that forward to the
 * shard threads (its counts then come from the threads' reports).
 */
export interface LocalShardHost extends ShardEndpoint {
  isReady(): boolean;
  stockState(sku: string): StockState | null;
  settled(): Promise<void>;
  readonly pendingEvents: number;
  readonly allocatorCount: number;
  readonly liveHolds: number;
  /** Waiting-room tickets, waiting and admitted (absent: not reported by this host). */
  readonly queueTickets?: QueueTicketCounts;
  /** Waitlist counts (absent: not reported). */
  readonly waitlist?: WaitlistTotals;
  readonly reservationsInMemory: number;
  readonly stats: ShardStats;
  readonly outboxStats: OutboxStats;
  /** Shard threads: fetch the counts now (the getters otherwise show the threads' last report). */
  refresh?(): Promise<void>;
}

/**
 * The allocators' side in single-process mode: the shards in one ShardHost on
 * this thread (SHARD_THREADS=1) or spread over shard threads, and the Router
 * the front ends use, joined by a channel (in-process, or the threads' ports:
 * the same messages either way). The background thread (the audit) belongs
 * here too; snapshots are taken by the shards from their own allocators.
 */
export interface Shards {
  router: Router;
  host: LocalShardHost;
  /** The audit's worker thread (piscina). */
  workers: SnapshotWorkers;
  /** Shard threads: ports straight to each of them, for one front-end thread (absent: the shards are on this thread). */
  shardPorts?: () => ShardPort[];
  /** Every notice of these shards (front-end threads get them over their ports). */
  onNotice(listener: (notice: ShardNotice) => void): void;
  /** Load every shard from the log; readiness waits for it. Null when shards are recovered as they are taken (cluster). */
  recover(): Promise<RecoverySummary | null>;
  /** Stop taking work, commit the open batch, stop timers and worker threads. */
  stop(): Promise<void>;
}

export function startShards(config: Config, pool: pg.Pool, log: Logger, options: ShardsOptions): Shards {
  return config.shardThreads === 1 ? startShardHost(config, pool, log, options) : startShardThreads(config, pool, log, options);
}

function startShardHost(config: Config, pool: pg.Pool, log: Logger, options: ShardsOptions): Shards {
  // Every audit of this process runs here: one thread stays loaded.
  const workers = new SnapshotWorkers({ threads: 1, warm: true });
  workers.start();
  const channel = new InProcessLink({ clone: options.cloneMessages ?? false });
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
  return assemble(router, host, channel, workers);
}

/** The service around a router, its shards and the channel between them; stopped in that order. */
function assemble(
  router: Router,
  host: LocalShardHost & { recover(): Promise<RecoverySummary>; close(): Promise<void> },
  channel: Link,
  workers: SnapshotWorkers,
): Shards {
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

/**
 * SHARD_THREADS > 1: the shards on their threads (src/threads/shard-worker.ts),
 * the router here. The piscina pool on this thread runs the audit; each
 * shard thread takes its snapshots from its own allocators.
 */
function startShardThreads(config: Config, pool: pg.Pool, log: Logger, options: ShardsOptions): Shards {
  const threads = newShardThreads(config, log, options, (sku) => router.stockState(sku));
  const router: Router = new Router(threads, { shardCount: config.shardCount, shardsReady: () => threads.isReady(), pool });
  const workers = new SnapshotWorkers({ threads: 1 });
  workers.start();
  // ShardThreads is both the shards and their channel (closing it twice is one close).
  return { ...assemble(router, threads, threads, workers), shardPorts: () => threads.openPorts() };
}

/**
 * The shard threads of this process, alone or on a cluster node (`clusterEpochs`: the node's lease's
 * shared epochs, src/cluster/shared-lease.ts), their commits reported to the metrics.
 */
export function newShardThreads(
  config: Config,
  log: Logger,
  options: ShardsOptions,
  stockState: (sku: string) => StockState | null,
  clusterEpochs?: SharedArrayBuffer,
): ShardThreads {
  const observer = options.outboxObserver;
  const threads = new ShardThreads(config, log, {
    databaseUrl: options.databaseUrl,
    onFatal: options.onFatal,
    clock: threadClock(options.nowMs),
    writeOrders: options.writeOrders !== null,
    ...(observer !== undefined && 'addTally' in observer ? { onTally: (tally) => observer.addTally(tally) } : {}),
    stockState,
    ...(clusterEpochs === undefined ? {} : { clusterEpochs }),
  });
  if (observer !== undefined && 'tallySource' in observer) observer.tallySource(() => threads.refresh());
  return threads;
}

/** A thread cannot call another thread's closure: only Date.now or a SharedClock (tests) reach the shard threads. */
function threadClock(nowMs: () => number): SharedArrayBuffer | null {
  if (nowMs === Date.now) return null;
  const buffer = sharedClockBuffer(nowMs);
  if (buffer === undefined) {
    throw new ConfigError('SHARD_THREADS > 1 cannot use an injected clock function: inject a SharedClock (src/threads/shared-clock.ts) or run SHARD_THREADS=1');
  }
  return buffer;
}
