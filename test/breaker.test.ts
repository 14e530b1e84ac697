import t from 'tap';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BreakerState } from '../src/payments/breaker.js';
import type { SimulatedPaymentProvider } from '../src/payments/simulated-provider.js';
import { startTestService, type TestService } from './helpers/service.js';

/**
 * The payment provider's circuit breaker, end to end against the simulated
 * provider: an outage opens it, jobs wait without calling the provider and
 * without spending retries, a half-open probe closes it when the provider is
 * back, and every order is then charged exactly once.
 */

const breakerSettings = {
  simulatedPaymentLatencyMs: 1,
  paymentRetryLimit: 2,
  paymentRetryDelaySeconds: 1,
  paymentBreakerVolumeThreshold: 3,
  paymentBreakerErrorPercent: 50,
  paymentBreakerWindowSeconds: 30,
  paymentBreakerResetSeconds: 2,
  pgBossMaintenanceIntervalSeconds: 1,
  auditCron: null,
};

async function checkout(api: TestService, sku: string, shopper: string, paymentMethod: string): Promise<string> {
  const reservation = await api.reserve(sku, shopper, 1);
  if (reservation.status !== 201) throw new Error(`reserve: ${JSON.stringify(reservation.body)}`);
  const res = await api.call('POST', `/v1/reservations/${reservation.body.reservationId}/checkout`, {
    shopper,
    body: { paymentMethod },
    headers: { 'idempotency-key': randomUUID() },
  });
  if (res.status !== 202) throw new Error(`checkout: ${JSON.stringify(res.body)}`);
  return res.body.orderId as string;
}

