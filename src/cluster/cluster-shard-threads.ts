import type { Logger } from '../log.js';
import { RequestsOnly, type Link } from '../road/link.js';
import type { PortLink, ShardPort } from '../road/port-link.js';
import type { ShardNotice, ShardReply, ShardRequest } from '../shard/messages.js';
import type { ShardThreads } from '../threads/shard-threads.js';
import { OwnedShards, type OwnedShardsOptions } from './owned-shards.js';

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
export interface ClusterShardThreadsOptions extends OwnedShardsOptions {
  /** This node's id (known once it listens: proofs name it). */
  nodeId: () => string;
  /** Notices of the shards on the threads (the routing table's listeners, and the other nodes). */
  notify: (notice: ShardNotice) => void;
}

export class ClusterShardThreads extends OwnedShards {
  /** One link per thread as the routing table holds it: notices reach the table once, through `notify` (which also tells the other nodes), not through these. */
  private readonly links = new Map<PortLink, RequestsOnly>();

  constructor(
    private readonly threads: ShardThreads,
    log: Logger,
    private readonly options: ClusterShardThreadsOptions,
  ) {
    super(log, options, threads);
    threads.onNotice((notice) => options.notify(notice));
  }

  linkOf(shard: number): Link {
    const port = this.threads.linkOf(shard);
    let link = this.links.get(port);
    if (link === undefined) {
      link = new RequestsOnly(port);
      this.links.set(port, link);
    }
    return link;
  }

  /** Ports to every shard thread for one front-end thread: requests only (notices reach it through the node's channel). */
  openPorts(): ShardPort[] {
    return this.threads.openPorts(false);
  }

  /** The thread recovers it (snapshot + tail); its recovery commits prove this epoch too. */
  protected async load(shard: number, epoch: number): Promise<void> {
    await this.threads.callShard(shard, 'clusterOpen', [shard, epoch, this.options.nodeId()]);
  }

  /** No new work for the shard here, then its thread commits what it decided (its epoch still proven) and forgets it. */
  protected async unload(shard: number): Promise<void> {
    await this.threads.callShard(shard, 'clusterDrain', [shard]);
  }

  /** The lease's shared epochs are already cleared, so no thread proves anything more: tell the threads. */
  protected forget(shards: number[], reason: Error): void {
    this.threads.dropAll(reason);
    this.log.error({ err: reason, shards }, 'lease lost: dropped every shard on every shard thread');
  }

  protected serve<R extends ShardRequest>(shard: number, request: R): Promise<ShardReply<R['type']>> {
    return this.threads.request(shard, request);
  }

  protected end(): Promise<void> {
    return this.threads.close();
  }

  /** Fetch the threads' counts now (the getters otherwise show their last report). */
  refresh(): Promise<void> {
    return this.threads.refresh();
  }
}
