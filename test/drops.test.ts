import t from 'tap';
import { startTestService } from './helpers/service.js';
import { createTestDatabase } from './helpers/db.js';
import { configuredEvents, cycleRows, dropBody, statusOf, until } from './helpers/drops.js';
import { sharedTestClock } from './helpers/waits.js';

/**
 * Drops end to end on a real service and Postgres: cycles appear before they
 * start, limits and stock are per cycle, an ended cycle refuses, update,
 * delete, every error of the admin and public routes, and the repair of a
 * cycle whose creator died before configuring it.
 */

// The service's clock (allocators and drop scheduler) stands still until a test moves it:
// what sells when, and when a cycle exists, cannot depend on how fast the machine is.
const clock = sharedTestClock(Date.now());
const at = (ms: number) => clock.advance(ms - clock.nowMs());
const api = await startTestService(t, {}, { nowMs: clock.nowMs });
const { call, reserve } = api;
const pool = api.service.pool;
const putDrop = (name: string, body: unknown) => call('PUT', `/v1/admin/drops/${name}`, { admin: true, body });
const getDrop = (name: string) => call('GET', `/v1/drops/${name}`);
const jobToken = async (name: string) =>
  (await pool.query<{ job_token: string | null }>('SELECT job_token FROM drops WHERE name = $1', [name])).rows[0]?.job_token ?? null;
/** The scheduler's jobs that are due now (by PostgreSQL's clock) have run: none of the drop queue is created or active. */
async function settle(): Promise<void> {
  await until('the drop jobs due now have run', async () => {
    const { rows } = await pool.query<{ n: string }>(
      `SELECT count(*) AS n FROM pgboss.job WHERE name = 'drop-schedule' AND state IN ('created', 'retry', 'active') AND start_after <= now()`,
    );
    return rows[0]!.n === '0';
  });
}

t.test('cycles appear before they start; one purchase per shopper per cycle; stock resets; an ended cycle refuses', async (t) => {
  const first = clock.nowMs() + 5500; // cycle 1 is due at first - 3 s lead - 2 s margin: scheduled, not at once
  const created = await putDrop('HOURLY', dropBody(first, 3, 2));
  t.equal(created.status, 201);
  t.same(created.body, {
    name: 'HOURLY',
    everySeconds: 3,
    openSeconds: 2,
    stockPerCycle: 3,
    perShopperLimit: 1,
    current: null,
    next: {
      cycle: 1,
      sku: 'HOURLY.1',
      startsAt: new Date(first).toISOString(),
      endsAt: new Date(first + 2000).toISOString(),
      available: 3,
      held: 0,
      sold: 0,
    },
  });
  await settle();
  t.same(await cycleRows(pool, 'HOURLY'), [], 'before its creation time cycle 1 does not exist');

  at(first - 5000);
  const c1 = await until('cycle 1 configured', async () => (await cycleRows(pool, 'HOURLY')).find((c) => c.cycle === 1 && c.configuredAtMs !== null));
  t.equal(c1.configuredAtMs, first - 5000, `cycle 1's SKU exists from its creation time, lead + margin before its start`);
  t.match((await call('GET', '/v1/skus/HOURLY.1')).body, {
    stock: 3, perShopperLimit: 1, holdSeconds: 300, priceCents: 500, currency: 'USD',
    startsAt: new Date(first).toISOString(), endsAt: new Date(first + 2000).toISOString(),
  }, 'the cycle SKU has the drop\'s terms and window');
  at(first - 2000);
  const c2 = await until('cycle 2 configured', async () => (await cycleRows(pool, 'HOURLY')).find((c) => c.cycle === 2 && c.configuredAtMs !== null));
  t.equal(c2.configuredAtMs, c2.startsAtMs - 5000, 'cycle 2 too');
  t.equal(statusOf(await reserve('HOURLY.1', 'alice')), '409 sale_not_open', 'before its window: sale_not_open');
  at(first - 1);
  t.equal(statusOf(await reserve('HOURLY.1', 'alice')), '409 sale_not_open', '1 ms before its window: sale_not_open');

  at(first);
  t.equal((await reserve('HOURLY.1', 'alice')).status, 201, 'cycle 1: alice buys the moment it opens');
  t.equal(statusOf(await reserve('HOURLY.1', 'alice')), '409 limit_exceeded', 'cycle 1: alice is limited to 1');
  t.equal((await reserve('HOURLY.1', 'bob')).status, 201);
  t.equal((await reserve('HOURLY.1', 'carol')).status, 201);
  t.equal(statusOf(await reserve('HOURLY.1', 'dave')), '409 sold_out', 'cycle 1: 3 units, sold out');
  const during = await getDrop('HOURLY');
  t.match(during.body.current, { cycle: 1, sku: 'HOURLY.1', available: 0, held: 3, sold: 0 }, 'GET: the current cycle with live counts');
  t.match(during.body.next, { cycle: 2, sku: 'HOURLY.2', startsAt: new Date(first + 3000).toISOString() }, 'GET: the next cycle');

  at(first + 1999);
  t.equal(statusOf(await reserve('HOURLY.1', 'erin')), '409 sold_out', 'the last ms of cycle 1: still open, sold out');
  at(first + 2000);
  t.equal(statusOf(await reserve('HOURLY.1', 'erin')), '409 sale_not_open', 'cycle 1 ended: sale_not_open');
  t.match((await getDrop('HOURLY')).body, { current: null, next: { cycle: 2 } }, 'between windows nothing is current');
  await until('cycle 3 configured', async () => (await cycleRows(pool, 'HOURLY')).find((c) => c.cycle === 3 && c.configuredAtMs !== null));

  at(first + 3000);
  t.equal((await reserve('HOURLY.2', 'alice')).status, 201, 'cycle 2: alice buys again (the limit is per cycle)');
  t.match((await call('GET', '/v1/skus/HOURLY.2')).body, { stock: 3, available: 2, held: 1 }, 'cycle 2: stock reset to 3');
  t.match((await getDrop('HOURLY')).body.current, { cycle: 2, available: 2, held: 1 });

  const events = await configuredEvents(pool, 'HOURLY');
  const rows = await cycleRows(pool, 'HOURLY');
  t.same(rows.map((r) => r.cycle), [1, 2, 3], 'cycles 1..3 created, each once (cycle 4 is due at first + 4 s)');
  for (const row of rows) {
    t.equal(events.get(row.sku), 1, `${row.sku}: one configured event`);
    t.equal(row.startsAtMs, first + (row.cycle - 1) * 3000, `${row.sku} starts at firstStartsAt + (n-1)·everySeconds`);
  }
  t.equal((await call('DELETE', '/v1/admin/drops/HOURLY', { admin: true })).status, 200);
});

