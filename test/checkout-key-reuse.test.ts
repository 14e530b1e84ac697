import t, { type Test } from 'tap';
import { createTestDatabase } from './helpers/db.js';
import { startTestService, type TestService } from './helpers/service.js';
import { sharedTestClock as clock, shardCounts as counts, waitUntil as until } from './helpers/waits.js';

/**
 * One shopper cannot take a SKU offline by reusing a checkout Idempotency-Key
 * after the first reservation left memory (RESERVATION_MEMORY_SECONDS, or a
 * restart): the reuse is refused alone with 422 idempotency_key_reused, and
 * honest requests fired in the same tick, on the same SKU and another one,
 * all get 201. A test clock drives the allocators' time.
 */

// Two service starts and two waits for payments: generous on a busy machine.
t.setTimeout(240_000);




const settings = {
  logLevel: process.env.REUSE_LOG ?? 'silent',
  reservationMemorySeconds: 300,
  idempotencyKeyTtlSeconds: 3600,
  passivateAfterSeconds: 3600,
  expirySweepIntervalMs: 20,
  simulatedPaymentLatencyMs: 0,
};

type Client = Pick<TestService, 'call' | 'reserve' | 'putSku'>;

function checkout(api: Client, reservationId: string, key: string, shopper = 'mallory') {
  return api.call('POST', `/v1/reservations/${reservationId}/checkout`, { shopper, body: { paymentMethod: 'pm_ok' }, headers: { 'idempotency-key': key } });
}

async function paid(t: { fail(message: string): void }, api: Client, orderId: string, shopper = 'mallory') {
  await until(t, `order ${orderId} is paid`, async () => (await api.call('GET', `/v1/orders/${orderId}`, { shopper })).body.status === 'paid', 15_000);
}

/** The reuse and honest reservations on both SKUs, fired in one tick, `rounds` times. */
async function race(t: Test, api: TestService, reservationId: string, key: string, label: string, rounds = 6, honestPerRound = 16) {
  const before = { ...(await counts(api)).outboxStats };
  let honest = 0;
  let honestCreated = 0;
  for (let round = 0; round < rounds; round++) {
    const requests = [checkout(api, reservationId, key)];
    for (let i = 0; i < honestPerRound; i++) requests.push(api.reserve(i % 2 === 0 ? 'HOT' : 'NEAR', `${label}-${round}-${i}`, 1));
    const [reuse, ...others] = await Promise.all(requests);
    t.match(reuse, { status: 422, body: { code: 'idempotency_key_reused' } }, `${label}, round ${round}: the reuse is 422`);
    honest += others.length;
    honestCreated += others.filter((r) => r.status === 201).length;
    const refused = others.filter((r) => r.status !== 201);
    if (refused.length > 0) t.fail(`${label}, round ${round}: honest requests refused: ${JSON.stringify(refused.map((r) => [r.status, r.body?.code, r.body?.detail]))}`);
  }
  t.equal(honestCreated, honest, `${label}: all ${honest} honest reservations racing the reuse got 201`);
  const after = (await counts(api)).outboxStats;
  t.ok(after.batches - before.batches < after.events - before.events, `${label}: they shared group commits (${after.events - before.events} events in ${after.batches - before.batches} batches)`);
  t.equal(after.failedBatches, before.failedBatches, `${label}: no group commit failed`);
}

t.test('a checkout key reused after its reservation left memory, and after a restart: 422 alone, honest neighbours 201', async (t) => {
  const db = await createTestDatabase(t);
  const time = clock();
  let api = await startTestService(t, settings, { nowMs: time.nowMs }, db.url);
  await api.putSku('HOT', { stock: 10_000, perShopperLimit: 100 });
  await api.putSku('NEAR', { stock: 10_000, perShopperLimit: 100 });

  const first = await api.reserve('HOT', 'mallory', 1, 'r-1');
  t.equal(first.status, 201);
  const started = await checkout(api, first.body.reservationId, 'K');
  t.equal(started.status, 202, 'the first checkout with K');
  await paid(t, api, started.body.orderId);
  time.advance(301_000);
  await until(t, 'the paid reservation leaves memory', async () => (await counts(api)).reservationsInMemory === 0);

  const second = await api.reserve('HOT', 'mallory', 1, 'r-2');
  t.equal(second.status, 201, 'mallory reserves again on the same SKU');
  await race(t, api, second.body.reservationId, 'K', 'memory lost');
  t.match(await checkout(api, second.body.reservationId, 'K'), { status: 422 }, 'retrying the reuse changes nothing');

  // After a restart the key is known from the log (replayed) before anything is decided.
  await api.service.stop();
  api = await startTestService(t, settings, { nowMs: time.nowMs }, db.url);
  await race(t, api, second.body.reservationId, 'K', 'after a restart');
  const orders = await db.pool.query(`SELECT count(*)::int AS n FROM orders WHERE shopper_id = 'mallory' AND idempotency_key = 'K'`);
  t.equal(orders.rows[0].n, 1, 'still exactly one order with K');

  // The same reservation with a fresh key is an ordinary checkout; honest checkouts go on too.
  const fresh = await checkout(api, second.body.reservationId, 'K-2');
  t.equal(fresh.status, 202, 'a fresh key checks the reservation out');
  await paid(t, api, fresh.body.orderId);

  // A key is honoured for IDEMPOTENCY_KEY_TTL_SECONDS: past it, K is a new checkout, never a failed commit.
  time.advance(3_601_000);
  const later = await api.reserve('HOT', 'mallory', 1, 'r-3');
  t.equal(later.status, 201);
  const reused = await checkout(api, later.body.reservationId, 'K');
  t.equal(reused.status, 202, 'past the TTL the key starts a new order');
  t.not(reused.body.orderId, started.body.orderId);
  t.equal((await counts(api)).outboxStats.failedBatches, 0, 'no group commit failed');
});
