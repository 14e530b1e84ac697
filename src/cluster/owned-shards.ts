import type { StockState } from '../inventory/inventory.js';
import type { Logger } from '../log.js';
import type { WaitlistTotals } from '../metrics/waitlist-metrics.js';
import type { OutboxStats } from '../outbox/outbox.js';
import type { Link } from '../road/link.js';
import type { ShardEndpoint, ShardReply, ShardRequest } from '../shard/messages.js';
import { shardOf } from '../shard/placement.js';
import type { ShardStats } from '../shard/shard.js';
import { FencedError, type LeaseView } from './lease.js';
import type { ShardHost as OwnershipHost } from './membership.js';

/**
 * The shards a cluster node owns, as its membership, routing table and
 * metrics see them: in this thread (ClusterShards) or on its shard threads
 * (ClusterShardThreads).
 */
export interface NodeShards extends OwnershipHost, ShardEndpoint {
  serves(shard: number): boolean;
  shards(): number[];
  /** Where a shard this node serves is reached: its shard thread's link, or null when it is in this thread. */
  linkOf(shard: number): Link | null;
  readonly outboxStats: OutboxStats;
  readonly stats: ShardStats;
  readonly pendingEvents: number;
  readonly allocatorCount: number;
  readonly reservationsInMemory: number;
  readonly liveHolds: number;
  readonly queueTickets: { waiting: number; admitted: number };
  readonly waitlist: WaitlistTotals;
  stockState(sku: string): StockState | null;
  settled(): Promise<void>;
  close(): Promise<void>;
}

/** What holds a node's shards and counts them: its ShardHost in this thread, or its ShardThreads. */
export type ShardCounts = Pick<
  NodeShards,
  'outboxStats' | 'stats' | 'pendingEvents' | 'allocatorCount' | 'reservationsInMemory' | 'liveHolds' | 'queueTickets' | 'waitlist' | 'settled'
> & { stockState(sku: string): StockState | null };

export interface OwnedShardsOptions {
  shardCount: number;
  /** The current lease (null: none, or lost). */
  lease: () => LeaseView | null;
  /** The shards served changed (the routing table follows: src/cluster/routes.ts). */
  onServing?: () => void;
}

/**
 * Which shards a node owns and at which epoch, whatever holds them: a shard
 * is opened only after its epoch was bumped, serves once it has recovered
 * (503 before), and is drained (503 for new work, then everything it decided
 * committed or failed) before membership releases its lease. Subclasses say
 * where a shard is loaded, unloaded and served.
 */
export abstract class OwnedShards implements NodeShards {
  /** Epoch each shard was opened at, from the take until it is drained or dropped: what its commits prove. */
  protected readonly epochs = new Map<number, number>();
  /** Shards recovered and answering; the others in `epochs` are being opened (503 until then) or drained. */
  private readonly serving = new Set<number>();

  constructor(
    protected readonly log: Logger,
    protected readonly owned: OwnedShardsOptions,
    private readonly where: ShardCounts,
  ) {}

  /** Recover the shard where it lives (snapshot + tail); its recovery's commits prove the epoch just set. */
  protected abstract load(shard: number, epoch: number): Promise<void>;
  /** Commit what the shard decided (its epoch still proven), then forget it. */
  protected abstract unload(shard: number): Promise<void>;
  /** The lease is gone and `shards` are no longer ours: stop acknowledging anything of them, now. */
  protected abstract forget(shards: number[], reason: Error): void;
  /** A request for a shard this node serves. */
  protected abstract serve<R extends ShardRequest>(shard: number, request: R): Promise<ShardReply<R['type']>>;
  /** Everything is drained: end what holds the shards. */
  protected abstract end(): Promise<void>;
  abstract linkOf(shard: number): Link | null;

  serves(shard: number): boolean {
    return this.serving.has(shard);
  }

  shards(): number[] {
    return [...this.serving].sort((a, b) => a - b);
  }

  async open(shard: number, epoch: number): Promise<void> {
    if (this.epochs.has(shard)) throw new Error(`shard ${shard} is already open`);
    this.epochs.set(shard, epoch);
    try {
      await this.load(shard, epoch);
    } catch (error) {
      if (this.epochs.get(shard) === epoch) this.epochs.delete(shard);
      throw error;
    }
    if (this.epochs.get(shard) !== epoch || this.owned.lease()?.epochOf(shard) !== epoch) {
      // The lease was lost while it recovered (dropAll ran): serve nothing of it.
      await this.unload(shard);
      if (this.epochs.get(shard) === epoch) this.epochs.delete(shard);
      throw new FencedError(`shard ${shard} at epoch ${epoch} was lost while it was opened`);
    }
    this.serving.add(shard);
    this.owned.onServing?.();
  }

  /** Refuse new work for the shard, commit what it decided (its epoch still proven), forget it. */
  async drain(shard: number): Promise<void> {
    const epoch = this.epochs.get(shard);
    if (epoch === undefined) return;
    this.serving.delete(shard);
    this.owned.onServing?.();
    await this.unload(shard);
    if (this.epochs.get(shard) === epoch) this.epochs.delete(shard);
  }

  dropAll(reason: Error): void {
    const shards = [...this.epochs.keys()].sort((a, b) => a - b);
    // Forgotten first: commits still queued for them fail their proof, so nothing more is acknowledged.
    this.epochs.clear();
    this.serving.clear();
    this.owned.onServing?.();
    this.forget(shards, reason);
  }

  handle<R extends ShardRequest>(shard: number, request: R): Promise<ShardReply<R['type']>> {
    if (!this.serving.has(shard)) {
      const detail = this.epochs.has(shard) ? `shard ${shard} is being taken over or handed over; retry shortly` : `shard ${shard} is not owned by this node`;
      return Promise.resolve({ ok: false, code: 'unavailable', detail } as ShardReply<R['type']>);
    }
    return this.serve(shard, request);
  }

  get outboxStats(): OutboxStats {
    return this.where.outboxStats;
  }

  get stats(): ShardStats {
    return this.where.stats;
  }

  get pendingEvents(): number {
    return this.where.pendingEvents;
  }

  get allocatorCount(): number {
    return this.where.allocatorCount;
  }

  get reservationsInMemory(): number {
    return this.where.reservationsInMemory;
  }

  get liveHolds(): number {
    return this.where.liveHolds;
  }

  get queueTickets(): { waiting: number; admitted: number } {
    return this.where.queueTickets;
  }

  get waitlist(): WaitlistTotals {
    return this.where.waitlist;
  }

  /** Counts of a SKU this node serves. */
  stockState(sku: string): StockState | null {
    return this.serving.has(shardOf(sku, this.owned.shardCount)) ? this.where.stockState(sku) : null;
  }

  settled(): Promise<void> {
    return this.where.settled();
  }

  /** Drain every shard still here (membership has normally handed them over already), then end what held them. */
  async close(): Promise<void> {
    for (const shard of [...this.epochs.keys()]) await this.drain(shard);
    await this.end();
  }
}
