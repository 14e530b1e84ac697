import t from 'tap';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { startChild } from './helpers/child.js';
import { createTestDatabase } from './helpers/db.js';
import { clientFor, type CallResult } from './helpers/service.js';
import { isConnectionLost } from './helpers/fault-load.js';

/**
 * The real entry point (src/main.ts, a child process) is SIGKILLed while
 * shoppers check out concurrently (orders being written, payment jobs being
 * charged). The SKU is sold out first (every unit held). After a restart,
 * every checkout that went unanswered is retried with its key; then every
 * order is settled, and: one order per reservation, exactly one charge per
 * paid order (simulated_charges) and none without an order, every 202 names
 * an order that was paid, and stock is conserved (available + held + sold =
 * stock, sold = the paid orders' units, as the log's committed events say).
 */

// Two child processes (tsx compiles src/ first) on a shared 2-core machine.
t.setTimeout(300_000);

const env = {
  PAYMENT_JOB_EXPIRE_SECONDS: '2',
  PGBOSS_MAINTENANCE_INTERVAL_SECONDS: '1',
  PAYMENT_RETRY_DELAY_SECONDS: '1',
  // Charges take a while, so some are in flight when the process dies.
  SIMULATED_PAYMENT_LATENCY_MS: '30',
  RATE_LIMIT_SHOPPER_PER_SECOND: '1000',
  AUDIT_CRON: '',
};

const stock = 60;
type Api = ReturnType<typeof clientFor>;

interface CheckoutAttempt {
  reservationId: string;
  shopper: string;
  key: string;
  /** 0: no answer (the connection died with the process). */
  status: number;
  body: CallResult['body'];
}

async function checkout(api: Api, a: Omit<CheckoutAttempt, 'status' | 'body'>, processDies: boolean): Promise<CheckoutAttempt> {
  try {
    const res = await api.call('POST', `/v1/reservations/${a.reservationId}/checkout`, {
      shopper: a.shopper,
      body: { paymentMethod: 'pm_ok' },
      headers: { 'idempotency-key': a.key },
    });
    return { ...a, status: res.status, body: res.body };
  } catch (error) {
    if (processDies && isConnectionLost(error)) return { ...a, status: 0, body: null };
    throw new Error(`checkout of ${a.reservationId}: ${String(error)}${(error as { cause?: unknown }).cause ? ` (${String((error as { cause?: unknown }).cause)})` : ''}`);
  }
}

