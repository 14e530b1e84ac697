import t from 'tap';
import { randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import pino from 'pino';
import { startTestService, type TestService } from './helpers/service.js';
import { createTestDatabase } from './helpers/db.js';
import { connectStream, type Message, type StreamClient } from './helpers/stream-client.js';
import { spawnRedis, testRedis, redisServerPath } from './helpers/redis.js';
import { createStockFeed } from '../src/ws/fanout.js';
import { startChild } from './helpers/child.js';
import { clientFor } from './helpers/service.js';
import type { StockState } from '../src/inventory/inventory.js';
import { skipBecause } from './helpers/skip.js';

/**
 * Across nodes: two services on one Postgres and one Redis. Only node A writes
 * the test SKUs (two writers of one SKU would fence each other); subscribers on
 * node B must see every change. Then Redis goes away and comes back.
 */

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const stockOf = (sku: string) => (m: Message) => m.type === 'stock' && m.sku === sku;

async function until(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await sleep(20);
  }
}

async function stockUntil(client: StreamClient, sku: string, match: (m: Message) => boolean, timeoutMs = 5000): Promise<Message> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const message = await client.take(stockOf(sku), Math.max(1, deadline - Date.now()), `stock of ${sku}`);
    if (match(message)) return message;
  }
}

const redis = await testRedis(t);
if (redis === null) {
  skipBecause(t, 'no REDIS_URL and no redis-server on PATH: the cross-node (Redis) WebSocket tests did not run');
} else {
  await crossNodeTests(redis.url);
}

async function twoNodes(t: { teardown(fn: () => unknown): void }, redisUrl: string): Promise<[TestService, TestService]> {
  const database = await createTestDatabase(t);
  // A channel of its own, so parallel runs on one Redis do not see each other.
  const overrides = { redisUrl, redisStockChannel: `flashstock:test:${randomUUID()}` };
  const a = await startTestService(t, overrides, {}, database.url);
  const b = await startTestService(t, overrides, {}, database.url);
  await until('both nodes are on Redis', () => a.service.live!.stats.feed.redis === 'up' && b.service.live!.stats.feed.redis === 'up');
  return [a, b];
}

