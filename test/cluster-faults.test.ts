import t, { type Test } from 'tap';
import { randomUUID } from 'node:crypto';
import type { Child } from './helpers/child.js';
import { createTestDatabase, type TestDatabase } from './helpers/db.js';
import { clientFor, type CallResult } from './helpers/service.js';
import { balanced, nodeLog, SHARDS, sleep, startNode, until, view } from './helpers/cluster.js';
import { shardOf } from '../src/shard/placement.js';
import { isConnectionLost } from './helpers/fault-load.js';

/**
 * Cluster faults with real node processes on one database: a zombie owner
 * (its lease session killed while the process lives), a frozen owner (SIGSTOP
 * past the lease timeout, then SIGCONT), and a join and a graceful leave under
 * load. Whatever happens, every 201 is durable, readable through any node and
 * counted by the SKU's current owner; nothing is oversold or acknowledged twice.
 */

// Three processes on a shared 2-core machine, under load, through takeovers.
t.setTimeout(600_000);

const LEASE_TIMEOUT_MS = 1_000; // clusterEnv's CLUSTER_LEASE_TIMEOUT_MS
const MAX_ATTEMPTS_PER_KEY = 6;

type Client = ReturnType<typeof clientFor>;

interface Attempt {
  /** The node (its URL) the request went to. */
  via: string;
  sku: string;
  shopper: string;
  key: string;
  /** 0: no HTTP answer (connection refused or reset); -1: another failure (the body holds it). */
  status: number;
  body: CallResult['body'];
  retryAfter: string | null;
  startedAt: number;
  endedAt: number;
}

/** One reservation of 1 unit, recorded whatever the answer (no answer: status 0). */
async function reserveOnce(client: Client, via: string, sku: string, shopper: string, key: string): Promise<Attempt> {
  const startedAt = Date.now();
  // Only a connection refused or reset is "no answer"; any other failure (a contract error) is kept as status -1 and fails the invariants.
  const res = await client.reserve(sku, shopper, 1, key).catch((error: unknown): CallResult => ({
    status: isConnectionLost(error) ? 0 : -1,
    headers: new Headers(),
    body: isConnectionLost(error) ? null : String(error),
  }));
  return { via, sku, shopper, key, status: res.status, body: res.body, retryAfter: res.headers.get('retry-after'), startedAt, endedAt: Date.now() };
}

/**
 * Shoppers reserving 1 unit each over `skus`, `concurrency` at a time, spread
 * over whatever `targets()` returns at each request (a load balancer's view).
 * A 503 or a dropped connection is retried with the same Idempotency-Key
 * through the next node, as a client following Retry-After would.
 */
function startLoad(t: Test, targets: () => string[], skus: string[], concurrency: number) {
  const attempts: Attempt[] = [];
  const clients = new Map<string, Client>();
  const client = (url: string) => clients.get(url) ?? clients.set(url, clientFor(url)).get(url)!;
  let stopped = false;
  let counter = 0;
  const worker = async () => {
    while (!stopped) {
      const n = counter++;
      const sku = skus[n % skus.length]!;
      const shopper = `s-${n}`;
      const key = randomUUID();
      for (let attempt = 0; attempt < MAX_ATTEMPTS_PER_KEY; attempt++) {
        const urls = targets();
        const via = urls[(n + attempt) % urls.length]!;
        const res = await reserveOnce(client(via), via, sku, shopper, key);
        attempts.push(res);
        if (res.status !== 503 && res.status !== 0) break;
        await sleep(100 + 100 * attempt);
      }
    }
  };
  const running = Promise.all(Array.from({ length: concurrency }, worker));
  // A failed assertion must not leave shoppers retrying against stopped nodes.
  t.teardown(() => {
    stopped = true;
  });
  return {
    attempts,
    stop: async () => {
      stopped = true;
      await running;
    },
  };
}

/** `count` SKU names on distinct shards (fewer shards than SKUs: spread as evenly as the names fall). */
function skusOverShards(prefix: string, count: number): string[] {
  const byShard = new Map<number, string>();
  for (let i = 0; byShard.size < Math.min(count, SHARDS); i++) {
    const sku = `${prefix}-${i}`;
    if (!byShard.has(shardOf(sku, SHARDS))) byShard.set(shardOf(sku, SHARDS), sku);
  }
  return [...byShard.values()];
}

