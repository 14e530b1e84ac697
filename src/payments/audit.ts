import type pg from 'pg';
import type { Logger } from 'pino';
import { SkuAllocator } from '../allocator/allocator.js';
import type { AllocatorLimits, StockEvent } from '../allocator/types.js';
import type { StockState } from '../inventory/inventory.js';
import { readEvents } from '../outbox/event-log.js';
import { listOrders } from './orders.js';
import type { PaymentProvider } from './provider.js';

/**
 * The ledger audit: the event log, the orders and the provider's own records
 * must tell one story. It rebuilds every SKU from the log with the same pure
 * allocator (which asserts stock = available + held + sold on every event),
 * compares it with the live allocator, and matches paid orders with successful
 * charges one to one.
 */

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

export interface AuditReport {
  ok: boolean;
  checkedAt: string;
  skus: number;
  orders: number;
  successfulCharges: number;
  violations: Violation[];
}

/** Replaying never needs the live limits: they bound decisions, not history. */
const auditLimits: AllocatorLimits = {
  maxQuantityPerRequest: Number.MAX_SAFE_INTEGER,
  maxLiveHoldsPerSku: Number.MAX_SAFE_INTEGER,
  maxEventsPerBatch: Number.MAX_SAFE_INTEGER,
};

/** The live side the audit compares with the log: counts the shards pushed, and a durability barrier. */
export interface LedgerSource {
  stockState(sku: string): StockState | null;
  /** Resolves once everything decided so far is durable. */
  settled(): Promise<void>;
}

export async function runLedgerAudit(deps: {
  pool: pg.Pool;
  ledger: LedgerSource;
  provider: PaymentProvider;
  log: Logger;
}): Promise<AuditReport> {
  const { pool, ledger, provider, log } = deps;
  // Let decisions already made reach the log, so live and logged state line up.
  await ledger.settled();
  const violations: Violation[] = [];
  const rebuilt = new Map<string, SkuAllocator>();
  let current: SkuAllocator | null = null;
  let broken: string | null = null;
  for await (const page of readEvents(pool)) {
    for (const event of page as StockEvent[]) {
      if (current === null || current.sku !== event.sku) {
        current = new SkuAllocator(event.sku, auditLimits);
        rebuilt.set(event.sku, current);
        broken = null;
      }
      if (broken === event.sku) continue;
      try {
        current.apply(event);
      } catch (error) {
        broken = event.sku;
        violations.push({ kind: 'ledger_invariant', sku: event.sku, detail: (error as Error).message });
      }
    }
  }

  const statusByReservation = new Map<string, string>();
  for (const allocator of rebuilt.values()) {
    for (const r of allocator.reservations.values()) statusByReservation.set(r.reservationId, r.status);
    const live = ledger.stockState(allocator.sku);
    if (live === null || live.seq !== allocator.seq) continue; // moved on since we read the log
    const logged = { available: allocator.available, held: allocator.held, sold: allocator.sold };
    if (live.available !== logged.available || live.held !== logged.held || live.sold !== logged.sold) {
      violations.push({
        kind: 'live_state_mismatch',
        sku: allocator.sku,
        detail: `live ${JSON.stringify(live)} but the log says ${JSON.stringify(logged)}`,
      });
    }
  }

  const [orders, charges] = await Promise.all([listOrders(pool), provider.successfulCharges()]);
  const chargesByKey = new Map<string, number>();
  for (const charge of charges) chargesByKey.set(charge.idempotencyKey, (chargesByKey.get(charge.idempotencyKey) ?? 0) + 1);
  const ordersById = new Map(orders.map((o) => [o.orderId, o]));
  for (const order of orders) {
    const count = chargesByKey.get(order.orderId) ?? 0;
    if (order.status === 'paid' && count !== 1) {
      violations.push({ kind: 'paid_order_without_one_charge', orderId: order.orderId, detail: `paid order has ${count} successful charges` });
    }
    const reservationStatus = statusByReservation.get(order.reservationId);
    const expected = order.status === 'paid' ? 'paid' : order.status === 'failed' ? 'payment_failed' : 'checking_out';
    if (reservationStatus !== expected) {
      violations.push({
        kind: 'order_log_mismatch',
        orderId: order.orderId,
        detail: `order is ${order.status} but the log has its reservation ${reservationStatus ?? 'missing'}`,
      });
    }
  }
  for (const [key, count] of chargesByKey) {
    const order = ordersById.get(key);
    // A pending order may be between its charge and its record: that is in flight, not lost.
    if (order === undefined || order.status === 'failed') {
      violations.push({
        kind: 'charge_without_paid_order',
        orderId: key,
        detail: `${count} successful charge(s) but the order is ${order?.status ?? 'missing'}`,
      });
    }
  }

  for (const violation of violations) log.error({ violation }, 'ledger audit violation');
  return {
    ok: violations.length === 0,
    checkedAt: new Date().toISOString(),
    skus: rebuilt.size,
    orders: orders.length,
    successfulCharges: charges.length,
    violations,
  };
}
