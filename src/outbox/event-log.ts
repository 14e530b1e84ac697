import type pg from 'pg';
import type { StockEvent, SkuConfig } from '../allocator/types.js';
import { int4Array, int8Array, jsonbArray, textArray, uuidArray } from './pg-binary-array.js';

/**
 * The event log's SQL, all of it: the group-commit insert and the reads that
 * recovery replays. Rows are columns, not JSON, so the insert is one
 * `unnest` over typed arrays, sent in binary, and Postgres parses no documents
 * or array literals on the hot path.
 */

const insertText = `
INSERT INTO stock_events
  (sku, seq, kind, at_ms, reservation_id, shopper_id, quantity, expires_at_ms, idempotency_key, order_id, config,
   payment_method, waitlist_id)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::uuid[], $6::text[],
                     $7::int[], $8::bigint[], $9::text[], $10::uuid[], $11::jsonb[], $12::text[], $13::uuid[])`;

/** One multi-row INSERT for a whole batch (prepared once per connection). */
export function insertEventsQuery(events: readonly StockEvent[]): pg.QueryConfig {
  const n = events.length;
  const sku = new Array<string>(n);
  const seq = new Array<number>(n);
  const kind = new Array<string>(n);
  const atMs = new Array<number>(n);
  const reservationId = new Array<string | null>(n);
  const shopperId = new Array<string | null>(n);
  const quantity = new Array<number | null>(n);
  const expiresAtMs = new Array<number | null>(n);
  const idempotencyKey = new Array<string | null>(n);
  const orderId = new Array<string | null>(n);
  const config = new Array<string | null>(n);
  const paymentMethod = new Array<string | null>(n);
  const waitlistId = new Array<string | null>(n);
  for (let i = 0; i < n; i++) {
    const e = events[i]!;
    sku[i] = e.sku;
    seq[i] = e.seq;
    kind[i] = e.kind;
    atMs[i] = e.atMs;
    reservationId[i] = eventUuid(e);
    // The kinds that start a hold: a reservation, a cart line, an offer to a waitlist entry.
    const held = e.kind === 'reserved' || e.kind === 'cart_prepared' || e.kind === 'waitlist_offered';
    shopperId[i] = held || e.kind === 'queue_joined' || e.kind === 'waitlist_joined' ? e.shopperId : null;
    quantity[i] = held || e.kind === 'waitlist_joined' ? e.quantity : null;
    expiresAtMs[i] = held || e.kind === 'cart_committed' ? e.expiresAtMs : null;
    const keyed = e.kind === 'reserved' || e.kind === 'cart_prepared' || e.kind === 'checkout_started' || e.kind === 'waitlist_joined';
    idempotencyKey[i] = keyed ? e.idempotencyKey : null;
    waitlistId[i] = 'waitlistId' in e ? e.waitlistId : null;
    orderId[i] = e.kind === 'checkout_started' ? e.orderId : null;
    config[i] = e.kind === 'configured' ? JSON.stringify(e.config) : null;
    paymentMethod[i] = e.kind === 'checkout_started' ? e.paymentMethod : null;
  }
  return {
    name: 'stock-events-insert',
    text: insertText,
    // Binary arrays (src/outbox/pg-binary-array.ts): Postgres parses no array literals on the hot path.
    values: [
      textArray(sku),
      int8Array(seq),
      textArray(kind),
      int8Array(atMs),
      uuidArray(reservationId),
      textArray(shopperId),
      int4Array(quantity),
      int8Array(expiresAtMs),
      textArray(idempotencyKey),
      uuidArray(orderId),
      jsonbArray(config),
      textArray(paymentMethod),
      uuidArray(waitlistId),
    ],
  };
}

interface EventRow {
  sku: string;
  seq: string;
  kind: StockEvent['kind'];
  at_ms: string;
  reservation_id: string | null;
  shopper_id: string | null;
  quantity: number | null;
  expires_at_ms: string | null;
  idempotency_key: string | null;
  order_id: string | null;
  config: SkuConfig | null;
  payment_method: string | null;
  waitlist_id: string | null;
}

