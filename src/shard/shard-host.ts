import type pg from 'pg';
import type { Logger } from 'pino';
import { SkuAllocator } from '../allocator/allocator.js';
import type { AllocatorLimits } from '../allocator/types.js';
import type { OrderAttachment, StockState } from '../inventory/inventory.js';
import { Outbox, type AttachmentWriter, type BatchFailure, type OutboxOptions } from '../outbox/outbox.js';
import type { ShardEndpoint, ShardNotice, ShardReply, ShardRequest, ShardRequests, ShardRequestType } from './messages.js';
import { shardOf } from './placement.js';
import { Shard, type ShardContext, type ShardStats } from './shard.js';
import { latestSnapshotMarksQuery, skusInLogQuery } from './sql.js';

export interface ShardHostOptions {
  /** Shards this host serves (all of them in single-process mode). */
  shards: readonly number[];
  shardCount: number;
  limits: AllocatorLimits;
  outbox: OutboxOptions;
  expirySweepIntervalMs: number;
  rebuildRetryMs: number;
  idempotencyKeyTtlMs: number;
  /** The clock handed to the allocators (tests inject one); the allocators never read it themselves. */
  nowMs: () => number;
  /** Writes orders and their jobs in the same transaction as the events (payments). */
  writeOrders: AttachmentWriter<OrderAttachment> | null;
  /** A SKU's state from the log: latest snapshot + the events after it. */
  loadSku: (sku: string) => Promise<SkuAllocator | null>;
  /** Write a SKU's next snapshot from the durable log, off this thread. */
  snapshot: ShardContext['snapshot'];
  snapshotEveryEvents: number;
  passivateAfterMs: number;
  /** A broken invariant (in a rebuild, a commit callback): one fatal path. */
  onFatal: (error: unknown) => void;
}

/**
 * The shards of one thread, behind one outbox: group commit across all of a
 * thread's shards is what keeps batches large when load spreads over many
 * SKUs. The host answers requests addressed to its shards (ShardEndpoint),
 * runs the expiry sweeper, recovers its shards at start and routes a failed
 * batch to the shards whose SKUs it held.
 */
export class ShardHost implements ShardEndpoint {
  private readonly shards = new Map<number, Shard>();
  private readonly outbox: Outbox<OrderAttachment>;
  private sweepTimer: NodeJS.Timeout | null = null;
  private closing = false;
  readonly stats: ShardStats = { snapshotsWritten: 0, snapshotsFailed: 0, passivated: 0 };

  constructor(
    private readonly pool: pg.Pool,
    private readonly log: Logger,
    private readonly options: ShardHostOptions,
    notify: (notice: ShardNotice) => void,
  ) {
    this.outbox = new Outbox<OrderAttachment>(pool, options.outbox, log, (failure) => this.onBatchFailed(failure), options.writeOrders, options.onFatal);
    for (const id of options.shards) {
      this.shards.set(
        id,
        new Shard(id, {
          pool,
          log: log.child({ shard: id }),
          limits: options.limits,
          outbox: this.outbox,
          nowMs: options.nowMs,
          notify,
          loadSku: options.loadSku,
          rebuildRetryMs: options.rebuildRetryMs,
          idempotencyKeyTtlMs: options.idempotencyKeyTtlMs,
          snapshot: options.snapshot,
          snapshotEveryEvents: options.snapshotEveryEvents,
          passivateAfterMs: options.passivateAfterMs,
          stats: this.stats,
          onFatal: options.onFatal,
        }),
      );
    }
  }

  get outboxStats() {
    return this.outbox.stats;
  }

  get pendingEvents(): number {
    return this.outbox.pendingEvents;
  }

  get allocatorCount(): number {
    let count = 0;
    for (const shard of this.shards.values()) count += shard.allocatorCount;
    return count;
  }

  /** Reservations in memory (live, and settled ones not yet forgotten) over every SKU in memory. */
  get reservationsInMemory(): number {
    let count = 0;
    for (const shard of this.shards.values()) for (const allocator of shard.allAllocators()) count += allocator.reservations.size;
    return count;
  }

  /** Live holds (held or in checkout) over every SKU in memory. */
  get liveHolds(): number {
    let count = 0;
    for (const shard of this.shards.values()) for (const allocator of shard.allAllocators()) count += allocator.liveHolds;
    return count;
  }

