import type pg from 'pg';
import type { StockState } from '../inventory/inventory.js';
import type { Logger } from '../log.js';
import type { OutboxStats } from '../outbox/outbox.js';
import type { ShardEndpoint, ShardNotice, ShardReply, ShardRequest } from '../shard/messages.js';
import { ShardHost, type ShardHostOptions } from '../shard/shard-host.js';
import { shardOf } from '../shard/placement.js';
import { fencedInsertQuery } from './sql.js';
import { FencedError, type Lease } from './lease.js';
import type { ShardHost as OwnershipHost } from './membership.js';

/**
 * The shards this node owns right now, opened and closed as membership takes
 * and hands over leases. Each owned shard is one ShardHost (the lead's, from
 * src/shard) of that single shard, recovered from the log (snapshot + tail)
 * after its epoch was bumped, committing through a pool that proves that epoch
 * in every group commit.
 *
 * One ShardHost per shard means one outbox per shard: batches no longer span a
 * node's shards. That costs commits under load spread over many shards; a
 * ShardHost that adds and removes shards at run time (asked of src/shard)
 * would let one outbox serve them all again.
 */

export interface ClusterShardsOptions {
  shardCount: number;
  /** Options of a one-shard host (`shards` and `shardCount` are set here). */
  hostOptions: Omit<ShardHostOptions, 'shards' | 'shardCount'>;
  /** The current lease (null: none, or lost). */
  lease: () => Lease | null;
  notify: (notice: ShardNotice) => void;
}

interface Owned {
  host: ShardHost;
  epoch: number;
}

export class ClusterShards implements OwnershipHost, ShardEndpoint {
  private readonly owned = new Map<number, Owned>();
  /** Shards being opened (recovering): their requests get 503 until then. */
  private readonly opening = new Set<number>();

  constructor(
    private readonly pool: pg.Pool,
    private readonly log: Logger,
    private readonly options: ClusterShardsOptions,
  ) {}

  serves(shard: number): boolean {
    return this.owned.has(shard);
  }

  shards(): number[] {
    return [...this.owned.keys()].sort((a, b) => a - b);
  }

  async open(shard: number, epoch: number): Promise<void> {
    if (this.owned.has(shard) || this.opening.has(shard)) throw new Error(`shard ${shard} is already open`);
    this.opening.add(shard);
    try {
      const proof = () => {
        const lease = this.options.lease();
        if (lease === null || lease.epochOf(shard) !== epoch) throw new FencedError(`shard ${shard} at epoch ${epoch} is no longer ours`);
        return lease.proof([shard]);
      };
      const hostOptions = this.options.hostOptions;
      const host = new ShardHost(
        this.pool,
        this.log.child({ shard, epoch }),
        {
          ...hostOptions,
          shards: [shard],
          shardCount: this.options.shardCount,
          // Every group commit proves, in its own statement, that this node still holds the shard's epoch.
          outbox: { ...hostOptions.outbox, fenceInsert: (insert) => fencedInsertQuery(insert, proof()) },
        },
        this.options.notify,
      );
      await host.recover();
      this.owned.set(shard, { host, epoch });
    } finally {
      this.opening.delete(shard);
    }
  }

  /** Refuse new work for the shard, commit what it decided, forget it. */
  async drain(shard: number): Promise<void> {
    const owned = this.owned.get(shard);
    if (owned === undefined) return;
    this.owned.delete(shard);
    await owned.host.close();
  }

  dropAll(reason: Error): void {
    const shards = this.shards();
    for (const shard of shards) {
      const { host } = this.owned.get(shard)!;
      this.owned.delete(shard);
      // Commits still queued fail their proof (the lease is gone): nothing more is acknowledged.
      host.close().catch((err: unknown) => this.log.error({ err, shard }, 'closing a dropped shard failed'));
    }
    this.log.error({ err: reason, shards }, 'lease lost: dropped every shard');
  }

  handle<R extends ShardRequest>(shard: number, request: R): Promise<ShardReply<R['type']>> {
    const owned = this.owned.get(shard);
    if (owned === undefined) {
      const detail = this.opening.has(shard) ? `shard ${shard} is being taken over; retry shortly` : `shard ${shard} is not owned by this node`;
      return Promise.resolve({ ok: false, code: 'unavailable', detail } as ShardReply<R['type']>);
    }
    return owned.host.handle(shard, request);
  }

  /** Counters of the owned shards' hosts, summed (the same members a single ShardHost has). */
  get outboxStats(): OutboxStats {
    const hosts = this.hosts();
    const total = sumCounters(hosts.map((host) => host.outboxStats as unknown as Record<string, number>)) as unknown as OutboxStats;
    total.lastBatchEvents = Math.max(0, ...hosts.map((host) => host.outboxStats.lastBatchEvents));
    total.maxBatchEvents = Math.max(0, ...hosts.map((host) => host.outboxStats.maxBatchEvents));
    return total;
  }

  get stats(): ShardHost['stats'] {
    return sumCounters(this.hosts().map((host) => host.stats as unknown as Record<string, number>)) as unknown as ShardHost['stats'];
  }

  get pendingEvents(): number {
    return this.hosts().reduce((n, host) => n + host.pendingEvents, 0);
  }

  get allocatorCount(): number {
    return this.hosts().reduce((n, host) => n + host.allocatorCount, 0);
  }

  get reservationsInMemory(): number {
    return this.hosts().reduce((n, host) => n + host.reservationsInMemory, 0);
  }

  get liveHolds(): number {
    return this.hosts().reduce((n, host) => n + host.liveHolds, 0);
  }

  private hosts(): ShardHost[] {
    return [...this.owned.values()].map((owned) => owned.host);
  }

  stockState(sku: string): StockState | null {
    return this.owned.get(shardOf(sku, this.options.shardCount))?.host.stockState(sku) ?? null;
  }

  async settled(): Promise<void> {
    await Promise.all([...this.owned.values()].map((owned) => owned.host.settled()));
  }

  async close(): Promise<void> {
    for (const shard of this.shards()) await this.drain(shard);
  }
}

function sumCounters(all: Record<string, number>[]): Record<string, number> {
  const total: Record<string, number> = {};
  for (const counters of all) for (const [key, value] of Object.entries(counters)) total[key] = (total[key] ?? 0) + value;
  return total;
}
