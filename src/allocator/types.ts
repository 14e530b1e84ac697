/**
 * Types shared by the allocator core, the outbox and the shells around them.
 * Everything here is plain data: events are what the log stores, and replaying
 * a SKU's events through `SkuAllocator.apply` must rebuild the identical state.
 */

/**
 * The last instant a SKU's window or a drop's cycle may name: RFC 3339 writes
 * four-digit years, and a later instant would be shown as `+010000-…`, which no
 * client parses as a date-time.
 */
export const latestInstantMs = Date.UTC(9999, 11, 31, 23, 59, 59, 999);

export interface SkuConfig {
  stock: number;
  perShopperLimit: number;
  holdSeconds: number;
  priceCents: number;
  currency: string;
  /** Sale window; null means open on that side. Epoch milliseconds. */
  startsAtMs: number | null;
  endsAtMs: number | null;
  /** Opt-in waiting room (src/allocator/waiting-room.ts); absent or null: none. */
  waitingRoom?: WaitingRoomConfig | null;
  /** Opt-in waitlist: units that come back are offered to the line as holds of this many seconds. Absent or null: no waitlist. */
  waitlistOfferSeconds?: number | null;
}

export interface WaitingRoomConfig {
  /** Tickets admitted per second, from the start of the sale. */
  admitPerSecond: number;
  /**
   * The pre-queue shuffle's seed: 32 hex digits drawn by the shard when the waiting room is first
   * configured, kept by later configurations, logged with the config and never shown to shoppers.
   */
  seed: string;
}

/**
 * Lifecycle of one reservation. `checking_out`, `paid` and `payment_failed`
 * belong to checkout: a hold frozen while its payment is pending, then sold or
 * given back.
 */
export type ReservationStatus =
  | 'held'
  | 'released'
  | 'expired'
  | 'checking_out'
  | 'paid'
  | 'payment_failed'
  /** A cart line prepared but not yet decided (src/carts): units out of `available`, no shopper's hold yet. */
  | 'tentative';

/** A reservation's status after each kind of event about it (reads of the log: what left memory, the audit). */
export const statusAfterEvent: Readonly<Record<string, ReservationStatus>> = {
  reserved: 'held',
  released: 'released',
  expired: 'expired',
  checkout_started: 'checking_out',
  committed: 'paid',
  payment_failed: 'payment_failed',
  cart_prepared: 'tentative',
  cart_committed: 'held',
  cart_aborted: 'released',
  waitlist_offered: 'held',
};

/**
 * One hold and what became of it. Its SKU is the allocator's that holds it: a
 * field per hold would repeat it a million times (8 bytes each). Times are
 * epoch ms; the reservation's own time is kept as its distance to the expiry, a
 * small integer that V8 stores in the object, where a second epoch-ms number
 * would be a 16-byte box per hold (bench/hold-memory.ts).
 */
export interface Reservation {
  readonly reservationId: string;
  readonly shopperId: string;
  readonly quantity: number;
  readonly idempotencyKey: string;
  /** A cart line's is set again when its cart commits: the cart expires as one, at its earliest line's expiry. */
  expiresAtMs: number;
  status: ReservationStatus;
  /** Set once checkout starts (one field for both: a field is 8 bytes on every hold, most of which never check out). */
  checkout: ReservationCheckout | null;
  /** `expiresAtMs` minus when it was made (its event's atMs, the start of its key's TTL): see `reservedAtMs`. */
  reservedBeforeExpiryMs: number;
  /** When it settled (released, expired, committed, payment_failed), else null; it leaves memory `reservationMemoryMs` later. */
  settledAtMs: number | null;
}

/** A reservation's checkout: the order paying for it, and the checkout request's key (forgetting the reservation forgets its slot). */
export interface ReservationCheckout {
  readonly orderId: string;
  readonly idempotencyKey: string;
}

/** When `r` was made (its `reserved` or `cart_prepared` event's atMs): the start of its key's TTL. */
export function reservedAtMs(r: Reservation): number {
  return r.expiresAtMs - r.reservedBeforeExpiryMs;
}

