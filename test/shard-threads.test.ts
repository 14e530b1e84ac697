import http from 'node:http';
import { once } from 'node:events';
import { randomUUID } from 'node:crypto';
import t from 'tap';
import { startFlashstock } from '../src/app.js';
import { ConfigError, loadConfig, maxShardThreads } from '../src/config.js';
import { shardOf } from '../src/shard/placement.js';
import { ShardThreads, shardThreadOf } from '../src/threads/shard-threads.js';
import { startChild } from './helpers/child.js';
import { isConnectionLost, startLoad, verifyFromLog, waitUntilServing } from './helpers/fault-load.js';
import { createTestDatabase } from './helpers/db.js';
import { adminToken, clientFor, jwtSecret, startTestService, type TestService } from './helpers/service.js';
import { connectStream } from './helpers/stream-client.js';

// Shard threads (SHARD_THREADS=2): every shard decided on its own thread, the
// router and front ends unchanged. The whole contract under shard threads:
//   TEST_SHARD_THREADS=2 npx tap test/http.test.ts test/checkout.test.ts test/memory.test.ts test/ws.test.ts

const threads = 2;

// Several service processes start (tsx compiles src/ first) and recover on a shared 2-core machine.
t.setTimeout(600_000);

function reserve(api: TestService, agent: http.Agent, sku: string, shopper: string): Promise<{ status: number; code?: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      `${api.url}/v1/skus/${sku}/reservations`,
      { method: 'POST', agent, headers: { authorization: `Bearer ${api.token(shopper)}`, 'idempotency-key': randomUUID(), 'content-type': 'application/json' } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, code: (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { code?: string }).code }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify({ quantity: 1 }));
  });
}

/** SKU names whose shards land on every one of the `threads` shard threads, `perThread` each. */
function skusOnEveryThread(shardCount: number, perThread: number): string[][] {
  const byThread: string[][] = Array.from({ length: threads }, () => []);
  for (let i = 0; byThread.some((skus) => skus.length < perThread); i += 1) {
    const sku = `MANY-${i}`;
    const list = byThread[shardThreadOf(shardOf(sku, shardCount), threads)]!;
    if (list.length < perThread) list.push(sku);
  }
  return byThread;
}

for (const httpThreads of [1, 2]) {
  t.test(`2,000 reservations for 500 units over ${threads} shard threads (HTTP_THREADS=${httpThreads}): exactly 500 × 201, 1,500 × 409`, async (t) => {
    const api = await startTestService(t, { shardThreads: threads, httpThreads });
    t.ok(api.service.shards instanceof ShardThreads, 'the shards run on shard threads');
    t.equal((await api.putSku('HOT', { stock: 500, perShopperLimit: 1 })).status, 201);
    // A live subscriber: its counts asked of the shard thread, then every change pushed to its front end.
    const watcher = await connectStream(t, api.url);
    watcher.send({ type: 'subscribe', skus: ['HOT'] });
    t.match(await watcher.take((m) => m.sku === 'HOT', 10_000, 'HOT on subscribe'), { type: 'stock', available: 500, held: 0 });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
    t.teardown(() => agent.destroy());
    const answers = await Promise.all(Array.from({ length: 2000 }, (_, i) => reserve(api, agent, 'HOT', `shopper-${i}`)));
    t.equal(answers.filter((a) => a.status === 201).length, 500);
    t.equal(answers.filter((a) => a.status === 409 && a.code === 'sold_out').length, 1500, '1,500 × 409 sold_out');
    t.match((await api.call('GET', '/v1/skus/HOT')).body, { available: 0, held: 500, sold: 0 });
    t.match(await watcher.take((m) => m.sku === 'HOT' && m.available === 0, 20_000, 'HOT sold out'), { held: 500 }, 'the subscriber sees it sold out');
    // Front-end threads hold a port to every shard thread: the main thread relays none of their requests.
    if (httpThreads > 1) t.equal((api.service.shards as ShardThreads).relayed, 0, 'no request relayed through the main thread');
  });
}

