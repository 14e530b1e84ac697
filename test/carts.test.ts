import t from 'tap';
import { randomUUID } from 'node:crypto';
import { startTestService, type TestService } from './helpers/service.js';
import { sharedTestClock, waitUntil } from './helpers/waits.js';
import type { Link } from '../src/road/link.js';
import { shardOf, shardOfReservationId } from '../src/shard/placement.js';
import { cartIdFor, lineIdFor, requestHashOf } from '../src/carts/ids.js';
import { connectStream } from './helpers/stream-client.js';

/** Carts over HTTP on one node: all-or-nothing, GET/DELETE, expiry as one, idempotency, bad input, races. */

const clock = sharedTestClock();
const api = await startTestService(t, { rateLimitShopperPerSecond: 100_000, cartDecisionTimeoutMs: 1_000 }, { nowMs: clock.nowMs });

function cart(svc: TestService, shopper: string, items: unknown, key: string = randomUUID()) {
  return svc.call('POST', '/v1/carts', { shopper, body: { items }, headers: { 'idempotency-key': key } });
}

async function counts(sku: string) {
  const { body } = await api.call('GET', `/v1/skus/${sku}`);
  return { available: body.available as number, held: body.held as number, sold: body.sold as number };
}

t.test('every line held: 201 with its lines, each an ordinary held reservation; DELETE gives every line back', async (t) => {
  await api.putSku('HOODIE', { stock: 5 });
  await api.putSku('CAP', { stock: 5, holdSeconds: 120 });
  const res = await cart(api, 'alice', [{ sku: 'HOODIE', quantity: 2 }, { sku: 'CAP', quantity: 1 }]);
  t.equal(res.status, 201);
  t.match(res.body, { cartId: /^[0-9a-f-]{36}$/, status: 'held', items: [{ sku: 'HOODIE', quantity: 2 }, { sku: 'CAP', quantity: 1 }] });
  // The cart expires as one, at its earliest line's expiry (CAP holds 120 s, HOODIE 300 s).
  t.equal(res.body.expiresAt, new Date(clock.nowMs() + 120_000).toISOString());
  for (const item of res.body.items) {
    const line = await api.call('GET', `/v1/reservations/${item.reservationId}`, { shopper: 'alice' });
    t.match(line.body, { status: 'held', sku: item.sku, quantity: item.quantity, expiresAt: res.body.expiresAt });
  }
  t.same(await counts('HOODIE'), { available: 3, held: 2, sold: 0 });
  t.same(await counts('CAP'), { available: 4, held: 1, sold: 0 });

  const got = await api.call('GET', `/v1/carts/${res.body.cartId}`, { shopper: 'alice' });
  t.equal(got.status, 200);
  t.match(got.body, { cartId: res.body.cartId, status: 'held', expiresAt: res.body.expiresAt });
  t.equal((await api.call('GET', `/v1/carts/${res.body.cartId}`, { shopper: 'bob' })).status, 404, "another shopper's cart does not exist");

  // A line is the cart's: it is released or checked out with its cart, not alone.
  const alone = await api.call('DELETE', `/v1/reservations/${res.body.items[0].reservationId}`, { shopper: 'alice' });
  t.match(alone, { status: 409, body: { code: 'reservation_in_cart' } });

  const released = await api.call('DELETE', `/v1/carts/${res.body.cartId}`, { shopper: 'alice' });
  t.match(released, { status: 200, body: { status: 'released' } });
  t.same(await counts('HOODIE'), { available: 5, held: 0, sold: 0 });
  t.same(await counts('CAP'), { available: 5, held: 0, sold: 0 });
  t.match(await api.call('DELETE', `/v1/carts/${res.body.cartId}`, { shopper: 'alice' }), { status: 200, body: { status: 'released' } }, 'again: same');
});

