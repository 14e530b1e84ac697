import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { availableParallelism } from 'node:os';
import t from 'tap';
import { ConfigError, defaultHttpThreads, loadConfig, maxHttpThreads } from '../src/config.js';
import { startTestService, type TestService } from './helpers/service.js';
import { connectStream } from './helpers/stream-client.js';
import { isConnectionLost } from './helpers/fault-load.js';

// Front-end threads (HTTP_THREADS=2): both threads serve, the shard host
// decides every request exactly once whichever thread it came through, live
// stock reaches every thread's sockets, and a shutdown under load answers what
// it acknowledged. The whole HTTP contract under threads:
//   TEST_HTTP_THREADS=2 npx tap test/http.test.ts test/checkout.test.ts test/ws.test.ts

interface Answer {
  status: number;
  thread: string | undefined;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  body: any;
}

function request(agent: http.Agent | false, url: string, method: string, path: string, headers: Record<string, string> = {}, body?: unknown): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(url + path, { method, agent, headers: payload === undefined ? headers : { ...headers, 'content-type': 'application/json' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        const thread = res.headers['x-flashstock-thread'];
        resolve({ status: res.statusCode ?? 0, thread: typeof thread === 'string' ? thread : undefined, body: text === '' ? null : JSON.parse(text) });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(payload);
  });
}

function reserve(api: TestService, agent: http.Agent, sku: string, shopper: string): Promise<Answer> {
  return request(agent, api.url, 'POST', `/v1/skus/${sku}/reservations`, { authorization: `Bearer ${api.token(shopper)}`, 'idempotency-key': randomUUID() }, { quantity: 1 });
}

t.test('requests are served by both threads (new connections spread by the kernel)', async (t) => {
  const api = await startTestService(t, { httpThreads: 2 });
  const threads = new Set<string | undefined>();
  for (let i = 0; i < 64 && threads.size < 2; i += 1) threads.add((await request(false, api.url, 'GET', '/healthz')).thread);
  t.equal(threads.size, 2, `threads seen: ${[...threads].join(', ')}`);
  t.notOk(threads.has(undefined), 'every answer names its thread');
});

t.test('2,000 reservations for 500 units over 2 threads: exactly 500 × 201 and 1,500 × 409', async (t) => {
  const api = await startTestService(t, { httpThreads: 2 });
  t.equal((await api.putSku('HOT', { stock: 500, perShopperLimit: 1 })).status, 201);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  t.teardown(() => agent.destroy());
  const answers = await Promise.all(Array.from({ length: 2000 }, (_, i) => reserve(api, agent, 'HOT', `shopper-${i}`)));
  const count = (status: number) => answers.filter((answer) => answer.status === status).length;
  t.equal(count(201), 500);
  t.equal(count(409), 1500);
  t.ok(answers.filter((answer) => answer.status === 409).every((answer) => answer.body.code === 'sold_out'), 'every 409 is sold_out');
  t.equal(new Set(answers.map((answer) => answer.thread)).size, 2, 'both threads took reservations');
  const view = await api.call('GET', '/v1/skus/HOT');
  t.match(view.body, { available: 0, held: 500, sold: 0 });
});

t.test('a subscriber sees reservations made through any thread', async (t) => {
  const api = await startTestService(t, { httpThreads: 2 });
  t.equal((await api.putSku('LIVE', { stock: 50, perShopperLimit: 50 })).status, 201);
  const watcher = await connectStream(t, api.url);
  watcher.send({ type: 'subscribe', skus: ['LIVE'] });
  // Fresh connections: the reservations land on both threads.
  for (let i = 0; i < 10; i += 1) t.equal((await request(false, api.url, 'POST', '/v1/skus/LIVE/reservations', { authorization: `Bearer ${api.token('alice')}`, 'idempotency-key': randomUUID() }, { quantity: 1 })).status, 201);
  t.match(await watcher.take((m) => m.type === 'stock' && m.sku === 'LIVE' && m.held === 10, 10_000, 'all 10 holds'), { available: 40, held: 10 });
});

t.test('shutdown under load answers what it acknowledged; nothing acknowledged is lost', async (t) => {
  const api = await startTestService(t, { httpThreads: 2 });
  t.equal((await api.putSku('DRAIN', { stock: 5000, perShopperLimit: 1 })).status, 201);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });
  t.teardown(() => agent.destroy());
  let firstAck: () => void = () => {};
  const acked = new Promise<void>((resolve) => (firstAck = resolve));
  const attempts = Array.from({ length: 1000 }, (_, i) =>
    reserve(api, agent, 'DRAIN', `s-${i}`).then(
      (answer) => {
        if (answer.status === 201) firstAck();
        return answer.status;
      },
      // The connection closed by the stop is "no answer"; any other failure (a bad body) is kept and fails below.
      (error: unknown) => (isConnectionLost(error) ? 0 : `${String(error)}`),
    ),
  );
  await acked;
  await api.service.stop();
  const statuses = await Promise.all(attempts);
  const created = statuses.filter((status) => status === 201).length;
  t.comment(`${created} acknowledged before the stop`);
  t.same(statuses.filter((status) => status !== 201 && status !== 503 && status !== 0), [], 'answers are 201, 503, or the connection closed after the stop');
  // The same database, served again: exactly the acknowledged holds are there.
  const again = await startTestService(t, {}, {}, api.databaseUrl);
  const view = await again.call('GET', '/v1/skus/DRAIN');
  t.equal(view.body.held, created, 'every acknowledged reservation is durable, and every durable one was answered');
});

t.test('HTTP_THREADS: 1..64, default the cores but one; allowed with CLUSTER_SECRET', async (t) => {
  t.equal(loadConfig({}).httpThreads, Math.min(maxHttpThreads, Math.max(1, availableParallelism() - 1)), 'default: one thread per core beside the main thread');
  t.same([1, 2, 3, 4, 8, 100].map((cores) => defaultHttpThreads(cores)), [1, 1, 2, 3, 7, maxHttpThreads], 'at least one, at most the bound');
  t.equal(loadConfig({ HTTP_THREADS: '1' }).httpThreads, 1);
  t.equal(loadConfig({ HTTP_THREADS: '64' }).httpThreads, 64);
  for (const raw of ['0', '65', 'two', '1.5']) t.throws(() => loadConfig({ HTTP_THREADS: raw }), ConfigError, `HTTP_THREADS=${raw} is refused`);
  const clustered = loadConfig({ HTTP_THREADS: '2', CLUSTER_SECRET: 'Zq3vN8xR2pL7tY5wK1mJ9cH4bF6gD0sAe8Wn5Lq2Vx7Rt4Yp' });
  t.equal(clustered.httpThreads, 2, 'threads on a cluster node are a valid configuration (test/cluster-threads.test.ts runs them)');
});
