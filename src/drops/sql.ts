import type pg from 'pg';
import type { CyclePlan, DropState } from './schedule.js';

/**
 * All of the drops' SQL, one named builder per statement (prepared once per
 * connection). Times cross this boundary as epoch milliseconds; the tables
 * keep timestamptz for operators. The clock is the caller's (`nowMs`), never
 * the database's, so the schedule and its checks read one clock.
 */

const toTs = (param: string) => `to_timestamp((${param})::float8 / 1000)`;
const toMs = (column: string) => `round(extract(epoch FROM ${column}) * 1000)::float8`;

const dropColumns = `name, ${toMs('first_starts_at')} AS first_starts_at_ms, every_seconds, open_seconds,
  stock_per_cycle, per_shopper_limit, hold_seconds, price_cents::float8 AS price_cents, currency, cycles,
  anchor_cycle, ${toMs('anchor_starts_at')} AS anchor_starts_at_ms, stopped_after, job_token`;

const cycleColumns = `cycle, sku, ${toMs('starts_at')} AS starts_at_ms, ${toMs('ends_at')} AS ends_at_ms, stock,
  per_shopper_limit, hold_seconds, price_cents::float8 AS price_cents, currency`;

export interface DropRow {
  name: string;
  first_starts_at_ms: number;
  every_seconds: number;
  open_seconds: number;
  stock_per_cycle: number;
  per_shopper_limit: number;
  hold_seconds: number;
  price_cents: number;
  currency: string;
  cycles: number | null;
  anchor_cycle: number;
  anchor_starts_at_ms: number;
  stopped_after: number | null;
  job_token: string | null;
}

export interface CycleRow {
  cycle: number;
  sku: string;
  starts_at_ms: number;
  ends_at_ms: number;
  stock: number;
  per_shopper_limit: number;
  hold_seconds: number;
  price_cents: number;
  currency: string;
}

export interface ClaimedCycleRow extends CycleRow {
  name: string;
}

export function dropFromRow(row: DropRow): DropState {
  return {
    name: row.name,
    firstStartsAtMs: row.first_starts_at_ms,
    everySeconds: row.every_seconds,
    openSeconds: row.open_seconds,
    stockPerCycle: row.stock_per_cycle,
    perShopperLimit: row.per_shopper_limit,
    holdSeconds: row.hold_seconds,
    priceCents: row.price_cents,
    currency: row.currency,
    cycles: row.cycles,
    anchorCycle: row.anchor_cycle,
    anchorStartsAtMs: row.anchor_starts_at_ms,
    stoppedAfterCycle: row.stopped_after,
  };
}

export function cycleFromRow(row: CycleRow): CyclePlan {
  return {
    cycle: row.cycle,
    sku: row.sku,
    startsAtMs: row.starts_at_ms,
    endsAtMs: row.ends_at_ms,
    stockPerCycle: row.stock,
    perShopperLimit: row.per_shopper_limit,
    holdSeconds: row.hold_seconds,
    priceCents: row.price_cents,
    currency: row.currency,
  };
}

/**
 * Serializes everything that decides a drop's cycles (PUT, DELETE, a scheduler
 * run) for the transaction: an update never races a cycle's creation. Drops
 * are not on the reservation path; a hash collision only serializes two drops.
 */
export function lockDropQuery(name: string): pg.QueryConfig {
  return { name: 'drops-lock', text: `SELECT pg_advisory_xact_lock(hashtextextended('flashstock.drop:' || $1, 0))`, values: [name] };
}

export function selectDropQuery(name: string): pg.QueryConfig {
  return { name: 'drops-select', text: `SELECT ${dropColumns} FROM drops WHERE name = $1`, values: [name] };
}

export function selectLastCycleQuery(name: string): pg.QueryConfig {
  return {
    name: 'drops-last-cycle',
    text: `SELECT ${cycleColumns} FROM drop_cycles WHERE name = $1 ORDER BY cycle DESC LIMIT 1`,
    values: [name],
  };
}

/** Created cycles whose window has not ended at `nowMs` (at most a few: windows do not overlap). */
export function selectCyclesNotEndedQuery(name: string, nowMs: number, limit: number): pg.QueryConfig {
  return {
    name: 'drops-cycles-not-ended',
    text: `SELECT ${cycleColumns} FROM drop_cycles WHERE name = $1 AND ends_at > ${toTs('$2')} ORDER BY cycle LIMIT $3`,
    values: [name, nowMs, limit],
  };
}

/** Insert or replace a drop's definition and anchor; `inserted` says which. Clears a DELETE. */
export function upsertDropQuery(drop: DropState, jobToken: string, nowMs: number): pg.QueryConfig {
  return {
    name: 'drops-upsert',
    text: `
INSERT INTO drops (name, first_starts_at, every_seconds, open_seconds, stock_per_cycle, per_shopper_limit,
                   hold_seconds, price_cents, currency, cycles, anchor_cycle, anchor_starts_at, stopped_after,
                   job_token, created_at, updated_at)
VALUES ($1, ${toTs('$2')}, $3, $4, $5, $6, $7, $8, $9, $10, $11, ${toTs('$12')}, NULL, $13, ${toTs('$14')}, ${toTs('$14')})
ON CONFLICT (name) DO UPDATE SET
  first_starts_at = EXCLUDED.first_starts_at, every_seconds = EXCLUDED.every_seconds,
  open_seconds = EXCLUDED.open_seconds, stock_per_cycle = EXCLUDED.stock_per_cycle,
  per_shopper_limit = EXCLUDED.per_shopper_limit, hold_seconds = EXCLUDED.hold_seconds,
  price_cents = EXCLUDED.price_cents, currency = EXCLUDED.currency, cycles = EXCLUDED.cycles,
  anchor_cycle = EXCLUDED.anchor_cycle, anchor_starts_at = EXCLUDED.anchor_starts_at, stopped_after = NULL,
  job_token = EXCLUDED.job_token, updated_at = EXCLUDED.updated_at
RETURNING (xmax = 0) AS inserted`,
    values: [
      drop.name,
      drop.firstStartsAtMs,
      drop.everySeconds,
      drop.openSeconds,
      drop.stockPerCycle,
      drop.perShopperLimit,
      drop.holdSeconds,
      drop.priceCents,
      drop.currency,
      drop.cycles,
      drop.anchorCycle,
      drop.anchorStartsAtMs,
      jobToken,
      nowMs,
    ],
  };
}

