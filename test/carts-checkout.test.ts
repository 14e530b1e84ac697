import t from 'tap';
import pg from 'pg';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { startTestService, type TestService } from './helpers/service.js';
import type { Link } from '../src/road/link.js';
import { shardOf } from '../src/shard/placement.js';
import { orderIdFor } from '../src/carts/ids.js';

/** A cart checked out as one order: one payment for Σ price × quantity; paid sells every line, declined gives every line back. */

const api = await startTestService(t, {
  simulatedPaymentLatencyMs: 1,
  paymentRetryLimit: 2,
  paymentRetryDelaySeconds: 1,
  auditCron: null,
  rateLimitShopperPerSecond: 100_000,
});

async function heldCart(svc: TestService, shopper: string, items: { sku: string; quantity: number }[]) {
  const res = await svc.call('POST', '/v1/carts', { shopper, body: { items }, headers: { 'idempotency-key': randomUUID() } });
  if (res.status !== 201) throw new Error(`cart refused: ${JSON.stringify(res.body)}`);
  return res.body as { cartId: string; items: { reservationId: string }[] };
}

function checkout(svc: TestService, cartId: string, shopper: string, paymentMethod: string, key = randomUUID()) {
  return svc.call('POST', `/v1/carts/${cartId}/checkout`, { shopper, body: { paymentMethod }, headers: { 'idempotency-key': key } });
}

async function settledOrder(svc: TestService, orderId: string, shopper: string) {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const res = await svc.call('GET', `/v1/orders/${orderId}`, { shopper });
    if ((res.status === 200 && res.body.status !== 'pending') || Date.now() > deadline) return res.body;
    await sleep(50);
  }
}

async function counts(sku: string) {
  const { body } = await api.call('GET', `/v1/skus/${sku}`);
  return { available: body.available as number, held: body.held as number, sold: body.sold as number };
}

async function cartStatus(cartId: string, shopper: string, want: string) {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const res = await api.call('GET', `/v1/carts/${cartId}`, { shopper });
    if (res.body.status === want || Date.now() > deadline) return res.body;
    await sleep(50);
  }
}

t.test('paid: one order for the sum of the lines, every line sold, the cart paid', async (t) => {
  await api.putSku('TEE', { stock: 5, priceCents: 1250 });
  await api.putSku('MUG', { stock: 5, priceCents: 500 });
  const cart = await heldCart(api, 'alice', [{ sku: 'TEE', quantity: 2 }, { sku: 'MUG', quantity: 1 }]);
  const key = randomUUID();
  const res = await checkout(api, cart.cartId, 'alice', 'pm_ok', key);
  t.equal(res.status, 202);
  t.match(res.body, { orderId: /^[0-9a-f-]{36}$/, cartId: cart.cartId, status: 'pending' });
  t.same((await checkout(api, cart.cartId, 'alice', 'pm_ok', key)).body, res.body, 'a repeat: the same order');
  const order = await settledOrder(api, res.body.orderId, 'alice');
  t.match(order, { orderId: res.body.orderId, amountCents: 2 * 1250 + 500, quantity: 3, currency: 'USD', status: 'paid' });
  const view = await cartStatus(cart.cartId, 'alice', 'paid');
  t.match(view, { status: 'paid', orderId: res.body.orderId });
  for (const item of cart.items) t.match(await api.call('GET', `/v1/reservations/${item.reservationId}`, { shopper: 'alice' }), { body: { status: 'paid' } });
  t.same(await counts('TEE'), { available: 3, held: 0, sold: 2 });
  t.same(await counts('MUG'), { available: 4, held: 0, sold: 1 });
  const charges = (await api.call('GET', `/v1/admin/orders/${res.body.orderId}`, { admin: true })).body.charges as { status: string; amountCents: number }[];
  t.same(charges.map((c) => [c.status, c.amountCents]), [['succeeded', 3000]], 'one charge');
  t.match(await api.call('DELETE', `/v1/carts/${cart.cartId}`, { shopper: 'alice' }), { status: 409, body: { code: 'reservation_not_held' } }, 'a paid cart cannot be released');
  t.match(await api.call('POST', `/v1/reservations/${cart.items[0]!.reservationId}/checkout`, { shopper: 'alice', body: { paymentMethod: 'pm_ok' }, headers: { 'idempotency-key': randomUUID() } }), { status: 409, body: { code: 'reservation_in_cart' } });
});

