import type { RejectionCode, Reservation, ReservationStatus, SkuConfig } from '../allocator/types.js';
import type { SkuAllocator } from '../allocator/allocator.js';
import type { QueueView } from '../queue/view.js';
import { saleableUnits } from '../allocator/waitlist-decisions.js';
import type { WaitlistJoinRequest, WaitlistView } from './waitlist-view.js';

/**
 * What the front ends (HTTP, WebSocket) may ask of the allocators. The Router
 * (src/shard/router.ts) implements it by sending plain messages to the shard
 * that owns each SKU, wherever that shard runs.
 */
export interface Inventory {
  /** True once every SKU has been rebuilt from the log and overdue holds expired. */
  isReady(): boolean;
  configureSku(sku: string, config: SkuConfig): Promise<Outcome<{ created: boolean; view: SkuView }>>;
  /** Close the sale for good: live holds are released, pending payments still settle; PUT reopens it. */
  archiveSku(sku: string): Promise<Outcome<SkuView>>;
  /** `unavailable` while the SKU's shard recovers: never "does not exist" before it knows. */
  getSku(sku: string): Promise<Outcome<SkuView>>;
  reserve(request: ReserveRequest): Promise<Outcome<ReservationView>>;
  getReservation(reservationId: string, shopperId: string): Promise<Outcome<ReservationView>>;
  release(reservationId: string, shopperId: string): Promise<Outcome<ReservationView>>;
  /** Freeze a held reservation and start its order (202): one order per reservation. */
  checkout(request: CheckoutRequest): Promise<Outcome<CheckoutView>>;
  /**
   * Record a payment's outcome: `committed` sells the held units, `payment_failed`
   * puts them back. Idempotent: settling a settled order changes nothing.
   */
  settle(request: SettleRequest): Promise<Outcome<{ changed: boolean }>>;
  /** Take (or get back) the shopper's ticket in the SKU's waiting room (src/queue). */
  joinQueue(sku: string, shopperId: string): Promise<Outcome<QueueView>>;
  /** Where the shopper's ticket stands; another shopper's ticket is not_found. */
  pollQueue(ticket: string, shopperId: string): Promise<Outcome<QueueView>>;
  /** Join a sold-out SKU's waitlist (201 waiting, with its position). */
  joinWaitlist(request: WaitlistJoinRequest): Promise<Outcome<WaitlistView>>;
  getWaitlistEntry(waitlistId: string, shopperId: string): Promise<Outcome<WaitlistView>>;
  leaveWaitlist(waitlistId: string, shopperId: string): Promise<Outcome<WaitlistView>>;
  /** Stop taking work, commit what was decided, stop timers. */
  close(): Promise<void>;
}

export interface ReserveRequest {
  sku: string;
  shopperId: string;
  quantity: number;
  idempotencyKey: string;
  /** A valid Admission-Token for this shopper and SKU came with the request (src/queue/admission.ts). */
  admitted?: boolean;
}

export interface CheckoutRequest {
  reservationId: string;
  shopperId: string;
  idempotencyKey: string;
  paymentMethod: string;
}

export interface CheckoutView {
  orderId: string;
  reservationId: string;
  status: 'pending';
}

export interface SettleRequest {
  sku: string;
  reservationId: string;
  orderId: string;
  outcome: 'committed' | 'payment_failed';
  /** Why a payment failed (`card_declined`, `payment_unavailable`, ...). */
  failureReason: string | null;
}

/** An order as written with its checkout_started event, in the same transaction. */
export interface NewOrder {
  orderId: string;
  reservationId: string;
  sku: string;
  shopperId: string;
  quantity: number;
  amountCents: number;
  currency: string;
  paymentMethod: string;
  idempotencyKey: string;
  /** A cart's order (src/carts): one order for every line; reservationId and sku are its first line's, quantity all lines' units. */
  cartId?: string | null;
}

/** Rows that commit with the allocator's events (see Outbox attachments). */
export type OrderAttachment =
  | { kind: 'order_created'; order: NewOrder }
  | { kind: 'order_settled'; orderId: string; status: 'paid' | 'failed'; failureReason: string | null };

/** `unavailable`: not decided at all (recovering, fenced, overloaded, or the commit failed). */
export type FailureCode = RejectionCode | 'unavailable';

export type Outcome<T> = { ok: true; value: T } | { ok: false; code: FailureCode; detail: string };

/**
 * Where a SKU's sale stands at a moment: `archived` (an admin ended it for
 * good; PUT reopens it), `ended` (past `endsAt`), `not_started` (before
 * `startsAt`), else `on_sale` (sold out is still on sale: holds may expire).
 */
