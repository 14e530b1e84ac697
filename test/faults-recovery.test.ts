import t from 'tap';
import pg from 'pg';
import { once } from 'node:events';
import { SkuAllocator } from '../src/allocator/allocator.js';
import { readEvents } from '../src/outbox/event-log.js';
import { createTestDatabase } from './helpers/db.js';
import { startChild } from './helpers/child.js';
import { clientFor, startTestService } from './helpers/service.js';
import { startOwnPostgres } from './helpers/own-postgres.js';
import { startLoad, verifyFromLog } from './helpers/fault-load.js';

/**
 * Issue 9 findings whose fixes live in the inventory shell (the SKU shard):
 * 4 (503, never 404, before recovery has finished), 5 (a fenced SKU is rebuilt
 * from the log before it is served), and the shell's half of 3 (a 503 after a
 * commit of unknown outcome says so, never "nothing was reserved"). Black box,
 * over HTTP, against the real service.
 */

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const limits = { maxQuantityPerRequest: 100, maxLiveHoldsPerSku: 1_000_000, maxEventsPerBatch: 4096 };

/** src/main.ts in a child process, handed back as soon as its port is open (recovery still running). */
function startListening(databaseUrl: string) {
  // The test polls as one shopper as fast as it can: about recovery answers, not the rate limit.
  return startChild(databaseUrl, { RATE_LIMIT_SHOPPER_PER_SECOND: '100000' }, 'listening');
}

t.test('finding 4: nothing answers "does not exist" before recovery has finished', async (t) => {
  const db = await createTestDatabase(t);
  const setup = await startTestService(t, {}, {}, db.url);
  await setup.putSku('TARGET', { stock: 10 });
  const made = await setup.reserve('TARGET', 'tess', 1, 'tess-key');
  t.equal(made.status, 201);
  await setup.service.stop();
  // A long log, so the recovery window is wide enough to hit.
  const nowMs = Date.now();
  const config = { stock: 200_000, perShopperLimit: 1, holdSeconds: 86_400, priceCents: 1, currency: 'USD', startsAtMs: null, endsAtMs: null };
  await db.pool.query(`INSERT INTO stock_events (sku, seq, kind, at_ms, config) VALUES ('BIG', 1, 'configured', $1, $2)`, [nowMs, config]);
  await db.pool.query(
    `INSERT INTO stock_events (sku, seq, kind, at_ms, reservation_id, shopper_id, quantity, expires_at_ms, idempotency_key)
     SELECT 'BIG', g + 1, 'reserved', $1::bigint, gen_random_uuid(), 'big-' || g, 1, $1::bigint + 86400000, 'k' || g FROM generate_series(1, 200000) g`,
    [nowMs],
  );

  const service = await startListening(db.url);
  t.teardown(() => service.child.kill('SIGKILL'));
  const api = clientFor(service.url);
  const answers: string[] = [];
  while (!service.isReady()) {
    const [sku, replay, reservation] = await Promise.all([
      api.call('GET', '/v1/skus/TARGET'),
      api.reserve('TARGET', 'tess', 1, 'tess-key'),
      api.call('GET', `/v1/reservations/${made.body.reservationId}`, { shopper: 'tess' }),
    ]);
    if (service.isReady()) break;
    answers.push(`GET sku ${sku.status}`, `POST replay ${replay.status}`, `GET reservation ${reservation.status}`);
    for (const res of [sku, replay, reservation]) {
      if (res.status === 503) t.ok(res.headers.get('retry-after'), 'a 503 says when to come back');
    }
    await sleep(20); // a shopper's pace, not a spin (the rate limit would answer 429)
  }
  t.ok(answers.length > 0, `${answers.length / 3} rounds answered during recovery`);
  t.same(answers.filter((a) => / 404$/.test(a)), [], 'no 404 before recovery has finished');
  t.same(answers.filter((a) => !/ (503|429|200|201)$/.test(a)), [], 'only 503 (or 429 from the rate limit, or the truth) meanwhile');
  t.match(await api.reserve('TARGET', 'tess', 1, 'tess-key'), { status: 201, body: made.body }, 'then the replay');
  service.child.kill('SIGTERM');
  await once(service.child, 'exit');
});

