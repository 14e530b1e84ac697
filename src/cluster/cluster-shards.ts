import type pg from 'pg';
import type { StockEvent } from '../allocator/types.js';
import type { StockState } from '../inventory/inventory.js';
import type { Logger } from '../log.js';
import type { OutboxStats } from '../outbox/outbox.js';
import type { Link } from '../road/link.js';
import type { ShardStats } from '../shard/shard.js';
import type { WaitlistTotals } from '../metrics/waitlist-metrics.js';
import type { ShardEndpoint, ShardNotice, ShardReply, ShardRequest } from '../shard/messages.js';
import { ShardHost, type ShardHostOptions } from '../shard/shard-host.js';
import { shardOf } from '../shard/placement.js';
import { fencedInsertQuery } from './sql.js';
import { FencedError, type LeaseView } from './lease.js';
import type { ShardHost as OwnershipHost } from './membership.js';

/**
 * The shards this node owns right now, opened and closed as membership takes
 * and hands over leases. They all live in one ShardHost (src/shard), as in
 * single-process mode, so one outbox (one group commit) spans every shard the
 * node owns and batches stay large when load spreads over many SKUs.
 *
 * Fencing with one outbox: every group commit proves, in its own statement,
 * that this node holds the current epoch of every shard with events in that
 * batch (the shards come from the events' SKUs). A batch holding an event of a
 * shard this node no longer holds at the epoch it opened it with is refused
 * whole, before it is sent or by Postgres (FS001): nothing of it commits,
 * nothing is acknowledged, and its SKUs still here are rebuilt from the log.
 *
 * A shard is opened (host.addShard: snapshot + tail) only after its epoch was
 * bumped, and drained (host.removeShard: 503 for new work, then everything it
 * decided committed or failed) before membership releases its lease, so a
 * handed-over shard never leaves an event behind in a shared batch.
 */

/**
 * The shards a cluster node owns, as its membership, routing table and
 * metrics see them: in this thread (ClusterShards) or on its shard threads
 * (cluster-shard-threads.ts).
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

export interface ClusterShardsOptions {
  shardCount: number;
  /** Options of the node's host (`shards` and `shardCount` are set here). */
  hostOptions: Omit<ShardHostOptions, 'shards' | 'shardCount'>;
  /** The current lease (null: none, or lost): the node's Lease, or a shard thread's SharedLease. */
  lease: () => LeaseView | null;
  notify: (notice: ShardNotice) => void;
  /** The shards served changed (the routing table follows: src/cluster/routes.ts). */
  onServing?: () => void;
}

export class ClusterShards implements NodeShards {
  private readonly host: ShardHost;
  /** Epoch each shard was opened at, from the take until it is drained or dropped: what its commits prove. */
  private readonly epochs = new Map<number, number>();
  /** Shards recovered and answering; the others in `epochs` are being opened (503 until then) or drained. */
  private readonly serving = new Set<number>();

  constructor(
    pool: pg.Pool,
    private readonly log: Logger,
    private readonly options: ClusterShardsOptions,
  ) {
    const hostOptions = options.hostOptions;
    this.host = new ShardHost(
      pool,
      log,
      {
        ...hostOptions,
        shards: [],
        shardCount: options.shardCount,
        // Every group commit proves, in its own statement, the epochs of the shards its events belong to.
        outbox: { ...hostOptions.outbox, fenceInsert: (insert, events) => fencedInsertQuery(insert, this.proof(events)) },
      },
      options.notify,
    );
  }

  /** The fencing token of a batch; throws FencedError (nothing is sent) when one of its shards is not ours at its epoch. */
  private proof(events: readonly StockEvent[]) {
    const lease = this.options.lease();
    if (lease === null) throw new FencedError('no live lease: this node owns no shard');
    const shards = new Set<number>();
    for (const event of events) shards.add(shardOf(event.sku, this.options.shardCount));
    for (const shard of shards) {
      const epoch = this.epochs.get(shard);
      if (epoch === undefined || lease.epochOf(shard) !== epoch) {
        throw new FencedError(`shard ${shard}${epoch === undefined ? '' : ` at epoch ${epoch}`} is no longer ours`);
      }
    }
    return lease.proof(shards);
  }

