import t from 'tap';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { createTestDatabase } from './helpers/db.js';
import { clientFor } from './helpers/service.js';
import { startChild } from './helpers/child.js';

/**
 * The process running the payment worker is SIGKILLed at each point of a
 * finalization (before the charge, between charging and recording, after
 * recording). After a restart: exactly one charge, the order paid once, stock
 * consistent, and the audit clean.
 */

const fastRetries = {
  PAYMENT_JOB_EXPIRE_SECONDS: '2',
  PGBOSS_MAINTENANCE_INTERVAL_SECONDS: '1',
  PAYMENT_RETRY_DELAY_SECONDS: '1',
  SIMULATED_PAYMENT_LATENCY_MS: '0',
  AUDIT_CRON: '',
};

for (const crashPoint of ['before_charge', 'after_charge', 'after_settle']) {
  t.test(`SIGKILL ${crashPoint.replace('_', ' ')}`, async (t) => {
    const db = await createTestDatabase(t);
    const first = await startChild(db.url, { ...fastRetries, FAULT_CRASH_POINT: crashPoint });
    const api = clientFor(first.url);
    await api.putSku('PAY', { stock: 3 });
    const made = await api.reserve('PAY', 'alice', 1);
    const checkout = await api.call('POST', `/v1/reservations/${made.body.reservationId}/checkout`, {
      shopper: 'alice',
      body: { paymentMethod: 'pm_ok' },
      headers: { 'idempotency-key': randomUUID() },
    });
    t.equal(checkout.status, 202);
    t.equal(await first.exited, null, 'the worker died by SIGKILL');
    const orderId = checkout.body.orderId as string;
    const chargesAtCrash = await db.pool.query('SELECT count(*)::int AS n FROM simulated_charges WHERE idempotency_key = $1', [orderId]);
    t.equal(chargesAtCrash.rows[0].n, crashPoint === 'before_charge' ? 0 : 1, 'charged or not, as the crash point says');

    const second = await startChild(db.url, fastRetries);
    t.teardown(async () => {
      second.child.kill('SIGTERM');
      await second.exited;
    });
    const after = clientFor(second.url);
    let order = (await after.call('GET', `/v1/orders/${orderId}`, { shopper: 'alice' })).body;
    for (let i = 0; i < 300 && order.status === 'pending'; i++) {
      await sleep(50);
      order = (await after.call('GET', `/v1/orders/${orderId}`, { shopper: 'alice' })).body;
    }
    t.equal(order.status, 'paid', 'paid after the restart');
    const admin = (await after.call('GET', `/v1/admin/orders/${orderId}`, { admin: true })).body;
    t.equal(admin.charges.length, 1, 'exactly one charge');
    t.match(await after.call('GET', '/v1/skus/PAY'), { body: { stock: 3, available: 2, held: 0, sold: 1 } });
    const committed = await db.pool.query(`SELECT count(*)::int AS n FROM stock_events WHERE sku = 'PAY' AND kind = 'committed'`);
    t.equal(committed.rows[0].n, 1, 'one committed event');
    t.match(await after.call('GET', '/v1/admin/audit', { admin: true }), { body: { ok: true, violations: [] } });
  });
}

t.test('a job delivered twice changes nothing the second time', async (t) => {
  const db = await createTestDatabase(t);
  const svc = await startChild(db.url, fastRetries);
  t.teardown(async () => {
    svc.child.kill('SIGTERM');
    await svc.exited;
  });
  const api = clientFor(svc.url);
  await api.putSku('TWICE', { stock: 2 });
  const made = await api.reserve('TWICE', 'bob', 1);
  const checkout = await api.call('POST', `/v1/reservations/${made.body.reservationId}/checkout`, {
    shopper: 'bob',
    body: { paymentMethod: 'pm_ok' },
    headers: { 'idempotency-key': 'twice' },
  });
  const orderId = checkout.body.orderId as string;
  let order = (await api.call('GET', `/v1/orders/${orderId}`, { shopper: 'bob' })).body;
  for (let i = 0; i < 200 && order.status === 'pending'; i++) {
    await sleep(25);
    order = (await api.call('GET', `/v1/orders/${orderId}`, { shopper: 'bob' })).body;
  }
  t.equal(order.status, 'paid');
  // Deliver the same work again, as a broker redelivering would: a second job for the same order.
  const duplicate = randomUUID();
  await db.pool.query(`INSERT INTO pgboss.job (id, name, data) VALUES ($1, 'payment-finalize', $2)`, [duplicate, { orderId }]);
  let state = '';
  for (let i = 0; i < 200 && state !== 'completed'; i++) {
    await sleep(25);
    state = (await db.pool.query('SELECT state FROM pgboss.job WHERE id = $1', [duplicate])).rows[0]?.state ?? '';
  }
  t.equal(state, 'completed', 'the duplicate job ran');
  t.equal((await api.call('GET', `/v1/admin/orders/${orderId}`, { admin: true })).body.charges.length, 1, 'still one charge');
  t.match(await api.call('GET', '/v1/skus/TWICE'), { body: { sold: 1, held: 0, available: 1 } });
  const events = await db.pool.query(`SELECT count(*)::int AS n FROM stock_events WHERE sku = 'TWICE' AND kind = 'committed'`);
  t.equal(events.rows[0].n, 1, 'still one committed event');
});
