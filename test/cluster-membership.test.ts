import t, { type Test } from 'tap';
import type pg from 'pg';
import { ClusterShards } from '../src/cluster/cluster-shards.js';
import { Membership, type ShardHost } from '../src/cluster/membership.js';
import { listNodesQuery, type NodeRow } from '../src/cluster/sql.js';
import { shardOf } from '../src/shard/placement.js';
import { createTestDatabase, testLog } from './helpers/db.js';
import { testHostOptions } from './helpers/shard-host.js';

/**
 * Membership loops on one real database. The shard host of the first tests
 * only records what it is told, so they look at ownership alone (the lease,
 * the locks and the epochs are all real Postgres); the last one runs real
 * ClusterShards (one ShardHost, one outbox per node) under load.
 */
function host(): ShardHost & { shards: Map<number, number>; events: string[]; dropped: number } {
  const shards = new Map<number, number>();
  const events: string[] = [];
  const h = {
    shards,
    events,
    dropped: 0,
    async open(shard: number, epoch: number) {
      if (shards.has(shard)) throw new Error(`shard ${shard} opened twice`);
      shards.set(shard, epoch);
      events.push(`open ${shard}@${epoch}`);
    },
    async drain(shard: number) {
      if (!shards.delete(shard)) throw new Error(`drain of shard ${shard} not open`);
      events.push(`drain ${shard}`);
    },
    dropAll() {
      h.dropped += 1;
      shards.clear();
    },
  };
  return h;
}

const SHARDS = 12;

type Tap = Pick<typeof t, 'same' | 'equal' | 'ok'>;

function member(db: { url: string; pool: pg.Pool }, nodeId: string, h: ShardHost): Membership {
  return new Membership(db.pool, h, {
    databaseUrl: db.url,
    nodeId,
    url: `http://127.0.0.1:1/${nodeId}`,
    shardCount: SHARDS,
    lockNamespace: 77,
    heartbeatMs: 60_000, // rounds are driven by the test
    leaseTimeoutMs: 1_500,
    maxMovesPerRound: 4,
    statementTimeoutMs: 5_000,
    log: testLog,
  });
}

async function rounds(members: Membership[], n: number): Promise<void> {
  for (let i = 0; i < n; i++) for (const m of members) await m.round();
}

function counts(hosts: { shards: Map<number, number> }[]): number[] {
  return hosts.map((h) => h.shards.size);
}

/** Two membership loops on a fresh database, balanced 6/6. */
async function twoBalanced(t: Test) {
  const db = await createTestDatabase(t);
  const hosts = [host(), host()];
  const members = hosts.map((h, i) => member(db, `node-${i}`, h));
  t.teardown(() => Promise.all(members.map((m) => m.stop())));
  await rounds(members, 6);
  t.same(counts(hosts), [6, 6]);
  return { db, hosts, members };
}

/** Until the host was told its lease is gone (the lease connection's error arrives asynchronously), 30 s at most. */
async function untilDropped(h: { dropped: number }): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (h.dropped === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
}

function assertOneOwnerEach(t: Tap, hosts: { shards: Map<number, number> }[], members: Membership[]): void {
  const seen = new Map<number, number>();
  hosts.forEach((h, i) => {
    for (const shard of h.shards.keys()) seen.set(shard, (seen.get(shard) ?? 0) + 1);
    t.same([...h.shards.keys()].sort(), [...members[i]!.owned().keys()].sort(), 'host and lease agree');
  });
  t.equal(seen.size, SHARDS, 'every shard is open somewhere');
  t.ok([...seen.values()].every((n) => n === 1), 'no shard is open twice');
}

