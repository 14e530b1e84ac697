import t from 'tap';
import { randomUUID } from 'node:crypto';
import { createSigner } from 'fast-jwt';
import pg from 'pg';
import { startTestService, jwtSecret } from './helpers/service.js';
import { connectStream, upgradeStatus, type Message, type StreamClient } from './helpers/stream-client.js';

/** `/v1/stream` against a real service on a real Postgres, with a real WebSocket client. */

const api = await startTestService(t, { wsMaxSubscriptions: 5, wsMaxMessagesPerSecond: 50 });
const { call, putSku, reserve, token } = api;

const stockOf = (sku: string) => (m: Message) => m.type === 'stock' && m.sku === sku;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Take `sku`'s stock messages until one matches `match` (updates may be coalesced, so intermediate ones are skipped). */
async function stockUntil(client: StreamClient, sku: string, match: (m: Message) => boolean, timeoutMs = 3000): Promise<Message> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const message = await client.take(stockOf(sku), Math.max(1, deadline - Date.now()), `stock of ${sku}`);
    if (match(message)) return message;
  }
}

t.test('hello, subscribe, initial state, unknown SKUs', async (t) => {
  await putSku('S-1', { stock: 7 });
  await putSku('S-2', { stock: 3 });
  const anonymous = await connectStream(t, api.url);
  t.match(anonymous.hello, { type: 'hello', shopperId: null, maxSubscriptions: 5, maxMessageBytes: 4096, coalesceMs: 100 });
  t.notOk('tokenError' in anonymous.hello, 'no token given, no token error');

  anonymous.send({ type: 'subscribe', skus: ['S-1', 'NOPE', 'S-2'] });
  t.same(await anonymous.take(stockOf('S-1')), { type: 'stock', sku: 'S-1', state: 'on_sale', available: 7, held: 0, sold: 0, seq: 1, startsAt: null, endsAt: null, waitlist: false });
  t.same(await anonymous.take((m) => m.type === 'error'), {
    type: 'error',
    status: 404,
    code: 'not_found',
    sku: 'NOPE',
    detail: 'SKU NOPE does not exist',
  });
  t.same(await anonymous.take(stockOf('S-2')), { type: 'stock', sku: 'S-2', state: 'on_sale', available: 3, held: 0, sold: 0, seq: 1, startsAt: null, endsAt: null, waitlist: false });

  // Subscribing again is harmless and answers with the current state again.
  anonymous.send({ type: 'subscribe', skus: ['S-1'] });
  t.match(await anonymous.take(stockOf('S-1')), { available: 7, seq: 1 });
});

t.test('updates after HTTP and WebSocket reservations, releases and admin changes', async (t) => {
  await putSku('UPD', { stock: 10, perShopperLimit: 5 });
  const watcher = await connectStream(t, api.url);
  const buyer = await connectStream(t, api.url, token('wsbuyer'));
  t.equal(buyer.hello.shopperId, 'wsbuyer');
  watcher.send({ type: 'subscribe', skus: ['UPD'] });
  t.match(await watcher.take(stockOf('UPD')), { available: 10, held: 0, seq: 1 });

  t.equal((await reserve('UPD', 'httpbuyer', 2)).status, 201);
  t.match(await watcher.take(stockOf('UPD')), { available: 8, held: 2, sold: 0, seq: 2 }, 'after an HTTP reservation');

  const reply = await buyer.request({ type: 'reserve', id: 'a', sku: 'UPD', quantity: 3, idempotencyKey: randomUUID() });
  t.match(reply, { type: 'reservation', id: 'a', reservation: { sku: 'UPD', quantity: 3, status: 'held' } });
  t.match(await watcher.take(stockOf('UPD')), { available: 5, held: 5, seq: 3 }, 'after a WebSocket reservation');

  const released = await buyer.request({ type: 'release', id: 'b', reservationId: reply.reservation.reservationId });
  t.match(released, { type: 'reservation', id: 'b', reservation: { status: 'released', quantity: 3 } });
  t.match(await watcher.take(stockOf('UPD')), { available: 8, held: 2, seq: 4 }, 'after a WebSocket release');

  await putSku('UPD', { stock: 20, perShopperLimit: 5 });
  t.match(await watcher.take(stockOf('UPD')), { available: 18, held: 2, seq: 5 }, 'after an admin change');

  const view = await call('GET', '/v1/skus/UPD');
  t.match(view.body, { available: 18, held: 2, sold: 0 }, 'the stream agrees with GET');
});

