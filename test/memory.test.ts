import t from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import { createTestDatabase } from './helpers/db.js';
import { startTestService, type TestService } from './helpers/service.js';
import { connectStream } from './helpers/stream-client.js';
import { sharedTestClock as clock, shardCounts as counts, waitUntil as until } from './helpers/waits.js';

/**
 * Memory bounded by live work (issue 8): settled reservations leave memory and
 * are answered from the log with the same bodies; keys are honoured for their
 * TTL; ended sales are passivated; archive and reopen; snapshots + tail.
 * A test clock drives the allocators' time, so nothing here waits for minutes.
 */



// Generous: the first snapshot starts a worker thread, which under tsx compiles its modules first.

const memory = { logLevel: process.env.MEMORY_LOG ?? 'silent', reservationMemorySeconds: 300, idempotencyKeyTtlSeconds: 3600, passivateAfterSeconds: 0, expirySweepIntervalMs: 20 };

t.test('a settled reservation leaves memory and is still readable, releasable and replayable, also after a restart', async (t) => {
  const db = await createTestDatabase(t);
  const time = clock();
  let api: TestService = await startTestService(t, memory, { nowMs: time.nowMs }, db.url);
  await api.putSku('EVICT', { stock: 5, perShopperLimit: 5 });
  const made = await api.reserve('EVICT', 'alice', 2, 'key-1');
  t.equal(made.status, 201);
  const id = made.body.reservationId;
  const released = await api.call('DELETE', `/v1/reservations/${id}`, { shopper: 'alice' });
  t.match(released, { status: 200, body: { status: 'released' } });
  t.equal((await counts(api)).reservationsInMemory, 1, 'settled, still in memory for RESERVATION_MEMORY_SECONDS');
  time.advance(301_000);
  await until(t, 'the reservation leaves memory', async () => (await counts(api)).reservationsInMemory === 0);

  const check = async (api: TestService, when: string) => {
    t.same((await api.call('GET', `/v1/reservations/${id}`, { shopper: 'alice' })).body, released.body, `${when}: read from the log, same body`);
    t.match(await api.call('GET', `/v1/reservations/${id}`, { shopper: 'bob' }), { status: 404 }, `${when}: still not another shopper's`);
    t.same((await api.call('DELETE', `/v1/reservations/${id}`, { shopper: 'alice' })).body, released.body, `${when}: releasing again answers the same`);
    const replay = await api.reserve('EVICT', 'alice', 2, 'key-1');
    t.same({ status: replay.status, body: replay.body }, { status: 201, body: made.body }, `${when}: the key replays the original 201`);
    t.match(await api.reserve('EVICT', 'alice', 1, 'key-1'), { status: 422, body: { code: 'idempotency_key_reused' } }, `${when}: same key, other quantity`);
    t.match(await api.call('POST', `/v1/reservations/${id}/checkout`, { shopper: 'alice', body: { paymentMethod: 'pm_ok' }, headers: { 'idempotency-key': 'c-1' } }), { status: 409, body: { code: 'reservation_not_held' } }, `${when}: cannot be checked out`);
    t.match(await api.call('GET', '/v1/skus/EVICT'), { status: 200, body: { available: 5, held: 0 } }, `${when}: counted correctly`);
  };
  await check(api, 'evicted');
  t.equal((await counts(api)).reservationsInMemory, 0, 'answering from the log brought nothing back into memory');

  await api.service.stop();
  api = await startTestService(t, memory, { nowMs: time.nowMs }, db.url);
  await check(api, 'after a restart');

  // The key's TTL is judged when the request is decided, against the injected clock: nothing to wait for.
  time.advance(3600_000);
  const fresh = await api.reserve('EVICT', 'alice', 2, 'key-1');
  t.equal(fresh.status, 201, 'a key older than IDEMPOTENCY_KEY_TTL_SECONDS is a new request');
  t.not(fresh.body.reservationId, id, 'a new reservation');
});