t.test('join, balance, graceful leave, death: one owner per shard throughout', async (t) => {
  const db = await createTestDatabase(t);
  const hosts = [host(), host(), host()];
  const members = hosts.map((h, i) => member(db, `node-${i}`, h));
  t.teardown(() => Promise.all(members.map((m) => m.stop())));

  t.equal(await members[0]!.round(), 4, 'one round moves at most maxMovesPerRound shards');
  await members[0]!.start();
  t.same(counts(hosts), [SHARDS, 0, 0], 'start() runs rounds until a lone node owns every shard');

  await members[1]!.round();
  await members[2]!.round();
  await rounds(members, 6);
  t.same(counts(hosts), [4, 4, 4], 'three nodes: 4 shards each');
  assertOneOwnerEach(t, hosts, members);
  t.ok(hosts[1]!.events.every((e) => !e.startsWith('open') || !e.endsWith('@1')), 'every moved shard was taken at a bumped epoch');

  const snapshot = members[1]!.snapshot;
  t.equal(snapshot.nodes.length, 3);
  t.ok(snapshot.nodes.every((n) => n.alive && n.shards.length === 4));
  t.ok(snapshot.owners.every((o) => o !== null), 'every shard has a routable owner');

  await members[2]!.leave();
  t.equal(hosts[2]!.shards.size, 0, 'the leaver drained and handed over everything');
  await rounds(members.slice(0, 2), 4);
  t.same(counts(hosts.slice(0, 2)), [6, 6], 'the two left take its shards');
  assertOneOwnerEach(t, hosts.slice(0, 2), members.slice(0, 2));

  // node-1 dies: its lease session is killed. node-0 takes everything at new epochs.
  const { rows } = await db.pool.query<NodeRow>(listNodesQuery());
  const victim = rows.find((r) => r.node_id === 'node-1')!;
  const epochsBefore = new Map(hosts[1]!.shards);
  await db.pool.query('SELECT pg_terminate_backend($1)', [victim.lease_pid]);
  await untilDropped(hosts[1]!);
  t.equal(hosts[1]!.dropped, 1, 'the victim dropped all its shards at once');
  t.equal(hosts[1]!.shards.size, 0);

  // node-1's process lives and would rejoin on its next round; only node-0 runs here.
  await rounds([members[0]!], 4);
  t.equal(hosts[0]!.shards.size, SHARDS, 'the survivor took every shard');
  for (const [shard, epoch] of epochsBefore) t.ok(hosts[0]!.shards.get(shard)! > epoch, `shard ${shard}: epoch bumped past the dead owner's`);

  await rounds(members.slice(0, 2), 6);
  t.same(counts(hosts.slice(0, 2)), [6, 6], 'the victim rejoined with a new lease and got its share back');
});

t.test('a hung node (heartbeat stale, session open) has its lease ended and its shards taken', async (t) => {
  const { db, hosts, members } = await twoBalanced(t);

  // node-1 stops running rounds (a blocked event loop): its heartbeat ages past the lease timeout.
  await new Promise((r) => setTimeout(r, 1_700));
  await members[0]!.round(); // sees the stale heartbeat, terminates node-1's lease session
  await untilDropped(hosts[1]!);
  t.equal(hosts[1]!.dropped, 1, 'the hung node learns it lost its lease');
  await rounds([members[0]!], 4);
  t.equal(hosts[0]!.shards.size, SHARDS, 'the survivor owns everything');
});

