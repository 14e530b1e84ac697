import t, { type Test } from 'tap';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { startTestService, type TestService } from './helpers/service.js';
import { signWebhook } from '../src/payments/webhook.js';
import { SharedClock } from '../src/threads/shared-clock.js';
import { waitUntil } from './helpers/waits.js';

/** Checkout end to end over HTTP: every simulated provider behaviour, races, webhooks, the audit. */

export const webhookSecret = 'test-webhook-secret-0123456789abcdef';
const api = await startTestService(t, {
  paymentWebhookSecret: webhookSecret,
  simulatedPaymentLatencyMs: 1,
  paymentRetryLimit: 2,
  paymentRetryDelaySeconds: 1,
  auditCron: null,
  // One shopper sends 200 concurrent checkouts below: far past the default per-shopper rate limit.
  rateLimitShopperPerSecond: 1000,
});

async function reserveAndCheckout(svc: TestService, sku: string, shopper: string, paymentMethod: string, quantity = 1) {
  const reservation = await svc.reserve(sku, shopper, quantity);
  if (reservation.status !== 201) throw new Error(`reserve failed: ${JSON.stringify(reservation.body)}`);
  const checkout = await svc.call('POST', `/v1/reservations/${reservation.body.reservationId}/checkout`, {
    shopper,
    body: { paymentMethod },
    headers: { 'idempotency-key': randomUUID() },
  });
  return { reservation: reservation.body, checkout };
}

async function waitForOrder(svc: TestService, orderId: string, shopper: string, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const res = await svc.call('GET', `/v1/orders/${orderId}`, { shopper });
    if (res.body.status !== 'pending' || Date.now() > deadline) return res.body;
    await sleep(50);
  }
}

async function charges(svc: TestService, orderId: string) {
  return (await svc.call('GET', `/v1/admin/orders/${orderId}`, { admin: true })).body.charges as { status: string; amountCents: number; idempotencyKey: string; id: string }[];
}

t.test('pm_ok: 202 pending, then paid; the hold is sold and keeps counting toward the limit', async (t) => {
  await api.putSku('OK', { stock: 5, perShopperLimit: 2, priceCents: 1250 });
  const { reservation, checkout } = await reserveAndCheckout(api, 'OK', 'alice', 'pm_ok', 2);
  t.equal(checkout.status, 202);
  t.match(checkout.body, { orderId: /^[0-9a-f-]{36}$/, reservationId: reservation.reservationId, status: 'pending' });
  const order = await waitForOrder(api, checkout.body.orderId, 'alice');
  t.same(order, {
    orderId: checkout.body.orderId,
    reservationId: reservation.reservationId,
    sku: 'OK',
    quantity: 2,
    amountCents: 2500,
    currency: 'USD',
    status: 'paid',
  });
  t.match(await api.call('GET', `/v1/reservations/${reservation.reservationId}`, { shopper: 'alice' }), { body: { status: 'paid' } });
  t.match(await api.call('GET', '/v1/skus/OK'), { body: { available: 3, held: 0, sold: 2 } });
  t.match(await api.reserve('OK', 'alice', 1), { status: 409, body: { code: 'limit_exceeded' } }, 'paid units count toward the limit');
  const recorded = await charges(api, checkout.body.orderId);
  t.equal(recorded.length, 1);
  t.match(recorded[0], { status: 'succeeded', amountCents: 2500, idempotencyKey: checkout.body.orderId });
  t.match(await api.call('GET', `/v1/admin/orders/${checkout.body.orderId}`, { admin: true }), { body: { status: 'paid', charges: Array } });
  t.match(await api.call('GET', `/v1/admin/orders/${checkout.body.orderId}`, { shopper: 'alice' }), { status: 401 });
  t.match(await api.call('GET', `/v1/orders/${checkout.body.orderId}`, { shopper: 'bob' }), { status: 404 }, "another shopper's order");
});

t.test('pm_declined: failed with a reason, stock back at once, limit freed', async (t) => {
  await api.putSku('DECL', { stock: 1, perShopperLimit: 1 });
  const { reservation, checkout } = await reserveAndCheckout(api, 'DECL', 'bob', 'pm_declined');
  const order = await waitForOrder(api, checkout.body.orderId, 'bob');
  t.match(order, { status: 'failed', failureReason: 'card_declined' });
  t.match(await api.call('GET', `/v1/reservations/${reservation.reservationId}`, { shopper: 'bob' }), { body: { status: 'payment_failed' } });
  t.match(await api.call('GET', '/v1/skus/DECL'), { body: { available: 1, held: 0, sold: 0 } });
  t.equal((await api.reserve('DECL', 'bob', 1)).status, 201, 'payment_failed does not count toward the limit');
  t.match(await charges(api, checkout.body.orderId), [{ status: 'declined' }]);
});