t.test('finding 5: a fenced node refuses the SKU until it is rebuilt, then serves exactly the log', async (t) => {
  const db = await createTestDatabase(t);
  const a = await startTestService(t, {}, {}, db.url);
  await a.putSku('FENCE5', { stock: 10, perShopperLimit: 5 });
  const b = await startTestService(t, {}, {}, db.url); // recovers the same SKU: two writers now
  t.equal((await a.reserve('FENCE5', 'alice', 1)).status, 201, 'the owner takes seq 2');
  // The rebuild reads the SKU's snapshot first: while another session holds that table, it cannot finish.
  const holder = new pg.Client({ connectionString: db.url });
  holder.on('error', () => undefined);
  await holder.connect();
  t.teardown(() => holder.end());
  await holder.query('BEGIN');
  await holder.query('LOCK TABLE sku_snapshots IN ACCESS EXCLUSIVE MODE');
  t.match(await b.reserve('FENCE5', 'bob', 3), { status: 503 }, 'the second writer collides');
  const during = await b.call('GET', '/v1/skus/FENCE5');
  t.match(during, { status: 503, body: { code: 'unavailable' } }, 'while it rebuilds, it says it cannot serve the SKU');
  t.ok(Number(during.headers.get('retry-after')) > 0, 'with Retry-After');
  await holder.query('COMMIT');
  const events = [];
  for await (const page of readEvents(db.pool, { sku: 'FENCE5' })) events.push(...page);
  const log = SkuAllocator.replay('FENCE5', limits, events);
  let view = await b.call('GET', '/v1/skus/FENCE5');
  for (let i = 0; i < 100 && view.status === 503; i++) {
    await sleep(50);
    view = await b.call('GET', '/v1/skus/FENCE5');
  }
  t.equal(view.status, 200, 'once rebuilt, it serves the SKU again');
  t.same({ held: view.body.held, available: view.body.available }, { held: log.held, available: log.available }, 'its view is the log\'s (alice\'s hold, not bob\'s)');
});

t.test('finding 3 (shell): a 503 after a stall says "nothing was reserved" only when nothing was', async (t) => {
  const own = await startOwnPostgres(t);
  const api = await startTestService(t, { commitTimeoutMs: 1000 }, {}, own.url);
  const stock = 400;
  await api.putSku('TRUTH', { stock, perShopperLimit: 1 });
  const load = startLoad(api, 'TRUTH', 12);
  // The pool's connections are open and busy when Postgres stops: batches sent on them have an unknown outcome.
  while (load.acknowledged() < 50) await sleep(10);
  own.freeze();
  await sleep(4000);
  own.thaw();
  await load.soldOut(30_000);
  const attempts = await load.stop();
  const logged = await api.service.pool.query<{ shopper_id: string; idempotency_key: string }>(
    "SELECT shopper_id, idempotency_key FROM stock_events WHERE sku = 'TRUTH' AND kind = 'reserved'",
  );
  const keys = new Set(logged.rows.map((r) => `${r.shopper_id}/${r.idempotency_key}`));
  const lies = attempts.filter((a) => a.status === 503 && /nothing was reserved/.test(a.body.detail) && keys.has(`${a.shopper}/${a.key}`));
  t.same(lies.map((a) => a.key), [], 'no 503 said "nothing was reserved" for a reservation in the log');
  const stats = api.service.shards.outboxStats as { unknownOutcomes?: number };
  t.ok((stats.unknownOutcomes ?? 0) > 0, `the stall left batches of unknown outcome (${stats.unknownOutcomes})`);
  t.ok(attempts.some((a) => a.status === 503 && /outcome is unknown/.test(a.body.detail)), 'a batch of unknown outcome is answered as such');
  await verifyFromLog(t, api, api.service.pool, 'TRUTH', stock, attempts);
});