t.test('update: applies from the first cycle not created; same schedule keeps numbers and times', async (t) => {
  const first = clock.nowMs() + 5500;
  t.equal((await putDrop('UPD', dropBody(first, 4, 2, { stockPerCycle: 2 }))).status, 201);
  await until('cycle 1 created', async () => (await cycleRows(pool, 'UPD')).length === 1);
  // Cycle 2 is created 6 s (lead 4 s + 2 s margin) before it starts: at first - 2 s, on a clock that stands still until then.
  const updated = await putDrop('UPD', dropBody(first, 4, 2, { stockPerCycle: 5 }));
  t.equal(updated.status, 200, 'an update is 200');
  t.equal(updated.body.stockPerCycle, 5);
  t.match(updated.body.next, { cycle: 1, available: 2 }, 'cycle 1 was created: it keeps its terms');
  at(first - 2000);
  const c2 = await until('cycle 2 created', async () => (await cycleRows(pool, 'UPD')).find((c) => c.cycle === 2));
  t.equal(c2.stock, 5, 'cycle 2 has the new stock');
  t.equal(c2.startsAtMs, first + 4000, 'same schedule: cycle 2 at the same time');
  t.match((await call('GET', '/v1/skus/UPD.1')).body, { stock: 2 }, 'cycle 1 SKU unchanged');
  t.equal((await configuredEvents(pool, 'UPD')).get('UPD.1'), 1, 'cycle 1 was not reconfigured');

  // A new period re-anchors: the next cycle not created starts on the new grid, after what exists and after now.
  const before = clock.nowMs();
  const regrid = await putDrop('UPD', dropBody(first, 3, 1, { stockPerCycle: 4 }));
  t.equal(regrid.status, 200);
  // Cycle 2 ends at first + 6 s: cycle 3 starts there (first + 2·3 s), created 3 s + 2 s before it.
  t.match(regrid.body.next, { cycle: 1 });
  await settle();
  t.equal((await cycleRows(pool, 'UPD')).length, 2, 'cycle 3 is not due before its creation time');
  at(first + 1000);
  const c3 = await until('cycle 3 created', async () => (await cycleRows(pool, 'UPD')).find((c) => c.cycle === 3));
  t.ok(c3.startsAtMs >= Math.max(before, c2.endsAtMs), 'cycle 3 starts after cycle 2 ended and after the update');
  t.equal(c3.startsAtMs, first + 6000, 'on the new grid (firstStartsAt + j·3 s), the first instant after cycle 2');
  t.equal(c3.endsAtMs - c3.startsAtMs, 1000);
  t.equal(c3.stock, 4);
  t.equal((await call('DELETE', '/v1/admin/drops/UPD', { admin: true })).status, 200);
});