async function reservedInLog(db: TestDatabase): Promise<Map<string, { sku: string; key: string }>> {
  const rows = await db.pool.query<{ id: string; sku: string; key: string }>(
    `SELECT reservation_id::text AS id, sku, idempotency_key AS key FROM stock_events WHERE kind = 'reserved'`,
  );
  return new Map(rows.rows.map((row) => [row.id, { sku: row.sku, key: row.key }]));
}

/**
 * What every fault must leave true. Every 201 is in the log under its SKU and
 * key; a key never got two reservation ids; every answer other than 201 is a
 * 409 sold_out or a 503 `unavailable` with Retry-After (or, through a node
 * going away, no answer); every node shows each SKU as the log has it
 * (held = reserved events, available + held + sold = stock, never oversold).
 */
async function checkInvariants(t: Test, db: TestDatabase, attempts: Attempt[], stockOf: Map<string, number>, liveUrls: string[], goneUrls: string[], soldOut: string[]) {
  const logged = await reservedInLog(db);
  const created = attempts.filter((a) => a.status === 201);
  const missing = created.filter((a) => logged.get(a.body.reservationId)?.sku !== a.sku);
  t.same(missing.slice(0, 5), [], `every one of ${created.length} acknowledged reservations is in the log`);

  const idsByKey = new Map<string, Set<string>>();
  for (const a of created) (idsByKey.get(a.key) ?? idsByKey.set(a.key, new Set()).get(a.key)!).add(a.body.reservationId);
  const doubled = [...idsByKey].filter(([, ids]) => ids.size > 1);
  t.same(doubled.slice(0, 5), [], 'no Idempotency-Key was acknowledged with two reservation ids');
  const keysInLog = [...logged.values()].map((row) => row.key);
  t.equal(new Set(keysInLog).size, keysInLog.length, 'no key reserved twice in the log');

  const others = attempts.filter((a) => a.status !== 201);
  const wrong = others.filter(
    (a) =>
      !(a.status === 409 && a.body?.code === 'sold_out') &&
      !(a.status === 503 && a.body?.code === 'unavailable' && Number(a.retryAfter) > 0) &&
      !(a.status === 0 && goneUrls.includes(a.via)),
  );
  t.same(wrong.slice(0, 5).map((a) => ({ status: a.status, body: a.body, retryAfter: a.retryAfter })), [], 'every other answer is 409 sold_out or 503 unavailable with Retry-After');
  t.comment(`answers: ${created.length} × 201, ${others.filter((a) => a.status === 409).length} × 409, ${others.filter((a) => a.status === 503).length} × 503, ${others.filter((a) => a.status === 0).length} unanswered (node going away)`);

  for (const [sku, stock] of stockOf) {
    const inLog = [...logged.values()].filter((row) => row.sku === sku).length;
    t.ok(inLog <= stock, `${sku}: ${inLog} reserved events, stock ${stock}: not oversold`);
    if (soldOut.includes(sku)) {
      t.ok(attempts.some((a) => a.sku === sku && a.status === 409 && a.body?.code === 'sold_out'), `${sku}: the load ran it to sell-out`);
      t.equal(inLog, stock, `${sku}: sold out, every unit held exactly once in the log`);
    }
    for (const url of liveUrls) {
      const res = await clientFor(url).call('GET', `/v1/skus/${sku}`);
      const v = res.body as { stock: number; available: number; held: number; sold: number };
      t.ok(
        res.status === 200 && v.stock === stock && v.held === inLog && v.available + v.held + v.sold === stock,
        `${sku} through ${url}: ${JSON.stringify(v)} accounts for the ${inLog} reserved events in the log`,
      );
    }
  }
}

/** Every acknowledged reservation (the last `limit`) reads back, and replays, identically through `url`. */
async function checkReadable(t: Test, created: Attempt[], url: string, limit: number) {
  const c = clientFor(url);
  const sample = created.slice(-limit);
  const differ: unknown[] = [];
  for (const a of sample) {
    const read = await c.call('GET', `/v1/reservations/${a.body.reservationId}`, { shopper: a.shopper });
    const replay = await c.reserve(a.sku, a.shopper, 1, a.key);
    if (read.status !== 200 || JSON.stringify(read.body) !== JSON.stringify(a.body)) differ.push({ read: read.status, body: read.body, want: a.body });
    if (replay.status !== 201 || JSON.stringify(replay.body) !== JSON.stringify(a.body)) differ.push({ replay: replay.status, body: replay.body, want: a.body });
  }
  t.same(differ.slice(0, 5), [], `${sample.length} acknowledged reservations read back and replay with the identical body through ${url}`);
}

