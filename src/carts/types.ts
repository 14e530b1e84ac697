import type { ReservationStatus } from '../allocator/types.js';
import type { FailureCode } from '../inventory/inventory.js';

/**
 * Carts as plain data: what travels between the coordinator (the front end
 * that got the request) and the shards, and what the two cart tables hold.
 * See docs/carts.md for the protocol and why it is all-or-nothing.
 */

/** One line as the shopper asked for it, with the reservation id it is held under. */
export interface CartLine {
  sku: string;
  quantity: number;
  reservationId: string;
}

export type CartDecision = 'committed' | 'aborted';

/** The refusal of the first line that failed (what the shopper hears, and a retry hears again). */
export interface CartFailure {
  /** Index of the line in the request's `items`. */
  line: number;
  sku: string;
  code: FailureCode;
  detail: string;
}

/** A cart's row and its decision (null: not decided yet). */
export interface CartRecord {
  cartId: string;
  shopperId: string;
  requestHash: string;
  lines: CartLine[];
  decision: CartDecision | null;
  /** When the whole cart expires (committed carts). */
  expiresAtMs: number | null;
  failure: CartFailure | null;
}

/** What a line's shard says about it after a resolve (null: not there, never prepared). */
export interface CartLineState {
  reservationId: string;
  status: ReservationStatus | null;
}

export type CartStatus = 'held' | 'released' | 'expired' | 'pending' | 'paid' | 'payment_failed';

export interface CartView {
  cartId: string;
  status: CartStatus;
  expiresAt: string;
  items: (CartLine & { status?: ReservationStatus })[];
  orderId?: string;
}

/** A cart refusal: a reservation's refusal, naming the line that failed when one did. */
export type CartOutcome<T> =
  | { ok: true; value: T }
  | { ok: false; code: FailureCode; detail: string; line?: number; sku?: string };
