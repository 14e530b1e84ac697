import t from 'tap';
import pg from 'pg';
import { migrate } from '../src/db/migrate.js';
import { createPool } from '../src/db/pool.js';
import { Outbox, type BatchFailure, type CommitError } from '../src/outbox/outbox.js';
import type { StockEvent } from '../src/allocator/types.js';
import { startTestService } from './helpers/service.js';
import { testLog } from './helpers/db.js';
import { startOwnPostgres } from './helpers/own-postgres.js';
import { installProcessTraps } from './helpers/traps.js';
import { startLoad, verifyFromLog, waitUntilServing } from './helpers/fault-load.js';

/**
 * The fault suite (issue 9): a PostgreSQL cluster of this file's own is
 * stalled (SIGSTOP of every postgres process), crashed (immediate shutdown)
 * and restarted, and `stock_events` is locked, while the real service runs in
 * this process under reservation load. Process-level traps catch any unhandled
 * rejection, uncaught exception or unhandled 'error' event. After each fault
 * the load runs the SKU to sell-out; every answer must be a documented one
 * (an exception or a contract error fails), the log must hold every
 * acknowledged reservation, replays must return the original bodies, retries
 * of 503s must learn their outcome, nothing may be oversold (counted from the
 * log's rows), and the service must serve again by itself.
 */

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const own = await startOwnPostgres(t);
const commitTimeoutMs = 1000;
const api = await startTestService(t, { commitTimeoutMs, pgPoolMax: 8 }, {}, own.url);
const pool = createPool(own.url, 4, testLog);
t.teardown(() => pool.end());
await api.putSku('PROBE', { stock: 1_000_000, perShopperLimit: 1 });
// Installed once the service runs: a failed start must fail this file, not be caught by the traps.
const traps = installProcessTraps(t);

t.test('finding 3: a stalled commit is never reported "not committed" when it committed', async (t) => {
  // The outbox alone, so every answer can be checked against the log row by row.
  const outboxPool = createPool(own.url, 4, testLog);
  t.teardown(() => outboxPool.end());
  await migrate(outboxPool, testLog);
  const outbox = new Outbox(outboxPool, { batchMaxEvents: 4096, maxPendingEvents: 50_000, commitTimeoutMs: 500 }, testLog, () => undefined);
  const told: { event: StockEvent; outcome: string }[] = [];
  let stopped = false;
  const chain = async (c: number) => {
    for (let seq = 1; !stopped; seq++) {
      const event: StockEvent = {
        sku: `STALL-${c}`,
        seq,
        kind: 'configured',
        atMs: Date.now(),
        config: { stock: seq, perShopperLimit: 1, holdSeconds: 60, priceCents: 1, currency: 'USD', startsAtMs: null, endsAtMs: null },
      };
      const error = await new Promise<Error | null>((resolve) => outbox.append(event, resolve));
      told.push({ event, outcome: error === null ? 'committed' : ((error as CommitError).outcome ?? 'failed') });
      if (error !== null) return; // this SKU's next seq is unknown to a bare outbox: stop here
    }
  };
  const chains = Array.from({ length: 8 }, (_, c) => chain(c));
  await sleep(300);
  own.freeze();
  await sleep(3000);
  own.thaw();
  await sleep(1500);
  stopped = true;
  await Promise.all(chains);
  await outbox.drained();

  const rows = await pool.query<{ sku: string; seq: string; at_ms: string }>(
    "SELECT sku, seq, at_ms FROM stock_events WHERE sku LIKE 'STALL-%'",
  );
  const logged = new Set(rows.rows.map((r) => `${r.sku}/${r.seq}/${r.at_ms}`));
  const key = (e: StockEvent) => `${e.sku}/${e.seq}/${e.atMs}`;
  const failed = told.filter((x) => x.outcome !== 'committed');
  t.ok(failed.length > 0, `the stall made commits fail or go unconfirmed (${failed.map((x) => x.outcome).join(', ')})`);
  t.same(told.filter((x) => x.outcome === 'committed' && !logged.has(key(x.event))).map((x) => key(x.event)), [], 'every success is in the log');
  t.same(
    told.filter((x) => x.outcome !== 'committed' && x.outcome !== 'unknown' && logged.has(key(x.event))).map((x) => key(x.event)),
    [],
    'nothing told "not committed" is in the log',
  );
  t.comment(`outbox stats: ${JSON.stringify(outbox.stats)}`);
  t.same(traps.seen(), [], 'no unhandled rejection, exception or error event');
});