t.test('pm_flaky: two transient failures, retried with backoff, then paid once', async (t) => {
  await api.putSku('FLAKY', { stock: 1 });
  const { checkout } = await reserveAndCheckout(api, 'FLAKY', 'carol', 'pm_flaky');
  const order = await waitForOrder(api, checkout.body.orderId, 'carol');
  t.equal(order.status, 'paid');
  t.equal((await charges(api, checkout.body.orderId)).length, 1);
  const attempts = await api.service.pool.query('SELECT attempts FROM simulated_charge_attempts WHERE idempotency_key = $1', [checkout.body.orderId]);
  t.equal(attempts.rows[0].attempts, 3, 'two failures, then success');
});

t.test('pm_lost_response: the retry finds the charge instead of charging again', async (t) => {
  await api.putSku('LOST', { stock: 1 });
  const { checkout } = await reserveAndCheckout(api, 'LOST', 'dave', 'pm_lost_response');
  const order = await waitForOrder(api, checkout.body.orderId, 'dave');
  t.equal(order.status, 'paid');
  t.match(await charges(api, checkout.body.orderId), [{ status: 'succeeded' }], 'exactly one charge');
});

t.test('pm_down: retries run out, the dead-letter worker compensates, stock back', async (t) => {
  await api.putSku('DOWN', { stock: 1 });
  const { reservation, checkout } = await reserveAndCheckout(api, 'DOWN', 'erin', 'pm_down');
  const order = await waitForOrder(api, checkout.body.orderId, 'erin', 30_000);
  t.match(order, { status: 'failed', failureReason: 'payment_unavailable' });
  t.match(await api.call('GET', `/v1/reservations/${reservation.reservationId}`, { shopper: 'erin' }), { body: { status: 'payment_failed' } });
  t.match(await api.call('GET', '/v1/skus/DOWN'), { body: { available: 1, held: 0 } });
  t.same(await charges(api, checkout.body.orderId), [], 'nothing charged');
  // Compensation is idempotent: running it again changes nothing.
  const row = await api.service.pool.query('SELECT * FROM orders WHERE order_id = $1', [checkout.body.orderId]);
  await api.service.payments.finalizer.compensate({ ...row.rows[0], orderId: row.rows[0].order_id, reservationId: row.rows[0].reservation_id, status: 'pending' });
  t.match(await api.call('GET', '/v1/skus/DOWN'), { body: { available: 1, held: 0, sold: 0 } });
});

t.test('checkout errors and idempotency', async (t) => {
  await api.putSku('CHK', { stock: 5 });
  const made = await api.reserve('CHK', 'frank', 1);
  const id = made.body.reservationId;
  const post = (options: Parameters<typeof api.call>[2], rid = id) => api.call('POST', `/v1/reservations/${rid}/checkout`, options);
  t.match(await post({ body: { paymentMethod: 'pm_ok' }, headers: { 'idempotency-key': 'c1' } }), { status: 401 });
  t.match(await post({ shopper: 'frank', body: { paymentMethod: 'pm_ok' } }), { status: 400, body: { code: 'invalid_request' } }, 'key required');
  t.match(await post({ shopper: 'frank', body: {}, headers: { 'idempotency-key': 'c1' } }), { status: 400, body: { code: 'invalid_request' } });
  t.match(await post({ shopper: 'frank', body: { paymentMethod: '' }, headers: { 'idempotency-key': 'c1' } }), { status: 400 });
  t.match(await post({ shopper: 'frank', body: { paymentMethod: 'pm\u0000ok' }, headers: { 'idempotency-key': 'c1' } }), { status: 400 }, 'no control characters (they would fail a whole batch)');
  t.match(await post({ shopper: 'frank', body: { paymentMethod: 'pm_ok' }, headers: { 'idempotency-key': 'c1' } }, randomUUID()), { status: 404 });
  t.match(await post({ shopper: 'mallory', body: { paymentMethod: 'pm_ok' }, headers: { 'idempotency-key': 'c1' } }), { status: 404 }, "another shopper's");

  const first = await post({ shopper: 'frank', body: { paymentMethod: 'pm_ok' }, headers: { 'idempotency-key': 'c1' } });
  t.equal(first.status, 202);
  const again = await post({ shopper: 'frank', body: { paymentMethod: 'pm_ok' }, headers: { 'idempotency-key': 'c1' } });
  t.same(again.body, first.body, 'same key: the same order');
  t.equal(again.status, 202);
  t.match(await post({ shopper: 'frank', body: { paymentMethod: 'pm_declined' }, headers: { 'idempotency-key': 'c1' } }), { status: 422, body: { code: 'idempotency_key_reused' } });
  await waitForOrder(api, first.body.orderId, 'frank');
  t.match(await post({ shopper: 'frank', body: { paymentMethod: 'pm_ok' }, headers: { 'idempotency-key': 'c2' } }), { status: 409, body: { code: 'reservation_not_held' } }, 'paid');
  t.same((await post({ shopper: 'frank', body: { paymentMethod: 'pm_ok' }, headers: { 'idempotency-key': 'c1' } })).body, first.body, 'replay still returns the original');

  const released = await api.reserve('CHK', 'gina', 1);
  await api.call('DELETE', `/v1/reservations/${released.body.reservationId}`, { shopper: 'gina' });
  t.match(await post({ shopper: 'gina', body: { paymentMethod: 'pm_ok' }, headers: { 'idempotency-key': 'g1' } }, released.body.reservationId), { status: 409, body: { code: 'reservation_not_held' } }, 'released');
  t.match(await api.call('DELETE', `/v1/reservations/${id}`, { shopper: 'frank' }), { status: 409, body: { code: 'reservation_not_held' } }, 'a paid reservation cannot be released');
});

