import t from 'tap';
import { once } from 'node:events';
import { randomUUID } from 'node:crypto';
import { createTestDatabase } from './helpers/db.js';
import { clientFor } from './helpers/service.js';
import { startChild as startChild_ } from './helpers/child.js';

/**
 * The real entry point (src/main.ts) serving reservations is killed with
 * SIGKILL mid-load (after a snapshot was written). After a restart from the
 * snapshot + the tail of the log, every reservation that got a 201 is there,
 * nothing is oversold, and replays of acknowledged keys return the original bodies.
 */

const db = await createTestDatabase(t);

// Snapshots every 100 events: the restart recovers from a snapshot written mid-load plus the tail after it.
const startChild = () => startChild_(db.url, { SNAPSHOT_EVERY_EVENTS: '100' });
const snapshots = async () => (await db.pool.query(`SELECT count(*)::int AS n FROM sku_snapshots WHERE sku = 'CRASH'`)).rows[0].n as number;

t.test('SIGKILL mid-load loses nothing that was acknowledged', async (t) => {
  const stock = 3000;
  const first = await startChild();
  const api = clientFor(first.url);
  t.equal((await api.putSku('CRASH', { stock, perShopperLimit: 2 })).status, 201);

  const acknowledged = new Map<string, { key: string; shopper: string; body: unknown }>();
  let stop = false;
  let killedAfter = 0;
  const worker = async (w: number) => {
    for (let i = 0; !stop; i++) {
      const shopper = `w${w}-s${i}`;
      const key = randomUUID();
      try {
        const res = await api.reserve('CRASH', shopper, 1 + (i % 2), key);
        if (res.status === 201) acknowledged.set(res.body.reservationId, { key, shopper, body: res.body });
      } catch {
        return; // the connection died with the process: no answer, no promise made
      }
    }
  };
  const workers = Array.from({ length: 64 }, (_, w) => worker(w));
  while (acknowledged.size < 400) await new Promise((r) => setTimeout(r, 5));
  for (let i = 0; i < 600 && (await snapshots()) === 0; i++) await new Promise((r) => setTimeout(r, 50));
  first.child.kill('SIGKILL');
  killedAfter = acknowledged.size;
  await once(first.child, 'exit');
  stop = true;
  await Promise.all(workers);
  t.ok(killedAfter >= 400, `killed after ${killedAfter} acknowledged reservations`);
  t.ok((await snapshots()) > 0, 'a snapshot was written mid-load: the restart recovers from snapshot + tail');

  const second = await startChild();
  t.teardown(() => second.child.kill('SIGTERM'));
  const after = clientFor(second.url);
  const log = await db.pool.query<{ id: string; quantity: number }>(
    `SELECT reservation_id::text AS id, quantity FROM stock_events WHERE sku = 'CRASH' AND kind = 'reserved'`,
  );
  const logged = new Set(log.rows.map((r) => r.id));
  const missing = [...acknowledged.keys()].filter((id) => !logged.has(id));
  t.same(missing, [], `all ${acknowledged.size} acknowledged reservations are in the log`);
  const units = log.rows.reduce((sum, r) => sum + r.quantity, 0);
  const view = await after.call('GET', '/v1/skus/CRASH');
  t.equal(view.body.held, units, 'the rebuilt allocator holds exactly what the log says');
  t.ok(view.body.held + view.body.sold <= stock, 'nothing oversold');
  t.equal(view.body.available + view.body.held + view.body.sold, stock);

  let replayed = 0;
  for (const [id, ack] of [...acknowledged].slice(0, 200)) {
    const res = await after.call('POST', '/v1/skus/CRASH/reservations', {
      shopper: ack.shopper,
      body: { quantity: (ack.body as { quantity: number }).quantity },
      headers: { 'idempotency-key': ack.key },
    });
    if (res.status === 201 && res.body.reservationId === id) replayed += 1;
    else t.fail(`replay of ${id} gave ${res.status} ${JSON.stringify(res.body)}`);
  }
  t.equal(replayed, Math.min(200, acknowledged.size), 'replays return the original bodies after the restart');
  t.match(await after.call('GET', `/v1/reservations/${[...acknowledged.keys()][0]}`, { shopper: [...acknowledged.values()][0]!.shopper }), {
    status: 200,
    body: { status: 'held' },
  });
  second.child.kill('SIGTERM');
  const [code] = await once(second.child, 'exit');
  t.equal(code, 0, 'SIGTERM shuts down cleanly with exit code 0');
});