const columns =
  'sku, seq, kind, at_ms, reservation_id, shopper_id, quantity, expires_at_ms, idempotency_key, order_id, config, payment_method, waitlist_id';

export function rowToEvent(row: EventRow): StockEvent {
  const base = { sku: row.sku, seq: Number(row.seq), atMs: Number(row.at_ms) };
  switch (row.kind) {
    case 'configured':
      return { ...base, kind: row.kind, config: row.config! };
    case 'archived':
      return { ...base, kind: row.kind };
    case 'cart_committed':
      return { ...base, kind: row.kind, reservationId: row.reservation_id!, expiresAtMs: Number(row.expires_at_ms) };
    case 'queue_joined':
      return { ...base, kind: row.kind, ticketId: row.reservation_id!, shopperId: row.shopper_id! };
    case 'reserved':
    case 'cart_prepared':
      return {
        ...base,
        kind: row.kind,
        reservationId: row.reservation_id!,
        shopperId: row.shopper_id!,
        quantity: row.quantity!,
        expiresAtMs: Number(row.expires_at_ms),
        idempotencyKey: row.idempotency_key!,
      };
    case 'checkout_started':
      return {
        ...base,
        kind: row.kind,
        reservationId: row.reservation_id!,
        orderId: row.order_id!,
        idempotencyKey: row.idempotency_key!,
        paymentMethod: row.payment_method!,
      };
    case 'waitlist_joined':
    case 'waitlist_offered':
    case 'waitlist_left':
      return waitlistRowToEvent(row, base);
    default:
      // The kinds that carry nothing but their reservation.
      return { ...base, kind: row.kind as 'released' | 'expired' | 'committed' | 'payment_failed' | 'cart_aborted', reservationId: row.reservation_id! };
  }
}

function waitlistRowToEvent(row: EventRow, base: { sku: string; seq: number; atMs: number }): StockEvent {
  const waitlistId = row.waitlist_id!;
  if (row.kind === 'waitlist_left') return { ...base, kind: row.kind, waitlistId };
  if (row.kind === 'waitlist_joined') {
    return { ...base, kind: row.kind, waitlistId, shopperId: row.shopper_id!, quantity: row.quantity!, idempotencyKey: row.idempotency_key! };
  }
  return {
    ...base,
    kind: 'waitlist_offered',
    waitlistId,
    reservationId: row.reservation_id!,
    shopperId: row.shopper_id!,
    quantity: row.quantity!,
    expiresAtMs: Number(row.expires_at_ms),
  };
}

/** Rows per page when streaming the log: bounds memory during recovery. */
const pageRows = 20_000;

/**
 * Every event, in (sku, seq) order, one page at a time (keyset pagination, so
 * a large log never sits in memory twice). `afterSeq` lets a snapshot skip the prefix.
 */
export async function* readEvents(
  db: pg.Pool | pg.PoolClient,
  filter: { sku?: string; afterSeq?: number } = {},
): AsyncGenerator<StockEvent[]> {
  let lastSku = filter.sku ?? '';
  let lastSeq = filter.afterSeq ?? 0;
  // ('', 0) sorts before every real key: SKU names are never empty.
  const where = filter.sku !== undefined ? 'sku = $1 AND seq > $2' : '(sku, seq) > ($1, $2)';
  for (;;) {
    const result = await db.query<EventRow>({
      text: `SELECT ${columns} FROM stock_events WHERE ${where} ORDER BY sku, seq LIMIT ${pageRows}`,
      values: [lastSku, lastSeq],
    });
    if (result.rows.length === 0) return;
    const events = result.rows.map(rowToEvent);
    yield events;
    const last = events[events.length - 1]!;
    lastSku = last.sku;
    lastSeq = last.seq;
    if (result.rows.length < pageRows) return;
  }
}

/** Highest seq each of `skus` has in the log (0 when none): how fencing tells who wrote. */
export async function lastSeqs(db: pg.Pool, skus: readonly string[]): Promise<Map<string, number>> {
  const result = await db.query<{ sku: string; seq: string }>({
    text: 'SELECT sku, max(seq) AS seq FROM stock_events WHERE sku = ANY($1::text[]) GROUP BY sku',
    values: [skus],
  });
  const seqs = new Map<string, number>(skus.map((sku) => [sku, 0]));
  for (const row of result.rows) seqs.set(row.sku, Number(row.seq));
  return seqs;
}

