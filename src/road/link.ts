import type { ShardNotice, ShardReply, ShardRequest, ShardRequestType } from '../shard/messages.js';

/**
 * A link: the road to some shards, one transport under it — this thread
 * (in-process-link.ts), another thread (port-link.ts) or another node
 * (src/cluster/transport.ts). It sends request frames and hands back reply
 * frames and notices; it never looks at a request's type. Its answers never
 * reject: a road that breaks answers `unavailable` (with the outcome unknown
 * when the request may have run). The routing table (routes.ts) holds one
 * link per shard.
 */
export interface Link {
  /** Sends `request` for `shard`; resolves with its reply, never rejects. */
  request<R extends ShardRequest>(shard: number, request: R): Promise<ShardReply<R['type']>>;
  /** Notices from every shard this link reaches. */
  onNotice(listener: (notice: ShardNotice) => void): void;
  close(): Promise<void>;
}

/** The answer of a request the road could not carry. */
export function unavailableReply<T extends ShardRequestType>(detail: string): ShardReply<T> {
  return { ok: false, code: 'unavailable', detail } as ShardReply<T>;
}

/** The answer of a request the road lost after handing it on: it may or may not have run. */
export function unknownOutcomeReply<T extends ShardRequestType>(detail: string): ShardReply<T> {
  return unavailableReply(`${detail}; the outcome is unknown: retry with the same Idempotency-Key`);
}

/**
 * `link` for its requests only, its notices not heard: a routing table that
 * hears a shard's notices another way (a cluster node's threads, through the
 * node's channel, which also tells the other nodes) routes to this instead,
 * so each notice arrives once. Closing it leaves `link` to its owner.
 */
export class RequestsOnly implements Link {
  constructor(private readonly link: Link) {}

  request<R extends ShardRequest>(shard: number, request: R): Promise<ShardReply<R['type']>> {
    return this.link.request(shard, request);
  }

  onNotice(): void {}

  async close(): Promise<void> {}
}
