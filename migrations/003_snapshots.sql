-- Snapshots: each SKU's allocator state at a seq, so recovery (and the audit)
-- replay only the log after it. Written by a worker thread that folds the
-- durable log; a snapshot is one INSERT, so a crash mid-write leaves the
-- previous snapshot and the log, which still recover everything.
CREATE TABLE sku_snapshots (
  sku            text        NOT NULL,
  -- the last event the snapshot includes; replay resumes at seq + 1
  seq            bigint      NOT NULL CHECK (seq >= 0),
  -- src/snapshot/codec.ts refuses a version it does not know
  format_version integer     NOT NULL,
  state          bytea       NOT NULL,
  -- written when the SKU left memory (sale over or archived)
  passivated     boolean     NOT NULL DEFAULT false,
  created_at     timestamptz NOT NULL DEFAULT now(),
  -- (sku, seq DESC) order of this key is "latest per SKU": one backward index step
  PRIMARY KEY (sku, seq)
);

COMMENT ON TABLE sku_snapshots IS 'flashstock: allocator state per SKU at a seq; the latest 2 per SKU are kept';

-- An admin archive is an event like any other.
ALTER TABLE stock_events DROP CONSTRAINT stock_events_kind_check;
ALTER TABLE stock_events ADD CONSTRAINT stock_events_kind_check
  CHECK (kind IN ('configured', 'reserved', 'released', 'expired', 'checkout_started', 'committed',
                  'payment_failed', 'archived'));

-- A reservation's events (reads of reservations that left memory, the audit's
-- "latest event of each reservation").
CREATE INDEX stock_events_reservation ON stock_events (reservation_id) WHERE reservation_id IS NOT NULL;

-- Key replays of reservations that left memory: idempotency keys are per shopper and SKU.
CREATE INDEX stock_events_reserved_key ON stock_events (sku, shopper_id, idempotency_key) WHERE kind = 'reserved';