async function until<T>(what: string, probe: () => Promise<T | null | undefined | false>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

async function attempts(api: TestService, orderIds: string[]): Promise<number> {
  const result = await api.service.pool.query<{ n: string }>(
    'SELECT coalesce(sum(attempts), 0) AS n FROM simulated_charge_attempts WHERE idempotency_key = ANY($1::text[])',
    [orderIds],
  );
  return Number(result.rows[0]!.n);
}

async function orderStatuses(api: TestService, orderIds: string[]): Promise<string[]> {
  const result = await api.service.pool.query<{ status: string }>('SELECT status FROM orders WHERE order_id = ANY($1::uuid[]) ORDER BY order_id', [orderIds]);
  return result.rows.map((r) => r.status);
}

t.test('an outage opens the breaker; jobs wait without spending retries; recovery closes it; each order charged once', async (t) => {
  // Retries enough that no job runs out through probes alone within this test's outage.
  const api = await startTestService(t, { ...breakerSettings, paymentRetryLimit: 10 });
  const payments = api.service.payments;
  const provider = payments.provider as SimulatedPaymentProvider;
  const states: BreakerState[] = [];
  payments.breaker.onStateChange((state) => states.push(state));
  await api.putSku('OUTAGE', { stock: 20, perShopperLimit: 1 });

  provider.startOutage();
  const orders: string[] = [];
  for (let i = 0; i < 6; i++) orders.push(await checkout(api, 'OUTAGE', `outage-${i}`, 'pm_ok'));
  await until('the breaker to open', async () => payments.breaker.state === 'open');
  t.pass('repeated transient failures opened the breaker');

  // Keep the provider down for several reset periods: without the breaker every
  // fetch of every job would call the provider and spend a retry.
  await until('jobs deferred by the open breaker', async () => payments.finalizer.stats.deferred > 0);
  const attemptsAtOpen = await attempts(api, orders);
  const failuresAtOpen = payments.finalizer.stats.transientFailures;
  const probesAtOpen = payments.breaker.stats.probes;
  await sleep(7_000);
  const attemptsDuringOutage = (await attempts(api, orders)) - attemptsAtOpen;
  const retriesSpent = payments.finalizer.stats.transientFailures - failuresAtOpen;
  const probes = payments.breaker.stats.probes - probesAtOpen;
  t.ok(probes >= 1, `half-open probes reached the provider (${probes})`);
  t.ok(attemptsDuringOutage <= probes, `while open only probes called the provider (${attemptsDuringOutage} calls, ${probes} probes)`);
  t.ok(retriesSpent <= probes, `only failed probes spent a retry (${retriesSpent} retries spent, ${probes} probes)`);
  t.ok(payments.finalizer.stats.deferred > orders.length, `jobs were deferred again and again (${payments.finalizer.stats.deferred} deferrals)`);
  t.ok(payments.breaker.stats.rejected > 0, `calls refused without reaching the provider (${payments.breaker.stats.rejected})`);
  t.same(await orderStatuses(api, orders), orders.map(() => 'pending'), 'no order failed while the provider was down');
  t.equal(payments.finalizer.stats.compensated, 0, 'nothing dead-lettered');
  const retries = await api.service.pool.query<{ retry_count: number; state: string }>(
    `SELECT retry_count, state FROM pgboss.job WHERE name = 'payment-finalize' AND id = ANY($1::uuid[])`,
    [orders],
  );
  t.ok(retries.rows.every((r) => r.state !== 'failed'), 'no job ran out of retries');
  t.ok(states.includes('half_open'), 'the breaker went half-open to probe');

  provider.endOutage();
  await until('every order paid', async () => (await orderStatuses(api, orders)).every((s) => s === 'paid'), 60_000);
  t.pass('after the outage every order is paid');
  t.equal(payments.breaker.state, 'closed', 'a successful probe closed the breaker');
  t.equal(states.at(-1), 'closed');
  const charged = await api.service.pool.query<{ idempotency_key: string; n: string }>(
    `SELECT idempotency_key, count(*) AS n FROM simulated_charges WHERE idempotency_key = ANY($1::text[]) GROUP BY 1`,
    [orders],
  );
  t.equal(charged.rows.length, orders.length, 'every order has a charge');
  t.ok(charged.rows.every((r) => r.n === '1'), 'exactly one charge each');
  t.match((await api.call('GET', '/v1/admin/audit', { admin: true })).body, { ok: true }, 'the ledger audit is clean');
});

t.test('pm_down opens the breaker; a deferred job still ends in the dead letter once it has waited too long', async (t) => {
  const api = await startTestService(t, { ...breakerSettings, paymentBreakerMaxDeferSeconds: 3 });
  const payments = api.service.payments;
  await api.putSku('DOWN', { stock: 20, perShopperLimit: 1 });
  const down: string[] = [];
  for (let i = 0; i < 4; i++) down.push(await checkout(api, 'DOWN', `down-${i}`, 'pm_down'));
  await until('the breaker to open', async () => payments.breaker.state === 'open');
  t.pass('pm_down failures opened the breaker');
  await until('the pm_down orders to be compensated', async () => (await orderStatuses(api, down)).every((s) => s === 'failed'), 60_000);
  const failed = await api.service.pool.query<{ failure_reason: string }>('SELECT failure_reason FROM orders WHERE order_id = ANY($1::uuid[])', [down]);
  t.ok(failed.rows.every((r) => r.failure_reason === 'payment_unavailable'), 'failed with payment_unavailable, stock given back');
  t.match((await api.call('GET', '/v1/skus/DOWN')).body, { available: 20, held: 0, sold: 0 });
  t.ok((await attempts(api, down)) <= down.length * 3, 'no job called the provider more than its retries allow');
});

t.test('the breaker state is logged on every change', async (t) => {
  const lines: string[] = [];
  const { createLogger } = await import('../src/log.js');
  const { PaymentBreaker } = await import('../src/payments/breaker.js');
  const { Writable } = await import('node:stream');
  const log = createLogger('info', 'breaker-test', new Writable({ write: (chunk, _enc, done) => (lines.push(String(chunk)), done()) }));
  const api = await startTestService(t, breakerSettings);
  const provider = api.service.payments.provider as SimulatedPaymentProvider;
  const breaker = new PaymentBreaker(provider, { volumeThreshold: 2, errorPercent: 50, windowSeconds: 10, resetSeconds: 1, timeoutMs: 5000 }, log);
  t.teardown(() => breaker.shutdown());
  const request = (key: string) => ({ idempotencyKey: key, amountCents: 100, currency: 'USD', paymentMethod: 'pm_ok' });
  provider.startOutage();
  for (let i = 0; i < 2; i++) await breaker.charge(request(randomUUID())).catch(() => undefined);
  t.equal(breaker.state, 'open');
  await t.rejects(breaker.charge(request(randomUUID())), { name: 'BreakerOpenError' }, 'open: refused without a call');
  provider.endOutage();
  await until('half-open', async () => breaker.state === 'half_open', 5000);
  // Calls arriving while the probe is in flight wait for it instead of being refused.
  const results = await Promise.all([0, 1, 2].map(() => breaker.charge(request(randomUUID()))));
  t.same(results.map((r) => r.status), ['succeeded', 'succeeded', 'succeeded'], 'the probe succeeded and the others followed it');
  t.equal(breaker.state, 'closed');
  const messages = lines.map((l) => JSON.parse(l) as { msg: string; to?: string }).filter((l) => l.to !== undefined);
  t.same(messages.map((m) => m.to), ['open', 'half_open', 'closed'], 'each transition logged once');
});