/** DELETE: no cycle after `stoppedAfter`; the scheduler job goes stale. */
export function stopDropQuery(name: string, stoppedAfter: number, nowMs: number): pg.QueryConfig {
  return {
    name: 'drops-stop',
    text: `UPDATE drops SET stopped_after = $2, job_token = NULL, updated_at = ${toTs('$3')} WHERE name = $1`,
    values: [name, stoppedAfter, nowMs],
  };
}

/** Hand the schedule to the next job (null: the drop has no more cycles). */
export function setJobTokenQuery(name: string, jobToken: string | null): pg.QueryConfig {
  return { name: 'drops-set-token', text: 'UPDATE drops SET job_token = $2 WHERE name = $1', values: [name, jobToken] };
}

/** Drops whose schedule still needs a job (re-armed at start), a page at a time after `afterName`. */
export function selectArmedDropsQuery(afterName: string, limit: number): pg.QueryConfig {
  return {
    name: 'drops-armed',
    text: 'SELECT name FROM drops WHERE job_token IS NOT NULL AND name > $1 ORDER BY name LIMIT $2',
    values: [afterName, limit],
  };
}

/**
 * Create cycles, claimed by the caller for `leaseMs` (it configures their
 * SKUs next). A cycle that exists is left alone; RETURNING names the new ones.
 */
export function insertCyclesQuery(name: string, cycles: CyclePlan[], nowMs: number, leaseMs: number): pg.QueryConfig {
  return {
    name: 'drops-insert-cycles',
    text: `
INSERT INTO drop_cycles (name, cycle, sku, starts_at, ends_at, stock, per_shopper_limit, hold_seconds, price_cents,
                         currency, created_at, claimed_until)
SELECT $1, c.cycle, c.sku, ${toTs('c.starts_ms')}, ${toTs('c.ends_ms')}, c.stock, c.lim, c.hold, c.price, c.currency,
       ${toTs('$11')}, ${toTs('$11::float8 + $12::float8')}
FROM unnest($2::int[], $3::text[], $4::float8[], $5::float8[], $6::int[], $7::int[], $8::int[], $9::bigint[], $10::text[])
  AS c (cycle, sku, starts_ms, ends_ms, stock, lim, hold, price, currency)
ON CONFLICT DO NOTHING
RETURNING cycle`,
    values: [
      name,
      cycles.map((c) => c.cycle),
      cycles.map((c) => c.sku),
      cycles.map((c) => c.startsAtMs),
      cycles.map((c) => c.endsAtMs),
      cycles.map((c) => c.stockPerCycle),
      cycles.map((c) => c.perShopperLimit),
      cycles.map((c) => c.holdSeconds),
      cycles.map((c) => c.priceCents),
      cycles.map((c) => c.currency),
      nowMs,
      leaseMs,
    ],
  };
}

/**
 * Repair: claim cycles whose SKU was never configured (a process died between
 * creating the row and configuring it) and whose window has not ended, unless
 * another process holds a live claim. `name` null: every drop's.
 */
export function claimUnconfiguredQuery(name: string | null, nowMs: number, leaseMs: number): pg.QueryConfig {
  // Two processes claiming at once: the second waits on the row and re-checks
  // the claim condition on the first's version, so one of them gets it.
  // Few rows match: cycles are created at most 60 s early and windows do not overlap.
  return {
    name: 'drops-claim-unconfigured',
    text: `
UPDATE drop_cycles SET claimed_until = ${toTs('$2::float8 + $3::float8')}
WHERE configured_at IS NULL AND ends_at > ${toTs('$2')} AND ($1::text IS NULL OR name = $1)
  AND (claimed_until IS NULL OR claimed_until <= ${toTs('$2')})
RETURNING name, ${cycleColumns}`,
    values: [name, nowMs, leaseMs],
  };
}

export function markConfiguredQuery(name: string, cycle: number, nowMs: number): pg.QueryConfig {
  return {
    name: 'drops-mark-configured',
    text: `UPDATE drop_cycles SET configured_at = ${toTs('$3')}, claimed_until = NULL WHERE name = $1 AND cycle = $2`,
    values: [name, cycle, nowMs],
  };
}

/** A configure failed: let the next attempt (a retry or a repair) have it at once. */
export function releaseClaimQuery(name: string, cycle: number): pg.QueryConfig {
  return {
    name: 'drops-release-claim',
    text: 'UPDATE drop_cycles SET claimed_until = NULL WHERE name = $1 AND cycle = $2 AND configured_at IS NULL',
    values: [name, cycle],
  };
}
