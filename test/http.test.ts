import t from 'tap';
import { randomUUID } from 'node:crypto';
import { createSigner } from 'fast-jwt';
import { startTestService, jwtSecret, skuDefaults } from './helpers/service.js';

/** Every line of the HTTP contract, against a real service on a real Postgres. */

const api = await startTestService(t);
const { call, putSku, reserve } = api;

t.test('ops: /healthz and /readyz', async (t) => {
  t.match(await call('GET', '/healthz'), { status: 200, body: { status: 'ok' } });
  t.match(await call('GET', '/readyz'), { status: 200, body: { status: 'ready' } });
});

t.test('admin: PUT /v1/admin/skus/{sku}', async (t) => {
  const created = await putSku('ADM-1', { stock: 7, startsAt: '2020-01-01T00:00:00Z' });
  t.equal(created.status, 201);
  t.same(created.body, {
    sku: 'ADM-1',
    state: 'on_sale',
    stock: 7,
    available: 7,
    held: 0,
    sold: 0,
    perShopperLimit: 5,
    holdSeconds: 300,
    priceCents: 1999,
    currency: 'USD',
    startsAt: '2020-01-01T00:00:00.000Z',
    endsAt: null,
  });
  const updated = await putSku('ADM-1', { stock: 9 });
  t.equal(updated.status, 200);
  t.equal(updated.body.stock, 9);
  t.equal(updated.body.startsAt, null, 'an update replaces the whole configuration');

  t.match(await call('PUT', '/v1/admin/skus/ADM-1', { body: skuDefaults }), { status: 401, body: { code: 'unauthorized' } });
  t.match(await call('PUT', '/v1/admin/skus/ADM-1', { body: skuDefaults, token: 'wrong' }), { status: 401 });
  t.match(await call('PUT', '/v1/admin/skus/ADM-1', { body: skuDefaults, shopper: 'alice' }), { status: 401 }, 'a shopper token is not an admin token');

  const badSkus = ['has space', 'x'.repeat(65), 'semi;colon', 'per%25cent'];
  for (const sku of badSkus) {
    const res = await call('PUT', `/v1/admin/skus/${encodeURIComponent(sku)}`, { admin: true, body: skuDefaults });
    t.match(res, { status: 400, body: { code: 'invalid_request' } }, `sku ${JSON.stringify(sku)} refused`);
  }
  t.equal((await putSku('a.B_c-9', {})).status, 201, 'letters, digits, dot, underscore, dash are fine');
  t.equal((await putSku('x'.repeat(64), {})).status, 201, '64 characters is fine');

  const invalidBodies: Record<string, unknown>[] = [
    { stock: -1 },
    { stock: 1.5 },
    { perShopperLimit: 0 },
    { holdSeconds: 0 },
    { priceCents: -1 },
    { currency: 'usd' },
    { startsAt: 'tomorrow' },
    { startsAt: '2030-01-02T00:00:00Z', endsAt: '2030-01-01T00:00:00Z' },
    { extra: true },
  ];
  for (const patch of invalidBodies) {
    const res = await putSku('ADM-2', patch);
    t.match(res, { status: 400, body: { code: 'invalid_request', status: 400 } }, `refused ${JSON.stringify(patch)}`);
  }
  const missing = await call('PUT', '/v1/admin/skus/ADM-2', { admin: true, body: { stock: 1 } });
  t.match(missing, { status: 400, body: { code: 'invalid_request' } }, 'required fields');
});

t.test('admin: lowering stock under held + sold is 409 stock_below_committed', async (t) => {
  await putSku('LOW', { stock: 5 });
  t.equal((await reserve('LOW', 'alice', 3)).status, 201);
  const res = await putSku('LOW', { stock: 2 });
  t.match(res, { status: 409, body: { code: 'stock_below_committed' } });
  t.equal(res.headers.get('content-type'), 'application/problem+json');
  t.match(await putSku('LOW', { stock: 3 }), { status: 200, body: { stock: 3, available: 0, held: 3 } });
});

