import t from 'tap';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { defaultTransportLimits, ForwardClient, type TransportLimits } from '../src/cluster/transport.js';
import type { ReservationView, SkuView } from '../src/inventory/inventory.js';
import type { ShardRequest } from '../src/shard/messages.js';
import { newReservationId, shardOf } from '../src/shard/placement.js';
import {
  decodeEnvelope,
  decodeFrame,
  decodeNote,
  decodePeerNotice,
  decodeShardReply,
  decodeShardRequest,
  maxMessagesPerFrame,
} from '../src/shard/protocol.js';
import { testLog } from './helpers/db.js';
import { until } from './helpers/cluster.js';

/**
 * The shard protocol's decoder (src/shard/protocol.ts) on its own, and a real
 * ForwardClient talking to an owner that lies: a WebSocket server standing in
 * for a peer node, answering with replies that are malformed, about something
 * else, for requests never sent, or twice.
 */

const SHARDS = 8;
const reservationId = newReservationId('SKU-1');
const shardOfSku = (sku: string) => shardOf(sku, SHARDS);

const requests: ShardRequest[] = [
  { type: 'configure', sku: 'SKU-1', config: { stock: 10, perShopperLimit: 2, holdSeconds: 60, priceCents: 500, currency: 'EUR', startsAtMs: null, endsAtMs: 1e12 } },
  { type: 'archive', sku: 'SKU-1' },
  { type: 'get_sku', sku: 'SKU-1' },
  { type: 'reserve', sku: 'SKU-1', shopperId: 'shopper é 1', quantity: 3, idempotencyKey: 'key-1' },
  { type: 'get_reservation', reservationId, shopperId: 's' },
  { type: 'release', reservationId, shopperId: 's' },
  { type: 'checkout', reservationId, shopperId: 's', idempotencyKey: 'k', paymentMethod: 'card' },
  { type: 'settle', sku: 'SKU-1', reservationId, orderId: newReservationId('x'), outcome: 'payment_failed', failureReason: 'card_declined' },
  { type: 'get_stock', sku: 'SKU-1' },
];

function skuView(sku: string): SkuView {
  return { sku, state: 'ended', stock: 10, available: 7, held: 3, sold: 0, perShopperLimit: 2, holdSeconds: 60, priceCents: 500, currency: 'EUR', startsAt: null, endsAt: '2001-09-09T01:46:40.000Z' };
}

function reservationView(sku: string, quantity: number, id = newReservationId(sku)): ReservationView {
  return { reservationId: id, sku, quantity, status: 'held', expiresAt: '2026-12-06T08:00:00.000Z' };
}

