-- Shards: idempotency keys are scoped per shopper and SKU (the SKU is in the
-- URL of the request they guard), across nodes, with no process-wide key map.
-- A checkout key is the checkout's SKU's: two SKUs may see the same key.
ALTER TABLE orders DROP CONSTRAINT orders_shopper_id_idempotency_key_key;
ALTER TABLE orders ADD CONSTRAINT orders_checkout_key UNIQUE (sku, shopper_id, idempotency_key);
