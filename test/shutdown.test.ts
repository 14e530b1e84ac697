import t from 'tap';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { startChild } from './helpers/child.js';
import { createTestDatabase } from './helpers/db.js';
import { clientFor } from './helpers/service.js';

/**
 * Shutdown budgets: a payment stuck at the provider cannot eat the time the
 * outbox needs. The real entry point gets SIGTERM while a charge hangs; it
 * exits 0 after the payment and pg-boss budgets instead of running into
 * SHUTDOWN_TIMEOUT_MS (exit 1), and the abandoned job is finished, charging
 * once, after a restart.
 */

const budgets = {
  SHUTDOWN_TIMEOUT_MS: '8000',
  SHUTDOWN_PAYMENTS_TIMEOUT_MS: '1000',
  SHUTDOWN_JOBS_TIMEOUT_MS: '1000',
  COMMIT_TIMEOUT_MS: '5000',
  PAYMENT_RETRY_DELAY_SECONDS: '1',
  AUDIT_CRON: '',
};

t.test('SIGTERM with a charge in flight: exit 0 within the budgets; the job is finished after a restart', async (t) => {
  const db = await createTestDatabase(t);
  const first = await startChild(db.url, { ...budgets, SIMULATED_PAYMENT_LATENCY_MS: '20000', PAYMENT_PROVIDER_TIMEOUT_MS: '60000' });
  t.teardown(() => first.child.kill('SIGKILL'));
  const api = clientFor(first.url);
  t.equal((await api.putSku('SLOWPAY', { stock: 5 })).status, 201);
  const reservation = await api.reserve('SLOWPAY', 'patient');
  const checkout = await api.call('POST', `/v1/reservations/${reservation.body.reservationId}/checkout`, {
    shopper: 'patient',
    body: { paymentMethod: 'pm_ok' },
    headers: { 'idempotency-key': randomUUID() },
  });
  t.equal(checkout.status, 202);
  const orderId = checkout.body.orderId as string;
  const jobState = async () => (await db.pool.query<{ state: string }>('SELECT state FROM pgboss.job WHERE id = $1', [orderId])).rows[0]?.state;
  for (let i = 0; i < 200 && (await jobState()) !== 'active'; i++) await sleep(50);
  t.equal(await jobState(), 'active', 'the charge is in flight (the provider takes 20 s)');

  const startedMs = Date.now();
  first.child.kill('SIGTERM');
  const code = await first.exited;
  const tookMs = Date.now() - startedMs;
  t.equal(code, 0, 'a clean exit, not "shutdown timed out"');
  t.ok(tookMs < 6000, `stopped in ${tookMs} ms: payments 1 s + pg-boss 1 s + the rest, well inside SHUTDOWN_TIMEOUT_MS 8 s`);
  t.not(await jobState(), 'active', 'pg-boss handed the job back (it is retried, not lost)');

  const second = await startChild(db.url, { ...budgets, SIMULATED_PAYMENT_LATENCY_MS: '1' });
  t.teardown(() => second.child.kill('SIGKILL'));
  const api2 = clientFor(second.url);
  let order: { status?: string } = {};
  for (let i = 0; i < 300 && order.status !== 'paid'; i++) {
    order = (await api2.call('GET', `/v1/orders/${orderId}`, { shopper: 'patient' })).body as { status?: string };
    if (order.status !== 'paid') await sleep(100);
  }
  t.equal(order.status, 'paid', 'the restarted service finished the payment');
  const charges = await db.pool.query('SELECT 1 FROM simulated_charges WHERE idempotency_key = $1', [orderId]);
  t.equal(charges.rowCount, 1, 'charged once');
  second.child.kill('SIGTERM');
  t.equal(await second.exited, 0);
});