t.test('SIGKILL during concurrent checkouts: one order and one charge per reservation, stock conserved', async (t) => {
  const db = await createTestDatabase(t);
  const first = await startChild(db.url, env);
  const api = clientFor(first.url);
  t.equal((await api.putSku('CHK', { stock, perShopperLimit: 1 })).status, 201);

  // Sold out: 70 shoppers for 60 units.
  const reserved = await Promise.all(Array.from({ length: stock + 10 }, (_, i) => api.reserve('CHK', `buyer-${i}`, 1, `hold-${i}`).then((res) => ({ i, res }))));
  const holds = reserved.filter(({ res }) => res.status === 201);
  t.equal(holds.length, stock, `${stock} × 201`);
  t.same(reserved.filter(({ res }) => res.status !== 201 && !(res.status === 409 && res.body.code === 'sold_out')).map(({ res }) => [res.status, res.body]), [], 'the rest: 409 sold_out');

  const wanted = holds.map(({ i, res }) => ({ reservationId: res.body.reservationId as string, shopper: `buyer-${i}`, key: randomUUID() }));
  const answered: CheckoutAttempt[] = [];
  let next = 0;
  let killed = false;
  const shoppers = Promise.all(Array.from({ length: 12 }, async () => {
    while (next < wanted.length && !killed) {
      const a = await checkout(api, wanted[next++]!, true);
      answered.push(a);
    }
  }));
  while (answered.filter((a) => a.status === 202).length < 15) await new Promise((resolve) => setTimeout(resolve, 2));
  first.child.kill('SIGKILL');
  killed = true;
  await once(first.child, 'exit').catch(() => undefined);
  await shoppers;
  const before = answered.filter((a) => a.status === 202).length;
  t.same(answered.filter((a) => ![0, 202, 503].includes(a.status)).map((a) => [a.status, a.body]), [], 'before the kill: 202, 503, or no answer');
  const pendingAtKill = await db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM orders WHERE sku = 'CHK' AND status = 'pending'`);
  t.comment(`killed after ${before} × 202 (${answered.filter((a) => a.status === 0).length} unanswered); ${pendingAtKill.rows[0]!.n} orders pending at the kill`);

  const second = await startChild(db.url, env);
  t.teardown(async () => {
    second.child.kill('SIGTERM');
    await second.exited;
  });
  const after = clientFor(second.url);
  // Every checkout not acknowledged (unanswered, 503, or never sent) is retried with its key until it is.
  const accepted = new Map(answered.filter((a) => a.status === 202).map((a) => [a.reservationId, a]));
  const retried: CheckoutAttempt[] = [];
  for (const want of wanted) {
    if (accepted.has(want.reservationId)) continue;
    let res = await checkout(after, want, false);
    for (let i = 0; i < 100 && res.status === 503; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      res = await checkout(after, want, false);
    }
    retried.push(res);
    if (res.status === 202) accepted.set(want.reservationId, res);
  }
  t.same(retried.filter((a) => a.status !== 202).map((a) => [a.status, a.body]), [], `each of ${retried.length} retried checkouts is accepted after the restart`);
  const sameOrder = answered.filter((a) => a.status === 202).filter((a) => accepted.get(a.reservationId)!.body.orderId !== a.body.orderId);
  t.same(sameOrder, [], 'a checkout acknowledged before the kill keeps its order');

  // Settle every order.
  let pending = -1;
  for (let i = 0; i < 600 && pending !== 0; i++) {
    pending = (await db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM orders WHERE sku = 'CHK' AND status = 'pending'`)).rows[0]!.n;
    if (pending !== 0) await new Promise((resolve) => setTimeout(resolve, 100));
  }
  t.equal(pending, 0, 'every order settled');

  const orders = await db.pool.query<{ order_id: string; reservation_id: string; status: string; charges: number }>(
    `SELECT o.order_id::text, o.reservation_id::text, o.status,
            (SELECT count(*)::int FROM simulated_charges c WHERE c.idempotency_key = o.order_id::text AND c.status = 'succeeded') AS charges
       FROM orders o WHERE o.sku = 'CHK'`,
  );
  t.equal(orders.rows.length, stock, 'one order per reservation');
  t.equal(new Set(orders.rows.map((o) => o.reservation_id)).size, stock, 'no reservation has two orders');
  t.same(orders.rows.filter((o) => o.status !== 'paid' || o.charges !== 1), [], 'every order paid, with exactly one charge');
  const strays = await db.pool.query(`SELECT c.idempotency_key FROM simulated_charges c LEFT JOIN orders o ON o.order_id::text = c.idempotency_key WHERE o.order_id IS NULL`);
  t.same(strays.rows, [], 'no charge without an order');
  const byId = new Map(orders.rows.map((o) => [o.order_id, o]));
  t.same([...accepted.values()].filter((a) => byId.get(a.body.orderId)?.reservation_id !== a.reservationId), [], 'every 202 names the order of its reservation');

  const view = (await after.call('GET', '/v1/skus/CHK')).body;
  t.equal(view.available + view.held + view.sold, stock, `stock conserved: ${view.available} + ${view.held} + ${view.sold} = ${stock}`);
  t.match(view, { available: 0, held: 0, sold: stock }, 'every unit sold, once');
  const committed = await db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM stock_events WHERE sku = 'CHK' AND kind = 'committed'`);
  t.equal(committed.rows[0]!.n, stock, 'the log commits each sale once');
  t.match(await after.call('GET', '/v1/admin/audit', { admin: true }), { status: 200, body: { ok: true, violations: [] } }, 'the audit is clean');
});