t.test('requests: every kind decodes to itself; extra fields are left out; lies and bad fields are named', async (t) => {
  const shard = shardOfSku('SKU-1');
  for (const request of requests) t.same(decodeShardRequest(request, shard, SHARDS), request, `${request.type} decodes to itself`);
  t.same(decodeShardRequest({ ...requests[1], admin: true, __proto__: { x: 1 } }, shard, SHARDS), requests[1], 'unknown fields do not travel on');
  const reserve = requests[3]!;
  const cases: [string, unknown, string][] = [
    ['quantity 0', { ...reserve, quantity: 0 }, 'bad_field'],
    ['quantity 1.5', { ...reserve, quantity: 1.5 }, 'bad_field'],
    ['quantity as text', { ...reserve, quantity: '1' }, 'bad_field'],
    ['SKU "."', { ...reserve, sku: '.' }, 'bad_field'],
    ['shopper id with a NUL', { ...reserve, shopperId: 'a\u0000b' }, 'bad_field'],
    ['idempotency key with a space', { ...reserve, idempotencyKey: 'a b' }, 'bad_field'],
    ['no type', { sku: 'SKU-1' }, 'bad_field'],
    ['an unknown type', { ...reserve, type: 'drop_table' }, 'unknown_kind'],
    ['an array', [reserve], 'bad_field'],
    ['a window that ends before it starts', { ...requests[0], config: { ...(requests[0] as { config: object }).config, startsAtMs: 2e12 } }, 'bad_field'],
    ['a failure reason of 201 characters', { ...requests[7], failureReason: 'x'.repeat(201) }, 'oversized'],
    ['a reservation id that is not a UUID', { ...requests[4], reservationId: 'nope' }, 'bad_field'],
  ];
  for (const [what, value, reason] of cases) t.equal(decodeShardRequest(value, shard, SHARDS), reason, `${what}: ${reason}`);
  t.equal(decodeShardRequest(reserve, (shard + 1) % SHARDS, SHARDS), 'wrong_shard', 'a SKU of another shard');
  t.equal(decodeShardRequest(requests[4], (shard + 1) % SHARDS, SHARDS), 'wrong_shard', 'a reservation of another shard');
  t.same(decodeEnvelope({ id: 1, shard, payload: reserve }, SHARDS), { id: 1, shard, payload: reserve });
  t.equal(decodeEnvelope({ id: 1, shard: SHARDS, payload: reserve }, SHARDS), 'unknown_shard');
  t.equal(decodeEnvelope({ id: 0, shard, payload: reserve }, SHARDS), 'envelope', 'ids start at 1');
  t.equal(decodeEnvelope(null, SHARDS), 'envelope');
});

t.test('frames and notices', async (t) => {
  t.equal(decodeFrame('{"t":"req","m":[null]'), 'malformed', 'truncated');
  t.equal(decodeFrame('null'), 'envelope');
  t.equal(decodeFrame('{"t":"req"}'), 'envelope', 'no messages');
  t.equal(decodeFrame(JSON.stringify({ t: 'note', m: new Array(maxMessagesPerFrame + 1).fill(0) })), 'oversized');
  t.same(decodeFrame('{"t":"req","m":[null]}'), { t: 'req', m: [null] }, 'the outer shape only: messages are decoded one by one');
  const notice = { e: 3, n: { type: 'stock', state: { sku: 'A', available: 1, held: 2, sold: 3, seq: 4 } } };
  t.same(decodePeerNotice({ ...notice, extra: 1 }), notice);
  t.same(decodePeerNotice({ e: 0, n: { type: 'passivated', sku: 'A' } }), { e: 0, n: { type: 'passivated', sku: 'A' } });
  t.equal(decodePeerNotice({ ...notice, n: { ...notice.n, state: { ...notice.n.state, held: -1 } } }), 'bad_field', 'a negative count');
  const waitlisted = { ...notice, n: { ...notice.n, state: { ...notice.n.state, waitlist: true } } };
  t.same(decodePeerNotice(waitlisted), waitlisted, 'the waitlist flag travels');
  t.equal(decodePeerNotice({ ...notice, n: { ...notice.n, state: { ...notice.n.state, waitlist: 'yes' } } }), 'bad_field', 'a waitlist flag that is not a boolean');
  t.equal(decodePeerNotice({ ...notice, n: { type: 'checkout_durable', orderId: 'x' } }), 'unknown_kind', 'checkout_durable stays home');
  t.equal(decodePeerNotice({ e: 1.5, n: notice.n }), 'bad_field', 'a fractional epoch');

  // A waitlist offer travels toward its shopper's streams: an `offered` entry, every field checked.
  const entry = {
    waitlistId: '5d3c1a0e-7a1b-4c2d-9e8f-0a1b2c3d4e5f',
    sku: 'A',
    quantity: 2,
    status: 'offered',
    position: null,
    reservationId: newReservationId('A'),
    offerExpiresAt: '2026-12-06T21:30:00.000Z',
  };
  const offer = { e: 2, n: { type: 'waitlist_offer', shopperId: 'bob', view: entry } };
  t.same(decodePeerNotice({ ...offer, n: { ...offer.n, view: { ...entry, injected: '<script>' } } }), offer, 'an offer, unknown fields left out');
  const bad: [string, unknown][] = [
    ['no shopper', { ...offer.n, shopperId: undefined }],
    ['a shopper that is not text', { ...offer.n, shopperId: 7 }],
    ['a shopper with a control character', { ...offer.n, shopperId: 'bo\u0000b' }],
    ['no view', { ...offer.n, view: null }],
    ['a view that is an array', { ...offer.n, view: [entry] }],
    ['an entry still waiting', { ...offer.n, view: { ...entry, status: 'waiting', position: 1 } }],
    ['an unknown status', { ...offer.n, view: { ...entry, status: 'won' } }],
    ['an offer with no reservation', { ...offer.n, view: { ...entry, reservationId: null } }],
    ['an offer with no expiry', { ...offer.n, view: { ...entry, offerExpiresAt: null } }],
    ['an expiry that is not an instant', { ...offer.n, view: { ...entry, offerExpiresAt: 'tomorrow' } }],
    ['a waitlist id that is not a UUID', { ...offer.n, view: { ...entry, waitlistId: '../etc' } }],
    ['a quantity of zero', { ...offer.n, view: { ...entry, quantity: 0 } }],
    ['a bad SKU', { ...offer.n, view: { ...entry, sku: '' } }],
  ];
  for (const [what, n] of bad) t.equal(decodePeerNotice({ e: 2, n }), 'bad_field', what);
});