t.test('settledSoFar (a shard handed over) waits out an unknown outcome; it is never told early', async (t) => {
  const outboxPool = createPool(own.url, 4, testLog);
  t.teardown(() => outboxPool.end());
  const outbox = new Outbox(outboxPool, { batchMaxEvents: 4096, maxPendingEvents: 50_000, commitTimeoutMs: 500 }, testLog, () => undefined);
  const event: StockEvent = {
    sku: 'HANDOVER',
    seq: 1,
    kind: 'configured',
    atMs: Date.now(),
    config: { stock: 1, perShopperLimit: 1, holdSeconds: 60, priceCents: 1, currency: 'USD', startsAtMs: null, endsAtMs: null },
  };
  // A connection already open and identified, so the stalled commit reaches the server (an unknown outcome, not a failed connect).
  const warm = await new Promise<Error | null>((resolve) => outbox.append({ ...event, sku: 'HANDOVER-WARM' }, resolve));
  t.equal(warm, null);
  own.freeze();
  let told: CommitError | null | undefined;
  outbox.append(event, (error) => (told = error as CommitError | null));
  let settled = false;
  const settling = outbox.settledSoFar().then(() => (settled = true));
  for (let i = 0; i < 100 && told === undefined; i++) await sleep(50);
  t.match(told, { outcome: 'unknown' }, 'the waiter of the stalled commit hears "unknown"');
  await sleep(500);
  t.equal(settled, false, 'while the outcome is unknown, settledSoFar has not resolved');
  own.thaw();
  await settling;
  const rows = await pool.query("SELECT count(*)::int AS n FROM stock_events WHERE sku = 'HANDOVER'");
  const learned = { committed: outbox.stats.committedAfterAll, failed: outbox.stats.failedBatches };
  t.same(learned, rows.rows[0].n === 1 ? { committed: 1, failed: 0 } : { committed: 0, failed: 1 }, 'it resolved once the outcome was learned, and that matches the log');
  t.equal(outbox.pendingEvents, 0);
  await waitUntilServing(api, 'PROBE', 15_000);
  t.same(traps.seen(), [], 'no unhandled rejection, exception or error event');
});

t.test('finding 2: a commit slower than COMMIT_TIMEOUT_MS (table lock) is cancelled; the SKU is not fenced', async (t) => {
  await api.putSku('LOCKED', { stock: 300, perShopperLimit: 1 });
  const locker = new pg.Client({ connectionString: own.url });
  locker.on('error', () => undefined);
  await locker.connect();
  t.teardown(() => locker.end());
  await locker.query('BEGIN');
  await locker.query('LOCK TABLE stock_events IN SHARE MODE'); // what a non-concurrent CREATE INDEX takes
  const load = startLoad(api, 'LOCKED', 4);
  const started = Date.now();
  const first = await api.reserve('LOCKED', 'kay', 1, 'K1');
  const answeredMs = Date.now() - started;
  t.match(first, { status: 503, body: { code: 'unavailable' } }, `K1 during the lock: 503 after ${answeredMs} ms`);
  t.ok(answeredMs < 2 * commitTimeoutMs + 1500, 'within the commit timeout and the budget to learn its outcome');
  await sleep(Math.max(0, 4000 - (Date.now() - started)));
  await locker.query('COMMIT');
  // A batch that timed out just before the lock ended may still be settling (503 meanwhile): retry as a shopper would.
  let retry = await api.reserve('LOCKED', 'kay', 1, 'K1');
  for (let i = 0; i < 40 && (retry.status === 503 || retry.status === 429); i++) {
    await sleep(150);
    retry = await api.reserve('LOCKED', 'kay', 1, 'K1');
  }
  t.match(retry, { status: 201 }, 'her same-key retry after the lock succeeds');
  t.ok((await waitUntilServing(api, 'PROBE', 10_000)) >= 0);
  const other = await api.reserve('LOCKED', 'someone-else', 1);
  t.equal(other.status, 201, 'the SKU is still served by this node (not fenced)');
  t.match(await api.call('GET', '/readyz'), { status: 200 });
  await load.soldOut(30_000);
  const attempts = await load.stop();
  attempts.push({ sku: 'LOCKED', shopper: 'kay', key: 'K1', quantity: 1, status: 201, body: retry.body, retryAfter: null });
  const kay = await pool.query("SELECT reservation_id::text AS id FROM stock_events WHERE sku = 'LOCKED' AND shopper_id = 'kay'");
  t.same(kay.rows.map((r) => r.id), [retry.body.reservationId], 'exactly one hold for K1: the one her retry returned');
  await verifyFromLog(t, api, pool, 'LOCKED', 300, attempts);
  t.same(traps.seen(), [], 'no unhandled rejection, exception or error event');
});