t.test('delete: the current cycle runs to its end, no cycle after the ones created', async (t) => {
  // Every 4 s, open 2 s: cycle 1 is due at once, cycle 2 at first - 2 s, cycle 3 at first + 2 s.
  const first = clock.nowMs() + 5000;
  t.equal((await putDrop('DEL', dropBody(first, 4, 2))).status, 201);
  await until('cycle 1 configured', async () => (await cycleRows(pool, 'DEL')).find((c) => c.configuredAtMs !== null));
  at(first + 100);
  await until('cycle 2 configured', async () => (await cycleRows(pool, 'DEL')).find((c) => c.cycle === 2 && c.configuredAtMs !== null));
  const liveToken = await jobToken('DEL');
  t.not(liveToken, null, 'the schedule has a live job (for cycle 3)');
  const stopped = await call('DELETE', '/v1/admin/drops/DEL', { admin: true });
  t.equal(stopped.status, 200);
  t.match(stopped.body, { name: 'DEL', current: { cycle: 1 }, next: { cycle: 2 } }, 'the current cycle and the one already created are still there');
  t.equal((await reserve('DEL.1', 'alice')).status, 201, 'the current cycle still sells');
  t.equal((await call('DELETE', '/v1/admin/drops/DEL', { admin: true })).status, 200, 'DELETE again: 200');

  // The job that was live before the DELETE runs when cycle 3 would be due: it creates nothing.
  at(first + 2000);
  await api.service.drops.run({ name: 'DEL', token: liveToken! });
  t.same((await cycleRows(pool, 'DEL')).map((c) => c.cycle), [1, 2], 'no cycle was created after the delete');
  at(first + 4000);
  t.equal((await reserve('DEL.2', 'alice')).status, 201, 'the cycle created before the delete runs');
  at(first + 6000);
  t.match((await getDrop('DEL')).body, { current: null, next: null }, 'GET after the last cycle: nothing current, nothing next');

  const revived = await putDrop('DEL', dropBody(first, 4, 2));
  t.equal(revived.status, 200, 'PUT after DELETE revives the drop');
  t.equal(revived.body.next.cycle, 3, 'numbering continues: next is cycle 3');
  t.equal((await call('DELETE', '/v1/admin/drops/DEL', { admin: true })).status, 200);
});