t.test('unsubscribe stops the updates', async (t) => {
  await putSku('UNSUB', { stock: 5 });
  await putSku('KEEP', { stock: 5 });
  const client = await connectStream(t, api.url);
  client.send({ type: 'subscribe', skus: ['UNSUB', 'KEEP'] });
  await client.take(stockOf('UNSUB'));
  await client.take(stockOf('KEEP'));
  client.send({ type: 'unsubscribe', skus: ['UNSUB', 'NEVER-SUBSCRIBED'] });
  // Messages are handled in order: once this reply is back, the unsubscribe is done.
  client.send({ type: 'subscribe', skus: ['KEEP'] });
  await client.take(stockOf('KEEP'));
  await reserve('UNSUB', 'u1');
  await reserve('KEEP', 'u1');
  t.match(await client.take(stockOf('KEEP')), { available: 4 }, 'still following the other SKU');
  await sleep(300);
  t.equal(client.log.filter((l) => l.message.type === 'stock' && l.message.sku === 'UNSUB').length, 1, 'no update after unsubscribe');
});

t.test('coalescing: a burst gives at most one message per 100 ms and ends on the latest state', async (t) => {
  const units = 150;
  await putSku('BURST', { stock: units, perShopperLimit: 1 });
  const client = await connectStream(t, api.url);
  client.send({ type: 'subscribe', skus: ['BURST'] });
  await client.take(stockOf('BURST'));
  const started = Date.now();
  // Waves of concurrent reservations over ~600 ms, more shoppers than units: a sell-out.
  const results: number[] = [];
  for (let wave = 0; wave < 6; wave += 1) {
    const batch = await Promise.all(Array.from({ length: 40 }, (_, i) => reserve('BURST', `burst-${wave}-${i}`)));
    results.push(...batch.map((r) => r.status));
    await sleep(100);
  }
  const burstMs = Date.now() - started;
  t.equal(results.filter((s) => s === 201).length, units, 'exactly the stock was sold');
  const last = await stockUntil(client, 'BURST', (m) => m.available === 0);
  t.match(last, { available: 0, held: units, sold: 0 });
  await sleep(400);
  const updates = client.log.filter((l) => l.message.type === 'stock' && l.message.sku === 'BURST').slice(1);
  t.same(updates.at(-1)!.message, last, 'nothing after the final state');
  t.ok(updates.length < units, `coalesced: ${updates.length} messages for ${units} changes`);
  // At most one per 100 ms, counted over the burst rather than read from gaps between arrivals (the client
  // shares the server's event loop, and a loaded machine hands it several messages at once). Every message
  // but the last follows a change inside the burst, and the server spaces them ≥ 100 ms (a timer may fire
  // up to 1 ms early: 99), so over `burstMs` there can be at most ⌊burstMs / 99⌋ + 2.
  t.ok(updates.length <= Math.floor(burstMs / 99) + 2, `at most one per 100 ms (${updates.length} in ${burstMs} ms)`);
  const seqs = updates.map((u) => u.message.seq as number);
  t.ok(seqs.every((seq, i) => i === 0 || seq > seqs[i - 1]!), 'seq only grows');
  t.match((await call('GET', '/v1/skus/BURST')).body, { available: 0, held: units }, 'the last message is the durable state');
});

