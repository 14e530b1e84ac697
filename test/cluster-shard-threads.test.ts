import t, { type Test } from 'tap';
import type { Child } from './helpers/child.js';
import { createTestDatabase, testLog, type TestDatabase } from './helpers/db.js';
import { clientFor } from './helpers/service.js';
import { balanced, reapNodes, SHARDS, startNode, until, view } from './helpers/cluster.js';
import { startLoad, unitsTakenInLog, verifyFromLog } from './helpers/fault-load.js';
import { shardOf } from '../src/shard/placement.js';
import { loadConfig } from '../src/config.js';
import { Lease } from '../src/cluster/lease.js';
import { SharedLease } from '../src/cluster/shared-lease.js';
import { ClusterShardThreads } from '../src/cluster/cluster-shard-threads.js';
import { ShardThreads } from '../src/threads/shard-threads.js';

/**
 * Shard threads on cluster nodes: real node processes (src/main.ts) with
 * CLUSTER_SECRET and SHARD_THREADS=2 on one database. Each node's main thread
 * holds the lease; the shards it takes are opened on their shard threads and
 * every commit there proves the lease's epoch. Through a SIGKILL of one node
 * (its shards taken over by the others' threads) and a lease session
 * terminated under a live node (a zombie's threads must stop acknowledging),
 * the load runs every SKU to sell-out and the log says: nothing oversold,
 * every 201 committed, every 503 or lost answer resolved by its key.
 */

// Three processes of three threads each, under load, on a shared 2-core machine.
t.setTimeout(600_000);

const nodeEnv = { SHARD_THREADS: '2', HTTP_THREADS: '1' };
const STOCK = 30;

type Client = ReturnType<typeof clientFor>;

/** Requests spread over the nodes still in `alive`, one after the other (a killed node is taken out). */
function spread(alive: Client[]): Pick<Client, 'call' | 'reserve'> {
  let next = 0;
  const pick = () => alive[next++ % alive.length]!;
  return {
    call: (...args) => pick().call(...args),
    reserve: (...args) => pick().reserve(...args),
  };
}

/** `count` SKUs per shard, so every node and both threads of each hold some. */
function skusOverShards(prefix: string, count: number): string[] {
  const byShard = new Map<number, string[]>();
  for (let i = 0; [...byShard.values()].filter((l) => l.length >= count).length < SHARDS; i++) {
    const sku = `${prefix}-${i}`;
    const list = byShard.get(shardOf(sku, SHARDS)) ?? [];
    if (list.length < count) list.push(sku);
    byShard.set(shardOf(sku, SHARDS), list);
  }
  return [...byShard.values()].flat();
}

async function startCluster(t: Test, n: number): Promise<{ db: TestDatabase; nodes: Child[]; clients: Client[] }> {
  const db = await createTestDatabase(t);
  const nodes: Child[] = [];
  reapNodes(t, nodes);
  for (let i = 0; i < n; i++) nodes.push(await startNode(db.url, `${t.name.split(' ')[0]}-node${i}`, nodeEnv));
  await until(`${n} balanced nodes`, () => balanced(nodes[0]!.url, n), 60_000);
  return { db, nodes, clients: nodes.map((node) => clientFor(node.url)) };
}

/** Whether every shard is owned by one of `urls` (the others took over). */
async function ownedBy(url: string, urls: string[]): Promise<true | null> {
  const v = await view(url);
  const owned = v.nodes.filter((node) => node.alive && urls.includes(node.url)).flatMap((node) => node.shards);
  return new Set(owned).size === SHARDS ? true : null;
}

/** The epochs of `shards` in shard_owners, in that order. */
async function epochs(db: TestDatabase, shards: number[]): Promise<number[]> {
  const { rows } = await db.pool.query<{ shard: number; epoch: string }>('SELECT shard, epoch FROM shard_owners WHERE shard = ANY($1::int[])', [shards]);
  return shards.map((shard) => Number(rows.find((row) => row.shard === shard)?.epoch ?? 0));
}

