import http from 'node:http';
import t from 'tap';
import WebSocket from 'ws';
import type { Child } from './helpers/child.js';
import { createTestDatabase } from './helpers/db.js';
import { adminToken, clientFor, type CallResult } from './helpers/service.js';
import { balanced, clusterEnv, nodeLog, ownerUrl, startNode, until } from './helpers/cluster.js';
import { connectStream } from './helpers/stream-client.js';
import { AUTH_HEADER, signUpgrade } from '../src/cluster/auth.js';
import { CLUSTER_PATH } from '../src/cluster/transport.js';

/**
 * Front-end threads on cluster nodes: two real node processes (src/main.ts)
 * with CLUSTER_SECRET and HTTP_THREADS=2 on one database. Every request lands
 * on a thread, which hands it to its main thread's cluster channel: served
 * there when the node owns the SKU's shard, forwarded to the owner otherwise,
 * where it arrives on one of the owner's threads and goes to that node's main
 * thread (its shards only, never forwarded again).
 */

// Two processes of three threads each start one after the other on a shared 2-core machine.
t.setTimeout(240_000);

interface Answer {
  status: number;
  thread: string | undefined;
}

/** GET over a fresh connection (agent: false): the kernel picks the thread anew each time. */
function freshGet(url: string, path: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request(url + path, { agent: false, headers: { authorization: `Bearer ${adminToken}` } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, thread: res.headers['x-flashstock-thread'] as string | undefined }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** The status of a cluster upgrade carrying `token` (101 when let in). */
function clusterUpgrade(url: string, token: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url.replace('http', 'ws')}${CLUSTER_PATH}`, { headers: { [AUTH_HEADER]: token } });
    ws.once('open', () => {
      ws.close();
      resolve(101);
    });
    ws.once('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
    ws.once('error', reject);
  });
}

t.test('two nodes of two front-end threads: forwarding, one SKU never oversold, admin views and readiness on every thread', async (t) => {
  const db = await createTestDatabase(t);
  const nodes: Child[] = [];
  t.teardown(async () => {
    for (const node of nodes) if (node.child.exitCode === null) node.child.kill('SIGKILL');
    if (t.passing() === false) t.comment(`node warnings and errors:\n${nodeLog.slice(-60).join('\n')}`);
  });
  for (let i = 0; i < 2; i++) nodes.push(await startNode(db.url, `tnode${i}`, { HTTP_THREADS: '2' }));
  const urls = nodes.map((n) => n.url);
  const clients = urls.map((url) => clientFor(url));
  await until('two balanced nodes', () => balanced(urls[0]!, 2));

  // The admin views and readiness answer on every node, from both of its threads.
  for (const url of urls) {
    const threads = new Set<string>();
    await until(`${url}: /v1/admin/cluster answered by both threads`, async () => {
      const answer = await freshGet(url, '/v1/admin/cluster');
      if (answer.status !== 200) throw new Error(`status ${answer.status}`);
      threads.add(answer.thread!);
      return threads.size === 2 ? true : null;
    });
    t.pass(`${url}: the cluster view answers 200 on threads ${[...threads].join(', ')}`);
    const ready = await Promise.all(Array.from({ length: 6 }, () => freshGet(url, '/readyz')));
    t.ok(ready.every((a) => a.status === 200), `${url}: /readyz 200 on every try (threads ${[...new Set(ready.map((a) => a.thread))].join(', ')})`);
  }
  const views = await Promise.all(clients.map((c) => c.call('GET', '/v1/admin/cluster', { admin: true })));
  t.same(views[0]!.body.nodes, views[1]!.body.nodes, 'both nodes show the same membership');
  t.same(views.map((v) => v.body.self).sort(), ['tnode0', 'tnode1'], 'each node names itself');

  // One SKU of N units, shoppers spread over both nodes: local on its owner, forwarded through the other.
  const N = 150;
  const shoppers = 4 * N;
  t.equal((await clients[0]!.putSku('TRACE', { stock: N, perShopperLimit: 1 })).status, 201);
  const owner = (await ownerUrl(urls[1]!, 'TRACE'))!;
  t.equal(await ownerUrl(urls[0]!, 'TRACE'), owner, 'both nodes agree on the placement');
  const ownerIndex = urls.indexOf(owner);
  t.not(ownerIndex, -1, 'the owner is one of the nodes');
  const watcher = await connectStream(t, owner);
  watcher.send({ type: 'subscribe', skus: ['TRACE'] });
  const results: CallResult[] = new Array(shoppers);
  let next = 0;
  await Promise.all(
    Array.from({ length: 30 }, async () => {
      for (let i = next++; i < shoppers; i = next++) results[i] = await clients[i % 2]!.reserve('TRACE', `shopper-${i}`, 1, `key-${i}`);
    }),
  );
  const created = results.filter((r) => r.status === 201);
  t.equal(created.length, N, `exactly ${N} × 201 across two threaded nodes`);
  t.equal(results.filter((r) => r.status === 409 && r.body.code === 'sold_out').length, shoppers - N, `exactly ${shoppers - N} × 409 sold_out`);
  const forwardedWins = results.filter((r, i) => r.status === 201 && i % 2 !== ownerIndex).length;
  t.ok(forwardedWins > 0, `${forwardedWins} of the 201s were forwarded to the owner and served by its threads' main thread`);
  const logged = await db.pool.query<{ n: string }>(`SELECT count(*) AS n FROM stock_events WHERE sku = 'TRACE' AND kind = 'reserved'`);
  t.equal(Number(logged.rows[0]!.n), N, 'the log holds exactly the acknowledged');
  for (const [i, c] of clients.entries()) t.match((await c.call('GET', '/v1/skus/TRACE')).body, { stock: N, available: 0, held: N }, `node ${i} shows the same SKU`);
  t.match(await watcher.take((m) => m.type === 'stock' && m.sku === 'TRACE' && m.available === 0, 20_000, 'sold out'), { held: N },
    'a subscriber on the owner hears of reservations made through the other node');

  // A replay through the other node (forwarded one way, local the other) returns the original body.
  const win = results.findIndex((r) => r.status === 201);
  const replay = await clients[(win + 1) % 2]!.reserve('TRACE', `shopper-${win}`, 1, `key-${win}`);
  t.same([replay.status, replay.body], [201, results[win]!.body], 'a replayed key through the other node returns the original body');
  const read = await clients[(win + 1) % 2]!.call('GET', `/v1/reservations/${results[win]!.body.reservationId}`, { shopper: `shopper-${win}` });
  t.same([read.status, read.body.reservationId], [200, results[win]!.body.reservationId], 'and the reservation reads back through it');
});

t.test('a cluster token is good once per node, whichever front-end thread it reaches', async (t) => {
  const db = await createTestDatabase(t);
  const node = await startNode(db.url, 'tokens', { HTTP_THREADS: '2' });
  t.teardown(() => {
    if (node.child.exitCode === null) node.child.kill('SIGKILL');
  });
  // Fresh connections land on either thread; with a verifier per thread a replay
  // would get through whenever it reached the other one (1 in 2 per round).
  for (let round = 0; round < 6; round++) {
    const token = signUpgrade(clusterEnv.CLUSTER_SECRET, 'peer', node.url, Date.now());
    t.equal(await clusterUpgrade(node.url, token), 101, `round ${round}: a good token is let in`);
    t.equal(await clusterUpgrade(node.url, token), 401, `round ${round}: the same token again is refused`);
  }
  t.equal(await clusterUpgrade(node.url, signUpgrade('another-secret-entirely-0123456789', 'peer', node.url, Date.now())), 401, 'a wrong secret is refused');
});