// ---------------------------------------------------------------- a refused batch, written again
// One savepoint at a time: a SKU's rows (or part of them) go in under it, and are rolled back
// alone if the database refuses one of them (see Outbox, "One bad row never fails the others").

export function savepointQuery(): pg.QueryConfig {
  return { text: 'SAVEPOINT outbox_part' };
}

export function releaseSavepointQuery(): pg.QueryConfig {
  return { text: 'RELEASE SAVEPOINT outbox_part' };
}

export function rollbackToSavepointQuery(): pg.QueryConfig {
  return { text: 'ROLLBACK TO SAVEPOINT outbox_part' };
}

// ---------------------------------------------------------------- outcome of an unanswered commit
// After a commit timed out or its connection broke, the outbox learns what happened from another
// connection: which backend ran it, make sure that backend is gone, then read the rows back.

/** This connection's backend (pid + start time: a pid alone can be reused after a restart). */
export function backendIdentityQuery(): pg.QueryConfig {
  return {
    name: 'outbox-backend-identity',
    text: 'SELECT pid, backend_start::text AS started FROM pg_stat_activity WHERE pid = pg_backend_pid()',
  };
}

export interface BackendIdentity {
  pid: number;
  started: string;
}

/** Whether that backend still exists, with its transaction state. */
export function backendAliveQuery(backend: BackendIdentity, timeoutMs: number): pg.QueryConfig {
  return {
    text: 'SELECT state, backend_xid::text AS xid FROM pg_stat_activity WHERE pid = $1 AND backend_start = $2::timestamptz',
    values: [backend.pid, backend.started],
    query_timeout: timeoutMs,
  } as pg.QueryConfig;
}

/** Cancel (`terminate` false) or end (`terminate` true) that backend, only if it is still the same one. */
export function signalBackendQuery(backend: BackendIdentity, terminate: boolean, timeoutMs: number): pg.QueryConfig {
  const fn = terminate ? 'pg_terminate_backend' : 'pg_cancel_backend';
  return {
    text: `SELECT ${fn}(pid) AS signalled FROM pg_stat_activity WHERE pid = $1 AND backend_start = $2::timestamptz`,
    values: [backend.pid, backend.started],
    query_timeout: timeoutMs,
  } as pg.QueryConfig;
}

export interface LoggedEventRow {
  sku: string;
  seq: string;
  kind: string;
  at_ms: string;
  reservation_id: string | null;
}

/** The rows the log holds at these events' (sku, seq), whoever wrote them. */
export function loggedEventsQuery(events: readonly StockEvent[], timeoutMs: number): pg.QueryConfig {
  return {
    text: `SELECT e.sku, e.seq, e.kind, e.at_ms, e.reservation_id FROM stock_events e
           JOIN unnest($1::text[], $2::bigint[]) AS k(sku, seq) ON e.sku = k.sku AND e.seq = k.seq`,
    values: [textArray(events.map((e) => e.sku)), int8Array(events.map((e) => e.seq))],
    query_timeout: timeoutMs,
  } as pg.QueryConfig;
}

/** What makes a logged row a given event: same place, kind, reservation and decision time. */
export function fingerprintOfEvent(e: StockEvent): string {
  return `${e.sku}\u0000${e.seq}\u0000${e.kind}\u0000${e.atMs}\u0000${eventUuid(e) ?? ''}`;
}

/** The uuid column of an event: its reservation's id, or a waiting-room ticket's. */
function eventUuid(e: StockEvent): string | null {
  if ('reservationId' in e) return e.reservationId;
  return e.kind === 'queue_joined' ? e.ticketId : null;
}

export function fingerprintOfRow(row: LoggedEventRow): string {
  return `${row.sku}\u0000${Number(row.seq)}\u0000${row.kind}\u0000${Number(row.at_ms)}\u0000${row.reservation_id ?? ''}`;
}
