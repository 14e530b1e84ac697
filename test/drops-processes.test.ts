import t from 'tap';
import { startTestService, clientFor } from './helpers/service.js';
import { createTestDatabase } from './helpers/db.js';
import { configuredEvents, cycleRows, dropBody, sleepUntil, statusOf, until } from './helpers/drops.js';

/**
 * Drops across restarts and processes: a restart in the middle of a cycle
 * keeps the cycle's sales and the schedule going; two services on one
 * database never create a cycle twice.
 */

t.test('restart in the middle of a cycle: its sales survive, the next cycles still come, none twice', async (t) => {
  const db = await createTestDatabase(t);
  const first = await startTestService(t, {}, {}, db.url);
  const start = Date.now() + 3200;
  t.equal((await first.call('PUT', '/v1/admin/drops/RESTART', { admin: true, body: dropBody(start, 5, 4) })).status, 201);
  await until('cycle 1 configured', async () => (await cycleRows(db.pool, 'RESTART')).find((c) => c.configuredAtMs !== null));
  await sleepUntil(start + 20);
  t.equal((await first.reserve('RESTART.1', 'alice')).status, 201, 'cycle 1: alice buys before the restart');
  await first.service.stop();

  const second = await startTestService(t, {}, {}, db.url);
  t.ok(Date.now() < start + 4000, `restarted ${Date.now() - start} ms into the 4 s window`);
  t.equal(statusOf(await second.reserve('RESTART.1', 'alice')), '409 limit_exceeded', 'after the restart cycle 1 still counts alice');
  t.equal((await second.reserve('RESTART.1', 'bob')).status, 201, 'and still sells');
  t.match((await second.call('GET', '/v1/drops/RESTART')).body.current, { cycle: 1, available: 1, held: 2 });

  // Cycle 2 was created before the stop (7 s ahead); cycle 3 is the second process's.
  const c3 = await until('cycle 3 configured', async () => (await cycleRows(db.pool, 'RESTART')).find((c) => c.cycle === 3 && c.configuredAtMs !== null), 10_000);
  t.ok(c3.configuredAtMs! <= c3.startsAtMs - 5000, `cycle 3 created on time by the second process (${c3.startsAtMs - c3.configuredAtMs!} ms ahead)`);
  await sleepUntil(start + 5020);
  t.equal((await second.reserve('RESTART.2', 'alice')).status, 201, 'cycle 2: alice buys again');

  const events = await configuredEvents(db.pool, 'RESTART');
  const rows = await cycleRows(db.pool, 'RESTART');
  t.same(rows.map((r) => r.cycle), rows.map((_, i) => i + 1), 'cycles 1..n, each once');
  for (const row of rows) t.equal(events.get(row.sku), 1, `${row.sku}: one configured event`);
  t.equal((await second.call('DELETE', '/v1/admin/drops/RESTART', { admin: true })).status, 200);
});

t.test('a process that was down skips the cycles whose window ended meanwhile, and catches up the open one', async (t) => {
  const db = await createTestDatabase(t);
  const first = await startTestService(t, {}, {}, db.url);
  const start = Date.now() + 5200;
  t.equal((await first.call('PUT', '/v1/admin/drops/DOWN', { admin: true, body: dropBody(start, 2, 1) })).status, 201);
  await until('cycle 1 configured', async () => (await cycleRows(db.pool, 'DOWN')).find((c) => c.configuredAtMs !== null));
  await first.service.stop(); // cycle 2 would be created at start - 2 s: nobody is there
  await sleepUntil(start + 3100); // cycle 2's window [start+2 s, start+3 s) is over
  const second = await startTestService(t, {}, {}, db.url);
  const rows = await until('a cycle after 2 created', async () => {
    const found = await cycleRows(db.pool, 'DOWN');
    return found.some((c) => c.cycle > 2 && c.configuredAtMs !== null) && found;
  });
  t.notOk(rows.some((c) => c.cycle === 2), 'cycle 2 ended while no process ran: never created');
  const caughtUp = rows.find((c) => c.cycle > 2)!;
  t.ok(caughtUp.createdAtMs < caughtUp.endsAtMs, `cycle ${caughtUp.cycle} created before its window ended`);
  t.equal(caughtUp.startsAtMs, start + (caughtUp.cycle - 1) * 2000, 'numbers stay tied to the schedule');
  t.equal((await second.call('DELETE', '/v1/admin/drops/DOWN', { admin: true })).status, 200);
});

t.test('two processes on one database never create a cycle twice', async (t) => {
  const db = await createTestDatabase(t);
  const a = await startTestService(t, {}, {}, db.url);
  const b = await startTestService(t, {}, {}, db.url);
  const start = Date.now() + 2500;
  const cycles = 6;
  // Both are asked: the second PUT re-anchors nothing (no cycle exists yet) and hands the schedule a new job.
  t.equal((await a.call('PUT', '/v1/admin/drops/TWO', { admin: true, body: dropBody(start, 1, 1, { cycles }) })).status, 201);
  t.equal((await b.call('PUT', '/v1/admin/drops/TWO', { admin: true, body: dropBody(start, 1, 1, { cycles }) })).status, 200);
  // Race the scheduler itself: both processes run the live job of the drop at the same moment, again and again.
  let races = 0;
  while (Date.now() < start + 2000) {
    const { rows } = await db.pool.query<{ job_token: string | null }>(`SELECT job_token FROM drops WHERE name = 'TWO'`);
    const token = rows[0]?.job_token;
    if (token) {
      await Promise.all([a.service.drops.run({ name: 'TWO', token }), b.service.drops.run({ name: 'TWO', token })]);
      races += 1;
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  t.ok(races > 10, `${races} simultaneous runs of the same job in both processes`);
  await until('every cycle configured', async () => {
    const rows = await cycleRows(db.pool, 'TWO');
    return rows.length === cycles && rows.every((r) => r.configuredAtMs !== null);
  }, 15_000);

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
  await sleepUntil(last.endsAtMs + 1500);
  t.equal((await cycleRows(db.pool, 'TWO')).length, cycles, 'no cycle past `cycles`');
  t.match((await clientFor(a.url).call('GET', '/v1/drops/TWO')).body, { current: null, next: null });
});