t.test('one line refused: nothing held anywhere, the refusal of the first failing line, named', async (t) => {
  await api.putSku('A1', { stock: 5 });
  await api.putSku('B1', { stock: 1 });
  await api.putSku('C1', { stock: 5, perShopperLimit: 1 });
  const soldOut = await cart(api, 'carol', [{ sku: 'A1', quantity: 1 }, { sku: 'B1', quantity: 2 }]);
  t.match(soldOut, { status: 409, body: { code: 'sold_out', line: 1, sku: 'B1' } });
  const limit = await cart(api, 'carol', [{ sku: 'C1', quantity: 2 }, { sku: 'A1', quantity: 1 }]);
  t.match(limit, { status: 409, body: { code: 'limit_exceeded', line: 0, sku: 'C1' } });
  const unknown = await cart(api, 'carol', [{ sku: 'A1', quantity: 1 }, { sku: 'NOPE', quantity: 1 }]);
  t.match(unknown, { status: 404, body: { code: 'not_found', line: 1, sku: 'NOPE' } });
  const tooMany = await cart(api, 'carol', [{ sku: 'A1', quantity: 1 }, { sku: 'B1', quantity: 101 }]);
  t.match(tooMany, { status: 400, body: { code: 'quantity_too_large', line: 1, sku: 'B1' } });
  t.same(await counts('A1'), { available: 5, held: 0, sold: 0 });
  t.same(await counts('B1'), { available: 1, held: 0, sold: 0 });
  t.same(await counts('C1'), { available: 5, held: 0, sold: 0 });
  // The same key again: the same refusal (the cart's decision is recorded once).
  const key = randomUUID();
  const first = await cart(api, 'carol', [{ sku: 'A1', quantity: 1 }, { sku: 'B1', quantity: 2 }], key);
  await api.putSku('B1', { stock: 10 });
  const again = await cart(api, 'carol', [{ sku: 'A1', quantity: 1 }, { sku: 'B1', quantity: 2 }], key);
  t.same(again.body, first.body);
  t.same(await counts('A1'), { available: 5, held: 0, sold: 0 });
});

t.test('idempotency: same key and body, the same cart; another body, 422; per-shopper limits count cart lines', async (t) => {
  await api.putSku('I1', { stock: 10, perShopperLimit: 3 });
  await api.putSku('I2', { stock: 10 });
  const key = randomUUID();
  const items = [{ sku: 'I1', quantity: 2 }, { sku: 'I2', quantity: 1 }];
  const first = await cart(api, 'dave', items, key);
  t.equal(first.status, 201);
  const again = await cart(api, 'dave', items, key);
  t.same(again.body, first.body);
  t.equal(again.status, 201);
  t.match(await cart(api, 'dave', [{ sku: 'I1', quantity: 1 }], key), { status: 422, body: { code: 'idempotency_key_reused' } });
  t.same(await counts('I1'), { available: 8, held: 2, sold: 0 });
  t.match(await api.reserve('I1', 'dave', 2), { status: 409, body: { code: 'limit_exceeded' } });
  t.match(await api.reserve('I1', 'dave', 1), { status: 201 });
  // The same key from another shopper is another cart.
  t.match(await cart(api, 'erin', items, key), { status: 201 });
});

t.test('bad input: 4xx with a stable code, nothing held', async (t) => {
  await api.putSku('BAD', { stock: 5 });
  const cases: [string, unknown, number][] = [
    ['empty items', [], 400],
    ['duplicate SKU', [{ sku: 'BAD', quantity: 1 }, { sku: 'BAD', quantity: 1 }], 400],
    ['more lines than CART_MAX_LINES', Array.from({ length: 21 }, (_, i) => ({ sku: `S${i}`, quantity: 1 })), 400],
    ['quantity 0', [{ sku: 'BAD', quantity: 0 }], 400],
    ['negative quantity', [{ sku: 'BAD', quantity: -1 }], 400],
    ['huge quantity', [{ sku: 'BAD', quantity: 1e12 }], 400],
    ['fractional quantity', [{ sku: 'BAD', quantity: 1.5 }], 400],
    ['bad SKU', [{ sku: '..', quantity: 1 }], 400],
    ['extra field', [{ sku: 'BAD', quantity: 1, price: 1 }], 400],
    ['not an array', { sku: 'BAD' }, 400],
  ];
  for (const [what, items, status] of cases) {
    const res = await cart(api, 'frank', items);
    t.equal(res.status, status, what);
    t.equal(res.body.code, 'invalid_request', what);
  }
  t.match(await api.call('POST', '/v1/carts', { shopper: 'frank', body: { items: [], more: 1 }, headers: { 'idempotency-key': 'k' } }), { status: 400 });
  t.match(await api.call('POST', '/v1/carts', { shopper: 'frank', rawBody: '{"items":', headers: { 'idempotency-key': 'k', 'content-type': 'application/json' } }), { status: 400 });
  const big = JSON.stringify({ items: [{ sku: 'BAD', quantity: 1 }], pad: 'x'.repeat(1024 * 1024) });
  t.match(await api.call('POST', '/v1/carts', { shopper: 'frank', rawBody: big, headers: { 'idempotency-key': 'k', 'content-type': 'application/json' } }), { status: 413 });
  t.match(await api.call('POST', '/v1/carts', { shopper: 'frank', body: { items: [{ sku: 'BAD', quantity: 1 }] } }), { status: 400 }, 'no key');
  t.match(await api.call('POST', '/v1/carts', { body: { items: [{ sku: 'BAD', quantity: 1 }] }, headers: { 'idempotency-key': 'k' } }), { status: 401 });
  t.match(await api.call('GET', '/v1/carts/not-a-uuid', { shopper: 'frank' }), { status: 404 });
  t.match(await api.call('GET', `/v1/carts/${randomUUID()}`, { shopper: 'frank' }), { status: 404 });
  t.match(await api.call('DELETE', `/v1/carts/${randomUUID()}`, { shopper: 'frank' }), { status: 404 });
  t.same(await counts('BAD'), { available: 5, held: 0, sold: 0 });
});