t.test('many SKUs spread over both shard threads: each decided by its own thread, counts and notices reach the main thread', async (t) => {
  const api = await startTestService(t, { shardThreads: threads });
  const byThread = skusOnEveryThread(api.service.config.shardCount, 10);
  const skus = byThread.flat();
  for (const sku of skus) t.equal((await api.putSku(sku, { stock: 20, perShopperLimit: 20 })).status, 201, `${sku} configured`);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });
  t.teardown(() => agent.destroy());
  const answers = await Promise.all(skus.flatMap((sku) => Array.from({ length: 25 }, (_, i) => reserve(api, agent, sku, `s-${i}`))));
  t.equal(answers.filter((a) => a.status === 201).length, skus.length * 20, '20 per SKU acknowledged');
  t.equal(answers.filter((a) => a.status === 409).length, skus.length * 5, 'the rest sold out');
  for (const sku of skus) t.match((await api.call('GET', `/v1/skus/${sku}`)).body, { available: 0, held: 20 }, `${sku}: its thread holds 20`);
  // Scraped at once, with no refresh of their reports first: a scrape asks the threads for their counts itself.
  const metrics = { body: await (await fetch(`${api.metricsUrl}/metrics`)).text() };
  t.match(metrics.body, new RegExp(`flashstock_reservations_total\\{outcome="created"\\} ${skus.length * 20}\\b`), 'commits on shard threads are counted');
  t.match(metrics.body, new RegExp(`flashstock_allocators ${skus.length}\\b`));
  t.match(metrics.body, new RegExp(`flashstock_live_holds ${skus.length * 20}\\b`), 'the live holds as of the scrape');
  const shards = api.service.shards as ShardThreads;
  await shards.refresh();
  t.equal(shards.allocatorCount, skus.length, 'every SKU in memory on some thread');
  t.equal(shards.liveHolds, skus.length * 20);
  t.ok(shards.outboxStats.events >= skus.length * 21, 'the commits of both threads are counted');
  for (const sku of skus) t.match(api.service.inventory.stockState(sku), { held: 20 }, `${sku}: its thread's stock notice reached the router`);
  // One more SKU and hold, scraped at once: the threads' periodic report (every 250 ms) has
  // most likely not run since, so only a scrape that asks the threads itself sees them.
  t.equal((await api.putSku('LAST', { stock: 1 })).status, 201);
  t.equal((await api.reserve('LAST', 'last-shopper', 1)).status, 201);
  const after = await (await fetch(`${api.metricsUrl}/metrics`)).text();
  t.match(after, new RegExp(`flashstock_allocators ${skus.length + 1}\\b`), 'a SKU configured just before the scrape is counted');
  t.match(after, new RegExp(`flashstock_live_holds ${skus.length * 20 + 1}\\b`), 'a hold made just before the scrape is counted');
  t.match((await api.call('GET', '/v1/admin/audit', { admin: true })).body, { ok: true, violations: [] }, 'the audit agrees with both threads');
});

t.test('a checkout made on a shard thread is written with its order and job, and paid', async (t) => {
  const api = await startTestService(t, { shardThreads: threads, simulatedPaymentLatencyMs: 0 });
  const byThread = skusOnEveryThread(api.service.config.shardCount, 1);
  for (const [sku] of byThread) {
    await api.putSku(sku!, { stock: 5 });
    const made = await api.reserve(sku!, 'alice', 1);
    const started = await api.call('POST', `/v1/reservations/${made.body.reservationId}/checkout`, { shopper: 'alice', body: { paymentMethod: 'pm_ok' }, headers: { 'idempotency-key': randomUUID() } });
    t.equal(started.status, 202, `${sku}: checkout accepted`);
    let status = 'pending';
    for (let i = 0; i < 300 && status === 'pending'; i += 1) {
      status = (await api.call('GET', `/v1/orders/${started.body.orderId}`, { shopper: 'alice' })).body.status;
      if (status === 'pending') await new Promise((resolve) => setTimeout(resolve, 50));
    }
    t.equal(status, 'paid', `${sku}: the payment worker settled it through the router`);
    t.match((await api.call('GET', `/v1/skus/${sku}`)).body, { sold: 1, held: 0 });
  }
});

t.test('SIGKILL of a SHARD_THREADS=2 process mid-load loses nothing acknowledged; the restart sells every SKU out, never over', async (t) => {
  const db = await createTestDatabase(t);
  const env = { SHARD_THREADS: String(threads), SNAPSHOT_EVERY_EVENTS: '100' };
  // About 150 units per SKU are taken before the kill; the restarted process sells the rest.
  const stock = 300;
  const first = await startChild(db.url, env);
  const api = clientFor(first.url);
  const skus = skusOnEveryThread(loadConfig({}).shardCount, 2).flat();
  for (const sku of skus) t.equal((await api.putSku(sku, { stock, perShopperLimit: 2 })).status, 201);
  t.equal((await api.putSku('PROBE', { stock: 1_000_000, perShopperLimit: 1 })).status, 201);
  const load = startLoad(api, skus, 48, { processesDie: true });
  while (load.acknowledged() < 600) await new Promise((resolve) => setTimeout(resolve, 5));
  first.child.kill('SIGKILL');
  await once(first.child, 'exit');
  const attempts = await load.stop();
  const before = attempts.filter((a) => a.status === 201);
  t.equal(new Set(before.map((a) => shardThreadOf(shardOf(a.sku, loadConfig({}).shardCount), threads))).size, threads, 'both threads acknowledged before the kill');
  const second = await startChild(db.url, env);
  t.teardown(() => second.child.kill('SIGTERM'));
  const after = clientFor(second.url);
  await waitUntilServing(after, 'PROBE', 20_000);
  const rest = startLoad(after, skus, 16);
  await rest.soldOut(120_000);
  attempts.push(...(await rest.stop()));
  for (const sku of skus) await verifyFromLog(t, after, db.pool, sku, stock, attempts, { processesDie: true });
});

