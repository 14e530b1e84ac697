import t from 'tap';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { startTestService, type TestService } from './helpers/service.js';
import { sharedTestClock, waitUntil } from './helpers/waits.js';
import { connectStream } from './helpers/stream-client.js';

/**
 * The waitlist over HTTP on a real service and Postgres, on the test's clock
 * (StartOptions.nowMs): offers lapse when the test moves the clock, and the
 * sweeper (a real timer) records it; the test waits for that, never for time.
 */

function join(api: TestService, sku: string, shopper: string, quantity = 1, key = `join-${shopper}`) {
  return api.call('POST', `/v1/skus/${sku}/waitlist`, { shopper, body: { quantity }, headers: { 'idempotency-key': key } });
}

function entry(api: TestService, id: string, shopper: string) {
  return api.call('GET', `/v1/waitlist/${id}`, { shopper });
}

async function entryBecomes(t: { fail(message: string): void }, api: TestService, id: string, shopper: string, status: string) {
  let last: { status: number; body: { status?: string } } = { status: 0, body: {} };
  await waitUntil(t, `entry ${id} ${status}`, async () => {
    last = await entry(api, id, shopper);
    return last.body.status === status;
  });
  return last;
}

t.test('returned units go to the line in join order; a lapsed offer moves on; the offer checks out', async (t) => {
  const clock = sharedTestClock(Date.now());
  const api = await startTestService(t, { expirySweepIntervalMs: 20, paymentWorkers: 1 }, { nowMs: clock.nowMs });
  t.equal((await api.putSku('W', { stock: 1, perShopperLimit: 2, holdSeconds: 60, waitlistOfferSeconds: 30 })).body.waitlistOfferSeconds, 30);
  await api.putSku('PLAIN', { stock: 1 });
  t.match(await join(api, 'W', 'bob'), { status: 409, body: { code: 'not_sold_out' } }, 'units on sale: reserve instead');
  const held = await api.reserve('W', 'alice', 1);
  t.equal(held.status, 201);
  await api.reserve('PLAIN', 'alice', 1);
  t.match(await join(api, 'PLAIN', 'bob'), { status: 409, body: { code: 'waitlist_not_enabled' } });

  const bob = await join(api, 'W', 'bob');
  t.match(bob, { status: 201, body: { status: 'waiting', position: 1, sku: 'W', quantity: 1 } });
  const carol = await join(api, 'W', 'carol');
  t.match(carol, { status: 201, body: { status: 'waiting', position: 2 } });
  t.match(await join(api, 'W', 'bob'), { status: 201, body: { waitlistId: bob.body.waitlistId } }, 'same key: same entry');
  t.match(await join(api, 'W', 'bob', 1, 'another'), { status: 409, body: { code: 'already_waitlisted' } });
  t.match(await entry(api, bob.body.waitlistId, 'mallory'), { status: 404 }, "another shopper's entry does not exist");
  t.match(await api.call('DELETE', `/v1/waitlist/${bob.body.waitlistId}`, { shopper: 'mallory' }), { status: 404 });
  t.equal(bob.body.waitlistId.slice(0, 8), held.body.reservationId.slice(0, 8), "the id carries the SKU's hash");

  t.match(await api.call('DELETE', `/v1/reservations/${held.body.reservationId}`, { shopper: 'alice' }), { status: 200 });
  const offered = await entry(api, bob.body.waitlistId, 'bob');
  t.match(offered.body, { status: 'offered', position: null, quantity: 1 }, 'the returned unit is offered to the first in line');
  t.equal(Date.parse(offered.body.offerExpiresAt), clock.nowMs() + 30_000, 'held for waitlistOfferSeconds');
  t.match(await entry(api, carol.body.waitlistId, 'carol'), { body: { status: 'waiting', position: 1 } }, 'carol moves up');
  t.match(await api.reserve('W', 'erin', 1), { status: 409, body: { code: 'sold_out' } }, 'nobody outside the line gets it');
  t.match(await api.call('GET', '/v1/skus/W'), { body: { available: 0, held: 1 } });
  t.match(await api.call('GET', `/v1/reservations/${offered.body.reservationId}`, { shopper: 'bob' }), { body: { status: 'held' } });

  clock.advance(30_000);
  await entryBecomes(t, api, carol.body.waitlistId, 'carol', 'offered');
  t.match(await entry(api, bob.body.waitlistId, 'bob'), { body: { status: 'expired' } }, 'the lapsed entry reads expired');
  const carolOffer = (await entry(api, carol.body.waitlistId, 'carol')).body.reservationId;
  const checkout = await api.call('POST', `/v1/reservations/${carolOffer}/checkout`, {
    shopper: 'carol',
    body: { paymentMethod: 'pm_ok' },
    headers: { 'idempotency-key': 'co-carol' },
  });
  t.equal(checkout.status, 202, 'the offer checks out like any reservation');
  t.match(await entry(api, carol.body.waitlistId, 'carol'), { body: { status: 'taken' } });
  const metrics = await (await fetch(`${api.metricsUrl}/metrics`)).text();
  t.match(metrics, /flashstock_waitlist_offers_total\{outcome="made"\} 2/);
  t.match(metrics, /flashstock_waitlist_offers_total\{outcome="lapsed"\} 1/);
  t.match(metrics, /flashstock_waitlist_offers_total\{outcome="taken"\} 1/);
  t.match(metrics, /flashstock_waitlist_waiting 0/);
  const kinds = await api.service.pool.query(`SELECT kind FROM stock_events WHERE sku = 'W' AND kind LIKE 'waitlist%' ORDER BY seq`);
  t.same(kinds.rows.map((r) => r.kind), ['waitlist_joined', 'waitlist_joined', 'waitlist_offered', 'waitlist_offered'], 'every decision is in the log');
});

