import t from 'tap';
import { once } from 'node:events';
import { createTestDatabase } from './helpers/db.js';
import { clientFor } from './helpers/service.js';
import { startChild as startChild_ } from './helpers/child.js';
import { startLoad, verifyFromLog, waitUntilServing } from './helpers/fault-load.js';

/**
 * The real entry point (src/main.ts) serving reservations of 1 and 2 units is
 * killed with SIGKILL mid-load (after a snapshot was written). The restart
 * recovers from the snapshot + the tail of the log and sells the SKU out.
 * Every answer is 201, 409 sold_out or 503 (or none: the connection refused or
 * reset by the killed process); every reservation that got a 201 is there and
 * replays with its original body, the rebuilt counts are the log's, and
 * nothing is oversold.
 */

// Real processes start (tsx compiles src/ first) and recover, several times, on a shared 2-core machine.
t.setTimeout(300_000);

const db = await createTestDatabase(t);

// Snapshots every 100 events: the restart recovers from a snapshot written mid-load plus the tail after it.
const startChild = () => startChild_(db.url, { SNAPSHOT_EVERY_EVENTS: '100' });
const snapshots = async () => (await db.pool.query(`SELECT count(*)::int AS n FROM sku_snapshots WHERE sku = 'CRASH'`)).rows[0].n as number;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

t.test('SIGKILL mid-load loses nothing that was acknowledged; the restart sells out, never over', async (t) => {
  // About 600 units are taken before the kill; the restarted process sells the rest.
  const stock = 1200;
  const startedAt = Date.now();
  const phase = (what: string) => t.comment(`${what} at ${Date.now() - startedAt} ms`);
  const first = await startChild();
  const api = clientFor(first.url);
  t.equal((await api.putSku('CRASH', { stock, perShopperLimit: 2 })).status, 201);
  t.equal((await api.putSku('PROBE', { stock: 1_000_000, perShopperLimit: 1 })).status, 201);

  const load = startLoad(api, 'CRASH', 64, { processesDie: true, quantity: (i) => 1 + (i % 2) });
  while (load.acknowledged() < 400) await sleep(5);
  // A connection to the test database can time out on a machine this busy: count that as "not yet".
  for (let i = 0; i < 600 && (await snapshots().catch(() => 0)) === 0; i++) await sleep(50);
  const killedAfter = load.acknowledged();
  first.child.kill('SIGKILL');
  await once(first.child, 'exit').catch(() => undefined);
  const attempts = await load.stop();
  t.ok((await snapshots()) > 0, 'a snapshot was written mid-load: the restart recovers from snapshot + tail');
  t.comment(`killed after ${killedAfter} acknowledged reservations; ${attempts.filter((a) => a.status === 0).length} requests unanswered`);

  phase('killed');
  const second = await startChild();
  phase('restarted');
  t.teardown(() => second.child.kill('SIGTERM'));
  const after = clientFor(second.url);
  await waitUntilServing(after, 'PROBE', 20_000);
  const rest = startLoad(after, 'CRASH', 16, { quantity: (i) => 1 + (i % 2) });
  await rest.soldOut(30_000);
  attempts.push(...(await rest.stop()));
  phase('sold out');
  await verifyFromLog(t, after, db.pool, 'CRASH', stock, attempts, { processesDie: true });

  second.child.kill('SIGTERM');
  const [code] = await once(second.child, 'exit');
  t.equal(code, 0, 'SIGTERM shuts down cleanly with exit code 0');
});
