import t from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import { createTestDatabase } from './helpers/db.js';
import { startTestService } from './helpers/service.js';

/** Holds expire on time, by themselves, and also across a restart. */

t.test('a hold expires on time and its stock comes back', async (t) => {
  const api = await startTestService(t, { expirySweepIntervalMs: 20 });
  await api.putSku('EXP', { stock: 2, holdSeconds: 1 });
  const made = await api.reserve('EXP', 'alice', 2);
  t.equal(made.status, 201);
  t.match(await api.reserve('EXP', 'bob', 1), { status: 409, body: { code: 'sold_out' } });
  await sleep(Date.parse(made.body.expiresAt) - Date.now() + 150);
  t.match(await api.call('GET', '/v1/skus/EXP'), { body: { available: 2, held: 0 } }, 'the sweeper returned the stock');
  t.match(await api.call('GET', `/v1/reservations/${made.body.reservationId}`, { shopper: 'alice' }), { body: { status: 'expired' } });
  t.match(await api.call('DELETE', `/v1/reservations/${made.body.reservationId}`, { shopper: 'alice' }), {
    status: 200,
    body: { status: 'expired' },
  }, 'releasing an expired hold says so');
  const events = await api.service.pool.query(`SELECT kind, at_ms, expires_at_ms FROM stock_events WHERE sku = 'EXP' ORDER BY seq`);
  const expired = events.rows.find((r) => r.kind === 'expired');
  t.ok(expired, 'the expiry is in the log');
  t.ok(Number(expired.at_ms) >= Date.parse(made.body.expiresAt), 'not before its time');
  t.ok(Number(expired.at_ms) - Date.parse(made.body.expiresAt) < 1000, 'and promptly');
  t.equal((await api.reserve('EXP', 'bob', 2)).status, 201, 'the units sell again');
});

t.test('a sold-out SKU frees due holds at once, without waiting for the sweeper', async (t) => {
  const api = await startTestService(t, { expirySweepIntervalMs: 10_000 });
  await api.putSku('LAZY', { stock: 1, holdSeconds: 1 });
  const made = await api.reserve('LAZY', 'alice', 1);
  await sleep(Date.parse(made.body.expiresAt) - Date.now() + 50);
  t.equal((await api.reserve('LAZY', 'bob', 1)).status, 201);
});

t.test('across a restart: overdue holds expire at recovery, live ones are re-armed', async (t) => {
  const db = await createTestDatabase(t);
  const first = await startTestService({ teardown: () => undefined }, { expirySweepIntervalMs: 20 }, {}, db.url);
  await first.putSku('SHORT', { stock: 3, holdSeconds: 1 });
  await first.putSku('LONG', { stock: 3, holdSeconds: 3 });
  const short = await first.reserve('SHORT', 'alice', 3);
  const long = await first.reserve('LONG', 'alice', 3);
  await first.service.stop();

  await sleep(Math.max(0, Date.parse(short.body.expiresAt) - Date.now() + 100));
  const second = await startTestService(t, { expirySweepIntervalMs: 20 }, {}, db.url);
  t.match(await second.call('GET', '/v1/skus/SHORT'), { body: { available: 3, held: 0 } }, 'expired while down → expired at recovery');
  t.match(await second.call('GET', `/v1/reservations/${short.body.reservationId}`, { shopper: 'alice' }), { body: { status: 'expired' } });
  t.match(await second.call('GET', '/v1/skus/LONG'), { body: { available: 0, held: 3 } }, 'still live after restart');

  await sleep(Math.max(0, Date.parse(long.body.expiresAt) - Date.now() + 200));
  t.match(await second.call('GET', '/v1/skus/LONG'), { body: { available: 3, held: 0 } }, 'its timer was re-armed');
  const kinds = await second.service.pool.query(`SELECT sku, kind FROM stock_events WHERE kind = 'expired' ORDER BY sku`);
  t.same(kinds.rows, [{ sku: 'LONG', kind: 'expired' }, { sku: 'SHORT', kind: 'expired' }]);
});