  isReady(): boolean {
    if (this.closing) return false;
    for (const shard of this.shards.values()) if (!shard.isRecovered) return false;
    return true;
  }

  /** Load every SKU of these shards from the log, expire overdue holds, start the sweeper. */
  async recover(): Promise<void> {
    const started = Date.now();
    const { rows } = await this.pool.query<{ sku: string; last_seq: string }>(skusInLogQuery());
    const marks = await this.pool.query<{ sku: string; seq: string; passivated: boolean }>(latestSnapshotMarksQuery());
    // A sale that left memory with its latest snapshot, and has no event after it, stays out.
    const passivated = new Set(marks.rows.filter((m) => m.passivated).map((m) => `${m.sku}\u0000${m.seq}`));
    const byShard = new Map<number, string[]>();
    for (const { sku, last_seq } of rows) {
      if (passivated.has(`${sku}\u0000${last_seq}`)) continue;
      const shard = shardOf(sku, this.options.shardCount);
      if (!this.shards.has(shard)) continue;
      const list = byShard.get(shard);
      if (list === undefined) byShard.set(shard, [sku]);
      else list.push(sku);
    }
    let expired = 0;
    for (const [id, shard] of this.shards) expired += await shard.recover(byShard.get(id) ?? []);
    this.sweepTimer = setInterval(() => this.sweep(), this.options.expirySweepIntervalMs);
    this.log.info(
      { shards: this.shards.size, skus: this.allocatorCount, expiredAtRecovery: expired, ms: Date.now() - started },
      'shards recovered from the event log',
    );
  }

  private sweep(): void {
    const now = this.options.nowMs();
    for (const shard of this.shards.values()) shard.sweep(now);
  }

  private onBatchFailed(failure: BatchFailure): void {
    const byShard = new Map<Shard, string[]>();
    for (const sku of failure.skus) {
      const shard = this.shards.get(shardOf(sku, this.options.shardCount));
      if (shard === undefined) continue;
      const list = byShard.get(shard);
      if (list === undefined) byShard.set(shard, [sku]);
      else list.push(sku);
    }
    for (const [shard, skus] of byShard) shard.onBatchFailed(skus, failure);
  }

  handle<R extends ShardRequest>(shardId: number, request: R): Promise<ShardReply<R['type']>> {
    const shard = this.shards.get(shardId);
    if (shard === undefined) {
      return Promise.resolve({ ok: false, code: 'unavailable', detail: `shard ${shardId} is not served here` } as ShardReply<R['type']>);
    }
    if ('sku' in request && shardOf(request.sku, this.options.shardCount) !== shardId) {
      // A router with another SHARD_COUNT, or a bug: never let a SKU live in two shards.
      const detail = `SKU ${request.sku} does not belong to shard ${shardId}`;
      return Promise.resolve({ ok: false, code: 'unavailable', detail } as ShardReply<R['type']>);
    }
    return dispatch(shard, request) as Promise<ShardReply<R['type']>>;
  }

  /** Counts of a SKU served here (the audit compares them with the log). */
  stockState(sku: string): StockState | null {
    return this.shards.get(shardOf(sku, this.options.shardCount))?.stockState(sku) ?? null;
  }

  /** Resolves once everything decided so far is durable (or failed). */
  settled(): Promise<void> {
    return this.outbox.drained();
  }

  /** Stop taking work, commit what was decided, stop timers. */
  async close(): Promise<void> {
    this.closing = true;
    for (const shard of this.shards.values()) shard.close();
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    await this.outbox.drained();
  }
}

function dispatch(shard: Shard, request: ShardRequests[ShardRequestType]): Promise<ShardReply> {
  switch (request.type) {
    case 'reserve':
      return shard.reserve(request);
    case 'configure':
      return shard.configure(request);
    case 'get_sku':
      return shard.getSku(request);
    case 'get_reservation':
      return shard.getReservation(request);
    case 'release':
      return shard.release(request);
    case 'checkout':
      return shard.checkout(request);
    case 'settle':
      return shard.settle(request);
    case 'archive':
      return shard.archive(request);
    default: {
      const unknown: never = request;
      return Promise.resolve({ ok: false, code: 'unavailable', detail: `unknown request ${JSON.stringify(unknown)}` });
    }
  }
}
