-- Waitlists: entries join, get offers (held reservations) and leave as events of their SKU's log.
ALTER TABLE stock_events ADD COLUMN waitlist_id uuid;

ALTER TABLE stock_events DROP CONSTRAINT stock_events_kind_check;
ALTER TABLE stock_events ADD CONSTRAINT stock_events_kind_check
  CHECK (kind IN ('configured', 'reserved', 'released', 'expired', 'checkout_started', 'committed',
                  'payment_failed', 'archived', 'cart_prepared', 'cart_committed', 'cart_aborted', 'queue_joined',
                  'waitlist_joined', 'waitlist_offered', 'waitlist_left')) NOT VALID;

-- GET /v1/waitlist/{id} of an entry that left memory reads its events.
CREATE INDEX stock_events_waitlist ON stock_events (waitlist_id) WHERE waitlist_id IS NOT NULL;