t.test('reserve and release over the socket: the HTTP rules, codes and statuses', async (t) => {
  await putSku('WSR', { stock: 3, perShopperLimit: 2 });
  const alice = await connectStream(t, api.url, token('alice'));
  const bob = await connectStream(t, api.url, token('bob'));
  let n = 0;
  const reserveMsg = (fields: Record<string, unknown>) => ({ type: 'reserve', id: `r${++n}`, sku: 'WSR', quantity: 1, idempotencyKey: randomUUID(), ...fields });
  const expectError = async (client: StreamClient, message: Record<string, unknown> & { id: string }, status: number, code: string, what: string) => {
    const reply = await client.request(message);
    t.match(reply, { type: 'error', id: message.id, status, code, detail: String }, what);
    return reply;
  };

  await expectError(alice, reserveMsg({ sku: 'MISSING' }), 404, 'not_found', 'unknown SKU');
  await expectError(alice, reserveMsg({ quantity: 101 }), 400, 'quantity_too_large', 'quantity over MAX_QUANTITY_PER_REQUEST');
  await expectError(alice, reserveMsg({ quantity: 3 }), 409, 'limit_exceeded', 'over the per-shopper limit');

  const key = randomUUID();
  const first = await alice.request(reserveMsg({ quantity: 2, idempotencyKey: key }));
  t.match(first, { type: 'reservation', reservation: { reservationId: String, sku: 'WSR', quantity: 2, status: 'held', expiresAt: String } });
  t.same(Object.keys(first.reservation).sort(), ['expiresAt', 'quantity', 'reservationId', 'sku', 'status'], 'the HTTP 201 body');
  const again = await alice.request(reserveMsg({ quantity: 2, idempotencyKey: key }));
  t.same(again.reservation, first.reservation, 'same key, same request: the original reservation');
  const overHttp = await call('POST', '/v1/skus/WSR/reservations', { shopper: 'alice', body: { quantity: 2 }, headers: { 'idempotency-key': key } });
  t.match(overHttp, { status: 201, body: first.reservation }, 'the key means the same over HTTP: one implementation');
  await expectError(alice, reserveMsg({ quantity: 1, idempotencyKey: key }), 422, 'idempotency_key_reused', 'same key, other quantity');
  await expectError(bob, reserveMsg({ quantity: 2 }), 409, 'sold_out', 'fewer available than asked');

  await putSku('WSR-LATER', { startsAt: '2999-01-01T00:00:00Z' });
  await expectError(alice, reserveMsg({ sku: 'WSR-LATER' }), 409, 'sale_not_open', 'before startsAt');

  // Release: as HTTP DELETE.
  const id = first.reservation.reservationId as string;
  await expectError(bob, { type: 'release', id: 'x1', reservationId: id }, 404, 'not_found', "another shopper's reservation");
  await expectError(alice, { type: 'release', id: 'x2', reservationId: 'not-a-uuid' }, 404, 'not_found', 'not a reservation id');
  await expectError(alice, { type: 'release', id: 'x3', reservationId: randomUUID() }, 404, 'not_found', 'unknown reservation');
  const released = await alice.request({ type: 'release', id: 'x4', reservationId: id.toUpperCase() });
  t.match(released, { type: 'reservation', id: 'x4', reservation: { reservationId: id, status: 'released', quantity: 2 } });
  const repeated = await alice.request({ type: 'release', id: 'x5', reservationId: id });
  t.same(repeated.reservation, released.reservation, 'repeating a release returns the same');
  t.match(await call('GET', `/v1/reservations/${id}`, { shopper: 'alice' }), { body: { status: 'released' } }, 'HTTP sees it');
  t.equal((await bob.request(reserveMsg({ quantity: 2 }))).type, 'reservation', 'released units are on sale again');
});