t.test('a declined payment gives its unit to the line, and the offer is pushed to the shopper', async (t) => {
  const clock = sharedTestClock(Date.now());
  const api = await startTestService(t, { expirySweepIntervalMs: 20, paymentWorkers: 1 }, { nowMs: clock.nowMs });
  await api.putSku('D', { stock: 1, waitlistOfferSeconds: 60 });
  const held = await api.reserve('D', 'alice', 1);
  const bob = await join(api, 'D', 'bob');
  t.equal(bob.status, 201);
  const stream = await connectStream(t, api.url, api.token('bob'));
  const checkout = await api.call('POST', `/v1/reservations/${held.body.reservationId}/checkout`, {
    shopper: 'alice',
    body: { paymentMethod: 'pm_declined' },
    headers: { 'idempotency-key': 'co-alice' },
  });
  t.equal(checkout.status, 202);
  const pushed = await stream.take((m) => m.type === 'waitlist_offer', 30_000, 'the offer on the stream');
  t.match(pushed.entry, { waitlistId: bob.body.waitlistId, status: 'offered' });
  t.match(await entry(api, bob.body.waitlistId, 'bob'), { body: { status: 'offered', reservationId: pushed.entry.reservationId } });
  t.match(await api.reserve('D', 'erin', 1), { status: 409, body: { code: 'sold_out' } });
  t.match(await api.call('DELETE', `/v1/waitlist/${bob.body.waitlistId}`, { shopper: 'bob' }), { status: 200, body: { status: 'left' } });
  t.match(await api.call('DELETE', `/v1/waitlist/${bob.body.waitlistId}`, { shopper: 'bob' }), { status: 200, body: { status: 'left' } }, 'again: the same');
  t.match(await api.call('GET', `/v1/reservations/${pushed.entry.reservationId}`, { shopper: 'bob' }), { body: { status: 'released' } }, 'leaving released the offer');
  t.match(await api.call('GET', '/v1/skus/D'), { body: { available: 1 } }, 'nobody waits: on sale again');
});

