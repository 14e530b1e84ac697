import type { QueueTicketCounts } from '../queue/view.js';
import { addWaitlistTotals, noWaitlistTotals, type WaitlistTotals } from '../metrics/waitlist-metrics.js';
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

/** What a recovery loaded. */
export interface RecoverySummary {
  shards: number;
  /** SKUs in memory after it. */
  skus: number;
  /** Events in the log behind their state (a SKU's seq: the ones its snapshot covers included). */
  events: number;
  /** Holds that ran out while the service was down, expired at once. */
  expiredAtRecovery: number;
}

/** The sum of several hosts' recoveries (shard threads). */
export function addRecoveries(summaries: readonly RecoverySummary[]): RecoverySummary {
  const total: RecoverySummary = { shards: 0, skus: 0, events: 0, expiredAtRecovery: 0 };
  for (const s of summaries) {
    total.shards += s.shards;
    total.skus += s.skus;
    total.events += s.events;
    total.expiredAtRecovery += s.expiredAtRecovery;
  }
  return total;
}

export interface ShardHostOptions {
  /**
   * Shards served from the start, loaded by recover() (all of them in
   * single-process mode); a cluster node starts with none and adds and removes
   * them as it takes and hands over their leases.
   */
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
  /** Many SKUs' states at once (a shard's recovery). */
  loadSkus: (skus: readonly string[]) => Promise<Map<string, SkuAllocator>>;
  snapshotEveryEvents: number;
  passivateAfterMs: number;
  /** A broken invariant (in a rebuild, a commit callback): one fatal path. */
  onFatal: (error: unknown) => void;
  /** A tentative cart line whose cart has not decided for this long is aborted by its shard. */
  cartDecisionTimeoutMs?: number;
}