t.test('a paid reservation leaves memory; its checkout replays from the order', async (t) => {
  const time = clock();
  const api = await startTestService(t, { ...memory, simulatedPaymentLatencyMs: 0 }, { nowMs: time.nowMs });
  await api.putSku('PAID', { stock: 5, perShopperLimit: 5 });
  const made = await api.reserve('PAID', 'alice', 1, 'k');
  const id = made.body.reservationId;
  const checkout = (key: string) =>
    api.call('POST', `/v1/reservations/${id}/checkout`, { shopper: 'alice', body: { paymentMethod: 'pm_ok' }, headers: { 'idempotency-key': key } });
  const started = await checkout('c-1');
  t.equal(started.status, 202);
  await until(t, 'the order is paid', async () => (await api.call('GET', `/v1/orders/${started.body.orderId}`, { shopper: 'alice' })).body.status === 'paid', 15_000);
  time.advance(301_000);
  await until(t, 'the paid reservation leaves memory', async () => (await counts(api)).reservationsInMemory === 0);
  t.match(await api.call('GET', `/v1/reservations/${id}`, { shopper: 'alice' }), { status: 200, body: { status: 'paid' } });
  const again = await checkout('c-1');
  t.same({ status: again.status, body: again.body }, { status: 202, body: started.body }, 'the checkout key replays the original 202');
  t.match(await checkout('c-2'), { status: 409, body: { code: 'reservation_not_held' } }, 'another key finds it paid');
  t.match(await api.reserve('PAID', 'alice', 5, 'k2'), { status: 409, body: { code: 'limit_exceeded' } }, 'paid units still count toward the limit');
});

t.test('an ended sale leaves memory and still answers GET; archive releases holds and refuses; PUT reopens', async (t) => {
  const db = await createTestDatabase(t);
  const time = clock();
  const api = await startTestService(t, memory, { nowMs: time.nowMs }, db.url);
  const endsAt = new Date(time.nowMs() + 60_000).toISOString();
  await api.putSku('ENDS', { stock: 5, endsAt });
  await api.putSku('KEEP', { stock: 5 });
  const hold = await api.reserve('ENDS', 'alice', 1, 'e-1');
  t.equal(hold.status, 201);
  const before = (await counts(api)).allocatorCount;
  time.advance(61_000);
  t.match(await api.reserve('ENDS', 'bob', 1), { status: 409, body: { code: 'sale_not_open' } }, 'ended');
  t.equal((await counts(api)).allocatorCount, before, 'a live hold keeps it in memory');
  time.advance(300_000); // the hold expires
  await until(t, 'the ended sale is passivated', async () => (await counts(api)).allocatorCount === before - 1);
  t.match(await api.call('GET', '/v1/skus/ENDS'), { status: 200, body: { sku: 'ENDS', stock: 5, available: 5, held: 0, endsAt } }, 'GET answers from its last snapshot');
  const snapshots = await db.pool.query(`SELECT count(*)::int AS n FROM sku_snapshots WHERE sku = 'ENDS' AND passivated`);
  t.equal(snapshots.rows[0].n, 1, 'a passivated snapshot was written');
  t.same((await api.reserve('ENDS', 'alice', 1, 'e-1')).body, hold.body, 'a key replay of a passivated sale still answers the original');
  const watcher = await connectStream(t, api.url);
  watcher.send({ type: 'subscribe', skus: ['ENDS'] });
  t.match(await watcher.take((m) => m.sku === 'ENDS', 10_000, 'ENDS on subscribe'), { type: 'stock', sku: 'ENDS', available: 5, held: 0, sold: 0 },
    'a subscriber of a passivated sale gets its counts from the shard (not not_found)');
  watcher.close();

  // Archive: a live hold is released, reservations refused; the SKU leaves memory.
  const keep = await api.reserve('KEEP', 'carol', 2);
  const archived = await api.call('DELETE', '/v1/admin/skus/KEEP', { admin: true });
  t.match(archived, { status: 200, body: { sku: 'KEEP', state: 'archived', available: 0, held: 0 } }, 'DELETE answers the SKU view: archived, nothing available');
  t.match(await api.call('GET', `/v1/reservations/${keep.body.reservationId}`, { shopper: 'carol' }), { status: 200, body: { status: 'released' } }, 'its live hold was released');
  t.match(await api.reserve('KEEP', 'dave', 1), { status: 409, body: { code: 'sale_not_open' } }, 'reservations are refused');
  t.match(await api.call('DELETE', '/v1/admin/skus/KEEP', { admin: true }), { status: 200, body: { sku: 'KEEP' } }, 'archiving again answers the view');
  t.match(await api.call('DELETE', '/v1/admin/skus/NOPE', { admin: true }), { status: 404 });
  t.match(await api.call('DELETE', '/v1/admin/skus/KEEP'), { status: 401 });
  await until(t, 'the archived SKU is passivated', async () => (await counts(api)).allocatorCount === before - 2);
  t.match(await api.putSku('KEEP', { stock: 7 }), { status: 200, body: { stock: 7, available: 7 } }, 'PUT reopens it');
  t.equal((await api.reserve('KEEP', 'dave', 1)).status, 201, 'on sale again');
});

