import t from 'tap';
import { randomUUID } from 'node:crypto';
import { adminToken, startTestService } from './helpers/service.js';
import { assertContract } from './helpers/contract.js';
import { rawRequest as rawExchange, type RawResponse } from './helpers/raw-http.js';
import { connectStream } from './helpers/stream-client.js';

/** HTTP's edges: HEAD, 405s and their Allow, /v1/stream without an upgrade, subprotocols, `.` and `..` as SKUs. */

const api = await startTestService(t);
const { call, putSku, reserve, token, url } = api;
const adminAuth = { authorization: `Bearer ${adminToken}` };

await putSku('EDGE', { stock: 5 });
const held = await reserve('EDGE', 'hanna', 1);
const reservationId: string = held.body.reservationId;

/** A raw exchange, its response checked against the OpenAPI document like every `call` (a 101 is followed by frames, not a body). */
async function rawRequest(...args: Parameters<typeof rawExchange>): Promise<RawResponse> {
  const res = await rawExchange(...args);
  if (res.status !== 101) {
    assertContract({ method: args[1], path: args[2], status: res.status, headers: { get: (name) => res.header(name) ?? null }, text: res.body.toString('utf8') });
  }
  return res;
}

/** Headers that differ between two responses to the same question. */
const volatile = new Set(['date', 'x-request-id']);

function comparable(res: RawResponse): Record<string, string[]> {
  return Object.fromEntries([...res.headers].filter(([name]) => !volatile.has(name)).sort());
}

t.test('HEAD is served wherever GET is: same status and headers, no body', async (t) => {
  const shopperAuth = { authorization: `Bearer ${token('hanna')}` };
  const paths: [string, Record<string, string>][] = [
    ['/healthz', {}],
    ['/readyz', {}],
    ['/', {}],
    ['/v1/skus/EDGE', {}],
    ['/v1/skus/NOPE', {}],
    [`/v1/reservations/${reservationId}`, shopperAuth],
    [`/v1/reservations/${randomUUID()}`, shopperAuth],
    [`/v1/reservations/${reservationId}`, {}],
    [`/v1/orders/${randomUUID()}`, shopperAuth],
    [`/v1/admin/orders/${randomUUID()}`, adminAuth],
    ['/v1/admin/audit', adminAuth],
    ['/v1/admin/audit', {}],
  ];
  for (const [path, headers] of paths) {
    const get = await rawRequest(url, 'GET', path, headers);
    const head = await rawRequest(url, 'HEAD', path, headers);
    t.equal(head.status, get.status, `HEAD ${path}: status ${get.status} as GET`);
    t.same(comparable(head), comparable(get), `HEAD ${path}: the headers of GET`);
    t.equal(head.header('content-length'), String(get.body.byteLength), `HEAD ${path}: Content-Length of the GET body`);
    t.equal(head.body.byteLength, 0, `HEAD ${path}: no body`);
  }
});

t.test('HEAD of a route without GET, or of no route: the 405 / 404 headers, no body', async (t) => {
  const wrong = await rawRequest(url, 'HEAD', '/v1/skus/EDGE/reservations');
  t.equal(wrong.status, 405);
  t.equal(wrong.header('allow'), 'POST');
  t.equal(wrong.header('content-type'), 'application/problem+json');
  t.equal(wrong.body.byteLength, 0);
  const none = await rawRequest(url, 'HEAD', '/nope');
  t.equal(none.status, 404);
  t.equal(none.body.byteLength, 0);
});

t.test('Allow lists HEAD beside GET', async (t) => {
  const res = await call('POST', '/v1/skus/EDGE');
  t.equal(res.status, 405);
  t.equal(res.headers.get('allow'), 'GET, HEAD');
  t.equal((await call('PATCH', '/v1/reservations/x')).headers.get('allow'), 'GET, HEAD, DELETE');
});

t.test('the page at / takes GET and HEAD; any other method is a 405 that says so', async (t) => {
  for (const method of ['PUT', 'POST', 'DELETE', 'PATCH']) {
    const res = await call(method, '/');
    t.equal(res.status, 405, `${method} /`);
    t.equal(res.headers.get('allow'), 'GET, HEAD');
    t.equal(res.body.code, 'method_not_allowed');
  }
  t.equal((await call('GET', '/')).status, 200, 'GET / is still the page');
});

t.test('the cluster views on a process that is not a cluster node: 401 without the admin token, 404 with it', async (t) => {
  for (const path of ['/v1/admin/cluster', '/v1/admin/skus/EDGE/placement']) {
    t.match(await call('GET', path, { shopper: 'hanna' }), { status: 401, body: { code: 'unauthorized' } }, `${path}, a shopper`);
    const res = await call('GET', path, { admin: true });
    t.match(res, { status: 404, body: { code: 'not_found', detail: /not a cluster node/ } }, `${path}, the admin`);
    t.equal((await call('POST', path, { admin: true })).status, 405, `POST ${path}`);
  }
  t.match(await call('GET', '/v1/admin/skus/not%20a%20sku/placement', { admin: true }), { status: 400, body: { code: 'invalid_request' } }, 'a bad SKU is still a 400');
});