t.test('the cart expires as one, at its earliest line', async (t) => {
  await api.putSku('E1', { stock: 3, holdSeconds: 10 });
  await api.putSku('E2', { stock: 3, holdSeconds: 600 });
  const res = await cart(api, 'gina', [{ sku: 'E2', quantity: 1 }, { sku: 'E1', quantity: 1 }]);
  t.equal(res.status, 201);
  clock.advance(10_000);
  await waitUntil(t, 'both lines expired', async () => (await counts('E1')).held === 0 && (await counts('E2')).held === 0);
  const got = await api.call('GET', `/v1/carts/${res.body.cartId}`, { shopper: 'gina' });
  t.match(got.body, { status: 'expired' });
  t.same(await counts('E2'), { available: 3, held: 0, sold: 0 });
});

t.test('racing carts over overlapping SKUs: winners hold exactly their lines, losers nothing anywhere', async (t) => {
  const skus = ['R1', 'R2', 'R3', 'R4'];
  for (const sku of skus) await api.putSku(sku, { stock: 4, perShopperLimit: 100 });
  const carts = Array.from({ length: 24 }, (_, i) => {
    const picked = skus.filter((_, j) => (i + j) % 3 !== 0).slice(0, 2 + (i % 2));
    return { shopper: `racer${i}`, items: picked.map((sku) => ({ sku, quantity: 1 + (i % 2) })) };
  });
  const answers = await Promise.all(carts.map((c) => cart(api, c.shopper, c.items)));
  const held = new Map(skus.map((sku) => [sku, 0]));
  let winners = 0;
  for (const [i, res] of answers.entries()) {
    if (res.status === 201) {
      winners += 1;
      for (const item of carts[i]!.items) held.set(item.sku, held.get(item.sku)! + item.quantity);
    } else {
      t.match(res, { status: 409, body: { code: 'sold_out' } }, 'contention is 201 or 409, never 503');
    }
  }
  t.ok(winners > 0, 'some carts win');
  t.ok(winners < carts.length, 'some carts lose (the stock cannot hold them all)');
  for (const sku of skus) {
    const c = await counts(sku);
    t.equal(c.held, held.get(sku), `${sku}: held = the winning carts' lines`);
    t.equal(c.available + c.held, 4);
  }
});

t.test('a cart and single reservations racing for the last unit: exactly one winner', async (t) => {
  for (let round = 0; round < 5; round++) {
    const last = `LAST${round}`;
    await api.putSku(last, { stock: 1 });
    await api.putSku(`PLENTY${round}`, { stock: 100 });
    const answers = await Promise.all([
      cart(api, `cartshopper${round}`, [{ sku: `PLENTY${round}`, quantity: 1 }, { sku: last, quantity: 1 }]),
      ...Array.from({ length: 4 }, (_, i) => api.reserve(last, `single${round}-${i}`)),
    ]);
    const wins = answers.filter((a) => a.status === 201).length;
    t.equal(wins, 1, `round ${round}: one winner`);
    for (const a of answers) if (a.status !== 201) t.match(a.body, { code: 'sold_out' });
    t.same(await counts(last), { available: 0, held: 1, sold: 0 });
    t.equal((await counts(`PLENTY${round}`)).held, answers[0]!.status === 201 ? 1 : 0, 'the cart holds its other line only if it won');
  }
});

