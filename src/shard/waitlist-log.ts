import type pg from 'pg';
import type { WaitlistStatus } from '../allocator/waitlist.js';
import type { WaitlistView } from '../inventory/waitlist-view.js';

/**
 * A waitlist entry that left memory (closed longer ago than
 * RESERVATION_MEMORY_SECONDS, or its sale passivated), read back from the
 * log: its own events, and its offer's, oldest first (index
 * stock_events_waitlist, migrations/009; stock_events_reservation).
 */

export function waitlistEventsQuery(waitlistId: string): pg.QueryConfig {
  return {
    name: 'shard-waitlist-events',
    text: `SELECT e.sku, e.kind, e.shopper_id, e.quantity, e.reservation_id, e.expires_at_ms FROM stock_events e
            WHERE e.waitlist_id = $1
               OR e.reservation_id = (SELECT o.reservation_id FROM stock_events o
                                       WHERE o.waitlist_id = $1 AND o.kind = 'waitlist_offered' LIMIT 1)
            ORDER BY e.seq`,
    values: [waitlistId],
  };
}

interface Row {
  sku: string;
  kind: string;
  shopper_id: string | null;
  quantity: number | null;
  reservation_id: string | null;
  expires_at_ms: string | null;
}

/** What the offer's last event makes of its entry. */
const afterOffer: Readonly<Record<string, WaitlistStatus>> = {
  waitlist_offered: 'offered',
  expired: 'expired',
  released: 'declined',
  checkout_started: 'taken',
  committed: 'taken',
  payment_failed: 'taken',
};

/** The entry as the log has it, for its shopper only (null: no such entry, or another shopper's). */
export async function waitlistEntryFromLog(pool: pg.Pool, waitlistId: string, shopperId: string, nowMs: number): Promise<WaitlistView | null> {
  const { rows } = await pool.query<Row>(waitlistEventsQuery(waitlistId));
  const joined = rows[0];
  if (joined === undefined || joined.kind !== 'waitlist_joined' || joined.shopper_id !== shopperId) return null;
  const offer = rows.find((r) => r.kind === 'waitlist_offered');
  const left = rows.some((r) => r.kind === 'waitlist_left');
  let status: WaitlistStatus = 'waiting';
  if (offer !== undefined) status = afterOffer[rows[rows.length - 1]!.kind] ?? 'taken';
  // Leaving first and then releasing the offer is one decision: the entry left.
  if (left) status = 'left';
  const expiresAtMs = offer === undefined ? null : Number(offer.expires_at_ms);
  if (status === 'offered' && nowMs >= expiresAtMs!) status = 'expired';
  return {
    waitlistId,
    sku: joined.sku,
    quantity: joined.quantity!,
    status,
    // Out of memory: the sale left memory, so the line is not counted.
    position: null,
    reservationId: offer?.reservation_id ?? null,
    offerExpiresAt: expiresAtMs === null ? null : new Date(expiresAtMs).toISOString(),
  };
}
