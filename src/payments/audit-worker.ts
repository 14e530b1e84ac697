import { saleableUnits } from '../allocator/waitlist-decisions.js';
import { statusAfterEvent, type AllocatorLimits } from '../allocator/types.js';
import { loadAllSkuStates } from '../snapshot/load.js';
import { workerPool } from '../snapshot/worker-db.js';
import { lowerThisThreadsPriority } from '../snapshot/background-thread.js';
import {
  cartLineMismatchQuery,
  chargeWithoutPaidOrderQuery,
  countOrdersQuery,
  orderLogMismatchQuery,
  paidWithoutOneChargeQuery,
} from './audit-sql.js';

// Off the allocators' CPU as well as their loop (see background-thread.ts).
lowerThisThreadsPriority();

/**
 * Piscina worker: the ledger audit's heavy part, off the allocators' thread,
 * on its own Postgres connection. Every SKU is rebuilt from its latest snapshot
 * plus the log after it by the pure allocator, which checks stock = available +
 * held + sold on every event; orders, charges and the log are matched in SQL.
 * Returns plain data.
 */

/** Something the audit found that does not tell one story (the live-state comparison is audit.ts's). */
export interface Violation {
  kind:
    | 'ledger_invariant'
    | 'live_state_mismatch'
    | 'paid_order_without_one_charge'
    | 'charge_without_paid_order'
    | 'order_log_mismatch';
  detail: string;
  sku?: string;
  orderId?: string;
}

export interface AuditTask {
  databaseUrl: string;
  /** Idempotency keys (order ids) of the provider's successful charges. */
  chargeKeys: string[];
}

export interface SkuLedger {
  sku: string;
  seq: number;
  available: number;
  held: number;
  sold: number;
}

export interface AuditWorkerResult {
  skus: SkuLedger[];
  orders: number;
  violations: Violation[];
}

/** Replaying never needs the live limits: they bound decisions, not history. */
const auditLimits: AllocatorLimits = {
  maxQuantityPerRequest: Number.MAX_SAFE_INTEGER,
  maxLiveHoldsPerSku: Number.MAX_SAFE_INTEGER,
  maxEventsPerBatch: Number.MAX_SAFE_INTEGER,
};

export default async function auditLedger(task: AuditTask): Promise<AuditWorkerResult> {
  const pool = workerPool(task.databaseUrl);
  const violations: Violation[] = [];
  const skus: SkuLedger[] = [];
  // SKUs are handed over one by one as they catch up, so the worker never holds them all.
  await loadAllSkuStates(pool, auditLimits, {
    onBroken: (sku, error) => violations.push({ kind: 'ledger_invariant', sku, detail: error.message }),
    onLoaded: (a) => skus.push({ sku: a.sku, seq: a.seq, available: saleableUnits(a), held: a.held, sold: a.sold }),
  });

  const [orders, mismatches, lines, paid, charged] = await Promise.all([
    pool.query<{ n: string }>(countOrdersQuery()),
    pool.query<{ order_id: string; status: string; kind: string | null }>(orderLogMismatchQuery()),
    pool.query<{ order_id: string; status: string; reservation_id: string; kind: string | null }>(cartLineMismatchQuery()),
    pool.query<{ order_id: string; n: number }>(paidWithoutOneChargeQuery(task.chargeKeys)),
    pool.query<{ key: string; n: number; status: string | null }>(chargeWithoutPaidOrderQuery(task.chargeKeys)),
  ]);
  for (const row of paid.rows) {
    violations.push({ kind: 'paid_order_without_one_charge', orderId: row.order_id, detail: `paid order has ${row.n} successful charges` });
  }
  for (const row of mismatches.rows) violations.push(orderLogMismatch(row.order_id, row.status, 'reservation', row.kind));
  for (const row of lines.rows) violations.push(orderLogMismatch(row.order_id, row.status, `cart line ${row.reservation_id}`, row.kind));
  for (const row of charged.rows) {
    violations.push({
      kind: 'charge_without_paid_order',
      orderId: row.key,
      detail: `${row.n} successful charge(s) but the order is ${row.status ?? 'missing'}`,
    });
  }
  return { skus, orders: Number(orders.rows[0]!.n), violations };
}

/** An order whose status its reservation's (or a cart line's) last event in the log contradicts. */
function orderLogMismatch(orderId: string, orderStatus: string, what: string, lastKind: string | null): Violation {
  const status = lastKind === null ? 'missing' : statusAfterEvent[lastKind] ?? lastKind;
  return { kind: 'order_log_mismatch', orderId, detail: `order is ${orderStatus} but the log has its ${what} ${status}` };
}