t.test('public: GET /v1/skus/{sku}', async (t) => {
  await putSku('VIEW', { stock: 4, endsAt: '2999-01-01T00:00:00Z' });
  t.match(await call('GET', '/v1/skus/VIEW'), {
    status: 200,
    body: { sku: 'VIEW', state: 'on_sale', stock: 4, available: 4, held: 0, sold: 0, startsAt: null, endsAt: '2999-01-01T00:00:00.000Z' },
  });
  const missing = await call('GET', '/v1/skus/NOPE');
  t.match(missing, { status: 404, body: { code: 'not_found', status: 404, title: String, detail: String } });
  t.equal(missing.headers.get('content-type'), 'application/problem+json');
});

t.test('shopper: POST reservations, the happy path', async (t) => {
  await putSku('RES', { stock: 3, holdSeconds: 120 });
  const before = Date.now();
  const res = await reserve('RES', 'alice', 2);
  t.equal(res.status, 201);
  t.match(res.body, { reservationId: /^[0-9a-f-]{36}$/, sku: 'RES', quantity: 2, status: 'held', expiresAt: String });
  t.same(Object.keys(res.body).sort(), ['expiresAt', 'quantity', 'reservationId', 'sku', 'status']);
  const expiresAt = Date.parse(res.body.expiresAt);
  t.ok(expiresAt >= before + 120_000 && expiresAt <= Date.now() + 120_000, 'expiresAt is now + holdSeconds');
  t.match(await call('GET', '/v1/skus/RES'), { body: { available: 1, held: 2, sold: 0 } });
});

