import t from 'tap';
import { randomUUID } from 'node:crypto';
import { SkuAllocator } from '../src/allocator/allocator.js';
import { defaultAllocatorLimits, type SkuConfig, type StockEvent } from '../src/allocator/types.js';
import { insertEventsQuery } from '../src/outbox/event-log.js';
import { runLedgerAudit, type AuditDeps } from '../src/payments/audit.js';
import { SimulatedPaymentProvider } from '../src/payments/simulated-provider.js';
import { SnapshotWorkers } from '../src/snapshot/workers.js';
import { createTestDatabase, testLog } from './helpers/db.js';

/** The ledger audit in its worker thread, against a real Postgres: clean ledgers, and each kind of violation. */

const config: SkuConfig = { stock: 50, perShopperLimit: 5, holdSeconds: 60, priceCents: 100, currency: 'USD', startsAtMs: null, endsAtMs: null };

function sku(name: string) {
  const allocator = new SkuAllocator(name, defaultAllocatorLimits);
  const events: StockEvent[] = [];
  const apply = (e: StockEvent) => {
    allocator.apply(e);
    events.push(e);
  };
  const c = allocator.configure(config, 1000);
  if (!c.ok) throw new Error('configure');
  apply(c.event);
  const reserve = (shopperId: string, now: number) => {
    const d = allocator.reserve({ reservationId: randomUUID(), shopperId, quantity: 1, idempotencyKey: randomUUID() }, now);
    if (!d.ok || d.kind !== 'new') throw new Error('reserve');
    apply(d.event);
    return d.event;
  };
  const checkout = (reservationId: string, shopperId: string, now: number) => {
    const orderId = randomUUID();
    const d = allocator.checkout({ reservationId, shopperId, orderId, idempotencyKey: randomUUID(), paymentMethod: 'pm_ok' }, now);
    if (!d.ok || d.kind !== 'new') throw new Error('checkout');
    apply(d.event);
    return orderId;
  };
  return { allocator, events, apply, reserve, checkout };
}

t.test('the audit runs in its worker: clean, from a snapshot, and every kind of violation', async (t) => {
  const db = await createTestDatabase(t);
  const workers = new SnapshotWorkers();
  workers.start();
  t.teardown(() => workers.stop());
  const provider = new SimulatedPaymentProvider(db.pool, 0);
  const a = sku('A');
  const b = sku('B');
  for (let i = 0; i < 20; i++) a.reserve(`s${i}`, 2000 + i);
  const held = a.reserve('payer', 3000);
  const pendingHold = b.reserve('waiter', 3000);
  const paidOrder = a.checkout(held.reservationId, 'payer', 3100);
  const pendingOrder = b.checkout(pendingHold.reservationId, 'waiter', 3100);
  a.apply(a.allocator.settlePayment(held.reservationId, 'committed', 3200)!);
  const insertOrder = (orderId: string, e: { reservationId: string; sku: string; shopperId: string }, status: string) =>
    db.pool.query(
      `INSERT INTO orders (order_id, reservation_id, sku, shopper_id, quantity, amount_cents, currency, payment_method, idempotency_key, status)
       VALUES ($1, $2, $3, $4, 1, 100, 'USD', 'pm_ok', $5, $6)`,
      [orderId, e.reservationId, e.sku, e.shopperId, randomUUID(), status],
    );
  await db.pool.query(insertEventsQuery([...a.events.splice(0), ...b.events.splice(0)]));
  await insertOrder(paidOrder, held, 'paid');
  await insertOrder(pendingOrder, pendingHold, 'pending');
  await provider.charge({ idempotencyKey: paidOrder, amountCents: 100, currency: 'USD', paymentMethod: 'pm_ok' });

  const live = new Map([['A', a.allocator], ['B', b.allocator]]);
  let settledCalls = 0;
  const deps: AuditDeps = {
    pool: db.pool,
    databaseUrl: db.url,
    stockState: (name) => {
      const x = live.get(name);
      return x === undefined ? null : { sku: name, available: x.available, held: x.held, sold: x.sold, seq: x.seq };
    },
    settled: async () => {
      settledCalls += 1;
    },
    provider,
    log: testLog,
    workers,
  };
  const clean = await runLedgerAudit(deps);
  t.match(clean, { ok: true, skus: 2, orders: 2, successfulCharges: 1, violations: [] }, JSON.stringify(clean.violations));
  t.equal(settledCalls, 1, 'waits for decisions in flight first');

  // From a snapshot plus a tail: the same answer.
  await workers.snapshot({ databaseUrl: db.url, sku: 'A', limits: defaultAllocatorLimits });
  for (let i = 0; i < 5; i++) a.reserve(`t${i}`, 4000 + i);
  await db.pool.query(insertEventsQuery(a.events.splice(0)));
  t.match(await runLedgerAudit(deps), { ok: true, skus: 2 });

  // The live allocator disagrees with the log (same seq).
  const liar: AuditDeps = { ...deps, stockState: (name) => (name === 'B' ? { sku: 'B', available: 0, held: 0, sold: 0, seq: b.allocator.seq } : deps.stockState(name)) };
  t.match(await runLedgerAudit(liar), { ok: false, violations: [{ kind: 'live_state_mismatch', sku: 'B' }] });
  const movedOn: AuditDeps = { ...deps, stockState: (name) => (name === 'B' ? { sku: 'B', available: 0, held: 0, sold: 0, seq: b.allocator.seq + 1 } : deps.stockState(name)) };
  t.match(await runLedgerAudit(movedOn), { ok: true }, 'a SKU that moved on since the log was read is not compared');

  // A log that breaks the invariants (written behind the allocator's back): reported for that SKU only.
  const c = sku('C');
  await db.pool.query(insertEventsQuery(c.events));
  await db.pool.query(
    `INSERT INTO stock_events (sku, seq, kind, at_ms, reservation_id, shopper_id, quantity, expires_at_ms, idempotency_key)
     VALUES ('C', 2, 'reserved', 5000, $1, 'x', 51, 60000, 'k')`,
    [randomUUID()],
  );
  const broken = await runLedgerAudit(deps);
  t.match(broken, { ok: false, skus: 2, violations: [{ kind: 'ledger_invariant', sku: 'C' }] });
  t.equal(broken.violations.length, 1);
  await db.pool.query(`DELETE FROM stock_events WHERE sku = 'C'`);

  // Orders against the log and the charges.
  const ghost = randomUUID();
  await insertOrder(ghost, { reservationId: randomUUID(), sku: 'A', shopperId: 'ghost' }, 'pending');
  await db.pool.query(`UPDATE orders SET status = 'paid' WHERE order_id = $1`, [pendingOrder]);
  const unpaidCharge = randomUUID();
  await provider.charge({ idempotencyKey: unpaidCharge, amountCents: 100, currency: 'USD', paymentMethod: 'pm_ok' });
  const dirty = await runLedgerAudit(deps);
  const kinds = dirty.violations.map((v) => `${v.kind}:${v.orderId}`).sort();
  t.same(kinds, [
    `charge_without_paid_order:${unpaidCharge}`,
    `order_log_mismatch:${ghost}`,
    `order_log_mismatch:${pendingOrder}`,
    `paid_order_without_one_charge:${pendingOrder}`,
  ].sort());
  t.match(dirty.violations.find((v) => v.orderId === ghost), { detail: 'order is pending but the log has its reservation missing' });
  t.match(dirty.violations.find((v) => v.kind === 'order_log_mismatch' && v.orderId === pendingOrder), { detail: 'order is paid but the log has its reservation checking_out' });
  t.match(dirty, { orders: 3, successfulCharges: 2 });
});