async function startCluster(t: Test, count: number) {
  const db = await createTestDatabase(t);
  const nodes: Child[] = [];
  t.teardown(async () => {
    for (const node of nodes) {
      if (node.child.exitCode !== null) continue;
      node.child.kill('SIGCONT');
      node.child.kill('SIGKILL');
    }
    if (t.passing() === false) t.comment(`node warnings and errors:\n${nodeLog.slice(-80).join('\n')}`);
  });
  for (let i = 0; i < count; i++) nodes.push(await startNode(db.url, `${t.name.split(' ')[0]}-node${i}`));
  await until(`${count} balanced nodes`, () => balanced(nodes[0]!.url, count));
  return { db, nodes };
}

/** The shards a node owns, by its URL, and its node id (from the admin view). */
async function nodeOf(url: string) {
  const v = await view(url);
  const self = v.nodes.find((n) => n.url === url)!;
  return { nodeId: self.nodeId, shards: self.shards };
}

async function epochs(db: TestDatabase): Promise<Map<number, { nodeId: string | null; epoch: number }>> {
  const rows = await db.pool.query<{ shard: number; node_id: string | null; epoch: string }>('SELECT shard, node_id, epoch FROM shard_owners');
  return new Map(rows.rows.map((row) => [row.shard, { nodeId: row.node_id, epoch: Number(row.epoch) }]));
}

/** Until 201s for the victim's SKUs come back for requests sent after `since` through the other nodes. */
async function resumedThroughOthers(attempts: Attempt[], victimSkus: string[], victimUrl: string, since: number) {
  return until(
    `201s for the victim's SKUs through the other nodes after ${since}`,
    async () => {
      const resumed = victimSkus.every((sku) => attempts.some((a) => a.status === 201 && a.sku === sku && a.via !== victimUrl && a.startedAt > since));
      return resumed ? true : null;
    },
    60_000,
  );
}

/** Until `sku` has answered 409 sold_out (the load runs it to sell-out). */
async function soldOutBy(attempts: Attempt[], sku: string) {
  await until(`${sku} sold out`, async () => (attempts.some((a) => a.sku === sku && a.status === 409 && a.body?.code === 'sold_out') ? true : null), 90_000);
}

/** Ask for ~`n` more 201s, whichever node answers. */
async function moreCreated(attempts: Attempt[], n: number) {
  const target = attempts.filter((a) => a.status === 201).length + n;
  await until(`${n} more 201s`, async () => (attempts.filter((a) => a.status === 201).length >= target ? true : null), 60_000);
}

const STOCK = 400;
/** The stock of the victim's first SKU: it sells out after the fault, under the new owner. */
const SMALL_STOCK = 40;

/** Three balanced nodes, six SKUs of STOCK units on distinct shards, and node 1 (the victim) with the SKUs it owns. */
async function clusterWithVictim(t: Test, prefix: string) {
  const { db, nodes } = await startCluster(t, 3);
  const urls = nodes.map((n) => n.url);
  const skus = skusOverShards(prefix, 6);
  for (const sku of skus) t.equal((await clientFor(urls[0]!).putSku(sku, { stock: STOCK, perShopperLimit: 1 })).status, 201);
  const victimUrl = urls[1]!;
  const victim = await nodeOf(victimUrl);
  const victimSkus = skus.filter((sku) => victim.shards.includes(shardOf(sku, SHARDS)));
  t.ok(victimSkus.length > 0, `the victim ${victim.nodeId} owns ${victimSkus.join(', ')}`);
  const small = victimSkus[0]!;
  t.equal((await clientFor(urls[0]!).putSku(small, { stock: SMALL_STOCK, perShopperLimit: 1 })).status, 200, `${small} lowered to ${SMALL_STOCK}: it sells out after the fault`);
  const stockOf = new Map(skus.map((sku) => [sku, sku === small ? SMALL_STOCK : STOCK]));
  return { db, nodes, urls, skus, victimUrl, victim, victimSkus, small, stockOf, before: await epochs(db) };
}

