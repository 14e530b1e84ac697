-- The append-only event log (the outbox). Every allocator decision is one row,
-- written by group commit before the shopper hears yes. Rows are never updated
-- or deleted on the reservation path; a SKU's state is the fold of its rows.
CREATE TABLE stock_events (
  sku             text    NOT NULL,
  -- assigned by the SKU's single writer, gap-free from 1. The primary key is the
  -- fence: a second writer for the same SKU collides here and stops.
  seq             bigint  NOT NULL,
  kind            text    NOT NULL CHECK (kind IN ('configured', 'reserved', 'released', 'expired',
                                                   'checkout_started', 'committed', 'payment_failed')),
  at_ms           bigint  NOT NULL,           -- decision time, epoch milliseconds
  reservation_id  uuid,
  shopper_id      text,
  quantity        integer CHECK (quantity > 0),
  expires_at_ms   bigint,
  idempotency_key text,
  order_id        uuid,
  config          jsonb,                      -- kind = 'configured' only
  PRIMARY KEY (sku, seq)
);

COMMENT ON TABLE stock_events IS 'flashstock outbox: append-only allocator decisions, replayed to rebuild every SKU';

-- For operators: the same rows with readable times.
CREATE VIEW stock_events_readable AS
SELECT sku, seq, kind, to_timestamp(at_ms / 1000.0) AS at, reservation_id, shopper_id, quantity,
       to_timestamp(expires_at_ms / 1000.0) AS expires_at, idempotency_key, order_id, config
FROM stock_events;
