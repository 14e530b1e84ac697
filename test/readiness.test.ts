import t from 'tap';
import type pg from 'pg';
import { databaseReadiness } from '../src/http/readiness.js';
import { createTestDatabase, testLog } from './helpers/db.js';
import { startTestService } from './helpers/service.js';

/**
 * /readyz does not flap on one slow `SELECT 1`: it turns 503 only after
 * READYZ_FAILURE_THRESHOLD consecutive failed probes, answers within its
 * answer window meanwhile, and is 200 again after one good probe. The slowness
 * is real: every connection of the service's pool is taken.
 */

t.test('one slow probe keeps it ready; consecutive failures make it unready; one success recovers', async (t) => {
  const api = await startTestService(t, { pgPoolMax: 2, readyzFailureThreshold: 2, readyzDbTimeoutMs: 300 });
  t.equal((await api.call('GET', '/readyz')).status, 200, 'ready at first');

  const held: pg.PoolClient[] = [];
  for (let i = 0; i < 2; i++) held.push(await api.service.pool.connect());
  t.teardown(() => held.forEach((c) => c.release()));

  let started = Date.now();
  const first = await api.call('GET', '/readyz');
  t.equal(first.status, 200, 'one slow SELECT 1: still ready');
  t.ok(Date.now() - started < 1500, `answered in ${Date.now() - started} ms (the server waits at most 500 ms)`);

  started = Date.now();
  const second = await api.call('GET', '/readyz');
  t.equal(second.status, 503, 'the second consecutive failure: not ready');
  t.match(second.body, { code: 'not_ready', detail: 'PostgreSQL does not answer' });
  t.ok(Date.now() - started < 1500, `answered in ${Date.now() - started} ms`);
  t.equal((await api.call('GET', '/healthz')).status, 200, '/healthz (liveness) is not affected');

  for (const client of held.splice(0)) client.release();
  t.equal((await api.call('GET', '/readyz')).status, 200, 'one good probe: ready again');
});

t.test('concurrent checks share one probe', async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  let probes = 0;
  const ready = databaseReadiness(() => (probes++, db.pool.query('SELECT 1')), { failureThreshold: 1, timeoutMs: 1000 }, testLog);
  const answers = await Promise.all(Array.from({ length: 20 }, () => ready()));
  t.ok(answers.every((a) => a), 'all ready');
  t.equal(probes, 1, 'one SELECT 1 for 20 concurrent checks');
  t.equal(await ready(), true);
  t.equal(probes, 2, 'the next check probes afresh');
});