t.test('replies: the kind of value the request gets, about the same SKU or reservation', async (t) => {
  const [configure, , getSku, reserve, getReservation, , checkout, settle] = requests as [ShardRequest, ShardRequest, ShardRequest, ShardRequest, ShardRequest, ShardRequest, ShardRequest, ShardRequest];
  const good = { ok: true, value: skuView('SKU-1') };
  t.same(decodeShardReply(getSku, { ...good, value: { ...good.value, injected: '<script>' } }), good, 'unknown fields of a view are left out');
  t.same(decodeShardReply(configure, { ok: true, value: { created: true, view: skuView('SKU-1') } }), { ok: true, value: { created: true, view: skuView('SKU-1') } });
  t.same(decodeShardReply(reserve, { ok: false, code: 'sold_out', detail: 'gone' }), { ok: false, code: 'sold_out', detail: 'gone' });
  const view = reservationView('SKU-1', 3);
  t.same(decodeShardReply(reserve, { ok: true, value: view }), { ok: true, value: view });
  t.same(decodeShardReply(settle, { ok: true, value: { changed: false } }), { ok: true, value: { changed: false } });
  const cases: [string, ShardRequest, unknown, string][] = [
    ['a view of another SKU', getSku, { ok: true, value: skuView('OTHER') }, 'mismatch'],
    ['a reservation of another SKU', reserve, { ok: true, value: reservationView('OTHER', 3) }, 'mismatch'],
    ['a reservation of another quantity', reserve, { ok: true, value: reservationView('SKU-1', 99) }, 'mismatch'],
    ['another reservation', getReservation, { ok: true, value: reservationView('SKU-1', 1) }, 'mismatch'],
    ['a checkout of another reservation', checkout, { ok: true, value: { orderId: reservationId, reservationId: newReservationId('SKU-1'), status: 'pending' } }, 'mismatch'],
    ['a SKU view where a reservation is due', reserve, good, 'bad_field'],
    ['an unknown failure code', reserve, { ok: false, code: 'pwned', detail: 'x' }, 'bad_field'],
    ['a detail of 2,001 characters', reserve, { ok: false, code: 'sold_out', detail: 'x'.repeat(2_001) }, 'oversized'],
    ['a status that does not exist', reserve, { ok: true, value: { ...view, status: 'free' } }, 'bad_field'],
    ['an expiry that is not an instant', reserve, { ok: true, value: { ...view, expiresAt: 'tomorrow' } }, 'bad_field'],
    ['ok as text', reserve, { ok: 'true', value: view }, 'bad_field'],
    ['null', reserve, null, 'bad_field'],
  ];
  for (const [what, request, value, reason] of cases) t.equal(decodeShardReply(request, value), reason, `${what}: ${reason}`);
});

