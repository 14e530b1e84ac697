import type { ShardNotice, ShardReply, ShardRequest } from '../shard/messages.js';
import type { ShardPort } from './port-link.js';
import { unavailableReply, type Link } from './link.js';
import { Listeners } from './listeners.js';

/**
 * The one routing table: shard → the link that reaches it. Thread placement
 * fills it once (each shard thread's port); cluster membership updates it as
 * shards move (this node's shards, or the owner's socket). A shard with no
 * link is answered `unavailable`. Notices of every link in the table reach
 * the table's listeners.
 */
export class RoutingTable implements Link {
  private readonly links: (Link | null)[];
  private readonly heard = new Set<Link>();
  private readonly listeners = new Listeners<ShardNotice>();
  private closed = false;

  constructor(
    shardCount: number,
    /** What a request for a shard with no link is told. */
    private readonly noLink: (shard: number) => string,
  ) {
    this.links = new Array<Link | null>(shardCount).fill(null);
  }

  /** Routes `shard` to `link` from now on (null: to nowhere). */
  set(shard: number, link: Link | null): void {
    this.links[shard] = link;
    if (link !== null && !this.heard.has(link)) {
      this.heard.add(link);
      link.onNotice((notice) => this.listeners.emit(notice));
    }
  }

  linkOf(shard: number): Link | null {
    return this.links[shard] ?? null;
  }

  /** Every distinct link in the table. */
  distinct(): Link[] {
    return [...new Set(this.links.filter((link): link is Link => link !== null))];
  }

  request<R extends ShardRequest>(shard: number, request: R): Promise<ShardReply<R['type']>> {
    if (this.closed) return Promise.resolve(unavailableReply('shutting down'));
    const link = this.links[shard] ?? null;
    if (link === null) return Promise.resolve(unavailableReply(this.noLink(shard)));
    return link.request(shard, request);
  }

  /** A notice that did not come through a link of the table (a peer's, pushed to this node). */
  deliver(notice: ShardNotice): void {
    this.listeners.emit(notice);
  }

  onNotice(listener: (notice: ShardNotice) => void): void {
    this.listeners.add(listener);
  }

  /** Stops routing; the links are their owners' to close. */
  async close(): Promise<void> {
    this.closed = true;
  }
}

/**
 * A cluster node's shard threads as its front-end threads reach them: a port
 * to each for requests (notices come through the node's channel, which also
 * hears the other nodes'), and which shards the node serves — straight to
 * their thread, where every other shard goes through the main thread (the
 * cluster channel: forwarded to its owner, or refused while it moves).
 */
export interface DirectShardRoutes {
  /** Ports to every shard thread for one front-end thread, each with the shards that thread may host. */
  ports(): ShardPort[];
  /** The shards this node serves now. */
  served(): number[];
  /** `listener` hears the shards served each time they change. */
  onServed(listener: (served: number[]) => void): void;
}
