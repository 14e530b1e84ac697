import t, { type Test } from 'tap';
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import type { Child } from './helpers/child.js';
import { createTestDatabase, testLog } from './helpers/db.js';
import { ClusterLive } from '../src/cluster/live.js';
import type { ClusterSnapshot, NodeInfo } from '../src/cluster/membership.js';
import { defaultTransportLimits, ForwardPool } from '../src/cluster/transport.js';
import type { ShardNotice } from '../src/shard/messages.js';
import type { Note, PeerNotice } from '../src/shard/protocol.js';
import { shardOf } from '../src/shard/placement.js';
import { testRedis } from './helpers/redis.js';
import { clientFor } from './helpers/service.js';
import { connectStream, type Message, type StreamClient } from './helpers/stream-client.js';
import { balanced, nodeLog, ownerUrl, startNode, until } from './helpers/cluster.js';
import { CLUSTER_TEST_SECRET, startEndpoint } from './helpers/cluster-endpoint.js';
import { skipBecause } from './helpers/skip.js';

/**
 * Live stock across a cluster (src/cluster/live.ts): three real node
 * processes; a WebSocket subscriber on one node follows a SKU owned by
 * another while reservations go through the third. Once over the cluster
 * connection (no REDIS_URL), once through Redis (REDIS_URL on every node).
 */

// Three processes start one after the other on a shared 2-core machine.
t.setTimeout(300_000);

const stockOf = (sku: string) => (m: Message) => m.type === 'stock' && m.sku === sku;

/** Take `sku`'s stock messages until one matches (updates may be coalesced, so intermediate ones are skipped). */
async function stockUntil(client: StreamClient, sku: string, match: (m: Message) => boolean, what: string): Promise<Message> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const message = await client.take(stockOf(sku), Math.max(1, deadline - Date.now()), what);
    if (match(message)) return message;
  }
}

/** Subscribe once: a node that holds no copy of the SKU asks its owner, so the first answer is its counts. */
async function subscribe(client: StreamClient, sku: string): Promise<Message> {
  client.send({ type: 'subscribe', skus: [sku] });
  return client.take((m) => stockOf(sku)(m) || (m.type === 'error' && m.sku === sku), 10_000, `subscribe ${sku}`);
}