  serves(shard: number): boolean {
    return this.serving.has(shard);
  }

  shards(): number[] {
    return [...this.serving].sort((a, b) => a - b);
  }

  /** In this thread: the routing table reaches it through its own in-process link. */
  linkOf(): null {
    return null;
  }

  async open(shard: number, epoch: number): Promise<void> {
    if (this.epochs.has(shard)) throw new Error(`shard ${shard} is already open`);
    this.epochs.set(shard, epoch);
    try {
      // Recovery's own commits (holds that expired while nobody owned the shard) prove this epoch too.
      await this.host.addShard(shard);
    } catch (error) {
      if (this.epochs.get(shard) === epoch) this.epochs.delete(shard);
      throw error;
    }
    if (this.epochs.get(shard) !== epoch || this.options.lease()?.epochOf(shard) !== epoch) {
      // The lease was lost while it recovered (dropAll ran): serve nothing of it.
      await this.host.removeShard(shard);
      if (this.epochs.get(shard) === epoch) this.epochs.delete(shard);
      throw new FencedError(`shard ${shard} at epoch ${epoch} was lost while it was opened`);
    }
    this.serving.add(shard);
    this.options.onServing?.();
  }

  /** Refuse new work for the shard, commit what it decided (its epoch still proven), forget it. */
  async drain(shard: number): Promise<void> {
    const epoch = this.epochs.get(shard);
    if (epoch === undefined) return;
    this.serving.delete(shard);
    this.options.onServing?.();
    await this.host.removeShard(shard);
    if (this.epochs.get(shard) === epoch) this.epochs.delete(shard);
  }

  dropAll(reason: Error): void {
    const shards = [...this.epochs.keys()].sort((a, b) => a - b);
    // Forgotten first: commits still queued for them fail their proof, so nothing more is acknowledged.
    this.epochs.clear();
    this.serving.clear();
    this.options.onServing?.();
    for (const shard of shards) {
      this.host.removeShard(shard).catch((err: unknown) => this.log.error({ err, shard }, 'removing a dropped shard failed'));
    }
    this.log.error({ err: reason, shards }, 'lease lost: dropped every shard');
  }

  handle<R extends ShardRequest>(shard: number, request: R): Promise<ShardReply<R['type']>> {
    if (!this.serving.has(shard)) {
      const detail = this.epochs.has(shard) ? `shard ${shard} is being taken over or handed over; retry shortly` : `shard ${shard} is not owned by this node`;
      return Promise.resolve({ ok: false, code: 'unavailable', detail } as ShardReply<R['type']>);
    }
    return this.host.handle(shard, request);
  }

  get outboxStats(): OutboxStats {
    return this.host.outboxStats;
  }

  get stats(): ShardHost['stats'] {
    return this.host.stats;
  }

  get pendingEvents(): number {
    return this.host.pendingEvents;
  }

  get allocatorCount(): number {
    return this.host.allocatorCount;
  }

  get reservationsInMemory(): number {
    return this.host.reservationsInMemory;
  }

  get liveHolds(): number {
    return this.host.liveHolds;
  }

  get queueTickets(): { waiting: number; admitted: number } {
    return this.host.queueTickets;
  }

  get waitlist(): WaitlistTotals {
    return this.host.waitlist;
  }

  stockState(sku: string): StockState | null {
    return this.serving.has(shardOf(sku, this.options.shardCount)) ? this.host.stockState(sku) : null;
  }

  settled(): Promise<void> {
    return this.host.settled();
  }

  /** Drain every shard still here (membership has normally handed them over already), then stop the host. */
  async close(): Promise<void> {
    for (const shard of [...this.epochs.keys()]) await this.drain(shard);
    await this.host.close();
  }
}