t.test('errors: auth, names, bodies, unknown drops', async (t) => {
  const body = dropBody(Date.now() + 3_600_000, 3600, 900);
  t.equal(statusOf(await call('PUT', '/v1/admin/drops/X', { body })), '401 unauthorized');
  t.equal(statusOf(await call('PUT', '/v1/admin/drops/X', { body, shopper: 'alice' })), '401 unauthorized', 'a shopper is not an admin');
  t.equal(statusOf(await call('DELETE', '/v1/admin/drops/X')), '401 unauthorized');
  t.equal(statusOf(await call('GET', '/v1/admin/drops/X')), '401 unauthorized');
  t.equal(statusOf(await putDrop('x'.repeat(55), body)), '400 invalid_request', '55 characters: {name}.{cycle} could pass 64');
  t.equal((await putDrop('x'.repeat(54), body)).status, 201, '54 characters is fine');
  t.equal(statusOf(await putDrop('sp%20ace', body)), '400 invalid_request');
  t.equal(statusOf(await getDrop('semi;colon')), '400 invalid_request');
  const invalid: Record<string, unknown>[] = [
    { firstStartsAt: 'soon' },
    { firstStartsAt: '2030-02-30T00:00:00Z' },
    { everySeconds: 0 },
    { openSeconds: 3601 },
    { stockPerCycle: -1 },
    { perShopperLimit: 0 },
    { currency: 'usd' },
    { cycles: 0 },
    { surprise: true },
  ];
  for (const patch of invalid) {
    t.equal(statusOf(await putDrop('BAD', { ...body, ...patch })), '400 invalid_request', `refused ${JSON.stringify(patch)}`);
  }
  t.equal(statusOf(await call('PUT', '/v1/admin/drops/BAD', { admin: true, rawBody: '{', headers: { 'content-type': 'application/json' } })), '400 invalid_request');
  t.equal(statusOf(await getDrop('BAD')), '404 not_found', 'nothing was stored for refused bodies');
  t.equal(statusOf(await call('DELETE', '/v1/admin/drops/NOPE', { admin: true })), '404 not_found');
  t.equal(statusOf(await call('POST', '/v1/drops/NOPE')), '405 method_not_allowed');
  t.equal(statusOf(await call('GET', '/v1/admin/drops/NOPE', { admin: true })), '404 not_found');
  t.same((await call('GET', `/v1/admin/drops/${'x'.repeat(54)}`, { admin: true })).body, (await getDrop('x'.repeat(54))).body, 'the admin GET is the public view');
  const forever = await getDrop('x'.repeat(54));
  t.match(forever.body, { current: null, next: { cycle: 1, sku: `${'x'.repeat(54)}.1` } });
});

t.test('a cycle created but never configured (its creator died) is repaired at start', async (t) => {
  const db = await createTestDatabase(t);
  const startsAtMs = Date.now() + 60_000;
  await db.pool.query(
    `INSERT INTO drops (name, first_starts_at, every_seconds, open_seconds, stock_per_cycle, per_shopper_limit, hold_seconds,
                        price_cents, currency, anchor_cycle, anchor_starts_at)
     VALUES ('CRASHED', to_timestamp($1 / 1000.0), 3600, 600, 7, 2, 60, 100, 'EUR', 1, to_timestamp($1 / 1000.0))`,
    [startsAtMs],
  );
  // The row its creator inserted, claimed until a moment ago, before it could configure the SKU.
  await db.pool.query(
    `INSERT INTO drop_cycles (name, cycle, sku, starts_at, ends_at, stock, per_shopper_limit, hold_seconds, price_cents, currency, claimed_until)
     VALUES ('CRASHED', 1, 'CRASHED.1', to_timestamp($1 / 1000.0), to_timestamp($1 / 1000.0 + 600), 7, 2, 60, 100, 'EUR', now() - interval '1 second')`,
    [startsAtMs],
  );
  const restarted = await startTestService(t, {}, {}, db.url);
  t.match((await restarted.call('GET', '/v1/skus/CRASHED.1')).body, { stock: 7, perShopperLimit: 2, currency: 'EUR', startsAt: new Date(startsAtMs).toISOString() });
  const [row] = await cycleRows(db.pool, 'CRASHED');
  t.not(row!.configuredAtMs, null, 'marked configured');
  t.same([...(await configuredEvents(db.pool, 'CRASHED'))], [['CRASHED.1', 1]]);
  t.equal(restarted.service.drops.stats.repaired, 1);
});

t.test('a drop whose schedule can never produce a cycle is 422 drop_never_runs, and nothing is stored', async (t) => {
  const never = await putDrop('NEVER', dropBody(Date.UTC(1970, 0, 1), 1, 1));
  t.match(never, { status: 422, body: { code: 'drop_never_runs', detail: /never produces a cycle/ } }, '1970, every second, no cycle limit');
  t.equal((await getDrop('NEVER')).status, 404, 'not stored');
  const past = await putDrop('PAST', dropBody(Date.now() - 86_400_000, 60, 30, { cycles: 3 }));
  t.match(past, { status: 422, body: { code: 'drop_never_runs' } }, 'every cycle of a limited drop in the past');
  const old = await putDrop('OLD-HOURLY', dropBody(Date.UTC(1970, 0, 1), 3600, 60));
  t.equal(old.status, 201, 'an old start is fine while cycles are still to come (hourly since 1970)');
  t.not(old.body.next, null, 'and it has a next cycle');
});