/**
 * `expiresAtMs − reservedAtMs`, as a small integer when it is one (`| 0`: a
 * difference of two doubles is a double, which V8 would box). Holds run at
 * most a week (the schemas' `holdSeconds`) and a cart line's expiry only moves
 * earlier, so it always is; a distance that is not would still be exact, only
 * boxed.
 */
export function reservedBeforeExpiryMs(reservedAtMs: number, expiresAtMs: number): number {
  const distanceMs = expiresAtMs - reservedAtMs;
  return (distanceMs | 0) === distanceMs ? distanceMs | 0 : distanceMs;
}

interface EventBase {
  sku: string;
  /** Position in this SKU's log, assigned by its single writer, gap-free from 1. */
  seq: number;
  /** Decision time (epoch ms), passed in by the shell: the core never reads a clock. */
  atMs: number;
}

export interface ConfiguredEvent extends EventBase {
  kind: 'configured';
  config: SkuConfig;
}

export interface ReservedEvent extends EventBase {
  kind: 'reserved';
  reservationId: string;
  shopperId: string;
  quantity: number;
  expiresAtMs: number;
  idempotencyKey: string;
}

/** A hold ends and its units go back on sale: the shopper let go, or time ran out. */
export interface ReleasedEvent extends EventBase {
  kind: 'released' | 'expired';
  reservationId: string;
}

/** Checkout: the hold is frozen (cannot expire) while `orderId` is being paid. */
export interface CheckoutStartedEvent extends EventBase {
  kind: 'checkout_started';
  reservationId: string;
  orderId: string;
  /** The checkout request's key and body, so a repeat is recognised after a restart too. */
  idempotencyKey: string;
  paymentMethod: string;
}

/** Payment settled: `committed` turns held units into sold ones, `payment_failed` puts them back. */
export interface PaymentSettledEvent extends EventBase {
  kind: 'committed' | 'payment_failed';
  reservationId: string;
}

/** An admin ended the sale: reservations are refused until the SKU is configured again. */
export interface ArchivedEvent extends EventBase {
  kind: 'archived';
}

/**
 * A cart line held tentatively (phase 1 of a cart, src/carts): like `reserved`, but not the shopper's
 * hold until `cart_committed`; `cart_aborted` gives the units back. Its `idempotencyKey` is the cart's
 * line key (cartLineKey: the cart id after a space, which no request's key may contain).
 */
export interface CartPreparedEvent extends EventBase {
  kind: 'cart_prepared';
  reservationId: string;
  shopperId: string;
  quantity: number;
  expiresAtMs: number;
  idempotencyKey: string;
}

/** The cart's decision reached this line: it becomes a hold expiring with the whole cart. */
export interface CartCommittedEvent extends EventBase {
  kind: 'cart_committed';
  reservationId: string;
  expiresAtMs: number;
}

/** The cart was aborted: the tentative line's units go back on sale. */
export interface CartAbortedEvent extends EventBase {
  kind: 'cart_aborted';
  reservationId: string;
}

/** A shopper took a ticket in the SKU's waiting room. */
export interface QueueJoinedEvent extends EventBase {
  kind: 'queue_joined';
  ticketId: string;
  shopperId: string;
}

/** A shopper joined the SKU's waitlist (it was sold out). */
export interface WaitlistJoinedEvent extends EventBase {
  kind: 'waitlist_joined';
  waitlistId: string;
  shopperId: string;
  quantity: number;
  idempotencyKey: string;
}

/** Returned units offered to a waiting entry: a held reservation of the entry's shopper and quantity. */
export interface WaitlistOfferedEvent extends EventBase {
  kind: 'waitlist_offered';
  waitlistId: string;
  reservationId: string;
  shopperId: string;
  quantity: number;
  expiresAtMs: number;
}

/** A shopper left the waitlist (an offer they had is released by a `released` event after this one). */
export interface WaitlistLeftEvent extends EventBase {
  kind: 'waitlist_left';
  waitlistId: string;
}

export type WaitlistEvent = WaitlistJoinedEvent | WaitlistOfferedEvent | WaitlistLeftEvent;

