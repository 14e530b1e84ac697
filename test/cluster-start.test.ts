import t from 'tap';
import type { Child } from './helpers/child.js';
import { createTestDatabase } from './helpers/db.js';
import { freePort } from './helpers/net.js';
import { clientFor, type CallResult } from './helpers/service.js';
import { balanced, nodeLog, reapNodes, SHARDS, startNode, until } from './helpers/cluster.js';

/**
 * A cluster as an operator starts it: three processes from one install at the
 * same moment, with CLUSTER_SECRET, DATABASE_URL and NODE_ADVERTISE_URL only —
 * no NODE_ID, so each node's id is its advertised host:port (dots and a colon
 * in the cluster token). They form one cluster and sell exactly the stock.
 */

t.setTimeout(300_000);

t.test('three nodes started at once without NODE_ID form one cluster and sell exactly the stock', async (t) => {
  const db = await createTestDatabase(t);
  const nodes: Child[] = [];
  reapNodes(t, nodes);
  const ports = [await freePort(), await freePort(), await freePort()];
  const advertised = ports.map((port) => `http://127.0.0.1:${port}`);
  const started = await Promise.all(
    ports.map((port, i) =>
      startNode(db.url, `node${i}`, {
        // The operator's setup: no NODE_ID, the default heartbeat and lease timeout.
        NODE_ID: undefined,
        CLUSTER_HEARTBEAT_MS: undefined,
        CLUSTER_LEASE_TIMEOUT_MS: undefined,
        PORT: String(port),
        NODE_ADVERTISE_URL: advertised[i],
      }),
    ),
  );
  nodes.push(...started);
  t.same(started.map((n) => n.url).sort(), [...advertised].sort(), 'each node serves its advertised URL');

  const view = await until('three balanced nodes', () => balanced(advertised[0]!, 3), 60_000);
  t.same(view.nodes.map((n) => n.nodeId).sort(), ports.map((port) => `127.0.0.1:${port}`).sort(), 'node ids are the advertised host:port');
  t.equal(view.nodes.flatMap((n) => n.shards).length, SHARDS, 'every shard owned once');

  const clients = advertised.map((url) => clientFor(url));
  const STOCK = 60;
  const SHOPPERS = 300;
  t.equal((await clients[0]!.putSku('START', { stock: STOCK, perShopperLimit: 1 })).status, 201);
  const results: CallResult[] = new Array(SHOPPERS);
  let next = 0;
  await Promise.all(
    Array.from({ length: 30 }, async () => {
      for (let i = next++; i < SHOPPERS; i = next++) {
        // A node that has just handed a shard over answers 503 until its view catches up: retried with the same
        // key, as the docs tell clients. A cluster that cannot forward (a refused token) stays 503 and fails below.
        for (let attempt = 0; attempt < 20; attempt++) {
          results[i] = await clients[i % 3]!.reserve('START', `shopper-${i}`, 1, `key-${i}`);
          if (results[i]!.status !== 503) break;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
    }),
  );
  const other = results.filter((r) => r.status !== 201 && !(r.status === 409 && r.body.code === 'sold_out'));
  t.same(other.map((r) => [r.status, r.body.code, r.body.detail]), [], 'every answer is 201 or 409 sold_out once retried (none left 503: forwarding works)');
  t.equal(results.filter((r) => r.status === 201).length, STOCK, `exactly ${STOCK} × 201 across three nodes`);
  t.equal(results.filter((r) => r.status === 409).length, SHOPPERS - STOCK, `exactly ${SHOPPERS - STOCK} × 409`);
  const views = await Promise.all(clients.map((c) => c.call('GET', '/v1/skus/START')));
  for (const [i, res] of views.entries()) t.match(res.body, { stock: STOCK, available: 0, held: STOCK }, `node ${i} shows the SKU sold out`);
  const logged = await db.pool.query<{ n: string }>(`SELECT count(*) AS n FROM stock_events WHERE sku = 'START' AND kind = 'reserved'`);
  t.equal(Number(logged.rows[0]!.n), STOCK, 'the log holds exactly the acknowledged reservations');
  t.same(nodeLog.filter((line) => /malformed token|cluster connection refused|cannot reach the peer/.test(line)), [], 'no node refused or failed to reach a peer');
});
