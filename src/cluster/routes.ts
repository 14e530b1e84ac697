import type { ShardNotice, ShardReply, ShardRequest } from '../shard/messages.js';
import { InProcessLink } from '../road/in-process-link.js';
import { unavailableReply, unknownOutcomeReply, type Link } from '../road/link.js';
import { RoutingTable } from '../road/routes.js';
import type { NodeShards } from './owned-shards.js';
import type { ClusterLive } from './live.js';
import type { ClusterSnapshot } from './membership.js';
import type { ForwardHandler, ForwardPool } from './transport.js';

/**
 * A cluster node's routing table, kept by membership: a shard this node
 * serves routes to where it lives in this process (its ClusterShards in this
 * thread through the in-process link, or its shard thread's port); a shard
 * another live node owns routes to that node's socket link; any other (moving,
 * owner dead and not yet taken) to the local link, which answers 503
 * `unavailable`: never a guess. The table is recomputed when membership's view
 * or the shards served change; nothing on the request path reads membership.
 */
export class ClusterRoutes {
  readonly table: RoutingTable;
  private readonly local = new InProcessLink();
  private readonly peers = new Map<string, PeerLink>();

  constructor(
    private readonly shards: NodeShards,
    private readonly snapshot: () => ClusterSnapshot,
    private readonly forwarder: ForwardPool,
    /** Other nodes' stock notices, and ours to them (live.ts); absent: this node's notices only. */
    private readonly live: ClusterLive | null = null,
  ) {
    this.local.connect(shards);
    this.table = new RoutingTable(snapshot().shardCount, (shard) => `shard ${shard} has no route`);
    this.refresh();
  }

  /** Routes every shard anew from the shards served and membership's latest view. */
  refresh(): void {
    const view = this.snapshot();
    for (let shard = 0; shard < view.shardCount; shard += 1) {
      const owner = view.owners[shard] ?? null;
      const served = this.shards.serves(shard);
      const remote = !served && owner !== null && owner.nodeId !== view.self;
      this.table.set(shard, remote ? this.peer(owner.url) : ((served ? this.shards.linkOf(shard) : null) ?? this.local));
    }
  }

  private peer(url: string): PeerLink {
    let link = this.peers.get(url);
    if (link === undefined) {
      link = new PeerLink(url, this.forwarder);
      this.peers.set(url, link);
    }
    return link;
  }

  /** Notices of this node's shards: to this node's listeners, and (stock, waitlist offers) to the other nodes through `live`. */
  notify(notice: ShardNotice): void {
    this.local.notify(notice);
    if (notice.type === 'stock' || notice.type === 'passivated' || notice.type === 'waitlist_offer') this.live?.local(notice);
  }

  /** Notices peers pushed (live.ts), to this node's listeners. */
  deliver(notice: ShardNotice): void {
    this.table.deliver(notice);
  }
}

/**
 * The link to another node: the socket transport (transport.ts's
 * ForwardClient, through the pool so a forgotten peer gets a new connection).
 * Its reply was decoded against this very request (src/shard/protocol.ts).
 * After a timeout or a dropped connection the command may have run on the
 * owner; the detail says so and a retry with the same Idempotency-Key returns
 * what it did.
 */
class PeerLink implements Link {
  constructor(
    private readonly url: string,
    private readonly forwarder: ForwardPool,
  ) {}

  async request<R extends ShardRequest>(shard: number, request: R): Promise<ShardReply<R['type']>> {
    const result = await this.forwarder.forward(this.url, shard, request);
    if (result.ok) return result.payload as ShardReply<R['type']>;
    return result.code === 'unknown_outcome' ? unknownOutcomeReply(result.detail) : unavailableReply(result.detail);
  }

  /** A peer's notices come through live.ts (they carry epochs), not through its link. */
  onNotice(): void {}

  async close(): Promise<void> {}
}

/**
 * What the cluster endpoint runs for a forwarded command: only shards this
 * node serves, through the routing table to where the shard lives in this
 * process (this thread or its shard thread); never forwarded again.
 */
export function serveForwarded(local: NodeShards, routes: ClusterRoutes): ForwardHandler {
  return async (shard, payload) => {
    const link = routes.table.linkOf(shard);
    if (!local.serves(shard) || link === null || link instanceof PeerLink) {
      return { ok: false, code: 'unavailable', detail: `shard ${shard} is not owned by this node (moving)` };
    }
    return { ok: true, payload: await link.request(shard, payload) };
  };
}
