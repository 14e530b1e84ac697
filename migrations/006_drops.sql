-- Drops (issue 12): recurring sale cycles. A drop is a schedule; cycle n is the
-- SKU `{name}.{n}`, configured through the inventory like any SKU. These tables
-- hold the schedule and which cycles exist; stock lives in stock_events as ever.

CREATE TABLE drops (
  name               text        PRIMARY KEY,
  -- The definition as the last PUT gave it.
  first_starts_at    timestamptz NOT NULL,
  every_seconds      integer     NOT NULL CHECK (every_seconds >= 1),
  open_seconds       integer     NOT NULL CHECK (open_seconds >= 1 AND open_seconds <= every_seconds),
  stock_per_cycle    integer     NOT NULL CHECK (stock_per_cycle >= 0),
  per_shopper_limit  integer     NOT NULL CHECK (per_shopper_limit >= 1),
  hold_seconds       integer     NOT NULL CHECK (hold_seconds >= 1),
  price_cents        bigint      NOT NULL CHECK (price_cents >= 0),
  currency           text        NOT NULL,
  cycles             integer     CHECK (cycles >= 1),          -- last cycle number; NULL: forever
  -- Where the schedule is anchored: cycle anchor_cycle starts at anchor_starts_at,
  -- the next ones every every_seconds after it (an update re-anchors).
  anchor_cycle       integer     NOT NULL CHECK (anchor_cycle >= 1),
  anchor_starts_at   timestamptz NOT NULL,
  stopped_after      integer,                                  -- DELETE: no cycle after this one
  -- The one live scheduler job of this drop (its data carries this token); a
  -- job with another token is stale and only repairs. NULL: no more cycles.
  job_token          uuid,
  created_at         timestamptz NOT NULL DEFAULT now(),
  updated_at         timestamptz NOT NULL DEFAULT now()
);

-- One row per cycle ever created; the primary key makes creation happen once
-- however many processes try. Each row keeps the terms it was created with.
CREATE TABLE drop_cycles (
  name               text        NOT NULL REFERENCES drops (name),
  cycle              integer     NOT NULL CHECK (cycle >= 1),
  sku                text        NOT NULL UNIQUE,
  starts_at          timestamptz NOT NULL,
  ends_at            timestamptz NOT NULL CHECK (ends_at > starts_at),
  stock              integer     NOT NULL,
  per_shopper_limit  integer     NOT NULL,
  hold_seconds       integer     NOT NULL,
  price_cents        bigint      NOT NULL,
  currency           text        NOT NULL,
  created_at         timestamptz NOT NULL DEFAULT now(),
  -- A process is configuring the SKU until then; after it, another may repair.
  claimed_until      timestamptz,
  -- The SKU exists in the inventory (configured by us, or found there).
  configured_at      timestamptz,
  PRIMARY KEY (name, cycle)
);
CREATE INDEX drop_cycles_unconfigured ON drop_cycles (ends_at) WHERE configured_at IS NULL;
CREATE INDEX drop_cycles_by_end ON drop_cycles (name, ends_at);
