import type { ShardChannel, ShardNotice, ShardReply, ShardRequest } from '../shard/messages.js';
import type { ClusterShards } from './cluster-shards.js';
import type { ClusterLive } from './live.js';
import type { ClusterSnapshot } from './membership.js';
import type { ForwardHandler, ForwardPool } from './transport.js';

/**
 * The router's channel in a cluster: a shard this node owns is served here;
 * any other goes to its owner over the cluster connection and the reply comes
 * back as is. A shard with no live owner (moving, owner dead and not yet
 * taken), a connection that fails, or a reply that does not come in time all
 * become 503 `unavailable`: never a guess. After a timeout or a dropped
 * connection the command may have run on the owner; the detail says so and a
 * retry with the same Idempotency-Key returns what it did.
 */
export class ClusterChannel implements ShardChannel {
  private readonly listeners: ((notice: ShardNotice) => void)[] = [];
  private closed = false;

  constructor(
    private readonly local: ClusterShards,
    private readonly snapshot: () => ClusterSnapshot,
    private readonly forwarder: ForwardPool,
    /** Other nodes' stock notices, and ours to them (live.ts); absent: this node's notices only. */
    private readonly live: ClusterLive | null = null,
  ) {}

  async request<R extends ShardRequest>(shard: number, request: R): Promise<ShardReply<R['type']>> {
    if (this.closed) return unavailable('the node is shutting down');
    if (this.local.serves(shard)) return this.local.handle(shard, request);
    const view = this.snapshot();
    const owner = view.owners[shard] ?? null;
    if (owner === null || owner.nodeId === view.self) return this.local.handle(shard, request);
    const result = await this.forwarder.forward(owner.url, shard, request);
    // Decoded against this very request (src/shard/protocol.ts): its kind of reply, about its SKU or reservation.
    if (result.ok) return result.payload as ShardReply<R['type']>;
    if (result.code === 'unknown_outcome') {
      return unavailable(`${result.detail}; the outcome is unknown: retry with the same Idempotency-Key`);
    }
    return unavailable(result.detail);
  }

  /** Notices of this node's shards: to this node's listeners, and (stock) to the other nodes through `live`. */
  notify(notice: ShardNotice): void {
    this.deliver(notice);
    if (notice.type === 'stock' || notice.type === 'passivated') this.live?.local(notice);
  }

  /** To this node's listeners (the Router): its own shards' notices, and the ones peers pushed (live.ts). */
  deliver(notice: ShardNotice): void {
    for (const listener of this.listeners) listener(notice);
  }

  onNotice(listener: (notice: ShardNotice) => void): void {
    this.listeners.push(listener);
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

/** What the cluster endpoint runs for a forwarded command: only shards this node owns, never forwarded again. */
export function serveForwarded(local: ClusterShards): ForwardHandler {
  return async (shard, payload) => {
    if (!local.serves(shard)) return { ok: false, code: 'unavailable', detail: `shard ${shard} is not owned by this node (moving)` };
    return { ok: true, payload: await local.handle(shard, payload) };
  };
}

function unavailable<T>(detail: string): T {
  return { ok: false, code: 'unavailable', detail } as T;
}
