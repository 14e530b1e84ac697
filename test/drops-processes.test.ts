import t from 'tap';
import { startTestService, clientFor } from './helpers/service.js';
import { createTestDatabase } from './helpers/db.js';
import { configuredEvents, cycleRows, dropBody, statusOf, until } from './helpers/drops.js';
import { sharedTestClock } from './helpers/waits.js';

/**
 * Drops across restarts and processes: a restart in the middle of a cycle
 * keeps the cycle's sales and the schedule going; two services on one
 * database never create a cycle twice. The services share one test clock
 * that moves only when the test moves it.
 */

t.test('restart in the middle of a cycle: its sales survive, the next cycles still come, none twice', async (t) => {
  const db = await createTestDatabase(t);
  const clock = sharedTestClock(Date.now());
  const at = (ms: number) => clock.advance(ms - clock.nowMs());
  const first = await startTestService(t, {}, { nowMs: clock.nowMs }, db.url);
  // Every 5 s, open 4 s, created 7 s (lead 5 s + margin 2 s) ahead: cycle 1 at once, cycle 2 at start - 2 s, cycle 3 at start + 3 s.
  const start = clock.nowMs() + 3200;
  t.equal((await first.call('PUT', '/v1/admin/drops/RESTART', { admin: true, body: dropBody(start, 5, 4) })).status, 201);
  await until('cycle 1 configured', async () => (await cycleRows(db.pool, 'RESTART')).find((c) => c.configuredAtMs !== null));
  at(start);
  await until('cycle 2 configured', async () => (await cycleRows(db.pool, 'RESTART')).find((c) => c.cycle === 2 && c.configuredAtMs !== null));
  t.equal((await first.reserve('RESTART.1', 'alice')).status, 201, 'cycle 1: alice buys before the restart');
  await first.service.stop();

  at(start + 2000);
  const second = await startTestService(t, {}, { nowMs: clock.nowMs }, db.url);
  t.equal(statusOf(await second.reserve('RESTART.1', 'alice')), '409 limit_exceeded', 'restarted 2 s into the 4 s window: cycle 1 still counts alice');
  t.equal((await second.reserve('RESTART.1', 'bob')).status, 201, 'and still sells');
  t.match((await second.call('GET', '/v1/drops/RESTART')).body.current, { cycle: 1, available: 1, held: 2 });

  at(start + 3000);
  const c3 = await until('cycle 3 configured', async () => (await cycleRows(db.pool, 'RESTART')).find((c) => c.cycle === 3 && c.configuredAtMs !== null));
  t.equal(c3.configuredAtMs, c3.startsAtMs - 7000, 'cycle 3 created on time by the second process (lead + margin ahead)');
  t.equal(second.service.drops.stats.skusConfigured, 1, 'the second process configured cycle 3 and nothing else');
  at(start + 5000);
  t.equal((await second.reserve('RESTART.2', 'alice')).status, 201, 'cycle 2: alice buys again');

  const events = await configuredEvents(db.pool, 'RESTART');
  const rows = await cycleRows(db.pool, 'RESTART');
  t.same(rows.map((r) => r.cycle), [1, 2, 3], 'cycles 1..3, each once');
  for (const row of rows) t.equal(events.get(row.sku), 1, `${row.sku}: one configured event`);
  t.equal((await second.call('DELETE', '/v1/admin/drops/RESTART', { admin: true })).status, 200);
});

t.test('a process that was down skips the cycles whose window ended meanwhile, and catches up the open one', async (t) => {
  const db = await createTestDatabase(t);
  const clock = sharedTestClock(Date.now());
  const at = (ms: number) => clock.advance(ms - clock.nowMs());
  const first = await startTestService(t, {}, { nowMs: clock.nowMs }, db.url);
  // Every 2 s, open 1 s, created 4 s ahead: cycle n at start + (n - 1)·2 s - 4 s.
  const start = clock.nowMs() + 5200;
  t.equal((await first.call('PUT', '/v1/admin/drops/DOWN', { admin: true, body: dropBody(start, 2, 1) })).status, 201);
  at(start - 4000);
  await until('cycle 1 configured', async () => (await cycleRows(db.pool, 'DOWN')).find((c) => c.configuredAtMs !== null));
  await first.service.stop(); // cycle 2 would be created at start - 2 s: nobody is there
  at(start + 4100); // cycle 2's window [start+2 s, start+3 s) is over; cycle 3's [start+4 s, start+5 s) is open
  const second = await startTestService(t, {}, { nowMs: clock.nowMs }, db.url);
  const rows = await until('cycles 3 to 5 configured', async () => {
    const found = await cycleRows(db.pool, 'DOWN');
    return found.filter((c) => c.cycle > 2 && c.configuredAtMs !== null).length === 3 && found;
  });
  t.same(rows.map((c) => c.cycle), [1, 3, 4, 5], 'cycle 2 ended while no process ran: never created; 3 (open), 4 and 5 (due) caught up');
  const caughtUp = rows.find((c) => c.cycle === 3)!;
  t.equal(caughtUp.createdAtMs, start + 4100, 'cycle 3 created at the restart, inside its window');
  t.equal(caughtUp.startsAtMs, start + 4000, 'numbers stay tied to the schedule');
  t.equal((await second.reserve('DOWN.3', 'alice')).status, 201, 'the caught-up open cycle sells');
  t.equal((await second.call('DELETE', '/v1/admin/drops/DOWN', { admin: true })).status, 200);
});

