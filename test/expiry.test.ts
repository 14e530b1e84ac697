import t from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import { createTestDatabase } from './helpers/db.js';
import { startTestService, type TestService } from './helpers/service.js';
import { manualClock } from './helpers/clock.js';

/**
 * Holds expire on time, by themselves, and also across a restart. The allocators run on the test's
 * clock (StartOptions.nowMs): a hold's time passes when the test moves the clock, not when the
 * machine gets round to it; only the sweeper's own timer runs in real time, and the test waits for it.
 */

/** Poll the SKU until `available`/`held` are as expected (the sweeper runs on a real timer); the last view. */
async function skuBecomes(api: TestService, sku: string, expected: { available: number; held: number }) {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const view = await api.call('GET', `/v1/skus/${sku}`);
    if ((view.body.available === expected.available && view.body.held === expected.held) || Date.now() > deadline) return view;
    await sleep(20);
  }
}

t.test('a hold expires on time and its stock comes back', async (t) => {
  const clock = manualClock(Date.now());
  const api = await startTestService(t, { expirySweepIntervalMs: 20 }, { nowMs: clock.nowMs });
  await api.putSku('EXP', { stock: 2, holdSeconds: 1 });
  const made = await api.reserve('EXP', 'alice', 2);
  t.equal(made.status, 201);
  const expiresAtMs = Date.parse(made.body.expiresAt);
  t.equal(expiresAtMs, clock.nowMs() + 1000, 'held for holdSeconds from the decision');
  t.match(await api.reserve('EXP', 'bob', 1), { status: 409, body: { code: 'sold_out' } });
  // Real time passes (many sweeps), the clock does not: the hold stays.
  await sleep(200);
  clock.advance(999);
  await sleep(200);
  t.match(await api.call('GET', '/v1/skus/EXP'), { body: { available: 0, held: 2 } }, '1 ms before its time the hold stands');
  t.match(await api.call('GET', `/v1/reservations/${made.body.reservationId}`, { shopper: 'alice' }), { body: { status: 'held' } });
  clock.advance(1);
  t.match(await skuBecomes(api, 'EXP', { available: 2, held: 0 }), { body: { available: 2, held: 0 } }, 'the sweeper returned the stock');
  t.match(await api.call('GET', `/v1/reservations/${made.body.reservationId}`, { shopper: 'alice' }), { body: { status: 'expired' } });
  t.match(await api.call('DELETE', `/v1/reservations/${made.body.reservationId}`, { shopper: 'alice' }), {
    status: 200,
    body: { status: 'expired' },
  }, 'releasing an expired hold says so');
  const events = await api.service.pool.query(`SELECT kind, at_ms FROM stock_events WHERE sku = 'EXP' ORDER BY seq`);
  const expired = events.rows.find((r) => r.kind === 'expired');
  t.ok(expired, 'the expiry is in the log');
  t.equal(Number(expired?.at_ms), expiresAtMs, 'recorded at its time: the first sweep once it was due');
  t.equal((await api.reserve('EXP', 'bob', 2)).status, 201, 'the units sell again');
});

t.test('a sold-out SKU frees due holds at once, without waiting for the sweeper', async (t) => {
  const clock = manualClock(Date.now());
  const api = await startTestService(t, { expirySweepIntervalMs: 10_000 }, { nowMs: clock.nowMs });
  await api.putSku('LAZY', { stock: 1, holdSeconds: 1 });
  const made = await api.reserve('LAZY', 'alice', 1);
  t.equal(made.status, 201);
  clock.advance(999);
  t.equal((await api.reserve('LAZY', 'bob', 1)).body.code, 'sold_out', 'not yet due: sold out');
  clock.advance(1);
  t.equal((await api.reserve('LAZY', 'bob', 1)).status, 201, 'due: bob gets the unit before any sweep');
});

t.test('across a restart: overdue holds expire at recovery, live ones are re-armed', async (t) => {
  const db = await createTestDatabase(t);
  const clock = manualClock(Date.now());
  const first = await startTestService({ teardown: () => undefined }, { expirySweepIntervalMs: 20 }, { nowMs: clock.nowMs }, db.url);
  await first.putSku('SHORT', { stock: 3, holdSeconds: 1 });
  await first.putSku('LONG', { stock: 3, holdSeconds: 3 });
  const short = await first.reserve('SHORT', 'alice', 3);
  const long = await first.reserve('LONG', 'alice', 3);
  await first.service.stop();

  clock.advance(Date.parse(short.body.expiresAt) - clock.nowMs() + 100);
  const second = await startTestService(t, { expirySweepIntervalMs: 20 }, { nowMs: clock.nowMs }, db.url);
  t.match(await second.call('GET', '/v1/skus/SHORT'), { body: { available: 3, held: 0 } }, 'expired while down → expired at recovery');
  t.match(await second.call('GET', `/v1/reservations/${short.body.reservationId}`, { shopper: 'alice' }), { body: { status: 'expired' } });
  t.match(await second.call('GET', '/v1/skus/LONG'), { body: { available: 0, held: 3 } }, 'still live after restart');

  await sleep(200);
  t.match(await second.call('GET', '/v1/skus/LONG'), { body: { available: 0, held: 3 } }, 'and stays live while its time has not come');
  clock.advance(Date.parse(long.body.expiresAt) - clock.nowMs());
  t.match(await skuBecomes(second, 'LONG', { available: 3, held: 0 }), { body: { available: 3, held: 0 } }, 'its timer was re-armed');
  const kinds = await second.service.pool.query(`SELECT sku, kind FROM stock_events WHERE kind = 'expired' ORDER BY sku`);
  t.same(kinds.rows, [{ sku: 'LONG', kind: 'expired' }, { sku: 'SHORT', kind: 'expired' }]);
});
