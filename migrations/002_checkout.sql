-- Checkout: orders, the simulated payment provider's own records, webhook dedupe.

-- checkout_started events carry the checkout's key and payment method, so a
-- repeated checkout is recognised after a restart from the log alone.
ALTER TABLE stock_events ADD COLUMN payment_method text;

-- One order per reservation (the allocator guarantees it; the constraint says it
-- again). Written in the same transaction as its checkout_started event and its
-- pg-boss job; only the payment worker changes `status`, pending → paid | failed.
CREATE TABLE orders (
  order_id        uuid PRIMARY KEY,
  reservation_id  uuid NOT NULL UNIQUE,
  sku             text NOT NULL,
  shopper_id      text NOT NULL,
  quantity        integer NOT NULL CHECK (quantity > 0),
  amount_cents    bigint NOT NULL CHECK (amount_cents >= 0),
  currency        text NOT NULL,
  payment_method  text NOT NULL,
  idempotency_key text NOT NULL,
  status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'paid', 'failed')),
  failure_reason  text,
  created_at      timestamptz NOT NULL DEFAULT now(),
  settled_at      timestamptz,
  UNIQUE (shopper_id, idempotency_key)
);
CREATE INDEX orders_pending ON orders (created_at) WHERE status = 'pending';

-- The simulated provider's side of the truth: what it charged, keyed by the
-- idempotency key we pass (the order id). Tests and the audit count these.
CREATE TABLE simulated_charges (
  charge_id       uuid PRIMARY KEY,
  idempotency_key text NOT NULL UNIQUE,
  amount_cents    bigint NOT NULL,
  currency        text NOT NULL,
  payment_method  text NOT NULL,
  status          text NOT NULL CHECK (status IN ('succeeded', 'declined')),
  decline_reason  text,
  created_at      timestamptz NOT NULL DEFAULT now()
);

-- How often the simulated provider has been called per key (pm_flaky, pm_lost_response).
CREATE TABLE simulated_charge_attempts (
  idempotency_key text PRIMARY KEY,
  attempts        integer NOT NULL
);

-- Webhook deliveries already processed: a replay finds its id here and changes nothing.
CREATE TABLE payment_webhook_deliveries (
  delivery_id  text PRIMARY KEY,
  order_id     uuid NOT NULL,
  received_at  timestamptz NOT NULL DEFAULT now()
);