t.test('GET /v1/stream without an upgrade is 426 upgrade_required with Upgrade: websocket', async (t) => {
  const res = await call('GET', '/v1/stream');
  t.equal(res.status, 426);
  t.equal(res.headers.get('upgrade'), 'websocket');
  t.equal(res.headers.get('content-type'), 'application/problem+json');
  t.match(res.body, { status: 426, code: 'upgrade_required', detail: /WebSocket/ });
  const head = await rawRequest(url, 'HEAD', '/v1/stream');
  t.equal(head.status, 426, 'HEAD too');
  t.equal(head.header('upgrade'), 'websocket');
  t.equal(head.body.byteLength, 0);
  const post = await call('POST', '/v1/stream');
  t.equal(post.status, 405);
  t.equal(post.headers.get('allow'), 'GET, HEAD');
  const client = await connectStream(t, url);
  t.equal(client.hello.type, 'hello', 'a real upgrade still gets the stream');
});

t.test('a Sec-WebSocket-Protocol the server does not speak is not echoed', async (t) => {
  const handshake = {
    upgrade: 'websocket',
    connection: 'Upgrade',
    'sec-websocket-version': '13',
    'sec-websocket-key': Buffer.from(randomUUID().slice(0, 16)).toString('base64'),
  };
  const offered = await rawRequest(url, 'GET', '/v1/stream', { ...handshake, 'sec-websocket-protocol': 'graphql-ws, mqtt' });
  t.equal(offered.status, 101, 'the upgrade itself is accepted');
  t.equal(offered.header('sec-websocket-protocol'), undefined, 'no subprotocol is claimed');
  const plain = await rawRequest(url, 'GET', '/v1/stream', handshake);
  t.equal(plain.status, 101);
  t.equal(plain.header('sec-websocket-protocol'), undefined);
});

t.test('SKUs named . and .. are refused everywhere the SKU grammar is used', async (t) => {
  const body = JSON.stringify({ stock: 1, perShopperLimit: 1, holdSeconds: 60, priceCents: 1, currency: 'USD' });
  const json = { 'content-type': 'application/json' };
  const shopperAuth = { authorization: `Bearer ${token('hanna')}`, 'idempotency-key': 'dots' };
  for (const sku of ['.', '..']) {
    const put = await rawRequest(url, 'PUT', `/v1/admin/skus/${sku}`, { ...adminAuth, ...json }, body);
    t.equal(put.status, 400, `PUT /v1/admin/skus/${sku}`);
    t.match(JSON.parse(put.body.toString()), { code: 'invalid_request', detail: /sku/ });
    const get = await rawRequest(url, 'GET', `/v1/skus/${sku}`);
    t.equal(get.status, 400, `GET /v1/skus/${sku}`);
    t.match(JSON.parse(get.body.toString()), { code: 'invalid_request' });
    const post = await rawRequest(url, 'POST', `/v1/skus/${sku}/reservations`, { ...shopperAuth, ...json }, '{"quantity":1}');
    t.equal(post.status, 400, `POST /v1/skus/${sku}/reservations`);
    t.match(JSON.parse(post.body.toString()), { code: 'invalid_request' });
  }
  for (const sku of ['...', '.a', 'a..b', '_.']) {
    t.equal((await putSku(sku, {})).status, 201, `${sku} is still a SKU name`);
  }

  const client = await connectStream(t, url, token('hanna'));
  client.send({ type: 'subscribe', skus: ['EDGE', '..'] });
  t.match(await client.take((m) => m.type === 'error'), { status: 400, code: 'invalid_message', detail: /skus/ }, 'subscribe to ..');
  t.match(
    await client.request({ type: 'reserve', id: 'dot', sku: '.', quantity: 1, idempotencyKey: 'dot-key' }),
    { type: 'error', id: 'dot', status: 400, code: 'invalid_message', detail: /sku/ },
    'reserve on .',
  );
});

t.test("the upgrade's own refusal conforms too: 503 with Retry-After and X-Request-Id", async (t) => {
  const small = await startTestService(t, { wsMaxConnections: 1 });
  await connectStream(t, small.url);
  const handshake = {
    upgrade: 'websocket',
    connection: 'Upgrade',
    'sec-websocket-version': '13',
    'sec-websocket-key': Buffer.from(randomUUID().slice(0, 16)).toString('base64'),
    'x-request-id': 'upgrade-1',
  };
  const refused = await rawRequest(small.url, 'GET', '/v1/stream', handshake);
  t.equal(refused.status, 503);
  t.equal(refused.header('x-request-id'), 'upgrade-1');
  t.equal(refused.header('retry-after'), '1');
});
