import http from 'node:http';
import t from 'tap';
import type { Child } from './helpers/child.js';
import { createTestDatabase } from './helpers/db.js';
import { adminToken, clientFor, type CallResult } from './helpers/service.js';
import { balanced, clusterEnv, clusterUpgradeStatus, ownerUrl, reapNodes, sleep, startNode, until } from './helpers/cluster.js';
import { connectStream } from './helpers/stream-client.js';
import { AUTH_HEADER, signUpgrade } from '../src/cluster/auth.js';

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

t.test('two nodes of two front-end threads: forwarding, one SKU never oversold, admin views and readiness on every thread', async (t) => {
  const db = await createTestDatabase(t);
  const nodes: Child[] = [];
  reapNodes(t, nodes);
  for (let i = 0; i < 2; i++) nodes.push(await startNode(db.url, `tnode${i}`, { HTTP_THREADS: '2' }));
  const urls = nodes.map((n) => n.url);
  const clients = urls.map((url) => clientFor(url));
  // Every node's view, not only the first's: a node learns the others' shards on its own membership round.
  await until('two balanced nodes, as both see it', async () => ((await Promise.all(urls.map((url) => balanced(url, 2)))).every((v) => v !== null) ? true : null));

  // The admin views and readiness answer on every node, from both of its threads.
  for (const url of urls) {
    const threads = new Set<string>();
    const statuses = new Set<number>();
    // Fresh connections land on either thread (SO_REUSEPORT): ask until both have answered.
    for (const deadline = Date.now() + 20_000; threads.size < 2 && Date.now() < deadline; ) {
      const answer = await freshGet(url, '/v1/admin/cluster');
      statuses.add(answer.status);
      threads.add(answer.thread!);
    }
    t.same([...statuses], [200], `${url}: the cluster view answers 200`);
    t.equal(threads.size, 2, `${url}: on both threads (${[...threads].join(', ')})`);
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
  // On the other node a thread follows the SKU: it asks the owner for the counts, and the main thread tells the owner it follows.
  const farWatcher = await connectStream(t, urls[1 - ownerIndex]!);
  farWatcher.send({ type: 'subscribe', skus: ['TRACE'] });
  t.match(await farWatcher.take((m) => m.type === 'stock' || m.type === 'error', 10_000, 'TRACE on the other node'), { type: 'stock', sku: 'TRACE', available: N },
    'a subscriber on the node that does not own the SKU starts from its counts');
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
  t.match(await farWatcher.take((m) => m.type === 'stock' && m.sku === 'TRACE' && m.available === 0, 20_000, 'sold out, on the other node'), { held: N },
    'and so does the subscriber on the other node (a front-end thread there follows the SKU)');

  // A replay through the other node (forwarded one way, local the other) returns the original body.
  const win = results.findIndex((r) => r.status === 201);
  const replay = await clients[(win + 1) % 2]!.reserve('TRACE', `shopper-${win}`, 1, `key-${win}`);
  t.same([replay.status, replay.body], [201, results[win]!.body], 'a replayed key through the other node returns the original body');
  const read = await clients[(win + 1) % 2]!.call('GET', `/v1/reservations/${results[win]!.body.reservationId}`, { shopper: `shopper-${win}` });
  t.same([read.status, read.body.reservationId], [200, results[win]!.body.reservationId], 'and the reservation reads back through it');
});

t.test('one node of two front-end threads', async (t) => {
  const db = await createTestDatabase(t);
  // Rounds 15 s apart: a lost lease stays lost long enough to be seen on a loaded machine.
  const node = await startNode(db.url, 'solo', { HTTP_THREADS: '2', CLUSTER_HEARTBEAT_MS: '15000', CLUSTER_LEASE_TIMEOUT_MS: '45000' });
  reapNodes(t, [node]);

  t.test('a cluster token is good once per node, whichever thread it reaches', async (t) => {
    // Fresh connections land on either thread; with a verifier per thread a replay
    // would get through whenever it reached the other one (1 in 2 per round).
    for (let round = 0; round < 6; round++) {
      const token = signUpgrade(clusterEnv.CLUSTER_SECRET, 'peer', node.url, Date.now());
      t.equal(await clusterUpgradeStatus(node.url, { [AUTH_HEADER]: token }), 101, `round ${round}: a good token is let in`);
      t.equal(await clusterUpgradeStatus(node.url, { [AUTH_HEADER]: token }), 401, `round ${round}: the same token again is refused`);
    }
    const wrong = signUpgrade('another-secret-entirely-0123456789', 'peer', node.url, Date.now());
    t.equal(await clusterUpgradeStatus(node.url, { [AUTH_HEADER]: wrong }), 401, 'a wrong secret is refused');
  });

  t.test('readiness follows the lease on every thread, with no traffic to carry it', async (t) => {
    const lease = async () =>
      (await db.pool.query<{ at: string; pid: number }>(`SELECT heartbeat_at::text AS at, lease_pid AS pid FROM cluster_nodes WHERE node_id = 'solo'`)).rows[0]!;
    const before = await lease();
    // Just after a round, so the next one (which takes a new lease) is ~15 s away.
    const after = await until('a membership round', async () => {
      const now = await lease();
      return now.at !== before.at ? now : null;
    }, 30_000);
    await db.pool.query('SELECT pg_terminate_backend($1)', [after.pid]);
    const terminatedAt = Date.now();
    // Concurrent first requests: each thread answers from what the main thread told it unasked. The main
    // thread notices the lost connection when the machine lets it: look until it has, well before the next round.
    const sixProbes = () => Promise.all(Array.from({ length: 6 }, () => freshGet(node.url, '/readyz')));
    let probes = await sixProbes();
    while (probes.some((p) => p.status !== 503) && Date.now() - terminatedAt < 10_000) {
      await sleep(50);
      probes = await sixProbes();
    }
    t.same(probes.map((p) => p.status), [503, 503, 503, 503, 503, 503], `lease lost: /readyz 503 on threads ${[...new Set(probes.map((p) => p.thread))].join(', ')}`);
    let ready = await freshGet(node.url, '/readyz');
    for (const deadline = Date.now() + 45_000; ready.status !== 200 && Date.now() < deadline; ready = await freshGet(node.url, '/readyz')) await sleep(100);
    t.equal(ready.status, 200, 'ready again after the next round took a new lease');
    t.not((await lease()).pid, after.pid, 'on a new lease connection');
  });
});