t.test('sigkill: three nodes of two shard threads, one SIGKILLed under load; takeover; every SKU sold out, never over; then a graceful leave', async (t) => {
  const { db, nodes, clients } = await startCluster(t, 3);
  const skus = skusOverShards('KILL', 3);
  for (const sku of skus) t.equal((await clients[0]!.putSku(sku, { stock: STOCK, perShopperLimit: 1 })).status, 201);
  const alive = [...clients];
  const load = startLoad(spread(alive), skus, 24, { processesDie: true });
  await until('some reservations acknowledged', async () => (load.acknowledged() >= skus.length * 4 ? true : null), 60_000);

  const victim = nodes[1]!;
  const victimShards = (await view(victim.url)).nodes.find((node) => node.url === victim.url)!.shards;
  t.ok(victimShards.length > 0, `the victim owns shards ${victimShards.join(', ')}`);
  const victimSkus = skus.filter((sku) => victimShards.includes(shardOf(sku, SHARDS)));
  victim.child.kill('SIGKILL');
  await victim.exited;
  const takenAtKill = await Promise.all(victimSkus.map((sku) => unitsTakenInLog(db.pool, sku)));
  alive.splice(alive.indexOf(clients[1]!), 1);
  const survivors = [nodes[0]!.url, nodes[2]!.url];
  await until('the survivors own every shard', () => ownedBy(survivors[0]!, survivors), 60_000);

  await load.soldOut(240_000);
  const attempts = await load.stop();
  // verifyFromLog checks each is sold out now: what was left at the kill was sold by the new owners' threads.
  t.ok(takenAtKill.some((taken) => taken < STOCK), `the victim's SKUs had stock left at the kill (${takenAtKill.join(', ')} of ${STOCK} taken)`);
  const api = spread(alive);
  for (const sku of skus) await verifyFromLog(t, api, db.pool, sku, STOCK, attempts, { processesDie: true });

  // A graceful leave hands every shard over: each thread drains its shards before the lease lets them go.
  const leaver = nodes[2]!;
  leaver.child.kill('SIGTERM');
  t.equal(await leaver.exited, 0, 'SIGTERM: the node hands its shards over and exits 0');
  await until('the last node owns every shard', () => ownedBy(nodes[0]!.url, [nodes[0]!.url]), 60_000);
  const after = skusOverShards('LEFT', 1);
  for (const sku of after) t.equal((await clients[0]!.putSku(sku, { stock: 1 })).status, 201);
  const created = await Promise.all(after.map((sku) => clients[0]!.reserve(sku, `after-${sku}`)));
  t.same(created.map((res) => res.status), after.map(() => 201), 'every shard serves again on the last node\'s threads');
});

/** A counter's samples in a Prometheus text exposition, by the value of `label`. */
async function counterBy(metricsUrl: string, name: string, label: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${metricsUrl}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const match of text.matchAll(new RegExp(`^${name}\\{${label}="([a-z_]+)"\\} (\\d+)$`, 'gm'))) out[match[1]!] = Number(match[2]);
  return out;
}