t.test('SIGTERM of a SHARD_THREADS=2 process under load answers in-flight requests and commits them', async (t) => {
  const db = await createTestDatabase(t);
  const child = await startChild(db.url, { SHARD_THREADS: String(threads) });
  const api = clientFor(child.url);
  const skus = skusOnEveryThread(loadConfig({}).shardCount, 1).flat();
  for (const sku of skus) await api.putSku(sku, { stock: 100_000, perShopperLimit: 1 });
  let acked = 0;
  // Every answer by shopper (one reservation each): a mismatch with the log names what the client saw for each key.
  const answers = new Map<string, string>();
  const failures: string[] = [];
  const worker = async (w: number) => {
    for (let i = 0; ; i += 1) {
      const sku = skus[(w + i) % skus.length]!;
      const key = `w${w}-s${i}`; // the shopper
      try {
        const res = await api.reserve(sku, key, 1);
        answers.set(key, res.status === 201 ? '201' : `${res.status} ${JSON.stringify(res.body)}`);
        if (res.status === 201) acked += 1;
        else return; // the service is stopping
      } catch (error) {
        answers.set(key, `no answer: ${String(error)}`);
        // Closed after the stop: no answer, no promise made. Anything else (a contract error) is a failure.
        if (!isConnectionLost(error)) failures.push(String(error));
        return;
      }
    }
  };
  const workers = Array.from({ length: 32 }, (_, w) => worker(w));
  while (acked < 300) await new Promise((resolve) => setTimeout(resolve, 5));
  child.child.kill('SIGTERM');
  t.equal(await child.exited, 0, 'SIGTERM shuts down cleanly with exit code 0');
  await Promise.all(workers);
  t.same(failures, [], 'no request failed other than by its connection closing');
  const unexpected = [...answers].filter(([, answer]) => answer !== '201' && !answer.startsWith('503 ') && !answer.startsWith('no answer'));
  t.same(unexpected, [], 'every answer is 201 or 503 unavailable');
  const log = await db.pool.query<{ key: string }>(`SELECT shopper_id AS key FROM stock_events WHERE kind = 'reserved'`);
  const committed = new Set(log.rows.map((row) => row.key));
  const acknowledged = [...answers].filter(([, answer]) => answer === '201').map(([key]) => key);
  t.same(acknowledged.filter((key) => !committed.has(key)), [], 'every acknowledged reservation was committed');
  const unanswered = [...committed].filter((key) => answers.get(key) !== '201').map((key) => `${key}: ${answers.get(key) ?? 'never sent'}`);
  t.same(unanswered, [], 'every committed reservation was answered 201 (in flight at SIGTERM: answered, not dropped)');
});

t.test('SHARD_THREADS: 1..16, default 1, at most SHARD_COUNT, also with CLUSTER_SECRET; not with an injected clock function', async (t) => {
  t.equal(loadConfig({}).shardThreads, 1);
  t.equal(loadConfig({ SHARD_THREADS: String(maxShardThreads) }).shardThreads, maxShardThreads);
  for (const raw of ['0', String(maxShardThreads + 1), 'two', '1.5']) t.throws(() => loadConfig({ SHARD_THREADS: raw }), ConfigError, `SHARD_THREADS=${raw} is refused`);
  t.throws(() => loadConfig({ SHARD_THREADS: '4', SHARD_COUNT: '2' }), ConfigError, 'more threads than shards is refused');
  const clusterNode = loadConfig({ SHARD_THREADS: '2', CLUSTER_SECRET: 'cluster-secret-0123456789abcdef0123' });
  t.same([clusterNode.shardThreads, clusterNode.clusterSecret !== null], [2, true], 'a cluster node may run shard threads');
  const db = await createTestDatabase(t);
  await t.rejects(
    startFlashstock(
      { databaseUrl: db.url, adminToken, jwtSecret, shardThreads: 2, port: 0, metricsPort: 0, host: '127.0.0.1', logLevel: 'silent' },
      { nowMs: () => Date.parse('2030-01-01T00:00:00Z') },
    ),
    ConfigError,
    'a clock closure cannot reach a shard thread',
  );
});
