import t from 'tap';
import { startTestService } from './helpers/service.js';
import { connectStream } from './helpers/stream-client.js';

/**
 * Every SKU view says where its sale stands: `state` is on_sale, not_started,
 * ended or archived, and an archived SKU shows nothing available (every
 * reservation there is refused), on GET and on the stream alike.
 */

t.test('GET /v1/skus/{sku}: the state follows the window on the injected clock, and archiving', async (t) => {
  let nowMs = Date.parse('2031-05-01T12:00:00Z');
  const api = await startTestService(t, {}, { nowMs: () => nowMs });
  const window = { startsAt: '2031-05-01T13:00:00Z', endsAt: '2031-05-01T14:00:00Z', stock: 10, perShopperLimit: 5 };
  const put = await api.putSku('STATE-1', window);
  t.match(put.body, { state: 'not_started', available: 10 }, 'the PUT answer says it too');
  const view = async () => (await api.call('GET', '/v1/skus/STATE-1')).body;
  t.match(await view(), { state: 'not_started', available: 10 });
  t.match(await api.reserve('STATE-1', 'st-a', 1), { status: 409, body: { code: 'sale_not_open' } });
  nowMs = Date.parse('2031-05-01T13:00:00Z');
  t.match(await view(), { state: 'on_sale', available: 10 }, 'at startsAt: on sale');
  t.equal((await api.reserve('STATE-1', 'st-a', 3)).status, 201);
  t.match(await view(), { state: 'on_sale', available: 7, held: 3 });
  nowMs = Date.parse('2031-05-01T14:00:00Z');
  t.match(await view(), { state: 'ended' }, 'at endsAt: ended');

  await api.putSku('STATE-2', { stock: 10, perShopperLimit: 5 });
  t.equal((await api.reserve('STATE-2', 'st-b', 2)).status, 201);
  t.match(await api.call('GET', '/v1/skus/STATE-2'), { body: { state: 'on_sale', available: 8, held: 2 } }, 'no window: on sale');
  const archived = await api.call('DELETE', '/v1/admin/skus/STATE-2', { admin: true });
  t.match(archived.body, { state: 'archived', available: 0, held: 0 }, 'the archive answer: archived, nothing available');
  t.match((await api.call('GET', '/v1/skus/STATE-2')).body, { state: 'archived', available: 0, stock: 10 }, 'GET: archived, available 0');
  t.match(await api.reserve('STATE-2', 'st-c', 1), { status: 409, body: { code: 'sale_not_open' } }, 'which is what a reservation gets');
  const reopened = await api.putSku('STATE-2', { stock: 10, perShopperLimit: 5 });
  t.match(reopened.body, { state: 'on_sale', available: 10 }, 'PUT reopens it');
});

t.test('the stream says the state in every stock frame; archived frames show 0 available', async (t) => {
  const api = await startTestService(t);
  await api.putSku('STATE-S', { stock: 6 });
  await api.putSku('STATE-LATER', { stock: 6, startsAt: '2099-01-01T00:00:00Z' });
  await api.putSku('STATE-OVER', { stock: 6, startsAt: '2001-01-01T00:00:00Z', endsAt: '2001-01-02T00:00:00Z' });
  const client = await connectStream(t, api.url);
  client.send({ type: 'subscribe', skus: ['STATE-S', 'STATE-LATER', 'STATE-OVER'] });
  const frame = (sku: string, state: string) => client.take((m) => m.type === 'stock' && m.sku === sku && m.state === state, 5000, `${sku} ${state}`);
  t.match(await frame('STATE-S', 'on_sale'), { available: 6, startsAt: null, endsAt: null });
  t.match(await frame('STATE-LATER', 'not_started'), { available: 6, startsAt: '2099-01-01T00:00:00.000Z' });
  t.match(await frame('STATE-OVER', 'ended'), { endsAt: '2001-01-02T00:00:00.000Z' });
  t.equal((await api.call('DELETE', '/v1/admin/skus/STATE-S', { admin: true })).status, 200);
  t.match(await frame('STATE-S', 'archived'), { available: 0 }, 'archived: 0 available, live');
});
