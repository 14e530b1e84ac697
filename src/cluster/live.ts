import type { Logger } from '../log.js';
import type { ShardNotice } from '../shard/messages.js';
import { shardOf } from '../shard/placement.js';
import type { Following, Note, PeerNotice, TravellingNotice } from '../shard/protocol.js';
import type { ClusterSnapshot } from './membership.js';
import type { ForwardPool } from './transport.js';
import { Followers } from '../road/followers.js';

/**
 * Live stock across a cluster without Redis: each node pushes the stock
 * notices of the shards it owns to the other live nodes that follow the SKU
 * (a socket there subscribed to it) over the cluster connection (a `note`
 * frame, transport.ts), and feeds the notices it receives to its own Router as
 * if its shards had sent them, so its live feed (src/ws) sees the SKUs its
 * sockets follow. With REDIS_URL set, Redis carries stock between nodes
 * (src/ws/fanout.ts) and nothing is pushed here: one path, no double delivery.
 *
 * Following: a node tells every live peer when the first of its sockets
 * follows a SKU and when the last one lets it go (`on` / `off` notes), and
 * when its connection to a peer opens it sends `reset` and its whole list (the
 * peer may have restarted). Why not every change to every node: the cost per
 * reservation would grow with the number of nodes, watched or not. A peer that
 * never said what it follows (a version before following) gets every notice.
 * The owner pushes its latest notice of a SKU when a peer starts following it:
 * the counts that peer asked for (get_stock) may predate a change made before
 * its `on` arrived.
 *
 * 'stock' and 'passivated' travel, and 'waitlist_offer' (toward the
 * shopper's streams, on whichever node they are open; with Redis too);
 * 'checkout_durable' wakes the owner's own payment workers and stays home.
 *
 * Ordering: one owner's notices reach a peer in order (one connection; while
 * it is backpressured only the latest per SKU waits). Across an ownership move
 * the shard's epoch orders them: every notice carries the epoch under which its
 * sender held the shard, and a node drops a notice older than the epoch it has
 * already delivered for that SKU, than the shard's epoch in its membership view,
 * or than its own lease's epoch for the shard. `seq` alone could not do it: a
 * correction after a failed commit (or a new owner recovering from the log)
 * may carry a lower seq than an optimistic state sent before it, and is newer.
 *
 * A peer that joins, restarts or loses its connection missed notices: when a
 * connection to it opens, it gets the latest notice of every SKU this node owns.
 */

export interface ClusterLiveOptions {
  /** False with REDIS_URL set: Redis carries stock between nodes, this connection does not. */
  push: boolean;
  shardCount: number;
  snapshot: () => ClusterSnapshot;
  pool: ForwardPool;
  /** This node's lease epoch of a shard (undefined: not held). */
  epochOf: (shard: number) => number | undefined;
  /** To this node's notice listeners (ClusterChannel.deliver). */
  deliver: (notice: ShardNotice) => void;
  /** How often peers are reconciled with the membership view (connect to new ones, forget dead ones). */
  peerSyncMs: number;
  /** Most SKUs whose epoch (and own latest notice) is remembered, oldest forgotten first; also the most a peer's follow list holds (past it, it gets every notice). */
  maxTrackedSkus: number;
  log: Logger;
}

export interface ClusterLiveStats {
  /** Peers' notices delivered here. */
  received: number;
  /** Peers' notices dropped as older than what this node has. */
  stale: number;
}

export function skuOfNotice(notice: TravellingNotice): string {
  if (notice.type === 'waitlist_offer') return notice.view.sku;
  return notice.type === 'stock' ? notice.state.sku : notice.sku;
}

/** A Map that forgets its oldest entries past `max` (a set refreshes an entry's age). */
class BoundedMap<V> extends Map<string, V> {
  constructor(private readonly max: number) {
    super();
  }

  override set(key: string, value: V): this {
    super.delete(key);
    super.set(key, value);
    if (this.size > this.max) {
      const oldest = this.keys().next().value;
      if (oldest !== undefined) super.delete(oldest);
    }
    return this;
  }
}

