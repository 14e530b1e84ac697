import type { ShardChannel, ShardReply, ShardRequestType } from '../shard/messages.js';

/**
 * A link: the road to some shards, one transport under it — this thread
 * (in-process-link.ts), another thread (port-link.ts) or another node
 * (src/cluster/transport.ts). It sends request frames and hands back reply
 * frames and notices; it never looks at a request's type. Its answers never
 * reject: a road that breaks answers `unavailable` (with the outcome unknown
 * when the request may have run). The routing table (routes.ts) holds one
 * link per shard.
 */
export type Link = ShardChannel;

/** The answer of a request the road could not carry. */
export function unavailableReply<T extends ShardRequestType>(detail: string): ShardReply<T> {
  return { ok: false, code: 'unavailable', detail } as ShardReply<T>;
}

/** The answer of a request the road lost after handing it on: it may or may not have run. */
export function unknownOutcomeReply<T extends ShardRequestType>(detail: string): ShardReply<T> {
  return unavailableReply(`${detail}; the outcome is unknown: retry with the same Idempotency-Key`);
}