t.test('front-end threads on two nodes of two shard threads: their own node\'s shards straight to the shard thread, the others forwarded; sold out, never over', async (t) => {
  const db = await createTestDatabase(t);
  const nodes: Child[] = [];
  reapNodes(t, nodes);
  for (let i = 0; i < 2; i++) nodes.push(await startNode(db.url, `direct-node${i}`, { SHARD_THREADS: '2', HTTP_THREADS: '2' }));
  await until('2 balanced nodes', () => balanced(nodes[0]!.url, 2), 60_000);
  const clients = nodes.map((node) => clientFor(node.url));
  // Balanced is the lease table's word: wait until every shard also serves (recovered on its thread), through both nodes.
  const probes = skusOverShards('PROBE', 1);
  for (const sku of probes) t.equal((await clients[0]!.putSku(sku, { stock: 10 })).status, 201);
  await until('every shard serves through both nodes', async () => {
    const answers = await Promise.all(probes.flatMap((sku) => clients.map((client, i) => client.reserve(sku, `probe-${i}`, 1, `probe-${i}`))));
    return answers.every((answer) => answer.status === 201) ? true : null;
  }, 60_000);
  const skus = skusOverShards('DIRECT', 1);
  const stock = 5;
  for (const sku of skus) t.equal((await clients[0]!.putSku(sku, { stock, perShopperLimit: 1 })).status, 201);
  // Every SKU through both nodes: one owns its shard (straight to the shard thread), the other forwards it.
  const answers = await Promise.all(
    skus.flatMap((sku) => Array.from({ length: 2 * stock }, (_, i) => clients[i % 2]!.reserve(sku, `${sku}-shopper-${i}`))),
  );
  for (const [k, sku] of skus.entries()) {
    const statuses = answers.slice(k * 2 * stock, (k + 1) * 2 * stock).map((answer) => answer.status);
    t.equal(statuses.filter((status) => status === 201).length, stock, `${sku}: exactly its stock held`);
    t.equal(statuses.filter((status) => status === 409).length, stock, `${sku}: the rest sold out`);
  }
  for (const sku of skus) t.equal(await unitsTakenInLog(db.pool, sku), stock, `${sku}: the log holds its stock, no more`);
  for (const [i, node] of nodes.entries()) {
    const roads = await counterBy(node.metricsUrl, 'flashstock_thread_shard_requests_total', 'via');
    t.ok((roads.shard_thread ?? 0) > 0, `node ${i}: requests for its own shards went straight to their thread (${JSON.stringify(roads)})`);
    t.ok((roads.main_thread ?? 0) > 0, `node ${i}: requests for the other node's shards went through the main thread (${JSON.stringify(roads)})`);
  }
});

t.test('zombie: a node of two shard threads loses its lease session under load; no thread acknowledges for a lost shard', async (t) => {
  const { db, nodes, clients } = await startCluster(t, 2);
  const skus = skusOverShards('ZOMB', 2);
  for (const sku of skus) t.equal((await clients[0]!.putSku(sku, { stock: STOCK, perShopperLimit: 1 })).status, 201);
  // Through both nodes, the zombie included: whatever it acknowledges must be in the log.
  const load = startLoad(spread(clients), skus, 16);
  await until('some reservations acknowledged', async () => (load.acknowledged() >= skus.length * 4 ? true : null), 60_000);

  const zombie = nodes[1]!;
  const zombieShards = (await view(zombie.url)).nodes.find((node) => node.url === zombie.url)!.shards;
  const before = await epochs(db, zombieShards);
  const killed = await db.pool.query<{ ok: boolean }>(
    `SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = $1`,
    [`flashstock-lease:${t.name.split(' ')[0]}-node1`.slice(0, 63)],
  );
  t.same(killed.rows.map((row) => row.ok), [true], 'the zombie\'s one lease session was terminated');
  t.ok(zombie.child.exitCode === null, 'the zombie process lives on');

  await load.soldOut(240_000);
  const attempts = await load.stop();
  await until('both nodes balanced again', () => balanced(nodes[0]!.url, 2), 60_000);
  const later = await epochs(db, zombieShards);
  t.ok(zombieShards.every((shard, i) => later[i]! > before[i]!), `the zombie's shards ${zombieShards.join(', ')} were taken again at new epochs (${before.join(', ')} → ${later.join(', ')})`);
  for (const sku of skus) await verifyFromLog(t, spread(clients), db.pool, sku, STOCK, attempts);
});

const sale = { stock: 100, perShopperLimit: 100, holdSeconds: 60, priceCents: 100, currency: 'USD', startsAtMs: null, endsAtMs: null };

/** A SKU name that lives in `shard` of 4. */
function skuIn(shard: number, prefix: string): string {
  for (let i = 0; ; i++) if (shardOf(`${prefix}-${i}`, 4) === shard) return `${prefix}-${i}`;
}

async function reservedRows(pool: TestDatabase['pool'], sku: string): Promise<number> {
  const { rows } = await pool.query<{ n: number }>("SELECT count(*)::int AS n FROM stock_events WHERE sku = $1 AND kind = 'reserved'", [sku]);
  return rows[0]!.n;
}