interface Peer {
  nodeId: string;
  url: string;
}

/** The key of a following note in a peer's queue (a SKU's on and off replace each other; never a SKU's own key). */
function followKey(sku: string | null): string {
  return sku === null ? '\u0000follow' : `\u0000follow ${sku}`;
}

export class ClusterLive {
  /** Per SKU, the epoch of the last notice delivered here (own or a peer's). */
  private readonly epochs: BoundedMap<number>;
  /** Latest notice per SKU of the shards this node owns: what a peer gets when a connection to it opens. */
  private readonly mine: BoundedMap<PeerNotice>;
  private peersOf: { view: ClusterSnapshot; peers: Peer[] } | null = null;
  /** SKUs this node's sockets follow: how many front ends (threads) follow each. */
  private readonly following = new Followers((sku, following) => this.tellPeers(sku, following));
  /** Per peer node, the SKUs it follows, as it said; absent: it never said (it gets every notice); `all`: past maxTrackedSkus. */
  private readonly followedBy = new Map<string, Set<string> | 'all'>();
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  readonly stats: ClusterLiveStats = { received: 0, stale: 0 };

  constructor(private readonly options: ClusterLiveOptions) {
    this.epochs = new BoundedMap(options.maxTrackedSkus);
    this.mine = new BoundedMap(options.maxTrackedSkus);
  }

  /** Once membership has a view: connect to the live peers now and keep following the view. */
  start(): void {
    if (!this.options.push || this.closed) return;
    this.syncPeers();
    this.timer = setInterval(() => this.syncPeers(), this.options.peerSyncMs);
    this.timer.unref();
  }

  /** A notice of this node's own shards (already delivered here): remember it and push it to every live peer. */
  local(notice: TravellingNotice): void {
    const sku = skuOfNotice(notice);
    const epoch = this.options.epochOf(shardOf(sku, this.options.shardCount));
    // Not held by lease (lost, or handed over): whatever the host still says is not ours to tell.
    if (epoch === undefined) return;
    this.epochs.set(sku, epoch);
    if (this.closed) return;
    if (notice.type === 'waitlist_offer') {
      this.offer(epoch, notice);
      return;
    }
    if (!this.options.push) return;
    const pushed: PeerNotice = { e: epoch, n: notice };
    this.mine.set(sku, pushed);
    const peers = this.peers();
    // Indexed: once per durable change of a SKU, where an iterator's garbage adds up.
    for (let i = 0; i < peers.length; i++) {
      const peer = peers[i]!;
      if (this.follows(peer.nodeId, sku)) this.options.pool.client(peer.url).push(sku, pushed);
    }
  }

  /** A front end here: its first socket follows `sku` (true), or its last one let it go (false). Peers are told when the node's first comes and last goes. */
  follow(sku: string, following: boolean): void {
    if (following) this.following.add(sku);
    else this.following.remove(sku);
  }

  private tellPeers(sku: string, following: boolean): void {
    if (!this.options.push || this.closed) return;
    const note: Note = { f: following ? 'on' : 'off', sku };
    for (const peer of this.peers()) this.options.pool.client(peer.url).push(followKey(sku), note);
  }

  /** Whether a peer follows `sku` (one that never said gets everything). */
  private follows(nodeId: string, sku: string): boolean {
    const followed = this.followedBy.get(nodeId);
    return followed === undefined || followed === 'all' || followed.has(sku);
  }

  /**
   * An offer goes to every live peer, Redis or not (Redis carries stock
   * only): its shopper's streams may be open on any node. Keyed by its entry,
   * so it never replaces another offer or the SKU's stock while it waits, and
   * not resent when a connection opens: the entry's GET is the truth.
   */
  private offer(epoch: number, notice: Extract<TravellingNotice, { type: 'waitlist_offer' }>): void {
    const pushed: PeerNotice = { e: epoch, n: notice };
    for (const peer of this.peers()) this.options.pool.client(peer.url).push(`\u0000offer ${notice.view.waitlistId}`, pushed);
  }

