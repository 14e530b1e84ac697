import t from 'tap';
import { randomUUID } from 'node:crypto';
import { createSigner } from 'fast-jwt';
import { startTestService, jwtSecret } from './helpers/service.js';
import { createTestDatabase, testLog } from './helpers/db.js';
import { connectStream } from './helpers/stream-client.js';
import { installProcessTraps } from './helpers/traps.js';
import { signWebhook } from '../src/payments/webhook.js';
import { Outbox, defaultOutboxOptions } from '../src/outbox/outbox.js';
import type { StockEvent } from '../src/allocator/types.js';

/**
 * Hostile input (issue 9, findings 6–8) over HTTP and the WebSocket, against a
 * real service on a real Postgres, with process-level traps: nothing here may
 * end in an unhandled rejection, an uncaught exception or an unhandled 'error' event.
 */

const webhookSecret = 'hostile-webhook-secret-0123456789abcdef'; // ≥ 32 bytes (src/config.ts)
const api = await startTestService(t, { paymentWebhookSecret: webhookSecret, paymentRetryDelaySeconds: 1 });
// Installed once the service runs: a failed start must fail this file, not be caught by the traps.
const traps = installProcessTraps(t);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

t.test('finding 6: an admin date with a leap second is a 400, and the process lives on', async (t) => {
  for (const [field, value] of [
    ['startsAt', '2030-06-30T23:59:60Z'],
    ['endsAt', '2030-12-31T23:59:60+00:00'],
    ['startsAt', '2016-12-31T23:59:60.5Z'],
    // A local time in 9999 that is an instant in 10000: RFC 3339 could not write it back.
    ['endsAt', '9999-12-31T23:59:59-12:00'],
  ] as const) {
    const res = await api.putSku('LEAP', { [field]: value });
    t.match(res, { status: 400, body: { code: 'invalid_request', detail: new RegExp(field) } }, `${field} = ${value}`);
  }
  t.match(await api.call('GET', '/v1/skus/LEAP'), { status: 404 }, 'nothing was configured');
  // A real window still works, and is enforced.
  const future = new Date(Date.now() + 3600_000).toISOString();
  t.equal((await api.putSku('LEAP', { startsAt: future })).status, 201);
  t.match(await api.reserve('LEAP', 'leaper'), { status: 409, body: { code: 'sale_not_open' } });
  t.match(await api.call('GET', '/healthz'), { status: 200 }, 'still serving');
  t.same(traps.seen(), [], 'no unhandled rejection, exception or error event');
});

t.test('finding 6: a commit callback that throws is contained; the rest of its batch is answered', async (t) => {
  const db = await createTestDatabase(t);
  const outbox = new Outbox(db.pool, defaultOutboxOptions, testLog, () => undefined);
  const event = (seq: number): StockEvent => ({
    sku: 'CALLBACK',
    seq,
    kind: 'configured',
    atMs: Date.now(),
    config: { stock: 1, perShopperLimit: 1, holdSeconds: 60, priceCents: 1, currency: 'USD', startsAtMs: null, endsAtMs: null },
  });
  const answers: (Error | null)[] = [];
  const answered = new Promise<void>((resolve) => {
    outbox.append(event(1), (error) => answers.push(error));
    outbox.append(event(2), () => {
      throw new Error('a reply builder broke');
    });
    outbox.append(event(3), (error) => {
      answers.push(error);
      resolve();
    });
  });
  await Promise.race([answered, sleep(3000)]);
  await sleep(50);
  t.same(answers, [null, null], 'the other waiters heard success');
  t.equal(outbox.stats.callbackErrors, 1, 'counted');
  const rows = await db.pool.query("SELECT count(*)::int AS n FROM stock_events WHERE sku = 'CALLBACK'");
  t.equal(rows.rows[0].n, 3, 'the batch committed');
  t.same(traps.seen(), [], 'no unhandled rejection');
});