t.test('shopper: reservation errors, every code', async (t) => {
  await putSku('ERR', { stock: 3, perShopperLimit: 2 });
  const post = (options: Parameters<typeof call>[2], sku = 'ERR') => call('POST', `/v1/skus/${sku}/reservations`, options);
  const key = { 'idempotency-key': 'k-1' };

  t.match(await post({ body: { quantity: 1 }, headers: key }), { status: 401, body: { code: 'unauthorized' } }, 'no token');
  t.match(await post({ body: { quantity: 1 }, headers: key, token: 'not.a.jwt' }), { status: 401 }, 'garbage token');
  const wrongKey = createSigner({ key: 'another-secret', algorithm: 'HS256' })({ sub: 'alice' });
  t.match(await post({ body: { quantity: 1 }, headers: key, token: wrongKey }), { status: 401 }, 'wrong secret');
  const expired = createSigner({ key: jwtSecret, algorithm: 'HS256' })({ sub: 'alice', exp: Math.floor(Date.now() / 1000) - 10 });
  t.match(await post({ body: { quantity: 1 }, headers: key, token: expired }), { status: 401 }, 'exp honoured');
  const hs512 = createSigner({ key: jwtSecret, algorithm: 'HS512' })({ sub: 'alice' });
  t.match(await post({ body: { quantity: 1 }, headers: key, token: hs512 }), { status: 401 }, 'other alg rejected');
  const none = `${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${Buffer.from('{"sub":"alice"}').toString('base64url')}.`;
  t.match(await post({ body: { quantity: 1 }, headers: key, token: none }), { status: 401 }, 'alg none rejected');
  const noSub = createSigner({ key: jwtSecret, algorithm: 'HS256' })({ foo: 1 });
  t.match(await post({ body: { quantity: 1 }, headers: key, token: noSub }), { status: 401 }, 'sub required');

  t.match(await post({ body: { quantity: 1 }, shopper: 'alice' }), { status: 400, body: { code: 'invalid_request', detail: /Idempotency-Key/ } }, 'missing key');
  t.match(await post({ body: { quantity: 1 }, shopper: 'alice', headers: { 'idempotency-key': 'x'.repeat(201) } }), { status: 400 }, 'key too long');
  t.match(await post({ body: { quantity: 1 }, shopper: 'alice', headers: { 'idempotency-key': 'has space' } }), { status: 400 }, 'key not visible ASCII');
  t.equal((await post({ body: { quantity: 1 }, shopper: 'keylen', headers: { 'idempotency-key': 'x'.repeat(200) } })).status, 201, '200 characters is fine');
  await call('DELETE', `/v1/reservations/${(await reserve('ERR', 'keylen2', 1)).body.reservationId}`, { shopper: 'keylen2' });

  for (const body of [{}, { quantity: 0 }, { quantity: -1 }, { quantity: 1.5 }, { quantity: '1' }, { quantity: 1, x: 1 }, [1]]) {
    t.match(await post({ body, shopper: 'alice', headers: key }), { status: 400, body: { code: 'invalid_request' } }, `body ${JSON.stringify(body)}`);
  }
  t.match(await post({ rawBody: '{"quantity":', shopper: 'alice', headers: { ...key, 'content-type': 'application/json' } }), { status: 400, body: { code: 'invalid_request' } }, 'broken JSON');
  t.match(await post({ rawBody: 'quantity=1', shopper: 'alice', headers: { ...key, 'content-type': 'application/x-www-form-urlencoded' } }), { status: 415, body: { code: 'unsupported_media_type' } });
  t.match(await post({ rawBody: '{"quantity":1}', shopper: 'alice', headers: key }), { status: 415 }, 'no content type');
  t.match(await post({ rawBody: JSON.stringify({ quantity: 1, pad: 'x'.repeat(17 * 1024) }), shopper: 'alice', headers: { ...key, 'content-type': 'application/json' } }), { status: 413, body: { code: 'payload_too_large' } });
  t.match(await post({ body: { quantity: 1 }, shopper: 'alice', headers: key }, 'MISSING'), { status: 404, body: { code: 'not_found' } });
  t.match(await post({ body: { quantity: 101 }, shopper: 'alice', headers: key }), { status: 400, body: { code: 'quantity_too_large' } });

  t.match(await post({ body: { quantity: 3 }, shopper: 'alice', headers: key }), { status: 409, body: { code: 'limit_exceeded' } });
  t.equal((await post({ body: { quantity: 2 }, shopper: 'alice', headers: key })).status, 201);
  t.match(await post({ body: { quantity: 1 }, shopper: 'alice', headers: key }), { status: 422, body: { code: 'idempotency_key_reused' } }, 'same key, different quantity');
  t.match(await reserve('ERR', 'alice', 1), { status: 409, body: { code: 'limit_exceeded' } }, 'held units count toward the limit');
  t.match(await reserve('ERR', 'bob', 1), { status: 409, body: { code: 'sold_out' } });

  await putSku('ERR-OTHER', { stock: 5 });
  // Keys are scoped per shopper and SKU: on another SKU the same key is a new request.
  const elsewhere = await post({ body: { quantity: 2 }, shopper: 'alice', headers: key }, 'ERR-OTHER');
  t.match(elsewhere, { status: 201, body: { sku: 'ERR-OTHER', quantity: 2 } }, 'same key on another SKU is a new reservation there');
  const replayed = await post({ body: { quantity: 2 }, shopper: 'alice', headers: key }, 'ERR-OTHER');
  t.same({ status: replayed.status, body: replayed.body }, { status: 201, body: elsewhere.body }, 'and replays there');

  await putSku('LATER', { startsAt: '2999-01-01T00:00:00Z' });
  t.match(await reserve('LATER', 'alice'), { status: 409, body: { code: 'sale_not_open' } }, 'before startsAt');
  await putSku('OVER', { startsAt: '2000-01-01T00:00:00Z', endsAt: '2000-01-02T00:00:00Z' });
  t.match(await reserve('OVER', 'alice'), { status: 409, body: { code: 'sale_not_open' } }, 'after endsAt');
});

t.test('idempotent replay returns the original status and body', async (t) => {
  await putSku('IDEM', { stock: 5 });
  const key = randomUUID();
  const first = await reserve('IDEM', 'carol', 2, key);
  const again = await reserve('IDEM', 'carol', 2, key);
  t.equal(again.status, 201);
  t.same(again.body, first.body);
  t.match(await call('GET', '/v1/skus/IDEM'), { body: { held: 2 } }, 'nothing reserved twice');
  await call('DELETE', `/v1/reservations/${first.body.reservationId}`, { shopper: 'carol' });
  const afterRelease = await reserve('IDEM', 'carol', 2, key);
  t.same(afterRelease.body, first.body, 'still the original answer after the hold changed');
  const concurrent = await Promise.all(Array.from({ length: 20 }, () => reserve('IDEM', 'dave', 1, 'same-key')));
  t.same(new Set(concurrent.map((r) => r.body.reservationId)).size, 1, 'concurrent repeats get one reservation');
  t.ok(concurrent.every((r) => r.status === 201));
});