/**
 * The shards of one thread (or of one cluster node), behind one outbox: group
 * commit across all of them is what keeps batches large when load spreads over
 * many SKUs. The host answers requests addressed to its shards (ShardEndpoint),
 * runs the expiry sweeper over whatever shards are present, recovers its
 * shards at start (recover) or one at a time at run time (addShard, and
 * removeShard to hand one over), and routes a failed batch to the shards whose
 * SKUs it held.
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
    private readonly notify: (notice: ShardNotice) => void,
  ) {
    this.outbox = new Outbox<OrderAttachment>(pool, options.outbox, log, (failure) => this.onBatchFailed(failure), options.writeOrders, options.onFatal);
    for (const id of options.shards) this.shards.set(id, this.newShard(id));
  }

  private newShard(id: number): Shard {
    const options = this.options;
    return new Shard(id, {
      pool: this.pool,
      log: this.log.child({ shard: id }),
      limits: options.limits,
      outbox: this.outbox,
      nowMs: options.nowMs,
      notify: this.notify,
      loadSku: options.loadSku,
      loadSkus: options.loadSkus,
      rebuildRetryMs: options.rebuildRetryMs,
      idempotencyKeyTtlMs: options.idempotencyKeyTtlMs,
      snapshotEveryEvents: options.snapshotEveryEvents,
      passivateAfterMs: options.passivateAfterMs,
      stats: this.stats,
      onFatal: options.onFatal,
      ...(options.cartDecisionTimeoutMs === undefined ? {} : { cartDecisionTimeoutMs: options.cartDecisionTimeoutMs }),
    });
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

  /** Waiting-room tickets over every SKU in memory, waiting and admitted now (metrics; O(SKUs · log tickets)). */
  get queueTickets(): QueueTicketCounts {
    const counts = { waiting: 0, admitted: 0 };
    const now = this.options.nowMs();
    for (const shard of this.shards.values()) {
      for (const allocator of shard.allAllocators()) {
        if (!allocator.config?.waitingRoom || allocator.queue.size === 0) continue;
        const admitted = allocator.queue.admittedBy(now, allocator.config);
        counts.admitted += admitted;
        counts.waiting += allocator.queue.size - admitted;
      }
    }
    return counts;
  }

  /** Waitlist counts over every SKU in memory. */
  get waitlist(): WaitlistTotals {
    let totals = noWaitlistTotals;
    for (const shard of this.shards.values()) {
      for (const { waitlist } of shard.allAllocators()) {
        if (waitlist.entries.size === 0 && waitlist.counters.offersMade === 0) continue;
        totals = addWaitlistTotals(totals, { waiting: waitlist.waitingCount, offered: waitlist.offeredCount, ...waitlist.counters });
      }
    }
    return totals;
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

  /**
   * Load every SKU of these shards from the log, expire overdue holds, start
   * the sweeper. The caller logs the summary (one line for the process, however
   * many shard threads recovered).
   */
  async recover(): Promise<RecoverySummary> {
    const byShard = await this.skusByShard(new Set(this.shards.keys()));
    let expired = 0;
    for (const [id, shard] of this.shards) expired += await shard.recover(byShard.get(id) ?? []);
    this.startSweeper();
    let events = 0;
    for (const shard of this.shards.values()) for (const allocator of shard.allAllocators()) events += allocator.seq;
    return { shards: this.shards.size, skus: this.allocatorCount, events, expiredAtRecovery: expired };
  }

  /**
   * Serve one more shard (a cluster node that took its lease): its SKUs are
   * loaded from the log (snapshot + tail, passivated sales left out) and its
   * overdue holds expired before it answers anything but 503. Its decisions
   * share the one outbox with every other shard here. Throws, serving nothing
   * of it, if the shard is removed meanwhile or recovery fails.
   */
  async addShard(id: number): Promise<void> {
    if (this.closing) throw new Error(`shard ${id}: the host is closing`);
    if (this.shards.has(id)) throw new Error(`shard ${id} is already served here`);
    const started = Date.now();
    const shard = this.newShard(id);
    // In the map at once, so its requests hear "still recovering" (503) and its recovery commits are routed back to it.
    this.shards.set(id, shard);
    try {
      const skus = (await this.skusByShard(new Set([id]))).get(id) ?? [];
      const expired = await shard.recover(skus);
      if (this.shards.get(id) !== shard) throw new Error(`shard ${id} was removed while it recovered`);
      this.startSweeper();
      this.log.info({ shard: id, skus: shard.allocatorCount, expiredAtRecovery: expired, ms: Date.now() - started }, 'shard added from the event log');
    } catch (error) {
      if (this.shards.get(id) === shard) await this.removeShard(id);
      throw error;
    }
  }

  /**
   * Stop serving a shard (a cluster node handing it over): new requests get
   * 503 at once; resolves once every decision it made before is committed or
   * failed, its outcome known, so the lease can be released with nothing of
   * it left to land. Other shards keep committing meanwhile.
   */
  async removeShard(id: number): Promise<void> {
    const shard = this.shards.get(id);
    if (shard === undefined) return;
    this.shards.delete(id);
    shard.close();
    await this.outbox.settledSoFar();
  }

  /** The SKUs in the log of `shards`, by shard, but sales that left memory with their latest snapshot. */
  private async skusByShard(shards: ReadonlySet<number>): Promise<Map<number, string[]>> {
    const { rows } = await this.pool.query<{ sku: string; last_seq: string }>(skusInLogQuery());
    const marks = await this.pool.query<{ sku: string; seq: string; passivated: boolean }>(latestSnapshotMarksQuery());
    // A sale that left memory with its latest snapshot, and has no event after it, stays out.
    const passivated = new Set(marks.rows.filter((m) => m.passivated).map((m) => `${m.sku}\u0000${m.seq}`));
    const byShard = new Map<number, string[]>();
    for (const { sku, last_seq } of rows) {
      if (passivated.has(`${sku}\u0000${last_seq}`)) continue;
      const shard = shardOf(sku, this.options.shardCount);
      if (!shards.has(shard)) continue;
      const list = byShard.get(shard);
      if (list === undefined) byShard.set(shard, [sku]);
      else list.push(sku);
    }
    return byShard;
  }

  /** One sweeper for whatever shards are here (started by the first recovery). */
  private startSweeper(): void {
    if (this.sweepTimer !== null || this.closing) return;
    this.sweepTimer = setInterval(() => this.sweep(), this.options.expirySweepIntervalMs);
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
    case 'get_stock':
      return shard.getStock(request);
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
    case 'cart_begin':
      return shard.carts.begin(request);
    case 'cart_decide':
      return shard.carts.decide(request);
    case 'cart_get':
      return shard.carts.get(request);
    case 'cart_prepare':
      return shard.carts.prepare(request);
    case 'cart_resolve':
      return shard.carts.resolve(request);
    case 'cart_freeze':
      return shard.carts.freeze(request);
    case 'queue_join':
      return shard.queueJoin(request);
    case 'queue_poll':
      return shard.queuePoll(request);
    case 'join_waitlist':
      return shard.joinWaitlist(request);
    case 'get_waitlist':
      return shard.getWaitlist(request);
    case 'leave_waitlist':
      return shard.leaveWaitlist(request);
    default: {
      const unknown: never = request;
      return Promise.resolve({ ok: false, code: 'unavailable', detail: `unknown request ${JSON.stringify(unknown)}` });
    }
  }
}