export type SaleState = 'on_sale' | 'not_started' | 'ended' | 'archived';
export const saleStates: readonly SaleState[] = ['on_sale', 'not_started', 'ended', 'archived'];

export function saleState(archived: boolean, startsAtMs: number | null, endsAtMs: number | null, nowMs: number): SaleState {
  if (archived) return 'archived';
  if (endsAtMs !== null && nowMs >= endsAtMs) return 'ended';
  if (startsAtMs !== null && nowMs < startsAtMs) return 'not_started';
  return 'on_sale';
}

export interface SkuView {
  sku: string;
  state: SaleState;
  stock: number;
  /** 0 once archived: nothing can be reserved until the SKU is configured again. */
  available: number;
  held: number;
  sold: number;
  perShopperLimit: number;
  holdSeconds: number;
  priceCents: number;
  currency: string;
  startsAt: string | null;
  endsAt: string | null;
  /** Present when the SKU has a waiting room (its seed is never shown). */
  waitingRoom?: { admitPerSecond: number };
  /** Present when the SKU has a waitlist: how long an offer to the line is held. */
  waitlistOfferSeconds?: number;
}

/**
 * A SKU's live counts and its log position (`seq`), for the live stock stream;
 * with what the sale state is derived from at the moment a message is sent
 * (`saleState`): `available` is the allocator's count, shown as 0 when archived.
 */
export interface StockState {
  sku: string;
  available: number;
  held: number;
  sold: number;
  seq: number;
  /** Absent (a node that does not send it): not archived, no window, so `on_sale`. */
  archived?: boolean;
  startsAtMs?: number | null;
  endsAtMs?: number | null;
  /** Whether the SKU has a waitlist (its waitlistOfferSeconds is set). Absent (a node that does not send it): none. */
  waitlist?: boolean;
}

/** The StockState of a configured allocator. */
export function stockStateOf(allocator: SkuAllocator): StockState {
  const config = allocator.config!;
  return {
    sku: allocator.sku,
    // Units nobody holds while people wait are the line's, not on sale.
    available: saleableUnits(allocator),
    held: allocator.held,
    sold: allocator.sold,
    seq: allocator.seq,
    archived: allocator.archived,
    startsAtMs: config.startsAtMs,
    endsAtMs: config.endsAtMs,
    waitlist: config.waitlistOfferSeconds != null,
  };
}

export interface ReservationView {
  reservationId: string;
  sku: string;
  quantity: number;
  status: ReservationStatus;
  expiresAt: string;
}

function isoOrNull(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

export function skuView(allocator: SkuAllocator, nowMs: number): SkuView {
  const config = allocator.config!;
  return {
    sku: allocator.sku,
    state: saleState(allocator.archived, config.startsAtMs, config.endsAtMs, nowMs),
    stock: config.stock,
    available: allocator.archived ? 0 : saleableUnits(allocator),
    held: allocator.held,
    sold: allocator.sold,
    perShopperLimit: config.perShopperLimit,
    holdSeconds: config.holdSeconds,
    priceCents: config.priceCents,
    currency: config.currency,
    startsAt: isoOrNull(config.startsAtMs),
    endsAt: isoOrNull(config.endsAtMs),
    ...(config.waitingRoom ? { waitingRoom: { admitPerSecond: config.waitingRoom.admitPerSecond } } : {}),
    ...(config.waitlistOfferSeconds == null ? {} : { waitlistOfferSeconds: config.waitlistOfferSeconds }),
  };
}

/** The view of a reservation of `sku` (a reservation does not carry its SKU: its allocator's is). */
export function reservationView(sku: string, reservation: Reservation, status: ReservationStatus = reservation.status): ReservationView {
  return viewOf(reservation.reservationId, sku, reservation.quantity, reservation.expiresAtMs, status);
}

/** The view of a hold from the event that makes it. */
export function holdView(hold: { reservationId: string; sku: string; quantity: number; expiresAtMs: number }, status: ReservationStatus): ReservationView {
  return viewOf(hold.reservationId, hold.sku, hold.quantity, hold.expiresAtMs, status);
}

/** One shape for every reservation view (field by field: no intermediate object on the hot path). */
function viewOf(reservationId: string, sku: string, quantity: number, expiresAtMs: number, status: ReservationStatus): ReservationView {
  return { reservationId, sku, quantity, status, expiresAt: isoTime(expiresAtMs) };
}

let lastIsoMs = Number.NaN;
let lastIso = '';

/** `new Date(ms).toISOString()`, remembering the last one: the holds decided in one millisecond share their expiry. */
function isoTime(ms: number): string {
  if (ms !== lastIsoMs) {
    lastIso = new Date(ms).toISOString();
    lastIsoMs = ms;
  }
  return lastIso;
}
