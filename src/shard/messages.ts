import type { SkuConfig } from '../allocator/types.js';
import type { CartDecision, CartFailure, CartLine, CartLineState, CartRecord } from '../carts/types.js';
import type { WaitlistOfferNotice, WaitlistView } from '../inventory/waitlist-view.js';
import type {
  CheckoutView,
  NewOrder,
  Outcome,
  ReservationView,
  SkuView,
  StockState,
} from '../inventory/inventory.js';
import type { QueueView } from '../queue/view.js';

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
  /** The counts a live feed starts from (a subscriber on a node that holds no current copy of them). */
  get_stock: { type: 'get_stock'; sku: string };
  /** `admitted`: the front end verified an Admission-Token for this shopper and SKU (needed where the SKU has a waiting room). */
  reserve: { type: 'reserve'; sku: string; shopperId: string; quantity: number; idempotencyKey: string; admitted?: boolean };
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
  // Carts (src/carts, docs/carts.md). The cart's own rows live on its home shard (by the hash in cartId).
  cart_begin: { type: 'cart_begin'; cartId: string; shopperId: string; idempotencyKey: string; requestHash: string; lines: CartLine[] };
  cart_decide: {
    type: 'cart_decide';
    cartId: string;
    shopperId: string;
    decision: CartDecision;
    expiresAtMs: number | null;
    failure: CartFailure | null;
  };
  cart_get: { type: 'cart_get'; cartId: string; shopperId: string };
  /** Phase 1 on a line's shard: a tentative hold, or the line's refusal at once (never waits). */
  cart_prepare: { type: 'cart_prepare'; sku: string; cartId: string; reservationId: string; shopperId: string; quantity: number };
  /** Checkout of a held cart, per line: freeze it for the cart's order; the first line's freeze writes the order and its job. */
  cart_freeze: {
    type: 'cart_freeze';
    sku: string;
    cartId: string;
    reservationId: string;
    shopperId: string;
    orderId: string;
    paymentMethod: string;
    order: NewOrder | null;
  };
  /** Phase 2 on a line's shard (commit, abort), or the shopper letting go of a held cart (release). */
  cart_resolve: {
    type: 'cart_resolve';
    sku: string;
    cartId: string;
    reservationId: string;
    shopperId: string;
    action: 'commit' | 'abort' | 'release';
    expiresAtMs: number;
  };
  queue_join: { type: 'queue_join'; sku: string; shopperId: string };
  /** `ticket` carries its SKU's hash (like a reservation id), so it routes without a lookup. */
  queue_poll: { type: 'queue_poll'; ticket: string; shopperId: string };
  join_waitlist: { type: 'join_waitlist'; sku: string; shopperId: string; quantity: number; idempotencyKey: string };
  get_waitlist: { type: 'get_waitlist'; waitlistId: string; shopperId: string };
  leave_waitlist: { type: 'leave_waitlist'; waitlistId: string; shopperId: string };
}

export interface ShardReplies {
  configure: Outcome<{ created: boolean; view: SkuView }>;
  archive: Outcome<SkuView>;
  get_sku: Outcome<SkuView>;
  get_stock: Outcome<StockState>;
  reserve: Outcome<ReservationView>;
  get_reservation: Outcome<ReservationView>;
  release: Outcome<ReservationView>;
  checkout: Outcome<CheckoutView>;
  settle: Outcome<{ changed: boolean }>;
  cart_begin: Outcome<CartRecord>;
  cart_decide: Outcome<CartRecord>;
  cart_get: Outcome<CartRecord>;
  cart_prepare: Outcome<ReservationView>;
  cart_resolve: Outcome<CartLineState>;
  cart_freeze: Outcome<CartLineState>;
  queue_join: Outcome<QueueView>;
  queue_poll: Outcome<QueueView>;
  join_waitlist: Outcome<WaitlistView>;
  get_waitlist: Outcome<WaitlistView>;
  leave_waitlist: Outcome<WaitlistView>;
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
  | { type: 'checkout_durable'; orderId: string }
  /** A waitlist offer is durable: pushed to its shopper's live streams. */
  | WaitlistOfferNotice;

/** The shard side of a link (src/road/link.ts): something that answers requests for the shards it hosts. */
export interface ShardEndpoint {
  handle<R extends ShardRequest>(shard: number, request: R): Promise<ShardReply<R['type']>>;
}
