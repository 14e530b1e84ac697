import type pg from 'pg';
import type { StockEvent } from '../allocator/types.js';
import type { Logger } from '../log.js';
import type { ShardNotice, ShardReply, ShardRequest } from '../shard/messages.js';
import { ShardHost, type ShardHostOptions } from '../shard/shard-host.js';
import { shardOf } from '../shard/placement.js';
import { fencedInsertQuery } from './sql.js';
import { FencedError, type LeaseView } from './lease.js';
import { OwnedShards, type OwnedShardsOptions } from './owned-shards.js';

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

export interface ClusterShardsOptions extends OwnedShardsOptions {
  /** Options of the node's host (`shards` and `shardCount` are set here). */
  hostOptions: Omit<ShardHostOptions, 'shards' | 'shardCount'>;
  notify: (notice: ShardNotice) => void;
}

export class ClusterShards extends OwnedShards {
  private readonly host: ShardHost;

  constructor(pool: pg.Pool, log: Logger, options: ClusterShardsOptions) {
    const hostOptions = options.hostOptions;
    let fence: ((events: readonly StockEvent[]) => ReturnType<LeaseView['proof']>) | undefined;
    const host = new ShardHost(
      pool,
      log,
      {
        ...hostOptions,
        shards: [],
        shardCount: options.shardCount,
        // Every group commit proves, in its own statement, the epochs of the shards its events belong to.
        outbox: { ...hostOptions.outbox, fenceInsert: (insert, events) => fencedInsertQuery(insert, fence!(events)) },
      },
      options.notify,
    );
    super(log, options, host);
    this.host = host;
    fence = (events) => this.proof(events);
  }

  /** The fencing token of a batch; throws FencedError (nothing is sent) when one of its shards is not ours at its epoch. */
  private proof(events: readonly StockEvent[]) {
    const lease = this.owned.lease();
    if (lease === null) throw new FencedError('no live lease: this node owns no shard');
    const shards = new Set<number>();
    for (const event of events) shards.add(shardOf(event.sku, this.owned.shardCount));
    for (const shard of shards) {
      const epoch = this.epochs.get(shard);
      if (epoch === undefined || lease.epochOf(shard) !== epoch) {
        throw new FencedError(`shard ${shard}${epoch === undefined ? '' : ` at epoch ${epoch}`} is no longer ours`);
      }
    }
    return lease.proof(shards);
  }

  /** In this thread: the routing table reaches it through its own in-process link. */
  linkOf(): null {
    return null;
  }

  protected load(shard: number): Promise<void> {
    return this.host.addShard(shard);
  }

  protected unload(shard: number): Promise<void> {
    return this.host.removeShard(shard);
  }

  protected forget(shards: number[], reason: Error): void {
    for (const shard of shards) {
      this.host.removeShard(shard).catch((err: unknown) => this.log.error({ err, shard }, 'removing a dropped shard failed'));
    }
    this.log.error({ err: reason, shards }, 'lease lost: dropped every shard');
  }

  protected serve<R extends ShardRequest>(shard: number, request: R): Promise<ShardReply<R['type']>> {
    return this.host.handle(shard, request);
  }

  protected end(): Promise<void> {
    return this.host.close();
  }
}