t.test("the ledger audit checks every line of a cart's order, not only the first", async (t) => {
  await api.putSku('AUD1', { stock: 5, priceCents: 100 });
  await api.putSku('AUD2', { stock: 5, priceCents: 100 });
  const cart = await heldCart(api, 'auditee', [{ sku: 'AUD1', quantity: 1 }, { sku: 'AUD2', quantity: 2 }]);
  const res = await checkout(api, cart.cartId, 'auditee', 'pm_ok');
  t.equal(res.status, 202);
  const orderId = res.body.orderId as string;
  t.match(await settledOrder(api, orderId, 'auditee'), { status: 'paid' });
  // The job settles the lines after the order: wait until the second one is sold too.
  t.match(await cartStatus(cart.cartId, 'auditee', 'paid'), { status: 'paid' });
  const second = cart.items[1]!.reservationId;
  const violationsOf = async () => {
    const report = await api.call('GET', '/v1/admin/audit', { admin: true });
    t.equal(report.status, 200);
    return (report.body.violations as { kind: string; orderId?: string; detail: string }[]).filter((v) => v.orderId === orderId);
  };
  t.same(await violationsOf(), [], 'a paid cart whose lines are all sold is clean');

  // Behind the service's back: the order says failed, or still pending, while both lines were sold.
  const db = new pg.Client({ connectionString: api.databaseUrl });
  await db.connect();
  t.teardown(() => db.end());
  for (const status of ['failed', 'pending']) {
    await db.query('UPDATE orders SET status = $2 WHERE order_id = $1', [orderId, status]);
    const found = await violationsOf();
    t.ok(
      found.some((v) => v.kind === 'order_log_mismatch' && v.detail === `order is ${status} but the log has its cart line ${second} paid`),
      `${status}: the second line is reported (${JSON.stringify(found)})`,
    );
  }
  await db.query("UPDATE orders SET status = 'paid' WHERE order_id = $1", [orderId]);
  t.same(await violationsOf(), [], 'and clean again once the order tells the truth');
});

t.test('declined: every line given back, the cart payment_failed', async (t) => {
  await api.putSku('D1', { stock: 3, priceCents: 100 });
  await api.putSku('D2', { stock: 3, priceCents: 200 });
  const cart = await heldCart(api, 'bob', [{ sku: 'D1', quantity: 1 }, { sku: 'D2', quantity: 3 }]);
  const res = await checkout(api, cart.cartId, 'bob', 'pm_declined');
  t.equal(res.status, 202);
  t.match(await settledOrder(api, res.body.orderId, 'bob'), { status: 'failed', amountCents: 700 });
  t.match(await cartStatus(cart.cartId, 'bob', 'payment_failed'), { status: 'payment_failed', orderId: res.body.orderId });
  t.same(await counts('D1'), { available: 3, held: 0, sold: 0 });
  t.same(await counts('D2'), { available: 3, held: 0, sold: 0 });
});

t.test("checkout of a released, unknown or other shopper's cart; lines in two currencies", async (t) => {
  await api.putSku('X1', { stock: 3 });
  await api.putSku('X2', { stock: 3, currency: 'EUR' });
  const released = await heldCart(api, 'carl', [{ sku: 'X1', quantity: 1 }]);
  await api.call('DELETE', `/v1/carts/${released.cartId}`, { shopper: 'carl' });
  t.match(await checkout(api, released.cartId, 'carl', 'pm_ok'), { status: 409, body: { code: 'reservation_not_held' } });
  t.match(await checkout(api, released.cartId, 'dora', 'pm_ok'), { status: 404 });
  t.match(await checkout(api, randomUUID(), 'carl', 'pm_ok'), { status: 404 });
  const mixed = await heldCart(api, 'carl', [{ sku: 'X1', quantity: 1 }, { sku: 'X2', quantity: 1 }]);
  t.match(await checkout(api, mixed.cartId, 'carl', 'pm_ok'), { status: 409, body: { code: 'mixed_currencies' } });
  t.same(await counts('X1'), { available: 2, held: 1, sold: 0 }, 'nothing frozen or sold');
});

t.test('a coordinator gone after the first line froze (the order and its job written): the job freezes the rest and pays for all', async (t) => {
  await api.putSku('G1', { stock: 2, priceCents: 300 });
  await api.putSku('G2', { stock: 2, priceCents: 400 });
  const cart = await heldCart(api, 'gail', [{ sku: 'G1', quantity: 1 }, { sku: 'G2', quantity: 2 }]);
  // Only what the coordinator's first step does, by hand over the shard channel: freeze line 0 with the order.
  const channel = (api.service.inventory as unknown as { channel: Link }).channel;
  const orderId = orderIdFor(cart.cartId, 'G1');
  const first = cart.items[0]!.reservationId;
  const order = { orderId, reservationId: first, sku: 'G1', shopperId: 'gail', quantity: 3, amountCents: 1100, currency: 'USD', paymentMethod: 'pm_ok', idempotencyKey: 'k1', cartId: cart.cartId };
  const frozen = await channel.request(shardOf('G1', 64), { type: 'cart_freeze', sku: 'G1', cartId: cart.cartId, reservationId: first, shopperId: 'gail', orderId, paymentMethod: 'pm_ok', order });
  t.match(frozen, { ok: true, value: { status: 'checking_out' } });
  t.match(await settledOrder(api, orderId, 'gail'), { status: 'paid', amountCents: 1100 });
  t.match(await cartStatus(cart.cartId, 'gail', 'paid'), { status: 'paid' });
  t.same(await counts('G2'), { available: 0, held: 0, sold: 2 }, 'the line the coordinator never froze is sold too');
});