t.test('200 concurrent checkouts of one reservation, different keys: exactly one order', async (t) => {
  await api.putSku('RACE', { stock: 1 });
  const made = await api.reserve('RACE', 'hank', 1);
  const results = await Promise.all(
    Array.from({ length: 200 }, (_, i) =>
      api.call('POST', `/v1/reservations/${made.body.reservationId}/checkout`, {
        shopper: 'hank',
        body: { paymentMethod: 'pm_ok' },
        headers: { 'idempotency-key': `race-${i}` },
      }),
    ),
  );
  t.equal(results.filter((r) => r.status === 202).length, 1, 'one 202');
  t.equal(results.filter((r) => r.status === 409 && r.body.code === 'reservation_not_held').length, 199, '199 × 409');
  const orders = await api.service.pool.query('SELECT count(*)::int AS n FROM orders WHERE reservation_id = $1', [made.body.reservationId]);
  t.equal(orders.rows[0].n, 1);
  const orderId = results.find((r) => r.status === 202)!.body.orderId;
  t.equal((await waitForOrder(api, orderId, 'hank')).status, 'paid');
  t.equal((await charges(api, orderId)).length, 1);
});

// The race between a checkout and its hold's expiry, forced on each side with an injected clock.
async function expiryRace(t: Test, msBeforeExpiry: number) {
  const clock = new SharedClock(Date.parse('2030-01-01T00:00:00Z'));
  const svc = await startTestService(t, { simulatedPaymentLatencyMs: 1, auditCron: null, expirySweepIntervalMs: 20 }, { nowMs: clock.nowMs });
  await svc.putSku('EDGE', { stock: 20, holdSeconds: 1, perShopperLimit: 20 });
  const made = await svc.reserve('EDGE', 'ivy', 1);
  t.equal(made.status, 201);
  clock.advance(Date.parse(made.body.expiresAt) - clock.nowMs() - msBeforeExpiry);
  const checkout = await svc.call('POST', `/v1/reservations/${made.body.reservationId}/checkout`, {
    shopper: 'ivy',
    body: { paymentMethod: 'pm_ok' },
    headers: { 'idempotency-key': 'edge-1' },
  });
  clock.advance(60_000); // long past the expiry: the sweep runs on the injected clock
  return { svc, made, checkout };
}

async function untilStatus(svc: TestService, id: string, shopper: string, want: string) {
  let status = '';
  // Waits for the sweep or the finalizer (their clock is injected, their pace is the machine's): 30 s at most.
  for (const deadline = Date.now() + 30_000; status !== want && Date.now() < deadline; ) {
    status = (await svc.call('GET', `/v1/reservations/${id}`, { shopper })).body.status;
    if (status !== want) await sleep(25);
  }
  return status;
}

t.test('a checkout 1 ms before the hold expires wins the race: paid, never expired', async (t) => {
  const { svc, made, checkout } = await expiryRace(t, 1);
  t.equal(checkout.status, 202, 'checkout accepted');
  t.equal((await waitForOrder(svc, checkout.body.orderId, 'ivy')).status, 'paid');
  t.equal(await untilStatus(svc, made.body.reservationId, 'ivy', 'paid'), 'paid', 'the hold was paid, the sweep did not expire it');
  t.match((await svc.call('GET', '/v1/skus/EDGE')).body, { sold: 1, held: 0, available: 19 });
});

t.test('a checkout at the moment the hold expires loses the race: 409, expired, nothing sold', async (t) => {
  const { svc, made, checkout } = await expiryRace(t, 0);
  t.match(checkout, { status: 409, body: { code: 'reservation_not_held', detail: /expired/ } });
  t.equal(await untilStatus(svc, made.body.reservationId, 'ivy', 'expired'), 'expired', 'the hold reads expired');
  // A read shows an overdue hold as expired at once; the counts change when the sweep (every 20 ms) records it.
  await waitUntil(t, 'the sweep gives the unit back', async () => (await svc.call('GET', '/v1/skus/EDGE')).body.held === 0);
  t.match((await svc.call('GET', '/v1/skus/EDGE')).body, { sold: 0, held: 0, available: 20 });
  const orders = await svc.service.pool.query('SELECT count(*)::int AS n FROM orders WHERE reservation_id = $1', [made.body.reservationId]);
  t.equal(orders.rows[0].n, 0, 'no order was made');
});