async function crossNodeTests(redisUrl: string): Promise<void> {
  t.test('two server processes (src/main.ts): a reservation on one is seen by a subscriber on the other', async (t) => {
    const database = await createTestDatabase(t);
    const env = { REDIS_URL: redisUrl, REDIS_STOCK_CHANNEL: `flashstock:test:${randomUUID()}`, AUDIT_CRON: '' };
    const a = await startChild(database.url, env);
    const b = await startChild(database.url, env);
    t.teardown(async () => {
      a.child.kill('SIGTERM');
      b.child.kill('SIGTERM');
      await Promise.all([a.exited, b.exited]);
    });
    const onA = clientFor(a.url);
    t.equal((await onA.putSku('XP-1', { stock: 10 })).status, 201);
    const subscriber = await connectStream(t, b.url);
    let initial: Message | null = null;
    for (let i = 0; i < 100 && initial === null; i++) {
      subscriber.send({ type: 'subscribe', skus: ['XP-1'] });
      const reply = await subscriber.take((m) => (m.type === 'stock' && m.sku === 'XP-1') || m.type === 'error', 5000, 'subscribe reply');
      if (reply.type === 'stock') initial = reply;
      else await sleep(50); // B has not heard of XP-1 through Redis yet
    }
    t.match(initial, { available: 10, held: 0 }, 'B knows the SKU A created, through Redis');
    t.equal((await onA.reserve('XP-1', 'alice', 3)).status, 201);
    t.match(await stockUntil(subscriber, 'XP-1', (m) => m.held === 3), { available: 7, held: 3 }, 'the reservation on A reaches the subscriber on B');
  });

  t.test('a reservation on one node is seen by a subscriber on the other', async (t) => {
    const [a, b] = await twoNodes(t, redisUrl);
    // Created on A after B started: B knows it only through Redis.
    t.equal((await a.putSku('XN-1', { stock: 20, perShopperLimit: 10 })).status, 201);
    const onB = await connectStream(t, b.url);
    await until('B has heard of XN-1', () => b.service.live!.stats.feed.remoteSkus > 0);
    onB.send({ type: 'subscribe', skus: ['XN-1', 'XN-UNKNOWN'] });
    t.match(await onB.take(stockOf('XN-1')), { available: 20, held: 0, seq: 1 }, 'initial state on B from A');
    t.match(await onB.take((m) => m.type === 'error'), { code: 'not_found', sku: 'XN-UNKNOWN' });

    t.equal((await a.reserve('XN-1', 'alice', 2)).status, 201);
    t.match(await stockUntil(onB, 'XN-1', (m) => m.held === 2), { available: 18, held: 2, seq: 2 }, 'an HTTP reservation on A, seen on B');

    const buyerOnA = await connectStream(t, a.url, a.token('bob'));
    const reply = await buyerOnA.request({ type: 'reserve', id: '1', sku: 'XN-1', quantity: 3, idempotencyKey: randomUUID() });
    t.equal(reply.type, 'reservation');
    t.match(await stockUntil(onB, 'XN-1', (m) => m.held === 5), { available: 15, seq: 3 }, 'a WebSocket reservation on A, seen on B');

    // A burst on A: B ends on A's latest state, coalesced.
    const burstStarted = Date.now();
    await Promise.all(Array.from({ length: 10 }, (_, i) => a.reserve('XN-1', `burst-${i}`)));
    const view = (await a.call('GET', '/v1/skus/XN-1')).body;
    t.match(await stockUntil(onB, 'XN-1', (m) => m.held === view.held), { available: view.available, held: 15 }, 'B ends on the latest state');
    const burstMs = Date.now() - burstStarted;
    await sleep(300);
    const onBUpdates = onB.log.filter((l) => l.message.type === 'stock' && l.message.sku === 'XN-1');
    t.same(onBUpdates.at(-1)!.message.held, 15, 'nothing after it');
    // At most one per 100 ms, counted over the burst (arrival gaps say little: the client shares the
    // nodes' event loop). States held > 5 exist only after the burst began; every such message but the
    // last was published before B's socket saw the final one, ≥ 99 ms apart (a timer may fire 1 ms early).
    const burstUpdates = onBUpdates.filter((l) => l.message.held > 5).length;
    t.ok(burstUpdates < 10, `coalesced: ${burstUpdates} messages for 10 changes`);
    t.ok(burstUpdates <= Math.floor(burstMs / 99) + 2, `B's socket gets at most one update per 100 ms (${burstUpdates} in ${burstMs} ms)`);

    // B's own SKUs go the other way.
    t.equal((await b.putSku('XN-B', { stock: 4 })).status, 201);
    const onA = await connectStream(t, a.url);
    await until('A has heard of XN-B', () => a.service.live!.stats.feed.remoteSkus > 0);
    onA.send({ type: 'subscribe', skus: ['XN-B'] });
    t.match(await onA.take(stockOf('XN-B')), { available: 4 });
    await b.reserve('XN-B', 'carol');
    t.match(await stockUntil(onA, 'XN-B', (m) => m.available === 3), { held: 1 }, 'and back from B to A');
  });

  t.test('Redis going away: reservations go on, updates across nodes pause, then resume on the latest state', async (t) => {
    // An outage needs a server we may stop: our own, even when REDIS_URL is set.
    const own = redis!.controllable ? redis! : await spawnRedis(t);
    if (own === null) {
      skipBecause(t, 'REDIS_URL is external and no redis-server is on PATH to simulate an outage');
      return;
    }
    const [a, b] = await twoNodes(t, own.url);
    await a.putSku('OUT-1', { stock: 100, perShopperLimit: 100 });
    const onA = await connectStream(t, a.url);
    const onB = await connectStream(t, b.url);
    await until('B has heard of OUT-1', () => b.service.live!.stats.feed.remoteSkus > 0);
    onA.send({ type: 'subscribe', skus: ['OUT-1'] });
    onB.send({ type: 'subscribe', skus: ['OUT-1'] });
    await onA.take(stockOf('OUT-1'));
    await onB.take(stockOf('OUT-1'));

    await own.stop();
    await until('both nodes see Redis down', () => a.service.live!.stats.feed.redis === 'down' && b.service.live!.stats.feed.redis === 'down');
    const started = Date.now();
    const results = await Promise.all(Array.from({ length: 5 }, (_, i) => a.reserve('OUT-1', `during-${i}`)));
    t.same(results.map((r) => r.status), [201, 201, 201, 201, 201], 'HTTP reservations succeed without Redis');
    const ws = await connectStream(t, a.url, a.token('ws-during'));
    t.equal((await ws.request({ type: 'reserve', id: 'd', sku: 'OUT-1', quantity: 1, idempotencyKey: 'd' })).type, 'reservation', 'so do WebSocket ones');
    // Waiting for Redis would mean waiting until the test restarts it; 10 s is a margin any machine meets.
    t.ok(Date.now() - started < 10_000, `and promptly (${Date.now() - started} ms)`);
    t.match(await stockUntil(onA, 'OUT-1', (m) => m.held === 6), { available: 94 }, 'local subscribers still get updates');
    await sleep(500);
    t.notOk(onB.log.some((l) => l.message.type === 'stock' && l.message.held > 0), 'the other node gets nothing meanwhile');

    await own.start();
    await until('both nodes are back on Redis', () => a.service.live!.stats.feed.redis === 'up' && b.service.live!.stats.feed.redis === 'up', 15_000);
    t.match(await stockUntil(onB, 'OUT-1', (m) => m.held === 6), { available: 94, held: 6 }, 'back: the other node gets the latest state');
    await a.reserve('OUT-1', 'after');
    t.match(await stockUntil(onB, 'OUT-1', (m) => m.held === 7), { available: 93 }, 'and the updates after it');
  });

  t.test('a node starts while Redis is unreachable, and serves anyway', async (t) => {
    const database = await createTestDatabase(t);
    const dead = 'redis://127.0.0.1:1';
    const node = await startTestService(t, { redisUrl: dead }, {}, database.url);
    t.equal(node.service.live!.stats.feed.redis, 'down');
    await node.putSku('NR-1', { stock: 3 });
    const client = await connectStream(t, node.url, node.token('nr'));
    client.send({ type: 'subscribe', skus: ['NR-1'] });
    await client.take(stockOf('NR-1'));
    t.equal((await client.request({ type: 'reserve', id: 'x', sku: 'NR-1', quantity: 1, idempotencyKey: 'x' })).type, 'reservation');
    t.match(await stockUntil(client, 'NR-1', (m) => m.held === 1), { available: 2 });
  });

  t.test("a turn's changes go to the other nodes in one message, each SKU's latest state in it", async (t) => {
    const channel = `flashstock:test:${randomUUID()}`;
    const log = pino({ level: 'silent' });
    const heard: StockState[] = [];
    const reader = createStockFeed({ readLocal: () => null, deliver: (state) => heard.push(state), coalesceMs: 50, log, redisUrl, channel });
    t.teardown(() => reader.close());
    // Each feed asks everyone to republish once it is subscribed: the reader hears its own request,
    // then the writer's (the reader is subscribed by then). Nothing else travels until the test writes.
    await until('the reader is on Redis', () => reader.stats.redis === 'up' && reader.stats.receivedFromRedis === 1);
    const writes = new Map<string, StockState>();
    const writer = createStockFeed({ readLocal: (sku) => writes.get(sku) ?? null, deliver: () => undefined, coalesceMs: 50, log, redisUrl, channel });
    t.teardown(() => writer.close());
    await until("the writer is on Redis and the reader heard its request", () => writer.stats.redis === 'up' && reader.stats.receivedFromRedis === 2);
    const before = reader.stats.receivedFromRedis;
    const skus = ['T1', 'T2', 'T3'];
    for (const [i, sku] of skus.entries()) {
      writes.set(sku, { sku, available: 10 - i, held: i, sold: 0, seq: 1 });
      writer.changed(sku);
    }
    writes.set('T2', { sku: 'T2', available: 5, held: 4, sold: 0, seq: 2 }); // changed again in the same turn: the latest goes
    await until('the reader heard all three', () => skus.every((sku) => reader.latest(sku) !== null));
    t.equal(reader.stats.receivedFromRedis - before, 1, 'one message for the turn');
    t.same(reader.latest('T2'), { sku: 'T2', available: 5, held: 4, sold: 0, seq: 2 }, 'with the state as it was when it was sent');
    t.same(heard.map((s) => s.sku).sort(), skus, 'each handed to the sockets once');
  });

  t.test('the feed logs one warning per outage and a line when Redis is back', async (t) => {
    if (redisServerPath() === null) {
      skipBecause(t, 'no redis-server on PATH to simulate an outage');
      return;
    }
    const own = (await spawnRedis(t))!;
    const lines: { level: number; msg: string }[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        for (const line of chunk.toString().split('\n')) if (line !== '') lines.push(JSON.parse(line));
        done();
      },
    });
    const log = pino({ level: 'info' }, sink);
    const delivered: StockState[] = [];
    const states = new Map<string, StockState>([['F', { sku: 'F', available: 1, held: 0, sold: 0, seq: 1 }]]);
    const feed = createStockFeed({
      readLocal: (sku) => states.get(sku) ?? null,
      deliver: (state) => delivered.push(state),
      coalesceMs: 50,
      log,
      redisUrl: own.url,
      channel: `flashstock:test:${randomUUID()}`,
    });
    t.teardown(() => feed.close());
    await until('connected', () => feed.stats.redis === 'up');
    await own.stop();
    await until('down', () => feed.stats.redis === 'down');
    feed.changed('F');
    await sleep(3000); // several reconnect attempts
    t.equal(delivered.length, 1, 'local delivery goes on without Redis');
    const warnings = lines.filter((l) => l.level === 40);
    t.equal(warnings.length, 1, 'exactly one warning for the outage');
    t.match(warnings[0]?.msg, /Redis unreachable.*reservations and local updates continue/);
    await own.start();
    await until('up again', () => feed.stats.redis === 'up', 15_000);
    t.ok(lines.some((l) => l.level === 30 && /resumed/.test(l.msg)), 'a line says updates resumed');
  });
}
