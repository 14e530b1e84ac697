-- Checkout keys are honoured for the idempotency-key TTL, like reservation keys,
-- and the allocator decides that rule before anything is written: a key of a
-- reservation still in memory is in its checkout slots, a key of a forgotten
-- one is remembered as a hash for the TTL and confirmed here. A unique
-- constraint would keep biting after the allocator has rightly forgotten the
-- key (a reuse after the TTL, or one the allocator could not see), and would
-- fail the whole group commit holding that checkout. So the key is indexed
-- for look-ups, not constrained; one order per reservation still is.
ALTER TABLE orders DROP CONSTRAINT orders_checkout_key;
CREATE INDEX orders_by_checkout_key ON orders (sku, shopper_id, idempotency_key);
