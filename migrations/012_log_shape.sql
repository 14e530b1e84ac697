-- The log's indexes, measured (bench/log-shape.ts; docs/performance.md#the-event-log-in-postgres):
-- every index on stock_events is paid by every group commit, so each has one reader.
--   stock_events_pkey (sku, seq)        the fence, replay in order, the SKU list: needed.
--   stock_events_reservation            a reservation that left memory (reads, the audit,
--                                       checkout-key look-ups): needed; cheap since
--                                       reservation ids grow with time (src/shard/placement.ts).
--   stock_events_reserved_key           key replays of reservations that left memory: needed,
--                                       but the SKU in it was the third copy of the SKU per
--                                       row (heap, primary key, this). A shopper's key names
--                                       one request per SKU, so (shopper, key) finds the few
--                                       rows and the SKU is checked on them: 49 fewer index
--                                       bytes per reservation and ~1 µs less Postgres CPU.
CREATE INDEX stock_events_reserved_shopper_key ON stock_events (shopper_id, idempotency_key) WHERE kind = 'reserved';
DROP INDEX stock_events_reserved_key;