export type StockEvent =
  | CartPreparedEvent
  | CartCommittedEvent
  | CartAbortedEvent
  | QueueJoinedEvent
  | WaitlistEvent
  | ArchivedEvent
  | ConfiguredEvent
  | ReservedEvent
  | ReleasedEvent
  | CheckoutStartedEvent
  | PaymentSettledEvent;

export type EventKind = StockEvent['kind'];

/** Limits the allocator enforces; they bound memory and work per SKU. */
export interface AllocatorLimits {
  /** Largest `quantity` one reservation may ask for. */
  maxQuantityPerRequest: number;
  /** Live holds (held or checking out) per SKU; past it reservations get 503. */
  maxLiveHoldsPerSku: number;
  /** Most events one `expireDue` call may produce, so a sweep is a bounded batch. */
  maxEventsPerBatch: number;
  /**
   * How long a settled reservation stays in memory after it settled (default 300,000 ms). Optional in
   * the type so shells built before it keep compiling; the allocator fills in the default.
   */
  reservationMemoryMs?: number;
  /** How long an idempotency key is honoured after its request (default 86,400,000 ms = 24 h). */
  idempotencyKeyTtlMs?: number;
  /** Tickets one SKU's waiting room holds at most (QUEUE_MAX_TICKETS; default 250,000). */
  maxQueueTicketsPerSku?: number;
  /** Open waitlist entries (waiting or offered) per SKU; past it joins get 409 `waitlist_full` (default 10,000). */
  waitlistMaxEntries?: number;
}

export const defaultMaxQueueTicketsPerSku = 250_000;

export const defaultReservationMemoryMs = 300_000;
export const defaultIdempotencyKeyTtlMs = 86_400_000;
export const defaultWaitlistMaxEntries = 10_000;

export const defaultAllocatorLimits: AllocatorLimits = {
  maxQuantityPerRequest: 100,
  maxLiveHoldsPerSku: 1_000_000,
  maxEventsPerBatch: 4096,
  reservationMemoryMs: defaultReservationMemoryMs,
  idempotencyKeyTtlMs: defaultIdempotencyKeyTtlMs,
};

/** Machine-readable reasons a command is refused; they become problem `code`s. */
export type RejectionCode =
  | 'sold_out'
  | 'limit_exceeded'
  | 'sale_not_open'
  | 'idempotency_key_reused'
  | 'quantity_too_large'
  | 'too_many_holds'
  | 'stock_below_committed'
  | 'not_found'
  | 'reservation_not_held'
  /** A cart line asked for alone (release, checkout): the cart decides it. */
  | 'reservation_in_cart'
  /** The cart was aborted by a shard whose line waited too long for its decision: nothing is held. */
  | 'cart_aborted'
  /** A cart's lines are priced in different currencies: one payment cannot pay for them. */
  | 'mixed_currencies'
  | 'queue_full'
  | 'no_waiting_room'
  | 'waiting_room_in_use'
  | 'admission_required'
  /** The SKU has no waitlist (no `waitlistOfferSeconds`). */
  | 'waitlist_not_enabled'
  /** Joining the waitlist while units are on sale: reserve instead. */
  | 'not_sold_out'
  /** The SKU's waitlist has WAITLIST_MAX_ENTRIES open entries. */
  | 'waitlist_full'
  /** The shopper already has an open entry on this SKU's waitlist. */
  | 'already_waitlisted'
  /** Leaving an entry whose offer was taken, declined or lapsed. */
  | 'waitlist_entry_closed';

export interface Rejection {
  ok: false;
  code: RejectionCode;
  detail: string;
}

/** A cart line's idempotency key: the cart id after a space (request keys are visible ASCII, so never one of these). */
export function cartLineKey(cartId: string): string {
  return `cart ${cartId}`;
}

/** The cart of a line (its idempotency key), or null for an ordinary reservation. */
export function cartOfKey(idempotencyKey: string): string | null {
  return idempotencyKey.startsWith('cart ') ? idempotencyKey.slice(5) : null;
}