t.test('a line whose cart never decides is aborted by its shard after CART_DECISION_TIMEOUT_MS; the cart stays aborted', async (t) => {
  await api.putSku('LATE1', { stock: 2 });
  await api.putSku('LATE2', { stock: 2 });
  // A coordinator that prepares one line and dies before deciding: driven by hand over the shard channel.
  const channel = (api.service.inventory as unknown as { channel: Link }).channel;
  const shardCount = 64;
  const key = randomUUID();
  const items = [{ sku: 'LATE1', quantity: 2 }, { sku: 'LATE2', quantity: 1 }];
  const cartId = cartIdFor('hank', key);
  const lines = items.map((item) => ({ ...item, reservationId: lineIdFor(cartId, item.sku) }));
  const home = shardOfReservationId(cartId, shardCount)!;
  t.match(await channel.request(home, { type: 'cart_begin', cartId, shopperId: 'hank', idempotencyKey: key, requestHash: requestHashOf(items), lines }), { ok: true });
  const line = lines[0]!;
  const prepared = await channel.request(shardOf('LATE1', shardCount), { type: 'cart_prepare', sku: 'LATE1', cartId, reservationId: line.reservationId, shopperId: 'hank', quantity: 2 });
  t.match(prepared, { ok: true, value: { status: 'tentative' } });
  t.same(await counts('LATE1'), { available: 0, held: 2, sold: 0 });
  t.match(await api.reserve('LATE1', 'ivy'), { status: 409, body: { code: 'sold_out' } }, 'a tentative line holds its units');
  clock.advance(1_000);
  await waitUntil(t, 'the late line aborted', async () => (await counts('LATE1')).held === 0);
  t.match(await api.call('GET', `/v1/reservations/${line.reservationId}`, { shopper: 'hank' }), { body: { status: 'released' } });
  // The shopper's retry finds the decision the shard made: nothing held, a new key starts a new cart.
  const retry = await cart(api, 'hank', items, key);
  t.match(retry, { status: 409, body: { code: 'cart_aborted' } });
  t.same(await counts('LATE1'), { available: 2, held: 0, sold: 0 });
  t.same(await counts('LATE2'), { available: 2, held: 0, sold: 0 });
  t.match(await cart(api, 'hank', items), { status: 201 });
});

t.test('the WebSocket `cart` command: the same carts, the same refusals naming the line; counted in flashstock_carts_total', async (t) => {
  await api.putSku('WS1', { stock: 2 });
  await api.putSku('WS2', { stock: 1 });
  const ws = await connectStream(t, api.url, api.token('wendy'));
  const ask = (socket: typeof ws, message: Record<string, unknown> & { id: string }) => {
    socket.send(message);
    return socket.take((m) => m.id === message.id && (m.type === 'cart' || m.type === 'error'), 10_000, `reply to ${message.id}`);
  };
  const key = randomUUID();
  const held = await ask(ws, { type: 'cart', id: 'c1', idempotencyKey: key, items: [{ sku: 'WS1', quantity: 1 }, { sku: 'WS2', quantity: 1 }] });
  t.match(held, { type: 'cart', id: 'c1', cart: { status: 'held', items: [{ sku: 'WS1' }, { sku: 'WS2' }] } });
  const http = await cart(api, 'wendy', [{ sku: 'WS1', quantity: 1 }, { sku: 'WS2', quantity: 1 }], key);
  t.same(http.body, held.cart, 'the same key over HTTP: the same cart');
  const refused = await ask(ws, { type: 'cart', id: 'c2', idempotencyKey: randomUUID(), items: [{ sku: 'WS1', quantity: 1 }, { sku: 'WS2', quantity: 1 }] });
  t.match(refused, { type: 'error', id: 'c2', status: 409, code: 'sold_out', line: 1, sku: 'WS2' });
  t.same(await counts('WS1'), { available: 1, held: 1, sold: 0 }, 'the refused cart holds nothing');
  const bad = await ask(ws, { type: 'cart', id: 'c3', idempotencyKey: randomUUID(), items: [{ sku: 'WS1', quantity: 1 }, { sku: 'WS1', quantity: 1 }] });
  t.match(bad, { type: 'error', id: 'c3', code: 'invalid_message', line: 1, sku: 'WS1' });
  const anonymous = await connectStream(t, api.url);
  t.match(await ask(anonymous, { type: 'cart', id: 'c4', idempotencyKey: 'k', items: [{ sku: 'WS1', quantity: 1 }] }), { type: 'error', code: 'unauthorized' });
  const metrics = await (await fetch(`${api.metricsUrl}/metrics`)).text();
  t.match(metrics, /flashstock_carts_total\{outcome="held"\} [1-9]/);
  t.match(metrics, /flashstock_carts_total\{outcome="sold_out"\} [1-9]/);
});
