import t from 'tap';
import { createPool } from '../src/db/pool.js';
import { startChild } from './helpers/child.js';
import { testLog } from './helpers/db.js';
import { startOwnPostgres } from './helpers/own-postgres.js';
import { clientFor } from './helpers/service.js';
import { startLoad, verifyFromLog, waitUntilServing } from './helpers/fault-load.js';

/**
 * The real entry point (src/main.ts, a child process, as deployed) through a
 * PostgreSQL crash: every postgres process of a cluster this file owns is
 * SIGKILLed under reservation load (no shutdown of any kind), then started
 * again (crash recovery). As documented (Reliability: "the process keeps
 * running ... serves again by itself"), the process must not exit: one that
 * does fails here with its last log lines (its fatal line). Then the load
 * sells the SKU out, and every answer is checked from the log: documented
 * answers only (a refused or reset connection fails: the process was not
 * killed), every 201 is there, nothing oversold.
 */

// A child process (tsx compiles src/ first) and a PostgreSQL crash recovery, on a shared 2-core machine.
t.setTimeout(300_000);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

t.test('src/main.ts keeps running through a PostgreSQL SIGKILL and restart, and loses nothing acknowledged', async (t) => {
  const own = await startOwnPostgres(t);
  const service = await startChild(own.url, { COMMIT_TIMEOUT_MS: '1000', AUDIT_CRON: '' });
  t.teardown(() => {
    if (service.child.exitCode === null) service.child.kill('SIGKILL');
  });
  const api = clientFor(service.url);
  const stock = 400;
  t.equal((await api.putSku('PGKILL', { stock, perShopperLimit: 1 })).status, 201);
  t.equal((await api.putSku('PROBE', { stock: 1_000_000, perShopperLimit: 1 })).status, 201);

  const load = startLoad(api, 'PGKILL', 12);
  while (load.acknowledged() < 100) await sleep(10);
  await own.kill();
  const killedAfter = load.acknowledged();
  await sleep(2000); // commits fail, connections break, pg-boss and the lease-less pollers see errors
  t.equal(service.child.exitCode, null, 'the process is still running while PostgreSQL is gone');
  await own.restart();
  const exitedEarly = () => `the process exited (${service.child.exitCode}); its last log lines:\n${(service.logTail?.() ?? []).slice(-15).join('\n')}`;
  const ms = await Promise.race([
    waitUntilServing(api, 'PROBE', 60_000),
    service.exited.then(() => {
      throw new Error(exitedEarly());
    }),
  ]);
  t.comment(`killed after ${killedAfter} acknowledged reservations; serving again ${ms} ms after PostgreSQL was restarted`);
  await load.soldOut(30_000);
  const attempts = await load.stop();
  t.comment(`answers: ${attempts.length}, 201: ${attempts.filter((a) => a.status === 201).length}, 503: ${attempts.filter((a) => a.status === 503).length}`);

  const pool = createPool(own.url, 2, testLog);
  t.teardown(() => pool.end());
  await verifyFromLog(t, api, pool, 'PGKILL', stock, attempts);
  t.equal(service.child.exitCode, null, service.child.exitCode === null ? 'the process kept running throughout' : exitedEarly());
  const fatal = (service.logTail?.() ?? []).filter((line) => /"level":60/.test(line));
  t.same(fatal, [], 'no fatal log line');

  service.child.kill('SIGTERM');
  t.equal(await service.exited, 0, 'SIGTERM afterwards still shuts down cleanly with exit code 0');
});
