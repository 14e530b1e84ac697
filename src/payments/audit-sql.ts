import type pg from 'pg';

/**
 * The ledger audit's SQL, one named builder per statement. Each check returns
 * at most `maxViolationsPerCheck` rows: a broken ledger is reported, not copied.
 */

export const maxViolationsPerCheck = 1000;

export function countOrdersQuery(): pg.QueryConfig {
  return { name: 'audit-count-orders', text: 'SELECT count(*)::bigint AS n FROM orders' };
}

/**
 * Orders whose status does not match the last event of their reservation
 * (paid ↔ committed, failed ↔ payment_failed, pending ↔ checkout_started).
 * Uses stock_events_reservation (migration 003).
 */
export function orderLogMismatchQuery(): pg.QueryConfig {
  return {
    name: 'audit-order-log-mismatch',
    text: `SELECT o.order_id, o.status, last.kind
           FROM orders o
           LEFT JOIN LATERAL (
             SELECT e.kind FROM stock_events e WHERE e.reservation_id = o.reservation_id ORDER BY e.seq DESC LIMIT 1) last ON true
           WHERE last.kind IS DISTINCT FROM CASE o.status WHEN 'paid' THEN 'committed'
                                                          WHEN 'failed' THEN 'payment_failed'
                                                          ELSE 'checkout_started' END
           ORDER BY o.order_id
           LIMIT ${maxViolationsPerCheck}`,
  };
}

/**
 * A cart's order against its other lines (the first line is the order's own
 * reservation, checked above). The payment worker freezes every line before it
 * charges and settles them one by one after, so a line may lag its order while
 * the order's job runs; what can never be: a line of a paid order given back
 * or never frozen, a line sold for a failed order, a line settled while its
 * order is pending (the first settle decides the order), a line with no event.
 */
export function cartLineMismatchQuery(): pg.QueryConfig {
  return {
    name: 'audit-cart-line-mismatch',
    text: `SELECT o.order_id, o.status, l.reservation_id, last.kind
           FROM orders o
           JOIN carts c ON c.cart_id = o.cart_id
           CROSS JOIN LATERAL (
             SELECT (line->>'reservationId')::uuid AS reservation_id FROM jsonb_array_elements(c.lines) AS line) l
           LEFT JOIN LATERAL (
             SELECT e.kind FROM stock_events e WHERE e.reservation_id = l.reservation_id ORDER BY e.seq DESC LIMIT 1) last ON true
           WHERE l.reservation_id <> o.reservation_id
             AND (last.kind IS NULL
                  OR (o.status = 'paid' AND last.kind NOT IN ('checkout_started', 'committed'))
                  OR (o.status = 'failed' AND last.kind = 'committed')
                  OR (o.status = 'pending' AND last.kind IN ('committed', 'payment_failed')))
           ORDER BY o.order_id, l.reservation_id
           LIMIT ${maxViolationsPerCheck}`,
  };
}

const chargeCounts = `SELECT key, count(*)::int AS n FROM unnest($1::text[]) AS key GROUP BY key`;

/** Paid orders without exactly one successful charge ($1: the provider's successful charges' keys). */
export function paidWithoutOneChargeQuery(chargeKeys: readonly string[]): pg.QueryConfig {
  return {
    name: 'audit-paid-without-one-charge',
    text: `SELECT o.order_id, coalesce(c.n, 0) AS n
           FROM orders o LEFT JOIN (${chargeCounts}) c ON c.key = o.order_id::text
           WHERE o.status = 'paid' AND coalesce(c.n, 0) <> 1
           ORDER BY o.order_id
           LIMIT ${maxViolationsPerCheck}`,
    values: [chargeKeys],
  };
}

/**
 * Successful charges whose order is missing or failed. A pending order may be
 * between its charge and its record: that is in flight, not lost.
 */
export function chargeWithoutPaidOrderQuery(chargeKeys: readonly string[]): pg.QueryConfig {
  return {
    name: 'audit-charge-without-paid-order',
    text: `SELECT c.key, c.n, o.status
           FROM (${chargeCounts}) c LEFT JOIN orders o ON o.order_id::text = c.key
           WHERE o.order_id IS NULL OR o.status = 'failed'
           ORDER BY c.key
           LIMIT ${maxViolationsPerCheck}`,
    values: [chargeKeys],
  };
}