/** Whether Redis answers a PING (a REDIS_URL that is set but down skips the Redis case, loudly). */
async function redisAnswers(url: string): Promise<boolean> {
  const client = new Redis(url, { lazyConnect: true, connectTimeout: 1_000, maxRetriesPerRequest: 0, retryStrategy: () => null });
  client.on('error', () => undefined);
  try {
    await client.connect();
    return (await client.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    client.disconnect();
  }
}

async function liveAcrossNodes(t: Test, env: Record<string, string>): Promise<void> {
  const db = await createTestDatabase(t);
  const nodes: Child[] = [];
  t.teardown(async () => {
    for (const node of nodes) if (node.child.exitCode === null) node.child.kill('SIGKILL');
    if (t.passing() === false) t.comment(`node warnings and errors:\n${nodeLog.slice(-60).join('\n')}`);
  });
  for (let i = 0; i < 3; i++) nodes.push(await startNode(db.url, `live${i}`, env));
  const urls = nodes.map((n) => n.url);
  await until('three balanced nodes', () => balanced(urls[0]!, 3));

  // A SKU owned by node B; the subscriber is on A, reservations go through C.
  const a = urls[0]!;
  let sku = '';
  let b = '';
  for (let i = 0; b === '' || b === a; i++) {
    sku = `LIVE-${i}`;
    b = (await ownerUrl(a, sku)) ?? '';
  }
  const c = urls.find((url) => url !== a && url !== b)!;
  t.equal((await clientFor(c).putSku(sku, { stock: 10, perShopperLimit: 5 })).status, 201, 'SKU created through C (owned by B)');

  const watcher = await connectStream(t, a);
  t.match(await subscribe(watcher, sku), { sku, available: 10, held: 0, sold: 0 }, 'A knows the SKU B owns');

  t.equal((await clientFor(c).reserve(sku, 'shopper-c', 2, randomUUID())).status, 201, 'reserved through C');
  t.match(await stockUntil(watcher, sku, (m) => m.held === 2, 'the update on A'), { available: 8, held: 2, sold: 0 },
    "A's subscriber sees the reservation made through C");

  t.equal((await clientFor(b).reserve(sku, 'shopper-b', 3, randomUUID())).status, 201, 'reserved on the owner itself');
  t.match(await stockUntil(watcher, sku, (m) => m.held === 5, 'the second update on A'), { available: 5, held: 5 },
    "A's subscriber sees the owner's own reservation");

  const onC = await connectStream(t, c);
  t.match(await subscribe(onC, sku), { available: 5, held: 5 }, 'a subscriber on C starts from the latest state');
  t.match(await subscribe(onC, `${sku}-NONE`), { type: 'error', code: 'not_found' }, 'a SKU no node has: not_found, as its owner says');
  t.match((await clientFor(a).call('GET', `/v1/skus/${sku}`)).body, { available: 5, held: 5 }, 'GET through A agrees');

  // C's only subscriber goes: C stops following, and its copy of the counts grows old.
  onC.close();
  await onC.closed;
  t.equal((await clientFor(a).reserve(sku, 'shopper-a', 1, randomUUID())).status, 201, 'reserved through A while nobody on C follows');
  t.match(await stockUntil(watcher, sku, (m) => m.held === 6, 'the update on A'), { available: 4, held: 6 });
  const againOnC = await connectStream(t, c);
  t.match(await subscribe(againOnC, sku), { available: 4, held: 6 }, "a new subscriber on C starts from the owner's counts, not the copy C kept");

  // A waitlist offer reaches its shopper's stream on A, though B (the owner) made it.
  let wanted = '';
  for (let i = 0; wanted === ''; i++) if ((await ownerUrl(a, `WAIT-${i}`)) === b) wanted = `WAIT-${i}`;
  const viaC = clientFor(c);
  t.equal((await viaC.putSku(wanted, { stock: 1, waitlistOfferSeconds: 60 })).status, 201, 'a SKU of one unit, owned by B');
  const held = await viaC.reserve(wanted, 'alice', 1, randomUUID());
  t.equal(held.status, 201, 'its unit held');
  const joined = await viaC.call('POST', `/v1/skus/${wanted}/waitlist`, { shopper: 'bob', body: { quantity: 1 }, headers: { 'idempotency-key': randomUUID() } });
  t.equal(joined.status, 201, 'bob waits in line');
  const bobOnA = await connectStream(t, a, viaC.token('bob'));
  t.equal((await viaC.call('DELETE', `/v1/reservations/${held.body.reservationId}`, { shopper: 'alice' })).status, 200, 'the unit comes back');
  const pushed = await bobOnA.take((m) => m.type === 'waitlist_offer', 20_000, "the offer on bob's stream on A");
  t.match(pushed.entry, { waitlistId: joined.body.waitlistId, sku: wanted, status: 'offered', quantity: 1 }, 'bob hears the offer on A');
  t.match((await clientFor(a).call('GET', `/v1/waitlist/${joined.body.waitlistId}`, { shopper: 'bob' })).body, { status: 'offered', reservationId: pushed.entry.reservationId });

  // The owner leaves gracefully: the SKU moves, and A's subscriber follows the new owner's notices.
  const owner = nodes.find((n) => n.url === b)!;
  owner.child.kill('SIGTERM');
  t.equal(await owner.exited, 0, 'the owner handed its shards over and left');
  await until('two balanced nodes', () => balanced(a, 2));
  t.equal((await clientFor(c).reserve(sku, 'shopper-after', 1, randomUUID())).status, 201, 'reserved after the move');
  t.match(await stockUntil(watcher, sku, (m) => m.held === 7, 'the update after the move'), { available: 3, held: 7 },
    "A's subscriber follows the SKU across the ownership move");
  t.match((await clientFor(a).call('GET', `/v1/skus/${sku}`)).body, { available: 3, held: 7 }, 'GET through A agrees after the move');
}

t.test('a stale notice never overwrites a newer one, across an ownership move', async (t) => {
  const shardCount = 4;
  const shard = shardOf('S', shardCount);
  const other = ['S2', 'S3', 'S4', 'S5', 'S6', 'S7', 'S8'].find((sku) => shardOf(sku, shardCount) === shard)!;
  const epochs = new Array<number>(shardCount).fill(0);
  const snapshot = (): ClusterSnapshot => ({ self: 'me', shardCount, nodes: [], owners: [], epochs });
  const held = new Map<number, number>();
  const delivered: ShardNotice[] = [];
  const pool = new ForwardPool({ secret: 'unused', selfNodeId: 'me', limits: defaultTransportLimits, log: testLog });
  t.teardown(() => pool.close());
  const live = new ClusterLive({
    push: false,
    shardCount,
    snapshot,
    pool,
    epochOf: (s) => held.get(s),
    deliver: (notice) => delivered.push(notice),
    peerSyncMs: 1_000,
    maxTrackedSkus: 100,
    log: testLog,
  });
  const stock = (sku: string, seq: number, e: number): PeerNotice => ({ e, n: { type: 'stock', state: { sku, available: seq, held: 0, sold: 0, seq } } });
  const seqs = () => delivered.map((n) => (n.type === 'stock' ? n.state.seq : n.type));

  live.received('peer', [stock('S', 10, 3), stock('S', 8, 3)]);
  t.same(seqs(), [10, 8], "one owner's notices in order, even a correction with a lower seq");
  live.received('peer', [stock('S', 20, 2), { e: 2, n: { type: 'passivated', sku: 'S' } }]);
  t.same(seqs(), [10, 8], "the previous owner's late notices (older epoch, higher seq) are dropped");
  epochs[shard] = 5;
  live.received('peer', [stock(other, 1, 4)]);
  t.same(seqs(), [10, 8], 'older than the epoch in the membership view: dropped, even for a SKU never seen');
  held.set(shard, 6);
  live.local({ type: 'stock', state: { sku: 'S', available: 1, held: 0, sold: 0, seq: 9 } });
  live.received('peer', [stock('S', 30, 5), stock(other, 2, 5)]);
  t.same(seqs(), [10, 8], 'this node owns the shard at a newer epoch: peers with older ones are not heard');
  live.received('peer', [stock('S', 31, 7)]);
  t.same(seqs(), [10, 8, 31], 'a newer owner is heard');
  t.same(live.stats, { received: 3, stale: 5 }, 'delivered and stale notices are counted');
});

t.test('pushing: to the live peers that follow a SKU (all of them to one that never said); a peer whose connection opens is told what this node follows and gets the latest it follows; dead peers are let go', async (t) => {
  const peers = await Promise.all(
    ['p0', 'p1'].map(async (nodeId) => {
      const notes: Note[] = [];
      const server = await startEndpoint(async () => ({ ok: false, code: 'unavailable', detail: 'no shards here' }), {}, {
        onNotes: (_peer, pushed) => notes.push(...pushed),
      });
      t.teardown(server.stop);
      const info: NodeInfo = { nodeId, url: server.url, alive: true, leaving: false, shards: [] };
      return { server, notes, info };
    }),
  );
  const [p0, p1] = peers as [(typeof peers)[0], (typeof peers)[0]];
  const self: NodeInfo = { nodeId: 'me', url: 'http://127.0.0.1:1', alive: true, leaving: false, shards: [0, 1, 2, 3] };
  let view: ClusterSnapshot = { self: 'me', shardCount: 4, nodes: [self, p0.info], owners: [], epochs: [1, 1, 1, 1] };
  const pool = new ForwardPool({
    secret: CLUSTER_TEST_SECRET,
    selfNodeId: 'me',
    limits: defaultTransportLimits,
    log: testLog,
    onOpen: (url) => live.resync(url),
  });
  const live = new ClusterLive({
    push: true,
    shardCount: 4,
    snapshot: () => view,
    pool,
    epochOf: () => 1,
    deliver: () => undefined,
    peerSyncMs: 50,
    maxTrackedSkus: 100,
    log: testLog,
  });
  t.teardown(() => {
    live.close();
    pool.close();
  });
  const state = (sku: string, seq: number) => ({ sku, available: 10 - seq, held: seq, sold: 0, seq });
  const stocks = (notes: Note[]) => notes.flatMap((note) => ('n' in note && note.n.type === 'stock' ? [`${note.n.state.sku}${note.n.state.seq}`] : []));
  const follows = (notes: Note[]) => notes.flatMap((note) => ('f' in note ? [note.f === 'reset' ? 'reset' : `${note.f} ${note.sku}`] : []));
  const settle = async (what: string, done: () => boolean) => until(what, async () => (done() ? true : null));

  live.start();
  await settle('p0 is told reset', () => follows(p0.notes).length >= 1);
  t.same(follows(p0.notes), ['reset'], 'a connection opens: reset (nothing is followed here yet)');
  live.follow('X', true);
  live.follow('Y', true);
  live.follow('Y', true);
  live.follow('Y', false);
  await settle('p0 hears X and Y', () => follows(p0.notes).length >= 3);
  live.follow('X', false);
  await settle('p0 hears X let go', () => follows(p0.notes).length >= 4);
  t.same(follows(p0.notes).slice(1), ['on X', 'on Y', 'off X'], "the node's first follower and its last one, not each front end's");
  t.throws(() => live.follow('Z', false), /nobody here follows/, 'letting go of a SKU never followed is a bug');

  // p0 never said what it follows (a node before following): it gets every notice.
  live.local({ type: 'stock', state: state('A', 1) });
  live.local({ type: 'stock', state: state('B', 1) });
  await settle('p0 has A and B', () => stocks(p0.notes).length >= 2);
  t.same(stocks(p0.notes), ['A1', 'B1'], 'a peer that never said what it follows gets every SKU');

  live.received('p0', [{ f: 'reset' }, { f: 'on', sku: 'A' }]);
  live.local({ type: 'stock', state: state('B', 2) });
  live.local({ type: 'stock', state: state('A', 2) });
  await settle('p0 has A2', () => stocks(p0.notes).includes('A2'));
  live.received('p0', [{ f: 'on', sku: 'B' }]);
  await settle('p0 has B2', () => stocks(p0.notes).includes('B2'));
  t.same(stocks(p0.notes), ['A1', 'B1', 'A2', 'B2'], 'once it follows A only, B is not pushed; when it follows B it gets its latest at once');
  live.received('p0', [{ f: 'off', sku: 'A' }]);
  live.local({ type: 'stock', state: state('A', 3) });
  live.local({ type: 'stock', state: state('B', 3) });
  await settle('p0 has B3', () => stocks(p0.notes).includes('B3'));
  t.notOk(stocks(p0.notes).includes('A3'), 'a SKU it let go is no longer pushed');
  // A peer that follows more than maxTrackedSkus (100 here) is no longer tracked SKU by SKU: it gets everything.
  live.received('p0', Array.from({ length: 100 }, (_, i) => ({ f: 'on' as const, sku: `M${i}` })));
  live.local({ type: 'stock', state: state('C', 1) });
  await settle('p0 has C1', () => stocks(p0.notes).includes('C1'));
  t.pass('past the bound, a SKU it never named is pushed too');
  live.received('p0', [{ f: 'reset' }, { f: 'on', sku: 'B' }]);

  live.follow('W', true);
  view = { ...view, nodes: [self, p0.info, p1.info] };
  await settle('p1 joined and got the latest states', () => stocks(p1.notes).length >= 2);
  t.same(follows(p1.notes), ['reset', 'on Y', 'on W'], 'a peer whose connection opens is told what this node follows');
  t.same(stocks(p1.notes), ['A3', 'B3', 'C1'], 'and gets the latest notice of each SKU (it never said what it follows)');

  view = { ...view, nodes: [self, { ...p0.info, alive: false }, p1.info] };
  await settle('the dead peer is let go', () => p0.server.endpoint.connections() === 0);
  t.notOk(pool.peers().includes(p0.info.url), 'its client is forgotten');
  live.local({ type: 'passivated', sku: 'B' });
  await settle('p1 hears the passivation', () => p1.notes.some((n) => 'n' in n && n.n.type === 'passivated'));
  t.equal(p0.server.endpoint.connections(), 0, 'nothing is pushed to a dead peer');
});

t.test('without Redis: stock of every SKU reaches subscribers on every node over the cluster connection', (t) =>
  liveAcrossNodes(t, { REDIS_URL: '' }) // empty: unset, even if the test runner has one,
);

t.test('with REDIS_URL on every node: through Redis', async (t) => {
  const redis = await testRedis(t);
  if (redis === null || !(await redisAnswers(redis.url))) {
    skipBecause(t, `Redis unreachable (${redis?.url ?? 'no REDIS_URL and no redis-server on PATH'}): the cluster live-stock test through Redis did not run`);
    return;
  }
  await liveAcrossNodes(t, { REDIS_URL: redis.url, REDIS_STOCK_CHANNEL: `flashstock:test:${randomUUID()}` });
});