t.test('in process: shard threads prove their commits against the lease\'s shared epochs; a lost lease stops them before the next commit', async (t) => {
  const db = await createTestDatabase(t);
  const config = loadConfig({ DATABASE_URL: db.url, SHARD_COUNT: '4', SHARD_THREADS: '2', LOG_LEVEL: 'silent' });
  const buffer = SharedLease.buffer(4);
  const lost: Error[] = [];
  const holder: { shards: ClusterShardThreads | null } = { shards: null };
  const lease = await Lease.open({
    databaseUrl: db.url,
    nodeId: 'node-t',
    url: 'http://127.0.0.1:1/node-t',
    log: testLog,
    lockNamespace: 4343,
    statementTimeoutMs: 5_000,
    onLost: (reason) => {
      lost.push(reason);
      holder.shards?.dropAll(reason);
    },
    sharedEpochs: new Int32Array(buffer),
  });
  const threads = new ShardThreads(config, testLog, {
    databaseUrl: db.url,
    onFatal: (error) => t.fail(`fatal: ${String(error)}`),
    clock: null,
    writeOrders: false,
    stockState: () => null,
    clusterEpochs: buffer,
  });
  const shards = new ClusterShardThreads(threads, testLog, { shardCount: 4, lease: () => (lease.lost ? null : lease), nodeId: () => 'node-t', notify: () => undefined });
  holder.shards = shards;
  t.teardown(async () => {
    await shards.close();
    await lease.close();
  });
  const reserve = (sku: string, key: string) => shards.handle(shardOf(sku, 4), { type: 'reserve', sku, shopperId: `shopper-${key}`, quantity: 1, idempotencyKey: key });

  const [x, y] = [skuIn(0, 'X'), skuIn(1, 'Y')];
  t.match(await reserve(x, 'x0'), { ok: false, code: 'unavailable' }, 'a shard not taken is not served');
  for (const shard of [0, 1]) await shards.open(shard, (await lease.take(shard))!);
  t.same(shards.shards(), [0, 1], 'both shards served, one on each thread');
  for (const sku of [x, y]) t.match(await shards.handle(shardOf(sku, 4), { type: 'configure', sku, config: sale }), { ok: true });
  t.match(await Promise.all([reserve(x, 'x1'), reserve(y, 'y1')]), [{ ok: true }, { ok: true }], 'each thread commits under its epoch');
  t.same([await reservedRows(db.pool, x), await reservedRows(db.pool, y)], [1, 1]);

  // The lease's shared view stops holding shard 1 and its thread is told nothing: its next commit must fail anyway.
  const view = new Int32Array(buffer);
  const epoch1 = Atomics.load(view, 1);
  Atomics.store(view, 1, 0);
  t.match(await reserve(y, 'y2'), { ok: false, code: 'unavailable' }, 'no proof without the shared epoch: not acknowledged');
  t.equal(await reservedRows(db.pool, y), 1, 'and nothing inserted');
  Atomics.store(view, 1, epoch1);

  // The real loss: the lease session is terminated; the lease clears the shared epochs as it learns of it.
  await db.pool.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'flashstock-lease:node-t'`);
  await until('the lease is lost', async () => (lost.length > 0 ? true : null));
  t.same([Atomics.load(view, 0), Atomics.load(view, 1)], [0, 0], 'the shared epochs are cleared');
  t.same(shards.shards(), [], 'nothing is served');
  t.match(await Promise.all([reserve(x, 'x3'), reserve(y, 'y3')]), [{ ok: false, code: 'unavailable' }, { ok: false, code: 'unavailable' }]);
  // A request that reaches a thread before it hears of the loss is decided at most in memory: its proof fails.
  t.match(await threads.request(shardOf(x, 4), { type: 'reserve', sku: x, shopperId: 'shopper-x4', quantity: 1, idempotencyKey: 'x4' }), { ok: false, code: 'unavailable' });
  t.same([await reservedRows(db.pool, x), await reservedRows(db.pool, y)], [1, 1], 'nothing acknowledged or inserted after the loss');
});
