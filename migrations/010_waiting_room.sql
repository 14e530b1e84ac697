-- Waiting rooms: a shopper's ticket is an event of its SKU's log like any other
-- (ticket id in reservation_id, shopper in shopper_id), so positions and
-- admissions are rebuilt from the log after a restart.
ALTER TABLE stock_events DROP CONSTRAINT stock_events_kind_check;
ALTER TABLE stock_events ADD CONSTRAINT stock_events_kind_check
  CHECK (kind IN ('configured', 'reserved', 'released', 'expired', 'checkout_started', 'committed',
                  'payment_failed', 'archived', 'cart_prepared', 'cart_committed', 'cart_aborted', 'queue_joined')) NOT VALID;
