import type { Logger } from '../log.js';
import type { ShardNotice } from '../shard/messages.js';
import { shardOf } from '../shard/placement.js';
import type { PeerNotice, TravellingNotice } from '../shard/protocol.js';
import type { ClusterSnapshot } from './membership.js';
import type { ForwardPool } from './transport.js';

/**
 * Live stock across a cluster without Redis: each node pushes the stock
 * notices of the shards it owns to every other live node over the cluster
 * connection (a `note` frame, transport.ts), and feeds the notices it receives
 * to its own Router as if its shards had sent them, so its live feed
 * (src/ws) and stock listeners see every SKU. With REDIS_URL set, Redis
 * carries stock between nodes (src/ws/fanout.ts) and nothing is pushed here:
 * one path, no double delivery.
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
  /** Most SKUs whose epoch (and own latest notice) is remembered; oldest forgotten first. */
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

export class ClusterLive {
  /** Per SKU, the epoch of the last notice delivered here (own or a peer's). */
  private readonly epochs: BoundedMap<number>;
  /** Latest notice per SKU of the shards this node owns: what a peer gets when a connection to it opens. */
  private readonly mine: BoundedMap<PeerNotice>;
  private peersOf: { view: ClusterSnapshot; urls: string[] } | null = null;
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
    const urls = this.peerUrls();
    // Indexed: once per durable change of a SKU, where an iterator's garbage adds up.
    for (let i = 0; i < urls.length; i++) this.options.pool.client(urls[i]!).push(sku, pushed);
  }

  /**
   * An offer goes to every live peer, Redis or not (Redis carries stock
   * only): its shopper's streams may be open on any node. Keyed by its entry,
   * so it never replaces another offer or the SKU's stock while it waits, and
   * not resent when a connection opens: the entry's GET is the truth.
   */
  private offer(epoch: number, notice: Extract<TravellingNotice, { type: 'waitlist_offer' }>): void {
    const pushed: PeerNotice = { e: epoch, n: notice };
    for (const url of this.peerUrls()) this.options.pool.client(url).push(`\u0000offer ${notice.view.waitlistId}`, pushed);
  }

  /** Notices a peer pushed (one frame, decoded by the endpoint: src/shard/protocol.ts): delivered here unless older than what this node has. */
  received(notices: PeerNotice[]): void {
    const view = this.options.snapshot();
    for (const pushed of notices) {
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

  /** A connection to a peer opened: it may have missed notices (joined, restarted, link dropped), so send the latest of each SKU. */
  resync(peerUrl: string): void {
    if (!this.options.push || this.closed) return;
    const client = this.options.pool.client(peerUrl);
    for (const [sku, pushed] of this.mine) {
      // Handed over since: the new owner tells its own.
      if (this.options.epochOf(shardOf(sku, this.options.shardCount)) !== pushed.e) this.mine.delete(sku);
      else client.push(sku, pushed);
    }
  }

  close(): void {
    this.closed = true;
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /** Connect to every live peer (a new one gets a resync on open); close connections to peers no longer alive. */
  private syncPeers(): void {
    const alive = new Set(this.peerUrls());
    for (const url of alive) this.options.pool.client(url).connectNow();
    for (const url of this.options.pool.peers()) {
      if (alive.has(url)) continue;
      this.options.pool.forget(url);
      this.options.log.info({ peer: url }, 'peer no longer alive: closed its cluster connection');
    }
  }

  /** URLs of the other live nodes, recomputed when membership publishes a new view. */
  private peerUrls(): string[] {
    const view = this.options.snapshot();
    if (this.peersOf?.view !== view) {
      const urls = view.nodes.filter((node) => node.alive && node.nodeId !== view.self).map((node) => node.url);
      this.peersOf = { view, urls };
    }
    return this.peersOf.urls;
  }
}