t.test('webhooks: signature required; duplicates and replays change nothing', async (t) => {
  await api.putSku('HOOK', { stock: 2 });
  const made = await api.reserve('HOOK', 'jack', 1);
  // The provider charged but our call timed out (pm_lost_response): the order stays
  // pending until the retry, and the provider's asynchronous confirmation lands first.
  const checkout = await api.call('POST', `/v1/reservations/${made.body.reservationId}/checkout`, {
    shopper: 'jack',
    body: { paymentMethod: 'pm_lost_response' },
    headers: { 'idempotency-key': 'hook-1' },
  });
  // The charge exists before its webhook is sent (a slow machine takes as long as it takes).
  for (let i = 0; i < 2000 && (await charges(api, checkout.body.orderId)).length === 0; i++) await sleep(10);
  t.equal((await charges(api, checkout.body.orderId)).length, 1, 'the provider charged');
  const delivery = JSON.stringify({ id: 'evt_1', type: 'charge.succeeded', orderId: checkout.body.orderId });
  const send = (raw: string, signature?: string) =>
    api.call('POST', '/v1/payments/webhook', {
      rawBody: raw,
      headers: { 'content-type': 'application/json', ...(signature ? { 'x-flashstock-signature': signature } : {}) },
    });
  t.match(await send(delivery), { status: 401, body: { code: 'unauthorized' } }, 'missing signature');
  t.match(await send(delivery, signWebhook('wrong', delivery)), { status: 401 }, 'bad signature');
  t.match(await send(delivery, signWebhook(webhookSecret, delivery + ' ')), { status: 401 }, 'signature of other bytes');
  const first = await send(delivery, signWebhook(webhookSecret, delivery));
  t.match(first, { status: 200, body: { received: true, duplicate: false, orderStatus: 'paid' } });
  const dupe = await send(delivery, signWebhook(webhookSecret, delivery));
  t.match(dupe, { status: 200, body: { duplicate: true, orderStatus: 'paid' } });
  const contradicting = JSON.stringify({ id: 'evt_2', type: 'charge.failed', orderId: checkout.body.orderId });
  t.match(await send(contradicting, signWebhook(webhookSecret, contradicting)), { status: 409, body: { code: 'provider_mismatch' } }, 'a contradiction of the provider\'s records is refused and changes nothing');
  t.match(await api.call('GET', '/v1/skus/HOOK'), { body: { sold: 1, held: 0 } });
  const unknown = JSON.stringify({ id: 'evt_3', type: 'charge.failed', orderId: randomUUID() });
  t.match(await send(unknown, signWebhook(webhookSecret, unknown)), { status: 404 });
  const bad = JSON.stringify({ id: 'evt_4', type: 'refund', orderId: checkout.body.orderId });
  t.match(await send(bad, signWebhook(webhookSecret, bad)), { status: 400 });
});

t.test('the audit finds nothing after all of the above, then finds a planted violation', async (t) => {
  // Let every job finish first (the dead-letter compensations included).
  for (let i = 0; i < 200; i++) {
    const pending = await api.service.pool.query(`SELECT count(*)::int AS n FROM orders WHERE status = 'pending'`);
    if (pending.rows[0].n === 0) break;
    await sleep(100);
  }
  const clean = await api.call('GET', '/v1/admin/audit', { admin: true });
  t.equal(clean.status, 200);
  t.match(clean.body, { ok: true, violations: [], checkedAt: String }, JSON.stringify(clean.body.violations));
  t.ok(clean.body.orders > 0 && clean.body.skus > 0);
  t.match(await api.call('GET', '/v1/admin/audit', { shopper: 'x' }), { status: 401 });

  // Plant one: a successful charge nobody paid for.
  const orderId = randomUUID();
  await api.service.pool.query(
    `INSERT INTO simulated_charges (charge_id, idempotency_key, amount_cents, currency, payment_method, status)
     VALUES ($1, $2, 100, 'USD', 'pm_ok', 'succeeded')`,
    [randomUUID(), orderId],
  );
  const dirty = await api.call('GET', '/v1/admin/audit', { admin: true });
  t.match(dirty.body, { ok: false, violations: [{ kind: 'charge_without_paid_order', orderId }] });
  await api.service.pool.query('DELETE FROM simulated_charges WHERE idempotency_key = $1', [orderId]);
});