t.test('two processes on one database never create a cycle twice', async (t) => {
  const db = await createTestDatabase(t);
  const clock = sharedTestClock(Date.now());
  const at = (ms: number) => clock.advance(ms - clock.nowMs());
  const a = await startTestService(t, {}, { nowMs: clock.nowMs }, db.url);
  const b = await startTestService(t, {}, { nowMs: clock.nowMs }, db.url);
  // Every 1 s, open 1 s, created 3 s ahead: cycle 1 at once, cycle 6 at start + 2 s.
  const start = clock.nowMs() + 2500;
  const cycles = 6;
  // Both are asked: the second PUT re-anchors nothing (no cycle exists yet) and hands the schedule a new job.
  t.equal((await a.call('PUT', '/v1/admin/drops/TWO', { admin: true, body: dropBody(start, 1, 1, { cycles }) })).status, 201);
  t.equal((await b.call('PUT', '/v1/admin/drops/TWO', { admin: true, body: dropBody(start, 1, 1, { cycles }) })).status, 200);
  // Race the scheduler itself: both processes run the live job of the drop at the same moment, 100 ms apart on the clock.
  let races = 0;
  for (; clock.nowMs() <= start + 2000; clock.advance(100)) {
    const { rows } = await db.pool.query<{ job_token: string | null }>(`SELECT job_token FROM drops WHERE name = 'TWO'`);
    const token = rows[0]?.job_token;
    if (token) {
      await Promise.all([a.service.drops.run({ name: 'TWO', token }), b.service.drops.run({ name: 'TWO', token })]);
      races += 1;
    }
  }
  t.ok(races >= 40, `${races} simultaneous runs of the same job in both processes`);
  await until('every cycle configured', async () => {
    const rows = await cycleRows(db.pool, 'TWO');
    return rows.length === cycles && rows.every((r) => r.configuredAtMs !== null);
  });

  const rows = await cycleRows(db.pool, 'TWO');
  t.same(rows.map((r) => r.cycle), [1, 2, 3, 4, 5, 6], 'cycles 1..6, one row each');
  const events = await configuredEvents(db.pool, 'TWO');
  t.same([...events.keys()].sort(), rows.map((r) => r.sku).sort(), 'a configured event for every cycle SKU and no other');
  t.ok([...events.values()].every((n) => n === 1), 'exactly one configured event per cycle SKU');
  for (const row of rows) {
    t.ok(row.configuredAtMs! <= row.startsAtMs - 1000, `${row.sku} existed ${row.startsAtMs - row.configuredAtMs!} ms before its start`);
  }
  const statsA = a.service.drops.stats;
  const statsB = b.service.drops.stats;
  t.equal(statsA.skusConfigured + statsB.skusConfigured, cycles, `cycles configured: ${statsA.skusConfigured} by one process, ${statsB.skusConfigured} by the other`);

  // Either process answers for every cycle (a SKU it did not configure is read from the log).
  for (const row of rows) {
    const seen = [await a.service.inventory.getSku(row.sku), await b.service.inventory.getSku(row.sku)];
    t.ok(seen.every((v) => v.ok && v.value.stock === 3), `${row.sku} readable from both processes`);
  }
  const last = rows.at(-1)!;
  at(last.endsAtMs + 1500);
  const { rows: live } = await db.pool.query<{ job_token: string | null }>(`SELECT job_token FROM drops WHERE name = 'TWO'`);
  t.equal(live[0]!.job_token, null, 'the schedule ended with cycle 6: no live job');
  t.equal((await cycleRows(db.pool, 'TWO')).length, cycles, 'no cycle past `cycles`');
  t.match((await clientFor(a.url).call('GET', '/v1/drops/TWO')).body, { current: null, next: null });
});
