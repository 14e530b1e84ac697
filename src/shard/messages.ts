import type { SkuConfig } from '../allocator/types.js';
import type {
  CheckoutView,
  Outcome,
  ReservationView,
  SkuView,
  StockState,
} from '../inventory/inventory.js';

/**
 * Every message between the router (front ends) and the shards, in one
 * registry. Everything here is plain data that survives structured clone and
 * JSON: no closures, no class instances, no live objects. The in-process
 * channel can clone them to prove it (tests do), a worker thread passes them
 * over a MessagePort, another node over the wire.
 */

export interface ShardRequests {
  configure: { type: 'configure'; sku: string; config: SkuConfig };
  archive: { type: 'archive'; sku: string };
  get_sku: { type: 'get_sku'; sku: string };
  reserve: { type: 'reserve'; sku: string; shopperId: string; quantity: number; idempotencyKey: string };
  get_reservation: { type: 'get_reservation'; reservationId: string; shopperId: string };
  release: { type: 'release'; reservationId: string; shopperId: string };
  checkout: { type: 'checkout'; reservationId: string; shopperId: string; idempotencyKey: string; paymentMethod: string };
  settle: {
    type: 'settle';
    sku: string;
    reservationId: string;
    orderId: string;
    outcome: 'committed' | 'payment_failed';
    failureReason: string | null;
  };
}

export interface ShardReplies {
  configure: Outcome<{ created: boolean; view: SkuView }>;
  archive: Outcome<SkuView>;
  get_sku: Outcome<SkuView>;
  reserve: Outcome<ReservationView>;
  get_reservation: Outcome<ReservationView>;
  release: Outcome<ReservationView>;
  checkout: Outcome<CheckoutView>;
  settle: Outcome<{ changed: boolean }>;
}

export type ShardRequestType = keyof ShardRequests;
export type ShardRequest = ShardRequests[ShardRequestType];
export type ShardReply<T extends ShardRequestType = ShardRequestType> = ShardReplies[T];

/** What a shard pushes to the front ends without being asked. */
export type ShardNotice =
  /** A durable change of a SKU's counts (or a correction after a failed commit). */
  | { type: 'stock'; state: StockState }
  /** The SKU left memory (sale over, or archived); its last state stays readable. */
  | { type: 'passivated'; sku: string }
  /** A checkout is durable: payment workers may pick its job up now. */
  | { type: 'checkout_durable'; orderId: string };

/** The shard side of a link (src/road/link.ts): something that answers requests for the shards it hosts. */
export interface ShardEndpoint {
  handle<R extends ShardRequest>(shard: number, request: R): Promise<ShardReply<R['type']>>;
}
