import type { StockState } from '../inventory/inventory.js';
import type { Logger } from '../log.js';
import type { WaitlistTotals } from '../metrics/waitlist-metrics.js';
import type { OutboxStats } from '../outbox/outbox.js';
import type { Link } from '../road/link.js';
import type { PortLink } from '../road/port-link.js';
import type { ShardNotice, ShardReply, ShardRequest } from '../shard/messages.js';
import type { ShardStats } from '../shard/shard.js';
import { shardOf } from '../shard/placement.js';
import type { ShardThreads } from '../threads/shard-threads.js';
import type { NodeShards } from './cluster-shards.js';
import { FencedError, type LeaseView } from './lease.js';

/**
 * A cluster node's shards on its shard threads (SHARD_THREADS > 1). The
 * lease and membership stay on the main thread: one node, one lease session.
 * When the node takes a shard, the thread that hosts it (shard mod
 * SHARD_THREADS) is told to open it at the epoch just taken; when it hands
 * one over, that thread drains it before membership releases the lease; when
 * the lease is lost, every thread forgets its shards.
 *
 * Fencing holds in the threads exactly as on the main thread: each thread's
 * ClusterShards proves every group commit against the lease's epochs, which
 * the lease keeps in shared memory (shared-lease.ts) and clears in the same
 * synchronous step as it learns of the loss. So no thread builds a proof, and
 * no thread acknowledges a new commit, once the lease is gone; a commit
 * already sent is refused by Postgres as soon as a taker bumps the epoch.
 */
export interface ClusterShardThreadsOptions {
  shardCount: number;
  /** The node's lease (null: none, or lost). */
  lease: () => LeaseView | null;
  /** This node's id (known once it listens: proofs name it). */
  nodeId: () => string;
  /** Notices of the shards on the threads (the routing table's listeners, and the other nodes). */
  notify: (notice: ShardNotice) => void;
  /** The shards served changed (the routing table follows: src/cluster/routes.ts). */
  onServing?: () => void;
}

export class ClusterShardThreads implements NodeShards {
  /** Epoch each shard was opened at, from the take until it is drained or dropped. */
  private readonly epochs = new Map<number, number>();
  /** Shards opened on their thread and answering. */
  private readonly serving = new Set<number>();
  /** One link per thread as the routing table holds it (notices reach the table through `notify`, not these). */
  private readonly links = new Map<PortLink, ThreadLink>();

  constructor(
    private readonly threads: ShardThreads,
    private readonly log: Logger,
    private readonly options: ClusterShardThreadsOptions,
  ) {
    threads.onNotice((notice) => options.notify(notice));
  }

  serves(shard: number): boolean {
    return this.serving.has(shard);
  }

  shards(): number[] {
    return [...this.serving].sort((a, b) => a - b);
  }

  linkOf(shard: number): Link {
    const port = this.threads.linkOf(shard);
    let link = this.links.get(port);
    if (link === undefined) {
      link = new ThreadLink(port);
      this.links.set(port, link);
    }
    return link;
  }

  async open(shard: number, epoch: number): Promise<void> {
    if (this.epochs.has(shard)) throw new Error(`shard ${shard} is already open`);
    this.epochs.set(shard, epoch);
    try {
      // The thread recovers it (snapshot + tail); its recovery commits prove this epoch too.
      await this.threads.callShard(shard, 'clusterOpen', [shard, epoch, this.options.nodeId()]);
    } catch (error) {
      if (this.epochs.get(shard) === epoch) this.epochs.delete(shard);
      throw error;
    }
    if (this.epochs.get(shard) !== epoch || this.options.lease()?.epochOf(shard) !== epoch) {
      // The lease was lost while the thread recovered it (dropAll ran): serve nothing of it.
      await this.threads.callShard(shard, 'clusterDrain', [shard]);
      if (this.epochs.get(shard) === epoch) this.epochs.delete(shard);
      throw new FencedError(`shard ${shard} at epoch ${epoch} was lost while it was opened`);
    }
    this.serving.add(shard);
    this.options.onServing?.();
  }

  /** No new work for the shard here, then its thread commits what it decided (its epoch still proven) and forgets it. */
  async drain(shard: number): Promise<void> {
    const epoch = this.epochs.get(shard);
    if (epoch === undefined) return;
    this.serving.delete(shard);
    this.options.onServing?.();
    await this.threads.callShard(shard, 'clusterDrain', [shard]);
    if (this.epochs.get(shard) === epoch) this.epochs.delete(shard);
  }

  /** The lease is gone (its shared epochs already cleared, so no thread proves anything more): route nothing here, tell the threads. */
  dropAll(reason: Error): void {
    const shards = [...this.epochs.keys()].sort((a, b) => a - b);
    this.epochs.clear();
    this.serving.clear();
    this.options.onServing?.();
    this.threads.dropAll(reason);
    this.log.error({ err: reason, shards }, 'lease lost: dropped every shard on every shard thread');
  }

  handle<R extends ShardRequest>(shard: number, request: R): Promise<ShardReply<R['type']>> {
    if (!this.serving.has(shard)) {
      const detail = this.epochs.has(shard) ? `shard ${shard} is being taken over or handed over; retry shortly` : `shard ${shard} is not owned by this node`;
      return Promise.resolve({ ok: false, code: 'unavailable', detail } as ShardReply<R['type']>);
    }
    return this.threads.request(shard, request);
  }

  get outboxStats(): OutboxStats {
    return this.threads.outboxStats;
  }

  get stats(): ShardStats {
    return this.threads.stats;
  }

  get pendingEvents(): number {
    return this.threads.pendingEvents;
  }

  get allocatorCount(): number {
    return this.threads.allocatorCount;
  }

  get reservationsInMemory(): number {
    return this.threads.reservationsInMemory;
  }

  get liveHolds(): number {
    return this.threads.liveHolds;
  }

  get queueTickets(): { waiting: number; admitted: number } {
    return this.threads.queueTickets;
  }

  get waitlist(): WaitlistTotals {
    return this.threads.waitlist;
  }

  /** Counts of a SKU this node serves, as its thread last pushed them. */
  stockState(sku: string): StockState | null {
    return this.serving.has(shardOf(sku, this.options.shardCount)) ? this.threads.stockState(sku) : null;
  }

  settled(): Promise<void> {
    return this.threads.settled();
  }

  /** Fetch the threads' counts now (the getters otherwise show their last report). */
  refresh(): Promise<void> {
    return this.threads.refresh();
  }

  /** Drain every shard still here (membership has normally handed them over already), then end the threads. */
  async close(): Promise<void> {
    for (const shard of [...this.epochs.keys()]) await this.drain(shard);
    await this.threads.close();
  }
}

/**
 * The routing table's link to a shard thread: its port. Notices are not
 * heard here: they reach the table once, through `notify` (so they also go
 * to the other nodes), whichever shards the table routes to the thread.
 */
class ThreadLink implements Link {
  constructor(private readonly port: PortLink) {}

  request<R extends ShardRequest>(shard: number, request: R): Promise<ShardReply<R['type']>> {
    return this.port.request(shard, request);
  }

  onNotice(): void {}

  /** The port is the threads' to close. */
  async close(): Promise<void> {}
}
