import t from 'tap';
import { createTestDatabase } from './helpers/db.js';
import pg from 'pg';
import { startTestService, type TestService } from './helpers/service.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Until a commit of this database waits on a lock (the batch in flight is stuck behind the test's lock). */
async function untilCommitWaits(api: TestService): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    const waiting = await api.service.pool.query(
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query ILIKE '%INSERT INTO stock_events%'",
    );
    if (waiting.rows[0].n > 0) return;
    await sleep(10);
  }
  throw new Error('no commit ever waited on the lock');
}

/** Until `n` decisions are queued behind the commit in flight. */
async function untilQueued(api: TestService, n: number): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    const shards = api.service.shards;
    if ('refresh' in shards) await shards.refresh?.();
    if (shards.pendingEvents >= n) return;
    await sleep(10);
  }
  throw new Error(`fewer than ${n} decisions ever queued`);
}

/** What happens when a group commit fails, and when a second writer appears for a SKU. */

t.test('a failed commit undoes its decisions and answers 503; a retry with the same key succeeds', async (t) => {
  const api = await startTestService(t);
  await api.putSku('FAIL', { stock: 10, perShopperLimit: 10 });
  t.equal((await api.reserve('FAIL', 'alice', 1)).status, 201);
  // A real Postgres refusal, not a mock: the log will not take a quantity of 7.
  await api.service.pool.query('ALTER TABLE stock_events ADD CONSTRAINT no_sevens CHECK (quantity IS DISTINCT FROM 7)');
  // One commit in flight at a time: while dave's batch waits on a table lock, bob's and carol's
  // decisions queue and go together in the next batch, which the constraint refuses.
  const locker = new pg.Client({ connectionString: api.databaseUrl });
  locker.on('error', () => undefined);
  await locker.connect();
  t.teardown(() => locker.end());
  await locker.query('BEGIN');
  await locker.query('LOCK TABLE stock_events IN SHARE MODE');
  const dave = api.reserve('FAIL', 'dave', 1, 'dave-key');
  await untilCommitWaits(api);
  const both = Promise.all([api.reserve('FAIL', 'bob', 7, 'bob-key'), api.reserve('FAIL', 'carol', 1, 'carol-key')]);
  await untilQueued(api, 2);
  await locker.query('COMMIT');
  t.equal((await dave).status, 201, 'the batch before commits');
  const [bad, neighbour] = await both;
  t.match(bad, { status: 503, body: { code: 'unavailable' } });
  t.equal(bad.headers.get('retry-after'), '1');
  t.match(neighbour, { status: 503, body: { code: 'unavailable' } }, 'a decision in the same batch is undone too');

  let view = await api.call('GET', '/v1/skus/FAIL');
  for (let i = 0; i < 50 && view.status !== 200; i++) view = await api.call('GET', '/v1/skus/FAIL');
  const expectedHeld = 2; // alice and dave
  // Wait for the rebuild to finish (reservations get 503 meanwhile).
  let probe = await api.reserve('FAIL', 'probe', 1, 'probe-key');
  for (let i = 0; i < 100 && probe.status === 503; i++) {
    await new Promise((r) => setTimeout(r, 20));
    probe = await api.reserve('FAIL', 'probe', 1, 'probe-key');
  }
  t.equal(probe.status, 201, 'the SKU serves again once rebuilt from the log');
  view = await api.call('GET', '/v1/skus/FAIL');
  t.equal(view.body.held, expectedHeld + 1, 'the failed decision left no trace in memory');

  await api.service.pool.query('ALTER TABLE stock_events DROP CONSTRAINT no_sevens');
  const retry = await api.reserve('FAIL', 'bob', 7, 'bob-key');
  t.equal(retry.status, 201, 'retrying with the same key now succeeds');
  const logged = await api.service.pool.query(`SELECT count(*)::int AS n FROM stock_events WHERE sku = 'FAIL' AND shopper_id = 'bob'`);
  t.equal(logged.rows[0].n, 1, 'exactly one reservation for bob in the log');
});

t.test('fencing: a second writer for the same SKU collides on (sku, seq), rebuilds from the log, and never acknowledges what is not there', async (t) => {
  const db = await createTestDatabase(t);
  const a = await startTestService(t, {}, {}, db.url);
  await a.putSku('FENCE', { stock: 10, perShopperLimit: 10 });
  await a.putSku('OTHER', { stock: 10 });
  const b = await startTestService(t, {}, {}, db.url); // recovers the same SKUs: two writers now
  t.equal((await a.reserve('FENCE', 'alice', 1)).status, 201, 'the first writer takes seq 2');
  const collided = await b.reserve('FENCE', 'bob', 1);
  t.match(collided, { status: 503, body: { code: 'unavailable' } }, 'the second writer’s insert fails');
  // Rebuilt from the log before it serves again: its view now has alice's hold, not its own undone one.
  let view = await b.call('GET', '/v1/skus/FENCE');
  for (let i = 0; i < 100 && view.status !== 200; i++) {
    await new Promise((r) => setTimeout(r, 20));
    view = await b.call('GET', '/v1/skus/FENCE');
  }
  t.match(view, { status: 200, body: { held: 1, available: 9 } }, 'the fenced writer was rebuilt from the log');
  // Whoever writes next, every 201 is in the log and nothing is oversold.
  const acknowledged: string[] = [];
  for (const [api, shopper] of [[a, 'carol'], [b, 'dave'], [a, 'erin'], [b, 'frank']] as const) {
    const result = await api.reserve('FENCE', shopper, 1);
    if (result.status === 201) acknowledged.push(result.body.reservationId);
    else t.match(result, { status: 503, body: { code: 'unavailable' } }, 'a collision is a 503, never a wrong answer');
  }
  const rows = await a.service.pool.query(`SELECT reservation_id FROM stock_events WHERE sku = 'FENCE' AND kind = 'reserved'`);
  const logged = new Set(rows.rows.map((r: { reservation_id: string }) => r.reservation_id));
  t.equal(logged.size, acknowledged.length + 1, 'the log holds exactly the acknowledged reservations');
  for (const id of acknowledged) t.ok(logged.has(id), `acknowledged ${id} is in the log`);
});
