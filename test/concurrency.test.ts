import t from 'tap';
import { startTestService } from './helpers/service.js';

/** 2,000 distinct shoppers race for 500 units: exactly 500 win, nobody is sold what is not there. */
const api = await startTestService(t);

t.test('2,000 concurrent reservations for 500 units', async (t) => {
  await api.putSku('RACE', { stock: 500, perShopperLimit: 1 });
  const results = await Promise.all(Array.from({ length: 2000 }, (_, i) => api.reserve('RACE', `shopper-${i}`, 1)));
  const created = results.filter((r) => r.status === 201);
  const soldOut = results.filter((r) => r.status === 409 && r.body.code === 'sold_out');
  t.equal(created.length, 500, 'exactly 500 × 201');
  t.equal(soldOut.length, 1500, 'exactly 1,500 × 409 sold_out');
  t.equal(new Set(created.map((r) => r.body.reservationId)).size, 500, 'distinct reservations');

  const view = await api.call('GET', '/v1/skus/RACE');
  t.match(view.body, { stock: 500, available: 0, held: 500, sold: 0 });

  const log = await api.service.pool.query<{ reserved: string; units: string; ids: string[] }>(
    `SELECT count(*) AS reserved, sum(quantity) AS units, array_agg(reservation_id::text) AS ids
       FROM stock_events WHERE sku = 'RACE' AND kind = 'reserved'`,
  );
  t.equal(Number(log.rows[0]!.reserved), 500, 'the event log holds 500 reservations');
  t.equal(Number(log.rows[0]!.units), 500);
  t.same(new Set(log.rows[0]!.ids), new Set(created.map((r) => r.body.reservationId)), 'the same ones that were acknowledged');
  const seqs = await api.service.pool.query<{ min: string; max: string; n: string }>(
    `SELECT min(seq), max(seq), count(*) AS n FROM stock_events WHERE sku = 'RACE'`,
  );
  t.same(seqs.rows[0], { min: '1', max: '501', n: '501' }, 'gap-free seq from 1');
  t.ok(api.service.shards.outboxStats.maxBatchEvents > 1, 'decisions were group-committed');
});