t.test('zombie owner: its lease session terminated while the process lives and serves', async (t) => {
  const { db, urls, skus, victimUrl, victim, victimSkus, small, stockOf, before } = await clusterWithVictim(t, 'ZOMBIE');

  // Shoppers go through every node, the zombie included.
  const load = startLoad(t, () => urls, skus, 24);
  await moreCreated(load.attempts, 60);
  const killed = await db.pool.query<{ pid: number; ok: boolean }>(
    `SELECT pid, pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = $1`,
    [`flashstock-lease:${victim.nodeId}`],
  );
  const terminatedAt = Date.now();
  t.same(killed.rows.map((row) => row.ok), [true], `the zombie's one lease session (pid ${killed.rows[0]?.pid}) was terminated`);

  await resumedThroughOthers(load.attempts, victimSkus, victimUrl, terminatedAt);
  await until('the cluster balanced again', () => balanced(urls[0]!, 3), 60_000);
  await moreCreated(load.attempts, 60);
  await soldOutBy(load.attempts, small);
  await load.stop();

  const after = await epochs(db);
  for (const shard of victim.shards) {
    t.ok(after.get(shard)!.epoch > before.get(shard)!.epoch, `shard ${shard} was taken again at a new epoch (${before.get(shard)!.epoch} → ${after.get(shard)!.epoch}, now ${after.get(shard)!.nodeId})`);
  }
  const rejoined = await db.pool.query<{ pid: number }>('SELECT lease_pid AS pid FROM cluster_nodes WHERE node_id = $1', [victim.nodeId]);
  t.not(rejoined.rows[0]?.pid, killed.rows[0]!.pid, 'the zombie noticed it lost its lease and rejoined with a new lease session');
  await checkInvariants(t, db, load.attempts, stockOf, urls, [], [small]);
  const fromZombie = load.attempts.filter((a) => a.status === 201 && a.via === victimUrl && a.endedAt > terminatedAt);
  t.comment(`${fromZombie.length} × 201 through the zombie after its lease was terminated (each in the log, above)`);
  await checkReadable(t, fromZombie, urls[0]!, Infinity);
  await checkReadable(t, load.attempts.filter((a) => a.status === 201 && victimSkus.includes(a.sku)), urls[2]!, Infinity);
});