t.test('reserve over the socket: the 503 codes, under the same limits as HTTP', async (t) => {
  const tiny = await startTestService(t, { maxPendingEvents: 1, maxLiveHoldsPerSku: 3 });
  await tiny.putSku('TINY', { stock: 100, perShopperLimit: 100 });
  const client = await connectStream(t, tiny.url, tiny.token('busy'));
  const replies = await Promise.all(
    Array.from({ length: 15 }, (_, i) => client.request({ type: 'reserve', id: `b${i}`, sku: 'TINY', quantity: 1, idempotencyKey: `k${i}` })),
  );
  const refused = replies.filter((r) => r.type === 'error');
  const held = replies.length - refused.length;
  t.ok(refused.some((r) => r.code === 'unavailable'), 'some found the commit queue full (MAX_PENDING_EVENTS)');
  t.match(refused.find((r) => r.code === 'unavailable'), { status: 503, detail: String });
  t.ok(held >= 1 && held <= 3, `${held} held`);
  for (let i = held; i < 3; i += 1) {
    t.equal((await client.request({ type: 'reserve', id: `f${i}`, sku: 'TINY', quantity: 1, idempotencyKey: `f${i}` })).type, 'reservation');
  }
  t.match(
    await client.request({ type: 'reserve', id: 'over', sku: 'TINY', quantity: 1, idempotencyKey: 'over' }),
    { type: 'error', id: 'over', status: 503, code: 'too_many_holds' },
    'MAX_LIVE_HOLDS_PER_SKU',
  );
  t.match((await tiny.call('GET', '/v1/skus/TINY')).body, { held: 3 }, 'only acknowledged reservations hold stock');
});

t.test('auth: a socket without a valid token may watch but not reserve', async (t) => {
  await putSku('AUTH', { stock: 5 });
  const none = await connectStream(t, api.url);
  none.send({ type: 'subscribe', skus: ['AUTH'] });
  t.match(await none.take(stockOf('AUTH')), { available: 5 }, 'anonymous may subscribe');
  t.match(await none.request({ type: 'reserve', id: '1', sku: 'AUTH', quantity: 1, idempotencyKey: 'k' }), {
    type: 'error',
    id: '1',
    status: 401,
    code: 'unauthorized',
    detail: /token/,
  });
  t.match(await none.request({ type: 'release', id: '2', reservationId: randomUUID() }), { status: 401, code: 'unauthorized' });

  const sign = (claims: Record<string, unknown>, algorithm: 'HS256' | 'HS512' = 'HS256', key = jwtSecret) =>
    createSigner({ key, algorithm })(claims);
  const bad: Record<string, string> = {
    garbage: 'not.a.jwt',
    'wrong secret': sign({ sub: 'mallory' }, 'HS256', 'another-secret'),
    'other alg': sign({ sub: 'mallory' }, 'HS512'),
    'no sub': sign({ foo: 1 }),
    expired: sign({ sub: 'mallory', exp: Math.floor(Date.now() / 1000) - 10 }),
    'alg none': `${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${Buffer.from('{"sub":"mallory"}').toString('base64url')}.`,
  };
  for (const [what, badToken] of Object.entries(bad)) {
    const client = await connectStream(t, api.url, badToken);
    t.match(client.hello, { shopperId: null, tokenError: String }, `${what}: connected, told why the token is refused`);
    t.match(await client.request({ type: 'reserve', id: 'r', sku: 'AUTH', quantity: 1, idempotencyKey: 'k' }), { status: 401, code: 'unauthorized' }, `${what}: may not reserve`);
    client.send({ type: 'subscribe', skus: ['AUTH'] });
    t.match(await client.take(stockOf('AUTH')), { available: 5 }, `${what}: may still watch`);
  }
  t.match(await call('GET', '/v1/skus/AUTH'), { body: { held: 0 } }, 'nothing was reserved');

  // A token that expires while the socket is open stops working then. It lives 5–6 s: room for a loaded
  // machine to connect and reserve before it expires (the service's token clock is the real one).
  const briefExp = Math.floor(Date.now() / 1000) + 6;
  const shortLived = sign({ sub: 'brief', exp: briefExp });
  const brief = await connectStream(t, api.url, shortLived);
  t.equal(brief.hello.shopperId, 'brief');
  t.equal((await brief.request({ type: 'reserve', id: 'r1', sku: 'AUTH', quantity: 1, idempotencyKey: 'k1' })).type, 'reservation');
  await sleep(Math.max(0, briefExp * 1000 - Date.now()) + 1100);
  t.match(await brief.request({ type: 'reserve', id: 'r2', sku: 'AUTH', quantity: 1, idempotencyKey: 'k2' }), { status: 401, code: 'unauthorized' }, 'exp honoured mid-connection');
});