t.test('GET and DELETE /v1/reservations/{id}', async (t) => {
  await putSku('REL', { stock: 4, perShopperLimit: 4 });
  const made = await reserve('REL', 'erin', 3);
  const id = made.body.reservationId;
  t.same((await call('GET', `/v1/reservations/${id}`, { shopper: 'erin' })).body, made.body);
  t.match(await call('GET', `/v1/reservations/${id}`, { shopper: 'frank' }), { status: 404, body: { code: 'not_found' } }, "another shopper's");
  t.match(await call('GET', `/v1/reservations/${id}`), { status: 401 });
  t.match(await call('GET', `/v1/reservations/${randomUUID()}`, { shopper: 'erin' }), { status: 404 });
  t.match(await call('GET', '/v1/reservations/not-a-uuid', { shopper: 'erin' }), { status: 404 });
  t.match(await call('DELETE', `/v1/reservations/${id}`, { shopper: 'frank' }), { status: 404 }, "cannot release another's");

  const released = await call('DELETE', `/v1/reservations/${id}`, { shopper: 'erin' });
  t.match(released, { status: 200, body: { reservationId: id, status: 'released', quantity: 3, sku: 'REL' } });
  t.same((await call('DELETE', `/v1/reservations/${id}`, { shopper: 'erin' })).body, released.body, 'repeating returns the same');
  t.match(await call('GET', `/v1/reservations/${id}`, { shopper: 'erin' }), { body: { status: 'released' } });
  t.match(await call('GET', '/v1/skus/REL'), { body: { available: 4, held: 0 } }, 'released units are on sale at once');
  t.equal((await reserve('REL', 'erin', 4)).status, 201, 'and no longer count toward the limit');
});

t.test('routing: unknown route 404, wrong method 405', async (t) => {
  t.match(await call('GET', '/nope'), { status: 404, body: { code: 'not_found' } });
  const wrong = await call('POST', '/v1/skus/ANY');
  t.match(wrong, { status: 405, body: { code: 'method_not_allowed' } });
  t.equal(wrong.headers.get('allow'), 'GET, HEAD');
  t.match(await call('PATCH', '/v1/reservations/x'), { status: 405 });
  t.match(await call('GET', '/v1/skus/X/reservations'), { status: 405 });
  t.match(await call('DELETE', '/healthz'), { status: 405 });
});

t.test('every response carries a request id; a given one is echoed', async (t) => {
  const res = await call('GET', '/healthz', { headers: { 'x-request-id': 'trace-123' } });
  t.equal(res.headers.get('x-request-id'), 'trace-123');
  t.ok((await call('GET', '/healthz')).headers.get('x-request-id'));
});

t.test('503 unavailable carries Retry-After (overload: the pending-event bound)', async (t) => {
  const tiny = await startTestService(t, { maxPendingEvents: 1 });
  await tiny.putSku('BUSY', { stock: 1000, perShopperLimit: 1 });
  const results = await Promise.all(Array.from({ length: 50 }, (_, i) => tiny.reserve('BUSY', `s${i}`)));
  const refused = results.filter((r) => r.status === 503);
  t.ok(refused.length > 0, 'some requests found the queue full');
  t.ok(results.filter((r) => r.status === 201).length > 0, 'others got through');
  t.match(refused[0], { body: { code: 'unavailable' } });
  t.equal(refused[0]!.headers.get('retry-after'), '1');
  const view = await tiny.call('GET', '/v1/skus/BUSY');
  t.equal(view.body.held, results.filter((r) => r.status === 201).length, 'only acknowledged reservations hold stock');
});