t.test('frozen owner: SIGSTOP past the lease timeout, shards taken meanwhile, then SIGCONT', async (t) => {
  const { db, nodes, urls, skus, victimUrl, victim, victimSkus, small, stockOf, before } = await clusterWithVictim(t, 'FROZEN');
  const victimNode = nodes[1]!;

  const leasePid = (await db.pool.query<{ pid: number }>('SELECT lease_pid AS pid FROM cluster_nodes WHERE node_id = $1', [victim.nodeId])).rows[0]!.pid;
  // A load balancer stops sending to a node that stops answering its health checks; the requests
  // already sent to the frozen node wait in its socket buffers until it resumes.
  let frozen = false;
  const load = startLoad(t, () => (frozen ? urls.filter((url) => url !== victimUrl) : urls), skus, 24);
  await moreCreated(load.attempts, 60);
  victimNode.child.kill('SIGSTOP');
  frozen = true;
  const frozenAt = Date.now();
  // Requests for its own SKUs sent straight to the frozen node: it reads them only after it resumes,
  // when those shards are someone else's.
  const direct = clientFor(victimUrl);
  const queued = Promise.all(victimSkus.flatMap((sku) => Array.from({ length: 10 }, (_, i) => reserveOnce(direct, victimUrl, sku, `queued-${i}`, randomUUID()))));
  await resumedThroughOthers(load.attempts, victimSkus, victimUrl, frozenAt);
  const taken = await epochs(db);
  for (const shard of victim.shards) t.not(taken.get(shard)!.nodeId, victim.nodeId, `shard ${shard} was taken from the frozen node`);
  await sleep(Math.max(0, frozenAt + 3 * LEASE_TIMEOUT_MS - Date.now()));
  victimNode.child.kill('SIGCONT');
  const resumedAt = Date.now();
  frozen = false;

  const queuedAnswers = await queued;
  const answered = new Map<string, number>();
  for (const a of queuedAnswers) answered.set(`${a.status} ${a.body?.detail ?? ''}`, (answered.get(`${a.status} ${a.body?.detail ?? ''}`) ?? 0) + 1);
  t.comment(`requests queued at the frozen node for the shards it lost: ${JSON.stringify([...answered])}`);
  load.attempts.push(...queuedAnswers);
  await until('the cluster balanced again with the resumed node', () => balanced(urls[0]!, 3), 60_000);
  await until('201s through the resumed node', async () => (load.attempts.some((a) => a.status === 201 && a.via === victimUrl && a.startedAt > resumedAt) ? true : null), 60_000);
  await moreCreated(load.attempts, 60);
  await soldOutBy(load.attempts, small);
  await load.stop();

  const after = await epochs(db);
  for (const shard of victim.shards) t.ok(after.get(shard)!.epoch > before.get(shard)!.epoch, `shard ${shard} was taken at a new epoch`);
  const rejoined = await db.pool.query<{ pid: number }>('SELECT lease_pid AS pid FROM cluster_nodes WHERE node_id = $1', [victim.nodeId]);
  t.not(rejoined.rows[0]?.pid, leasePid, 'the resumed node learned it had lost its lease and rejoined with a new lease session');
  await checkInvariants(t, db, load.attempts, stockOf, urls, [], [small]);
  // Requests the frozen node held and answered after it resumed: any 201 among them is in the log (above) and reads back.
  const heldOver = load.attempts.filter((a) => a.status === 201 && a.via === victimUrl && a.startedAt < resumedAt && a.endedAt >= resumedAt);
  t.same(queuedAnswers.filter((a) => a.status !== 201 && a.status !== 503 && !(a.status === 409 && a.body?.code === 'sold_out')).map((a) => [a.status, a.body]), [], 'the queued requests were answered 201 (by the new owner), 409 sold_out or 503');
  t.comment(`${heldOver.length} × 201 from requests that waited out the freeze in the frozen node`);
  await checkReadable(t, heldOver, urls[0]!, Infinity);
  await checkReadable(t, load.attempts.filter((a) => a.status === 201 && victimSkus.includes(a.sku)), urls[2]!, Infinity);
});

t.test('join and graceful leave under load: shards move, nothing lost or doubled', async (t) => {
  const { db, nodes } = await startCluster(t, 2);
  const skus = skusOverShards('MOVE', SHARDS);
  // One SKU sells out while shards move (never oversold across owners); the others keep serving 201s.
  const stockOf = new Map(skus.map((sku, i) => [sku, i === 0 ? 60 : 5_000]));
  for (const [sku, stock] of stockOf) t.equal((await clientFor(nodes[0]!.url).putSku(sku, { stock, perShopperLimit: 1 })).status, 201);
  // The load balancer's pool: a node is added once ready and taken out before it is stopped.
  const pool = nodes.map((n) => n.url);
  const load = startLoad(t, () => pool, skus, 30);
  await moreCreated(load.attempts, 100);

  const joiner = await startNode(db.url, 'join-node2');
  nodes.push(joiner);
  pool.push(joiner.url);
  const joined = await until('three balanced nodes after the join', () => balanced(nodes[0]!.url, 3), 60_000);
  t.ok(joined.nodes.find((n) => n.url === joiner.url)!.shards.length >= 2, 'shards moved to the joining node');
  await moreCreated(load.attempts, 100);

  const leaver = nodes[0]!;
  pool.splice(pool.indexOf(leaver.url), 1);
  leaver.child.kill('SIGTERM');
  t.equal(await leaver.exited, 0, 'the leaving node exits 0 after handing its shards over');
  await until('two balanced nodes after the leave', () => balanced(nodes[1]!.url, 2), 60_000);
  await moreCreated(load.attempts, 100);
  await soldOutBy(load.attempts, skus[0]!);
  await load.stop();

  const live = nodes.slice(1).map((n) => n.url);
  await checkInvariants(t, db, load.attempts, stockOf, live, [leaver.url], [skus[0]!]);
  const created = load.attempts.filter((a) => a.status === 201);
  await checkReadable(t, created.filter((a) => a.via === leaver.url), joiner.url, 300);
  await checkReadable(t, created.filter((a) => a.via !== leaver.url), live[0]!, 300);
});