t.test('malformed messages get invalid_message; a socket that keeps sending garbage is closed with 1008', async (t) => {
  await putSku('BAD', { stock: 5 });
  const client = await connectStream(t, api.url, token('garbler'));
  const cases: [unknown, RegExp][] = [
    ['{"type":', /not valid JSON/],
    [[1, 2], /JSON object/],
    [{ type: 'shout' }, /type must be/],
    [{ type: 'subscribe', skus: [] }, /skus/],
    [{ type: 'subscribe', skus: ['has space'] }, /skus/],
    [{ type: 'reserve', id: 'q', sku: 'BAD', quantity: 0, idempotencyKey: 'k' }, /quantity/],
  ];
  const limited = await connectStream(t, api.url, token('garbler2'));
  for (const [i, [message, detail]] of cases.slice(0, 4).entries()) {
    limited.send(typeof message === 'string' ? message : JSON.stringify(message));
    if (i < 4) t.match(await limited.take((m) => m.type === 'error'), { status: 400, code: 'invalid_message', detail }, `refused ${JSON.stringify(message)}`);
  }
  // The fifth strike (WS_MAX_INVALID_MESSAGES=5) closes the socket.
  limited.send(JSON.stringify(cases[4]![0]));
  t.match(await limited.closed, { code: 1008, reason: 'too many invalid messages' });

  client.send(JSON.stringify(cases[5]![0]));
  t.match(await client.take((m) => m.type === 'error'), { id: 'q', code: 'invalid_message', detail: /quantity/ }, 'the id is echoed when usable');
  client.send(JSON.stringify({ type: 'reserve', id: 'm', sku: 'BAD', quantity: 1 }));
  t.match(await client.take((m) => m.id === 'm'), { code: 'invalid_message', detail: /idempotencyKey/ }, 'idempotencyKey is required');
  client.send(JSON.stringify({ type: 'reserve', id: 'e', sku: 'BAD', quantity: 1, idempotencyKey: 'k', extra: 1 }));
  t.match(await client.take((m) => m.id === 'e'), { code: 'invalid_message', detail: /unknown field "extra"/ });
  client.raw.send(Buffer.from('{"type":"subscribe","skus":["BAD"]}'), { binary: true });
  t.match(await client.take((m) => m.type === 'error'), { code: 'invalid_message', detail: /text/ }, 'binary frames are refused');
  t.notOk(client.isClosed(), 'four strikes: still open');
  t.equal((await client.request({ type: 'reserve', id: 'ok', sku: 'BAD', quantity: 1, idempotencyKey: 'k' })).type, 'reservation', 'and working');
});

t.test('limits: message size, subscriptions, message rate, connections', async (t) => {
  await putSku('LIM', { stock: 5 });
  for (let i = 0; i < 6; i += 1) await putSku(`LIM-${i}`, { stock: 1 });

  const big = await connectStream(t, api.url);
  big.send(JSON.stringify({ type: 'subscribe', skus: ['LIM'], pad: 'x'.repeat(4096) }));
  // uWS drops a connection whose message passes maxPayloadLength (no close frame: 1006 at the client).
  t.match(await big.closed, { code: 1006 }, 'a message over 4 KiB closes the socket');

  const many = await connectStream(t, api.url);
  many.send({ type: 'subscribe', skus: ['LIM-0', 'LIM-1', 'LIM-2'] });
  for (const sku of ['LIM-0', 'LIM-1', 'LIM-2']) await many.take(stockOf(sku));
  many.send({ type: 'subscribe', skus: ['LIM-1', 'LIM-3', 'LIM-4', 'LIM-5'] });
  t.match(await many.take((m) => m.type === 'error'), { status: 400, code: 'too_many_subscriptions', detail: /at most 5/ });
  many.send({ type: 'subscribe', skus: ['LIM-3', 'LIM-4'] });
  await many.take(stockOf('LIM-3'));
  t.match(await many.take(stockOf('LIM-4')), { sku: 'LIM-4' }, 'up to the limit is fine');
  t.notOk(many.log.some((l) => l.message.sku === 'LIM-5'), 'the refused subscribe added nothing');

  const fast = await connectStream(t, api.url);
  for (let i = 0; i < 60; i += 1) fast.send({ type: 'unsubscribe', skus: ['LIM'] });
  t.match(await fast.closed, { code: 1008, reason: 'message rate exceeded' }, 'over WS_MAX_MESSAGES_PER_SECOND: closed');
  const polite = await connectStream(t, api.url);
  for (let i = 0; i < 40; i += 1) polite.send({ type: 'unsubscribe', skus: ['LIM'] });
  polite.send({ type: 'subscribe', skus: ['LIM'] });
  t.match(await polite.take(stockOf('LIM')), { sku: 'LIM' }, 'within the rate: fine');

  // One thread: with HTTP_THREADS=N each thread holds its share (docs/threads.md).
  const capped = await startTestService(t, { wsMaxConnections: 2, httpThreads: 1 });
  const streamUrl = `${capped.url.replace(/^http/, 'ws')}/v1/stream`;
  await connectStream(t, capped.url);
  await connectStream(t, capped.url);
  t.equal(await upgradeStatus(streamUrl), 503, 'over WS_MAX_CONNECTIONS the upgrade is refused with 503');
});