t.test('real shard hosts: one outbox spans a node’s shards; a joining node takes half with their SKUs, nothing decided is lost', async (t) => {
  const db = await createTestDatabase(t, { poolMax: 10 });
  const members: Membership[] = [];
  const nodes = [0, 1].map(
    (i) =>
      new ClusterShards(db.pool, testLog, {
        shardCount: SHARDS,
        hostOptions: testHostOptions(db, t),
        lease: () => members[i]?.currentLease() ?? null,
        notify: () => undefined,
      }),
  );
  members.push(...nodes.map((node, i) => member(db, `node-${i}`, node)));
  t.teardown(async () => {
    await Promise.all(members.map((m) => m.stop()));
    await Promise.all(nodes.map((node) => node.close()));
  });
  await members[0]!.start();
  t.equal(nodes[0]!.shards().length, SHARDS, 'a lone node opened every shard');

  const skus = Array.from({ length: 24 }, (_, i) => `SPREAD-${i}`);
  const owner = (sku: string) => nodes.find((node) => node.serves(shardOf(sku, SHARDS)));
  const sale = { stock: 10_000, perShopperLimit: 10_000, holdSeconds: 600, priceCents: 100, currency: 'USD', startsAtMs: null, endsAtMs: null };
  for (const sku of skus) t.match(await nodes[0]!.handle(shardOf(sku, SHARDS), { type: 'configure', sku, config: sale }), { ok: true });
  t.ok(new Set(skus.map((sku) => shardOf(sku, SHARDS))).size > 6, 'the SKUs spread over most shards');

  const batches = nodes[0]!.outboxStats.batches;
  let made = 0;
  const acknowledged = new Map<string, number>(skus.map((sku) => [sku, 0]));
  const reserveAll = () =>
    Promise.all(
      skus.map(async (sku) => {
        const node = owner(sku);
        if (node === undefined) return; // moving: a router would answer 503
        const key = `k${made++}`;
        const reply = await node.handle(shardOf(sku, SHARDS), { type: 'reserve', sku, shopperId: key, quantity: 1, idempotencyKey: key });
        if (reply.ok) acknowledged.set(sku, acknowledged.get(sku)! + 1);
      }),
    );
  await reserveAll();
  t.equal(nodes[0]!.outboxStats.batches, batches + 1, 'one turn of decisions over many shards: one group commit');
  t.equal(nodes[0]!.outboxStats.lastBatchEvents, skus.length);

  // node-1 joins under load: node-0 drains and releases half, node-1 recovers them (snapshot + tail) and serves.
  let loading = true;
  const load = (async () => {
    while (loading) await reserveAll();
  })();
  for (let i = 0; i < 8 && nodes[1]!.shards().length < SHARDS / 2; i++) {
    await members[1]!.round();
    await members[0]!.round();
  }
  await new Promise((resolve) => setTimeout(resolve, 100));
  loading = false;
  await load;
  t.ok(made > 2 * skus.length, 'reservations kept coming while shards moved');
  t.same(nodes.map((node) => node.shards().length), [SHARDS / 2, SHARDS / 2], 'balanced');
  t.same(nodes[0]!.shards(), [...members[0]!.owned().keys()].sort((a, b) => a - b), 'node-0 serves what its lease holds');
  t.same(nodes[1]!.shards(), [...members[1]!.owned().keys()].sort((a, b) => a - b), 'node-1 serves what its lease holds');

  const { rows } = await db.pool.query<{ sku: string; n: number }>(
    "SELECT sku, count(*)::int AS n FROM stock_events WHERE kind = 'reserved' GROUP BY sku",
  );
  const logged = new Map(rows.map((row) => [row.sku, row.n]));
  for (const sku of skus) {
    const held = owner(sku)!.stockState(sku)?.held;
    t.equal(logged.get(sku), acknowledged.get(sku), `${sku}: every acknowledged reservation is in the log, no other`);
    t.equal(held, acknowledged.get(sku), `${sku}: its owner's memory agrees`);
  }
  t.ok(nodes[1]!.outboxStats.batches > 0, 'node-1 commits through its own outbox');
});

t.test('a node that rejoins before anyone took its shards takes them back (none left with a phantom owner)', async (t) => {
  const { db, hosts, members } = await twoBalanced(t);

  const { rows } = await db.pool.query<NodeRow>(listNodesQuery());
  const victim = rows.find((r) => r.node_id === 'node-1')!;
  const epochsBefore = new Map(hosts[1]!.shards);
  await db.pool.query('SELECT pg_terminate_backend($1)', [victim.lease_pid]);
  await untilDropped(hosts[1]!);
  t.equal(hosts[1]!.dropped, 1, 'the zombie dropped its shards');

  // The zombie's next round re-registers it with a new lease before node-0 has seen it gone:
  // node-0 sees a live node-1 named in shard_owners, so only node-1 can take those shards again.
  await members[1]!.round();
  await rounds(members, 4);
  t.same(counts(hosts), [6, 6], 'every shard is open again');
  assertOneOwnerEach(t, hosts, members);
  for (const [shard, epoch] of epochsBefore) {
    const now = hosts[0]!.shards.get(shard) ?? hosts[1]!.shards.get(shard)!;
    t.ok(now > epoch, `shard ${shard}: taken again at a bumped epoch`);
  }
  t.ok(members[0]!.snapshot.owners.every((o) => o !== null), 'every shard has a routable owner');
});