  /** What a peer pushed (one frame, decoded by the endpoint: src/shard/protocol.ts): what it follows, and notices, delivered here unless older than what this node has. */
  received(peer: string, notes: Note[]): void {
    const view = this.options.snapshot();
    for (const pushed of notes) {
      if ('f' in pushed) {
        this.followedFrom(peer, pushed);
        continue;
      }
      const sku = skuOfNotice(pushed.n);
      const shard = shardOf(sku, this.options.shardCount);
      const newest = Math.max(this.epochs.get(sku) ?? 0, view.epochs[shard] ?? 0, this.options.epochOf(shard) ?? 0);
      if (pushed.e < newest) {
        this.stats.stale += 1;
        continue;
      }
      this.epochs.set(sku, pushed.e);
      this.stats.received += 1;
      this.options.deliver(pushed.n);
    }
  }

  /** A peer's `reset`, `on` or `off`; on `on`, the latest notice of the SKU if this node owns it. */
  private followedFrom(nodeId: string, note: Following): void {
    if (note.f === 'reset') {
      this.followedBy.set(nodeId, new Set());
      return;
    }
    let followed = this.followedBy.get(nodeId);
    if (followed === undefined) {
      followed = new Set();
      this.followedBy.set(nodeId, followed);
    }
    if (followed === 'all') return;
    if (note.f === 'off') {
      followed.delete(note.sku);
      return;
    }
    if (followed.size >= this.options.maxTrackedSkus) this.followedBy.set(nodeId, 'all');
    else followed.add(note.sku);
    const url = this.peers().find((peer) => peer.nodeId === nodeId)?.url;
    const pushed = this.mine.get(note.sku);
    if (url !== undefined && pushed !== undefined && this.isStillMine(note.sku, pushed)) this.options.pool.client(url).push(note.sku, pushed);
  }

  /**
   * A connection to a peer opened: it may have missed notes (joined,
   * restarted, link dropped), so it is told what this node follows, and sent
   * the latest notice of each SKU here that it follows.
   */
  resync(peerUrl: string): void {
    if (!this.options.push || this.closed) return;
    const client = this.options.pool.client(peerUrl);
    client.push(followKey(null), { f: 'reset' });
    for (const sku of this.following.skus()) client.push(followKey(sku), { f: 'on', sku });
    const nodeId = this.peers().find((peer) => peer.url === peerUrl)?.nodeId;
    for (const [sku, pushed] of this.mine) {
      if (!this.isStillMine(sku, pushed)) this.mine.delete(sku);
      else if (nodeId === undefined || this.follows(nodeId, sku)) client.push(sku, pushed);
    }
  }

  /** Whether this node still holds the SKU's shard under the notice's epoch (handed over since: the new owner tells its own). */
  private isStillMine(sku: string, pushed: PeerNotice): boolean {
    return this.options.epochOf(shardOf(sku, this.options.shardCount)) === pushed.e;
  }

  close(): void {
    this.closed = true;
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /** Connect to every live peer (a new one gets a resync on open); close connections to peers no longer alive. */
  private syncPeers(): void {
    const peers = this.peers();
    const alive = new Set(peers.map((peer) => peer.url));
    for (const url of alive) this.options.pool.client(url).connectNow();
    for (const url of this.options.pool.peers()) {
      if (alive.has(url)) continue;
      this.options.pool.forget(url);
      this.options.log.info({ peer: url }, 'peer no longer alive: closed its cluster connection');
    }
    // Only a node the view says is dead: one that joined a moment ago may have said what it follows before this view shows it.
    for (const node of this.options.snapshot().nodes) if (!node.alive) this.followedBy.delete(node.nodeId);
  }

  /** The other live nodes, recomputed when membership publishes a new view. */
  private peers(): Peer[] {
    const view = this.options.snapshot();
    if (this.peersOf?.view !== view) {
      const peers = view.nodes.filter((node) => node.alive && node.nodeId !== view.self).map(({ nodeId, url }) => ({ nodeId, url }));
      this.peersOf = { view, peers };
    }
    return this.peersOf.peers;
  }
}