t.test('get_stock: the counts of the SKU asked for, nothing else', async (t) => {
  const getStock: ShardRequest = { type: 'get_stock', sku: 'SKU-1' };
  const state = { sku: 'SKU-1', available: 7, held: 3, sold: 0, seq: 12 };
  t.same(decodeShardReply(getStock, { ok: true, value: { ...state, injected: 1 } }), { ok: true, value: state }, 'unknown fields left out');
  t.same(decodeShardReply(getStock, { ok: false, code: 'not_found', detail: 'no such SKU' }), { ok: false, code: 'not_found', detail: 'no such SKU' });
  t.equal(decodeShardReply(getStock, { ok: true, value: { ...state, sku: 'OTHER' } }), 'mismatch', 'the counts of another SKU');
  t.equal(decodeShardReply(getStock, { ok: true, value: { ...state, available: -1 } }), 'bad_field', 'a negative count');
  t.equal(decodeShardReply(getStock, { ok: true, value: skuView('SKU-1') }), 'bad_field', 'a SKU view where counts are due');
  t.equal(decodeShardRequest({ type: 'get_stock', sku: 'SKU-1' }, shardOfSku('SKU-1') + 1 === SHARDS ? 0 : shardOfSku('SKU-1') + 1, SHARDS), 'wrong_shard');
});

t.test('following notes: reset, on and off a SKU; anything else refused by name', async (t) => {
  t.same(decodeNote({ f: 'reset', sku: 'ignored' }), { f: 'reset' });
  t.same(decodeNote({ f: 'on', sku: 'A', extra: 1 }), { f: 'on', sku: 'A' });
  t.same(decodeNote({ f: 'off', sku: 'A' }), { f: 'off', sku: 'A' });
  const notice = { e: 1, n: { type: 'passivated', sku: 'A' } };
  t.same(decodeNote(notice), notice, 'without `f`: a notice');
  const bad: [string, unknown, string][] = [
    ['on without a SKU', { f: 'on' }, 'bad_field'],
    ['a SKU that is not one', { f: 'on', sku: 'x'.repeat(1_000) }, 'bad_field'],
    ['a SKU of the wrong type', { f: 'off', sku: 7 }, 'bad_field'],
    ['an unknown verb', { f: 'maybe', sku: 'A' }, 'unknown_kind'],
    ['a verb that is not text', { f: 1 }, 'bad_field'],
    ['null', null, 'envelope'],
    ['an array', [{ f: 'on', sku: 'A' }], 'envelope'],
  ];
  for (const [what, value, reason] of bad) t.equal(decodeNote(value), reason, `${what}: ${reason}`);
});

/** A peer that answers every request with what `answer` returns (raw entries of a `res` frame, or a whole raw frame). */
async function lyingOwner(answer: (envelope: { id: number; payload: ShardRequest }, socket: WebSocket) => unknown): Promise<{ url: string; close(): void }> {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((resolve) => server.once('listening', resolve));
  server.on('connection', (socket) => {
    socket.on('message', (data) => {
      const frame = JSON.parse(String(data)) as { t: string; m: { id: number; payload: ShardRequest }[] };
      if (frame.t !== 'req') return;
      for (const envelope of frame.m) {
        const reply = answer(envelope, socket);
        if (reply !== undefined) socket.send(typeof reply === 'string' ? reply : JSON.stringify({ t: 'res', m: [reply] }));
      }
    });
  });
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => {
      for (const socket of server.clients) socket.terminate();
      server.close();
    },
  };
}

function client(url: string, limits: Partial<TransportLimits> = {}): ForwardClient {
  return new ForwardClient({ secret: 's', selfNodeId: 'me', peerUrl: url, limits: { ...defaultTransportLimits, ...limits }, log: testLog });
}

