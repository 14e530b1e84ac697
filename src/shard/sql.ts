import type pg from 'pg';

/**
 * The shard's reads of the log for what is no longer in memory: reservations
 * that settled and left, idempotency keys whose reservation left, checkouts of
 * those, and the list of SKUs to recover. All of the shard's SQL, one named
 * builder per statement (prepared once per connection). Indexes:
 * migrations/003 (stock_events_reservation) and 010 (stock_events_reserved_shopper_key).
 */

/** Every event of one reservation, oldest first: its life in the log. */
export function reservationEventsQuery(reservationId: string): pg.QueryConfig {
  return {
    name: 'shard-reservation-events',
    text: `SELECT sku, kind, at_ms, shopper_id, quantity, expires_at_ms, idempotency_key, order_id
             FROM stock_events WHERE reservation_id = $1 ORDER BY seq`,
    values: [reservationId],
  };
}

/** The newest reservation a shopper made on a SKU with a key, if made at or after `sinceMs`. */
export function reservedByKeyQuery(sku: string, shopperId: string, idempotencyKey: string, sinceMs: number): pg.QueryConfig {
  return {
    name: 'shard-reserved-by-key',
    text: `SELECT reservation_id FROM stock_events
            WHERE sku = $1 AND shopper_id = $2 AND idempotency_key = $3 AND kind = 'reserved' AND at_ms >= $4
            ORDER BY seq DESC LIMIT 1`,
    values: [sku, shopperId, idempotencyKey, sinceMs],
  };
}

/**
 * The newest order a shopper's checkout key started on a SKU at or after `sinceMs` (its
 * checkout_started event's time): keys older than the TTL are new again, so one key may
 * have started several orders over time. Indexes: orders_by_checkout_key, stock_events_reservation.
 */
export function orderByCheckoutKeyQuery(sku: string, shopperId: string, idempotencyKey: string, sinceMs: number): pg.QueryConfig {
  return {
    name: 'shard-order-by-checkout-key',
    text: `SELECT o.order_id, o.reservation_id, o.payment_method FROM orders o
             JOIN stock_events e ON e.reservation_id = o.reservation_id AND e.kind = 'checkout_started'
            WHERE o.sku = $1 AND o.shopper_id = $2 AND o.idempotency_key = $3 AND e.at_ms >= $4
            ORDER BY e.at_ms DESC LIMIT 1`,
    values: [sku, shopperId, idempotencyKey, sinceMs],
  };
}

/**
 * Every SKU in the log with its last seq, by a loose index scan over the
 * primary key (one index probe per SKU, not a scan of every event).
 */
export function skusInLogQuery(): pg.QueryConfig {
  return {
    name: 'shard-skus-in-log',
    text: `WITH RECURSIVE skus(sku) AS (
             (SELECT sku FROM stock_events ORDER BY sku LIMIT 1)
             UNION ALL
             SELECT (SELECT e.sku FROM stock_events e WHERE e.sku > skus.sku ORDER BY e.sku LIMIT 1)
               FROM skus WHERE skus.sku IS NOT NULL)
           SELECT sku, (SELECT max(seq) FROM stock_events e WHERE e.sku = skus.sku) AS last_seq
             FROM skus WHERE sku IS NOT NULL`,
    values: [],
  };
}

/** The SKU a reservation belongs to (ids minted before shards carry no SKU hash). */
export function reservationSkuQuery(reservationId: string): pg.QueryConfig {
  return {
    name: 'shard-reservation-sku',
    text: 'SELECT sku FROM stock_events WHERE reservation_id = $1 LIMIT 1',
    values: [reservationId],
  };
}

/** The latest snapshot's seq of every SKU that has one, and whether the SKU left memory with it. */
export function latestSnapshotMarksQuery(): pg.QueryConfig {
  return {
    name: 'shard-latest-snapshot-marks',
    text: 'SELECT DISTINCT ON (sku) sku, seq, passivated FROM sku_snapshots ORDER BY sku, seq DESC',
    values: [],
  };
}