t.test('the stream route and the page', async (t) => {
  const notUpgrade = await call('GET', '/v1/stream');
  t.match(notUpgrade, { status: 426, body: { code: 'upgrade_required' } }, 'a plain GET on /v1/stream is told to upgrade (test/http-edges.test.ts has the details)');
  const page = await fetch(`${api.url}/?sku=X`);
  t.equal(page.status, 200);
  t.equal(page.headers.get('content-type'), 'text/html; charset=utf-8');
  t.match(page.headers.get('content-security-policy'), /script-src 'sha256-/);
  t.equal(page.headers.get('referrer-policy'), 'no-referrer', 'the token in the URL does not leak');
  t.match(await page.text(), /\/v1\/stream/);
  t.match(await call('GET', '/nope'), { status: 404 }, 'other routes are unchanged');
  t.match(await call('GET', '/healthz'), { status: 200 });
});

t.test('shutdown: requests in flight get real answers, every acknowledged one is durable, then 1001', async (t) => {
  const own = await startTestService(t);
  await own.putSku('BYE', { stock: 50, perShopperLimit: 50 });
  const client = await connectStream(t, own.url, own.token('leaving'));
  const replies = Array.from({ length: 10 }, (_, i) =>
    client.request({ type: 'reserve', id: `z${i}`, sku: 'BYE', quantity: 1, idempotencyKey: `z${i}` }),
  );
  // Stop as soon as the server has decided (in memory), before the commit is back.
  const deadline = Date.now() + 2000;
  while ((own.service.inventory.stockState('BYE')?.held ?? 0) === 0 && Date.now() < deadline) {
    await new Promise((resolve) => setImmediate(resolve));
  }
  t.equal(client.log.filter((l) => l.message.type === 'reservation').length, 0, 'stopping before any reply went out');
  await own.service.stop();
  t.match(await client.closed, { code: 1001, reason: 'server shutting down' });
  const answered = (await Promise.allSettled(replies)).flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  t.equal(answered.length, 10, 'every request was answered before the close');
  t.ok(answered.every((m) => m.type === 'reservation' || m.code === 'unavailable'), 'each answer is a decision or a 503');
  const acknowledged = answered.filter((m) => m.type === 'reservation').map((m) => m.reservation.reservationId as string);
  const pool = new pg.Pool({ connectionString: own.databaseUrl, max: 1 });
  t.teardown(() => pool.end());
  const { rows } = await pool.query<{ id: string }>("SELECT reservation_id AS id FROM stock_events WHERE sku = 'BYE' AND kind = 'reserved'");
  const durable = new Set(rows.map((r) => r.id));
  t.ok(acknowledged.every((id) => durable.has(id)), `all ${acknowledged.length} acknowledged reservations are in Postgres`);
  t.ok(acknowledged.length > 0, `${acknowledged.length} reservations were committed during the shutdown and answered`);
});