t.test("an owner's lying replies: refused and counted, the caller's outcome unknown, never relayed", async (t) => {
  const owner = await lyingOwner(({ id, payload }, socket) => {
    if (payload.type !== 'reserve') return { id, ok: true, payload: { ok: true, value: skuView((payload as { sku: string }).sku) } };
    switch (payload.idempotencyKey) {
      case 'other-sku':
        return { id, ok: true, payload: { ok: true, value: reservationView('ELSEWHERE', payload.quantity) } };
      case 'wrong-type':
        return { id, ok: true, payload: { ok: true, value: { reservationId: 42 } } };
      case 'unsent':
        socket.send(JSON.stringify({ t: 'res', m: [{ id: 999_999, ok: true, payload: { ok: true, value: {} } }] }));
        return { id, ok: true, payload: { ok: true, value: reservationView(payload.sku, payload.quantity) } };
      case 'twice': {
        const reply = { id, ok: true, payload: { ok: true, value: reservationView(payload.sku, payload.quantity) } };
        socket.send(JSON.stringify({ t: 'res', m: [reply] }));
        return reply;
      }
      case 'extra':
        return { id, ok: true, payload: { ok: true, value: { ...reservationView(payload.sku, payload.quantity), admin: true } }, owner: 'me' };
      case 'null-entry':
        return `{"t":"res","m":[null,{"id":${id},"ok":false,"code":"unavailable","detail":"busy"}]}`;
      case 'huge':
        return { id, ok: false, code: 'unavailable', detail: 'x'.repeat(4_096) };
      case 'truncated':
        return '{"t":"res","m":[{"id":';
      default:
        return undefined;
    }
  });
  t.teardown(owner.close);
  const c = client(owner.url, { maxFrameBytes: 4_000 });
  t.teardown(() => c.close());
  const reserve = (key: string) => c.forward(shardOfSku('SKU-1'), { type: 'reserve', sku: 'SKU-1', shopperId: 's', quantity: 2, idempotencyKey: key });
  const unknown = { ok: false, code: 'unknown_outcome' };

  t.match(await reserve('other-sku'), { ...unknown, detail: /refused \(mismatch\)/ }, 'a reservation of another SKU: unknown outcome, not a 201 body');
  t.match(await reserve('wrong-type'), { ...unknown, detail: /refused \(bad_field\)/ }, 'a reply of the wrong shape: unknown outcome');
  t.match(await reserve('unsent'), { ok: true }, 'the real reply still counts');
  t.match(await reserve('twice'), { ok: true }, 'the first of two replies counts');
  const extra = await reserve('extra');
  t.ok(extra.ok && !('admin' in (extra.payload as { value: object }).value) && !('owner' in extra), 'fields a peer adds are left out');
  t.same(await reserve('null-entry'), { ok: false, code: 'unavailable', detail: 'busy' }, 'a null entry is refused; the rest of the frame counts');
  await until('the repeated reply is counted', async () => (c.refusals.late_reply === 1 ? true : null));
  t.same(
    { ...c.refusals },
    { malformed: 0, envelope: 1, oversized: 0, unknown_kind: 0, bad_field: 1, unknown_shard: 0, wrong_shard: 0, unsent_reply: 1, late_reply: 1, mismatch: 1 },
    'each refusal counted by its reason',
  );

  t.match(await reserve('truncated'), { ...unknown, detail: 'connection to the owner closed before it replied' }, 'a truncated frame drops the connection: unknown outcome');
  t.equal(c.refusals.malformed, 1);
  t.match(await reserve('huge'), unknown, 'a frame over maxFrameBytes drops the connection: unknown outcome');
  t.equal(c.refusals.oversized, 1);
  t.same(await c.forward(shardOfSku('B'), { type: 'get_sku', sku: 'B' }), { ok: true, payload: { ok: true, value: skuView('B') } }, 'a new connection serves again');
});