t.test('a quiet sale is looked at again when time alone makes work: it ends with nothing held and leaves memory, no event to wake it', async (t) => {
  const db = await createTestDatabase(t);
  const time = clock();
  const api = await startTestService(t, { ...memory, passivateAfterSeconds: 120 }, { nowMs: time.nowMs }, db.url);
  const endsAt = new Date(time.nowMs() + 60_000).toISOString();
  await api.putSku('QUIET', { stock: 5, endsAt });
  await api.putSku('STAYS', { stock: 5 });
  const before = (await counts(api)).allocatorCount;
  // Real time passes (many sweeps, each finding both SKUs quiet), the clock does not.
  await sleep(200);
  time.advance(60_000);
  await sleep(200);
  t.equal((await counts(api)).allocatorCount, before, 'ended, but quiet for less than PASSIVATE_AFTER_SECONDS: still in memory');
  time.advance(60_000);
  await until(t, 'the ended sale is passivated', async () => (await counts(api)).allocatorCount === before - 1);
  t.match(await api.call('GET', '/v1/skus/QUIET'), { status: 200, body: { sku: 'QUIET', available: 5, endsAt } }, 'it still answers GET');
  t.match(await api.reserve('STAYS', 'alice', 1), { status: 201 }, 'the open sale stayed and sells');
});

t.test('snapshots every SNAPSHOT_EVERY_EVENTS; a restart recovers from snapshot + tail', async (t) => {
  const db = await createTestDatabase(t);
  let api = await startTestService(t, { snapshotEveryEvents: 100, expirySweepIntervalMs: 20 }, {}, db.url);
  await api.putSku('SNAP', { stock: 1000, perShopperLimit: 1 });
  const made = [];
  for (let i = 0; i < 250; i++) made.push(api.reserve('SNAP', `s${i}`, 1, `k${i}`));
  const results = await Promise.all(made);
  t.ok(results.every((r) => r.status === 201));
  await until(t, 'a snapshot is written', async () => (await db.pool.query(`SELECT count(*)::int AS n FROM sku_snapshots WHERE sku = 'SNAP'`)).rows[0].n > 0);
  const view = (await api.call('GET', '/v1/skus/SNAP')).body;
  await api.service.stop();
  api = await startTestService(t, { snapshotEveryEvents: 100 }, {}, db.url);
  t.same((await api.call('GET', '/v1/skus/SNAP')).body, view, 'same view after recovery from snapshot + tail');
  for (const i of [0, 137, 249]) {
    const replay = await api.reserve('SNAP', `s${i}`, 1, `k${i}`);
    t.same(replay.body, results[i]!.body, `key k${i} replays its original body`);
  }
});