t.test('finding 7: a JWT sub that is not well-formed UTF-16 is 401, over HTTP and the WebSocket', async (t) => {
  await api.putSku('SURROGATE', { stock: 5 });
  const sign = createSigner({ key: jwtSecret, algorithm: 'HS256', expiresIn: 3600_000 });
  for (const sub of ['alice\uD800', '\uDC00bob', 'x\uDBFF\uDBFF']) {
    const token = sign({ sub });
    const res = await api.call('POST', '/v1/skus/SURROGATE/reservations', {
      token,
      body: { quantity: 1 },
      headers: { 'idempotency-key': randomUUID() },
    });
    t.match(res, { status: 401, body: { code: 'unauthorized' } }, `HTTP refuses sub ${JSON.stringify(sub)}`);
    const socket = await connectStream(t, api.url, token);
    t.match(socket.hello, { shopperId: null, tokenError: /sub/ }, 'the stream does not take it as an identity');
    const reply = await socket.request({ type: 'reserve', id: 'r', sku: 'SURROGATE', quantity: 1, idempotencyKey: randomUUID() });
    t.match(reply, { type: 'error', status: 401, code: 'unauthorized' });
  }
  // A well-formed astral character is a fine id and survives the round trip through Postgres.
  const emoji = sign({ sub: 'shopper-\u{1F600}' });
  const made = await api.call('POST', '/v1/skus/SURROGATE/reservations', {
    token: emoji,
    body: { quantity: 1 },
    headers: { 'idempotency-key': 'emoji-1' },
  });
  t.equal(made.status, 201);
  const logged = await api.service.pool.query('SELECT shopper_id FROM stock_events WHERE reservation_id = $1', [made.body.reservationId]);
  t.equal(logged.rows[0].shopper_id, 'shopper-\u{1F600}', 'stored as sent');
  t.match(await api.call('GET', '/v1/skus/SURROGATE'), { body: { held: 1 } }, 'nothing held for the refused tokens');
});

async function sendWebhook(body: Record<string, unknown>) {
  const raw = JSON.stringify(body);
  return api.call('POST', '/v1/payments/webhook', {
    rawBody: raw,
    headers: { 'content-type': 'application/json', 'x-flashstock-signature': signWebhook(webhookSecret, raw) },
  });
}

async function checkout(sku: string, shopper: string, paymentMethod: string): Promise<string> {
  const made = await api.reserve(sku, shopper, 1);
  const res = await api.call('POST', `/v1/reservations/${made.body.reservationId}/checkout`, {
    shopper,
    body: { paymentMethod },
    headers: { 'idempotency-key': randomUUID() },
  });
  if (res.status !== 202) throw new Error(`checkout: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body.orderId as string;
}

async function orderStatus(orderId: string): Promise<string> {
  const res = await api.service.pool.query('SELECT status FROM orders WHERE order_id = $1', [orderId]);
  return res.rows[0].status as string;
}

t.test('finding 8: a signed charge.succeeded the provider never charged does not mark the order paid', async (t) => {
  await api.putSku('FORGED', { stock: 5, perShopperLimit: 5 });
  // pm_down: the provider never charges, so the order stays pending.
  const orderId = await checkout('FORGED', 'mallory', 'pm_down');
  const forged = await sendWebhook({ id: `evt_${randomUUID()}`, type: 'charge.succeeded', orderId });
  t.match(forged, { status: 409, body: { code: 'provider_mismatch', detail: /no successful charge/ } });
  t.equal(await orderStatus(orderId), 'pending', 'still pending');
  t.match(await api.call('GET', '/v1/skus/FORGED'), { body: { sold: 0 } }, 'nothing sold');
  const audit = await api.call('GET', '/v1/admin/audit', { admin: true });
  t.match(audit, { status: 200, body: { ok: true } }, 'the ledger audit stays clean');
});

t.test('finding 8: a charge.failed for an order the provider charged does not fail it', async (t) => {
  await api.putSku('CHARGED', { stock: 5, perShopperLimit: 5 });
  const orderId = await checkout('CHARGED', 'carol', 'pm_ok');
  for (let i = 0; i < 300 && (await orderStatus(orderId)) !== 'paid'; i++) await sleep(20);
  const res = await sendWebhook({ id: `evt_${randomUUID()}`, type: 'charge.failed', orderId, reason: 'card_declined' });
  t.match(res, { status: 409, body: { code: 'provider_mismatch' } });
  t.equal(await orderStatus(orderId), 'paid');
});

t.test('finding 8: 20 concurrent copies of one delivery: exactly one is not a duplicate', async (t) => {
  await api.putSku('COPIES', { stock: 50, perShopperLimit: 50 });
  for (let round = 0; round < 3; round++) {
    const orderId = await checkout('COPIES', `copier-${round}`, 'pm_ok');
    for (let i = 0; i < 300 && (await orderStatus(orderId)) !== 'paid'; i++) await sleep(20);
    const delivery = { id: `evt_${randomUUID()}`, type: 'charge.succeeded', orderId };
    const answers = await Promise.all(Array.from({ length: 20 }, () => sendWebhook(delivery)));
    t.same(answers.map((a) => a.status), Array(20).fill(200), `round ${round}: all 200`);
    t.equal(answers.filter((a) => a.body.duplicate === false).length, 1, `round ${round}: exactly one duplicate:false`);
    t.ok(answers.every((a) => a.body.orderStatus === 'paid'));
  }
  t.same(traps.seen(), [], 'no unhandled rejection, exception or error event');
});