t.test('a PostgreSQL stall (every postgres process SIGSTOPped) under reservation load', async (t) => {
  await api.putSku('STALLED', { stock: 600, perShopperLimit: 1 });
  const load = startLoad(api, 'STALLED', 12);
  while (load.acknowledged() < 100) await sleep(10);
  own.freeze();
  await sleep(5000);
  own.thaw();
  const ms = await waitUntilServing(api, 'PROBE', 30_000);
  t.comment(`serving again ${ms} ms after the stall ended`);
  await load.soldOut(30_000);
  const attempts = await load.stop();
  t.comment(`attempts: ${attempts.length}, 201: ${attempts.filter((a) => a.status === 201).length}, 503: ${attempts.filter((a) => a.status === 503).length}`);
  t.comment(`outbox stats: ${JSON.stringify(api.service.shards.outboxStats)}`);
  await verifyFromLog(t, api, pool, 'STALLED', 600, attempts);
  t.same(traps.seen(), [], 'no unhandled rejection, exception or error event');
});

t.test('finding 1: PostgreSQL crashes (immediate shutdown) and restarts under reservation load', async (t) => {
  await api.putSku('CRASHED', { stock: 600, perShopperLimit: 1 });
  const load = startLoad(api, 'CRASHED', 12);
  while (load.acknowledged() < 100) await sleep(10);
  await own.crash();
  await sleep(1500); // the service sees the crash: commits fail, connections break
  await own.restart();
  const ms = await waitUntilServing(api, 'PROBE', 30_000);
  t.comment(`serving again ${ms} ms after the restart`);
  await load.soldOut(30_000);
  const attempts = await load.stop();
  t.comment(`attempts: ${attempts.length}, 201: ${attempts.filter((a) => a.status === 201).length}, 503: ${attempts.filter((a) => a.status === 503).length}`);
  t.comment(`outbox stats: ${JSON.stringify(api.service.shards.outboxStats)}`);
  await verifyFromLog(t, api, pool, 'CRASHED', 600, attempts);
  t.same(traps.seen(), [], 'the process survived: no unhandled error event, rejection or exception');
});

t.test('finding 2: a (sku, seq) collision with our own earlier attempt is not another writer', async (t) => {
  const failures: BatchFailure[] = [];
  const outbox = new Outbox(pool, { batchMaxEvents: 4096, maxPendingEvents: 50_000, commitTimeoutMs }, testLog, (f) => failures.push(f));
  const config = { stock: 1, perShopperLimit: 1, holdSeconds: 60, priceCents: 1, currency: 'USD', startsAtMs: null, endsAtMs: null };
  const event = (seq: number, atMs: number): StockEvent => ({ sku: 'OWN', seq, kind: 'configured', atMs, config });
  const commit = (e: StockEvent) => new Promise<Error | null>((resolve) => outbox.append(e, resolve));
  // A real refusal makes the first attempt fail...
  await pool.query("ALTER TABLE stock_events ADD CONSTRAINT no_own CHECK (sku <> 'OWN')");
  const first = event(1, 1000);
  t.match(await commit(first), { outcome: 'not_committed', fenced: false }, 'the first attempt failed');
  await pool.query('ALTER TABLE stock_events DROP CONSTRAINT no_own');
  // ...and then its row shows up anyway (as an abandoned statement that committed late would).
  await pool.query(
    "INSERT INTO stock_events (sku, seq, kind, at_ms, config) VALUES ('OWN', 1, 'configured', 1000, $1)",
    [config],
  );
  t.match(await commit(event(1, 2000)), { fenced: false }, 'colliding with our own earlier attempt: not fenced');
  t.equal(failures.at(-1)?.error.fenced, false, 'the shell is told so too');
  await pool.query("INSERT INTO stock_events (sku, seq, kind, at_ms, config) VALUES ('OWN', 2, 'configured', 5000, $1)", [config]);
  t.match(await commit(event(2, 3000)), { fenced: true }, 'colliding with rows we never tried to write: fenced');
});
