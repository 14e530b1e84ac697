-- Carts: several SKUs held all-or-nothing (src/carts, docs/carts.md).
--
-- A cart line is a reservation whose events are cart_prepared (a tentative
-- hold), then cart_committed (a hold expiring with the whole cart) or
-- cart_aborted (units back). Rows already in the log are valid under the wider
-- check, so it is added without rescanning the log.
ALTER TABLE stock_events DROP CONSTRAINT stock_events_kind_check;
ALTER TABLE stock_events ADD CONSTRAINT stock_events_kind_check
  CHECK (kind IN ('configured', 'reserved', 'released', 'expired', 'checkout_started', 'committed',
                  'payment_failed', 'archived', 'cart_prepared', 'cart_committed', 'cart_aborted')) NOT VALID;

-- One row per cart, written before its first line is prepared and never
-- changed: who asked, with which key and body (a retry with another body is
-- refused), and the reservation id of every line, in request order.
CREATE TABLE carts (
  cart_id         uuid PRIMARY KEY,
  shopper_id      text NOT NULL,
  idempotency_key text NOT NULL,
  request_hash    text NOT NULL,
  lines           jsonb NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now()
);

-- The cart's one decision. Inserted once (ON CONFLICT DO NOTHING, then read
-- back): by the coordinator once every line answered, or by a shard holding a
-- tentative line whose cart is late. The first writer wins; every line
-- follows this row, so a cart is never half held.
CREATE TABLE cart_decisions (
  cart_id       uuid PRIMARY KEY REFERENCES carts (cart_id),
  decision      text NOT NULL CHECK (decision IN ('committed', 'aborted')),
  -- committed: when the whole cart expires (its earliest line's expiry), epoch ms
  expires_at_ms bigint,
  -- aborted by the coordinator: the first failing line's refusal {line, sku, code, detail}
  failure       jsonb,
  decided_by    text NOT NULL CHECK (decided_by IN ('coordinator', 'shard')),
  decided_at    timestamptz NOT NULL DEFAULT now(),
  CHECK ((decision = 'committed') = (expires_at_ms IS NOT NULL))
);

-- A cart's order: one order, one payment for every line (reservation_id and
-- sku are its first line's, quantity every line's units). Its lines are the
-- cart's (carts.lines); the payment worker freezes and settles each of them.
ALTER TABLE orders ADD COLUMN cart_id uuid REFERENCES carts (cart_id);
CREATE UNIQUE INDEX orders_one_per_cart ON orders (cart_id) WHERE cart_id IS NOT NULL;
