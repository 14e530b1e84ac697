import type pg from 'pg';
import { statusAfterEvent } from '../allocator/types.js';
import type { ReservationView } from '../inventory/inventory.js';
import { orderByCheckoutKeyQuery, reservationEventsQuery, reservedByKeyQuery } from './sql.js';

/**
 * Answers about reservations that left memory, read from the log, with exactly
 * the bodies the allocator would have given: the status is the last event's,
 * and a hold past its time reads as expired.
 */

interface EventRow {
  sku: string;
  kind: string;
  at_ms: string;
  shopper_id: string | null;
  quantity: number | null;
  expires_at_ms: string | null;
}

export interface LoggedReservation {
  shopperId: string;
  quantity: number;
  view: ReservationView;
}

export interface LoggedOrder {
  orderId: string;
  reservationId: string;
  paymentMethod: string;
}

export class LogReader {
  constructor(private readonly pool: pg.Pool) {}

  async reservation(reservationId: string, nowMs: number): Promise<LoggedReservation | null> {
    const { rows } = await this.pool.query<EventRow>(reservationEventsQuery(reservationId));
    const reserved = rows[0];
    // A cart line and an offer to a waitlist entry start a reservation as `reserved` does.
    const starts = reserved !== undefined && (reserved.kind === 'reserved' || reserved.kind === 'cart_prepared' || reserved.kind === 'waitlist_offered');
    if (!starts) return null;
    // A cart line expires with its cart: the commit carries the cart's expiry.
    const committed = rows.find((row) => row.kind === 'cart_committed');
    const expiresAtMs = Number((committed ?? reserved).expires_at_ms);
    let status = statusAfterEvent[rows[rows.length - 1]!.kind]!;
    if (status === 'held' && nowMs >= expiresAtMs) status = 'expired';
    return {
      shopperId: reserved.shopper_id!,
      quantity: reserved.quantity!,
      view: {
        reservationId,
        sku: reserved.sku,
        quantity: reserved.quantity!,
        status,
        expiresAt: new Date(expiresAtMs).toISOString(),
      },
    };
  }

  /** The reservation a key created on a SKU since `sinceMs` (keys older than the TTL are new again). */
  async reservedByKey(sku: string, shopperId: string, idempotencyKey: string, sinceMs: number): Promise<LoggedReservation | null> {
    const { rows } = await this.pool.query<{ reservation_id: string }>(reservedByKeyQuery(sku, shopperId, idempotencyKey, sinceMs));
    if (rows.length === 0) return null;
    return this.reservation(rows[0]!.reservation_id, Number.NEGATIVE_INFINITY);
  }

  /** The order a checkout key started on a SKU since `sinceMs` (keys older than the TTL are new again). */
  async orderByCheckoutKey(sku: string, shopperId: string, idempotencyKey: string, sinceMs: number): Promise<LoggedOrder | null> {
    const { rows } = await this.pool.query<{ order_id: string; reservation_id: string; payment_method: string }>(
      orderByCheckoutKeyQuery(sku, shopperId, idempotencyKey, sinceMs),
    );
    const row = rows[0];
    return row === undefined ? null : { orderId: row.order_id, reservationId: row.reservation_id, paymentMethod: row.payment_method };
  }
}