t.test('bounds and hostile input', async (t) => {
  const api = await startTestService(t, { waitlistMaxEntries: 2 });
  await api.putSku('B', { stock: 1, perShopperLimit: 2, waitlistOfferSeconds: 30 });
  await api.reserve('B', 'alice', 1);
  t.equal((await join(api, 'B', 'bob')).status, 201);
  t.equal((await join(api, 'B', 'carol')).status, 201);
  t.match(await join(api, 'B', 'dave'), { status: 409, body: { code: 'waitlist_full' } }, 'WAITLIST_MAX_ENTRIES');
  t.match(await join(api, 'B', 'alice', 2), { status: 409, body: { code: 'limit_exceeded' } }, 'held units + the entry within the limit');
  t.match(await join(api, 'NOPE', 'erin'), { status: 404 });
  t.match(await join(api, 'B', 'erin', 0), { status: 400 });
  t.match(await join(api, 'B', 'erin', 1_000_000_001), { status: 400 });
  t.match(await api.call('POST', '/v1/skus/B/waitlist', { shopper: 'erin', body: { quantity: 1 } }), { status: 400 }, 'Idempotency-Key required');
  t.match(await api.call('POST', '/v1/skus/B/waitlist', { body: { quantity: 1 }, headers: { 'idempotency-key': 'k' } }), { status: 401 });
  t.match(await api.call('POST', '/v1/skus/B/waitlist', { shopper: 'erin', rawBody: '{"quantity":', headers: { 'idempotency-key': 'k', 'content-type': 'application/json' } }), { status: 400 });
  t.match(await api.call('POST', '/v1/skus/B/waitlist', { shopper: 'erin', body: { quantity: 1, extra: true }, headers: { 'idempotency-key': 'k' } }), { status: 400 });
  t.match(await api.call('GET', '/v1/waitlist/not-a-uuid', { shopper: 'erin' }), { status: 404 });
  t.match(await api.call('GET', `/v1/waitlist/${randomUUID()}`, { shopper: 'erin' }), { status: 404 });
  t.match(await api.call('DELETE', `/v1/waitlist/${randomUUID()}`, { shopper: 'erin' }), { status: 404 });
  t.match(await api.call('GET', `/v1/waitlist/${randomUUID()}`), { status: 401 });
  t.match(await api.putSku('B', { stock: 1, waitlistOfferSeconds: 0 }), { status: 400 });
  t.match(await api.putSku('B', { stock: 1, waitlistOfferSeconds: 'soon' }), { status: 400 });
  t.match(await api.putSku('B', { stock: 1, waitlistOfferSeconds: 7 * 24 * 3600 + 1 }), { status: 400 });
  await sleep(0);
});

t.test('entries that left memory are read from the log, for their shopper only', async (t) => {
  const clock = sharedTestClock(Date.now());
  const api = await startTestService(t, { expirySweepIntervalMs: 20, reservationMemorySeconds: 0 }, { nowMs: clock.nowMs });
  await api.putSku('M', { stock: 1, waitlistOfferSeconds: 10 });
  const held = await api.reserve('M', 'alice', 1);
  const bob = await join(api, 'M', 'bob');
  const carol = await join(api, 'M', 'carol');
  t.match(await api.call('DELETE', `/v1/waitlist/${bob.body.waitlistId}`, { shopper: 'bob' }), { status: 200, body: { status: 'left' } });
  await api.call('DELETE', `/v1/reservations/${held.body.reservationId}`, { shopper: 'alice' });
  const offered = await entry(api, carol.body.waitlistId, 'carol');
  t.match(offered.body, { status: 'offered' });
  clock.advance(10_000);
  // The lapse closes carol's entry; with no memory time it leaves memory at once.
  await waitUntil(t, 'the lapsed offer recorded', async () => (await api.call('GET', '/v1/skus/M')).body.held === 0);
  t.match(await entry(api, bob.body.waitlistId, 'bob'), { status: 200, body: { status: 'left', position: null, sku: 'M' } }, 'left, from the log');
  t.match(await entry(api, carol.body.waitlistId, 'carol'), {
    status: 200,
    body: { status: 'expired', reservationId: offered.body.reservationId, offerExpiresAt: offered.body.offerExpiresAt },
  }, 'expired, from the log');
  t.match(await entry(api, carol.body.waitlistId, 'bob'), { status: 404 }, "another shopper's: 404");
  t.match(await api.call('DELETE', `/v1/waitlist/${bob.body.waitlistId}`, { shopper: 'bob' }), { status: 200, body: { status: 'left' } });
  t.match(await api.call('DELETE', `/v1/waitlist/${carol.body.waitlistId}`, { shopper: 'carol' }), { status: 409, body: { code: 'waitlist_entry_closed' } });
});
