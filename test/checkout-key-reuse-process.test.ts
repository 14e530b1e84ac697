import t, { type Test } from 'tap';
import { once } from 'node:events';
import { createTestDatabase } from './helpers/db.js';
import { startChild } from './helpers/child.js';
import { clientFor, type TestService } from './helpers/service.js';
import { waitUntil as until } from './helpers/waits.js';

/**
 * The checkout-key reuse (see checkout-key-reuse.test.ts) against the real
 * entry point in its own process: settled reservations leave memory at once
 * (RESERVATION_MEMORY_SECONDS=0), so a reused key is known only as a remembered
 * hash; then SIGKILL and a restart from a snapshot holding it. The reuse is 422
 * every time, and every honest reservation fired in the same tick gets 201.
 */

// Two processes start under tsx, and the first snapshot starts a worker thread: generous on a busy machine.
t.setTimeout(300_000);

type Client = Pick<TestService, 'call' | 'reserve' | 'putSku'>;

function checkout(api: Client, reservationId: string, key: string) {
  return api.call('POST', `/v1/reservations/${reservationId}/checkout`, { shopper: 'mallory', body: { paymentMethod: 'pm_ok' }, headers: { 'idempotency-key': key } });
}


/** The reuse and honest reservations fired in one tick against a real process; every honest one must be 201. */
async function raceProcess(t: Test, api: Client, reservationId: string, key: string, label: string, rounds = 4, honestPerRound = 16) {
  let created = 0;
  for (let round = 0; round < rounds; round++) {
    const requests = [checkout(api, reservationId, key)];
    for (let i = 0; i < honestPerRound; i++) requests.push(api.reserve(i % 2 === 0 ? 'HOT' : 'NEAR', `${label}-${round}-${i}`, 1));
    const [reuse, ...others] = await Promise.all(requests);
    t.match(reuse, { status: 422, body: { code: 'idempotency_key_reused' } }, `${label}, round ${round}: the reuse is 422`);
    created += others.filter((r) => r.status === 201).length;
  }
  t.equal(created, rounds * honestPerRound, `${label}: every honest reservation racing the reuse got 201`);
}

t.test('a reused checkout key against real processes: forgotten at once, then SIGKILL and a restart from a snapshot', async (t) => {
  const db = await createTestDatabase(t);
  const env = { RESERVATION_MEMORY_SECONDS: '0', SIMULATED_PAYMENT_LATENCY_MS: '0', SNAPSHOT_EVERY_EVENTS: '100' };
  const first = await startChild(db.url, env);
  t.teardown(() => first.child.kill('SIGKILL'));
  let api: Client = clientFor(first.url);
  t.equal((await api.putSku('HOT', { stock: 10_000, perShopperLimit: 100 })).status, 201);
  t.equal((await api.putSku('NEAR', { stock: 10_000, perShopperLimit: 100 })).status, 201);
  const made = await api.reserve('HOT', 'mallory', 1, 'r-1');
  const started = await checkout(api, made.body.reservationId, 'K');
  t.equal(started.status, 202);
  await until(t, 'the order is paid', async () => (await api.call('GET', `/v1/orders/${started.body.orderId}`, { shopper: 'mallory' })).body.status === 'paid', 15_000);
  const second = await api.reserve('HOT', 'mallory', 1, 'r-2');
  t.equal(second.status, 201);
  // Settled reservations leave memory at once: the first one is only a remembered key hash now.
  await raceProcess(t, api, second.body.reservationId, 'K', 'forgotten at once');

  // Past SNAPSHOT_EVERY_EVENTS, so the restart recovers from a snapshot holding the remembered key.
  const fill = [];
  for (let i = 0; i < 110; i++) fill.push(api.reserve('HOT', `fill-${i}`, 1));
  t.ok((await Promise.all(fill)).every((r) => r.status === 201));
  const snapshotted = async () => (await db.pool.query(`SELECT count(*)::int AS n FROM sku_snapshots WHERE sku = 'HOT'`)).rows[0].n > 0;
  await until(t, 'a snapshot of HOT', snapshotted, 120_000);
  first.child.kill('SIGKILL');
  await once(first.child, 'exit');

  const restarted = await startChild(db.url, env);
  t.teardown(() => restarted.child.kill('SIGTERM'));
  api = clientFor(restarted.url);
  await raceProcess(t, api, second.body.reservationId, 'K', 'after SIGKILL and a restart');
  const orders = await db.pool.query(`SELECT count(*)::int AS n FROM orders WHERE shopper_id = 'mallory' AND idempotency_key = 'K'`);
  t.equal(orders.rows[0].n, 1, 'exactly one order with K');
  t.equal((await checkout(api, second.body.reservationId, 'K-2')).status, 202, 'a fresh key still checks out');
});
