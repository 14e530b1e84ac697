import t from 'tap';
import { Redis } from 'ioredis';
import { randomUUID } from 'node:crypto';
import { startTestService, type TestService } from './helpers/service.js';
import { connectStream } from './helpers/stream-client.js';
import { createTestDatabase } from './helpers/db.js';
import { spawnRedis, testRedis } from './helpers/redis.js';
import { manualClock } from './helpers/clock.js';
import { skipBecause } from './helpers/skip.js';
import { parseTrustProxy, clientIp } from '../src/ratelimit/client-ip.js';

/**
 * 429 `rate_limited` with Retry-After: per shopper (default on), per client IP
 * (off by default), X-Forwarded-For only with TRUST_PROXY, shared across nodes
 * through Redis, and a memory fallback when Redis is away.
 *
 * The memory store's windows run on a clock the test moves (frontEndNowMs): a
 * burst lands in one window however slow the machine. The Redis store's windows
 * run on Redis's own clock; those checks keep a margin (see `withinOneWindow`).
 */

async function burst(api: TestService, sku: string, shopper: string, count: number, headers: Record<string, string> = {}) {
  const results = [];
  for (let i = 0; i < count; i++) {
    results.push(
      await api.call('POST', `/v1/skus/${sku}/reservations`, {
        shopper,
        body: { quantity: 1 },
        headers: { 'idempotency-key': randomUUID(), ...headers },
      }),
    );
  }
  return results;
}

t.test('client IP: right-most untrusted X-Forwarded-For hop, only from a trusted peer', async (t) => {
  const on = parseTrustProxy('on');
  t.equal(clientIp('127.0.0.1', '203.0.113.9', null), '127.0.0.1', 'off: the header is ignored');
  t.equal(clientIp('127.0.0.1', '203.0.113.9', on), '203.0.113.9');
  t.equal(clientIp('127.0.0.1', '198.51.100.1, 203.0.113.9, 10.0.0.2', on), '203.0.113.9', 'right-most untrusted');
  t.equal(clientIp('198.51.100.7', '203.0.113.9', on), '198.51.100.7', 'an untrusted peer cannot forward');
  t.equal(clientIp('::ffff:127.0.0.1', '', on), '127.0.0.1', 'IPv4-mapped addresses are plain IPv4');
  t.equal(clientIp('127.0.0.1', 'garbage', on), '127.0.0.1', 'garbage: the peer');
  const list = parseTrustProxy('192.0.2.1, 10.1.0.0/16');
  t.equal(clientIp('192.0.2.1', '203.0.113.9, 10.1.2.3', list), '203.0.113.9');
  t.equal(clientIp('127.0.0.1', '203.0.113.9', list), '127.0.0.1', 'loopback is not in this list');
  t.throws(() => parseTrustProxy('10.0.0.0/33'));
  t.throws(() => parseTrustProxy('nope'));
});

t.test('per shopper: burst of twice the rate, then 429 with Retry-After; other shoppers unaffected', async (t) => {
  const clock = manualClock();
  const api = await startTestService(t, { rateLimitShopperPerSecond: 3 }, { frontEndNowMs: clock.nowMs });
  await api.putSku('RL-1', { stock: 100, perShopperLimit: 100 });
  const results = await burst(api, 'RL-1', 'rl-alice', 8);
  t.same(
    results.map((r) => r.status),
    [201, 201, 201, 201, 201, 201, 429, 429],
    'burst = 2 × 3',
  );
  const limited = results[6]!;
  t.match(limited.body, { status: 429, code: 'rate_limited', type: /rate-limited/ });
  t.match(limited.headers.get('content-type'), /problem\+json/);
  t.equal(limited.headers.get('retry-after'), '2', 'the whole 2-second window is left');
  t.equal((await burst(api, 'RL-1', 'rl-bob', 1))[0]!.status, 201, 'another shopper has its own budget');
  // Release and checkout draw on the same budget.
  clock.advance(1200);
  const release = await api.call('DELETE', `/v1/reservations/${results[0]!.body.reservationId}`, { shopper: 'rl-alice' });
  t.equal(release.status, 429);
  t.equal(release.headers.get('retry-after'), '1', '0.8 s left: rounded up to 1');
  clock.advance(799);
  t.equal((await burst(api, 'RL-1', 'rl-alice', 1))[0]!.status, 429, '1 ms before the window closes: still limited');
  clock.advance(1);
  t.equal((await burst(api, 'RL-1', 'rl-alice', 1))[0]!.status, 201, 'after Retry-After the shopper may go on');
  const text = await (await fetch(`${api.metricsUrl}/metrics`)).text();
  t.match(text, /flashstock_rate_limited_total\{limit="shopper"\} 4\n/);
  t.match(text, /flashstock_http_requests_total\{route="\/v1\/skus\/:sku\/reservations",method="POST",status="429"\} 3\n/);
});

t.test('per IP: off by default, on when set; X-Forwarded-For counts only with TRUST_PROXY', async (t) => {
  const db = await createTestDatabase(t);
  const off = await startTestService(t, { rateLimitShopperPerSecond: 1000 }, {}, db.url);
  await off.putSku('RL-IP', { stock: 1000, perShopperLimit: 1000 });
  const many = await Promise.all(Array.from({ length: 30 }, (_, i) => burst(off, 'RL-IP', `ip-off-${i}`, 1)));
  t.ok(many.every(([r]) => r!.status === 201), 'per-IP limit off: 30 shoppers from one address all pass');
  await off.service.stop();

  const clock = manualClock();
  const ipOnly = await startTestService(
    t,
    { rateLimitShopperPerSecond: 1000, rateLimitIpPerSecond: 2 },
    { frontEndNowMs: clock.nowMs },
    (await createTestDatabase(t)).url,
  );
  await ipOnly.putSku('RL-IP', { stock: 1000, perShopperLimit: 1000 });
  const fromOne = [];
  for (let i = 0; i < 6; i++) fromOne.push((await burst(ipOnly, 'RL-IP', `ip-on-${i}`, 1))[0]!.status);
  t.same(fromOne, [201, 201, 201, 201, 429, 429], 'one address, many shoppers: 2 × 2 then 429');
  const spoofed = await burst(ipOnly, 'RL-IP', 'ip-spoof', 1, { 'x-forwarded-for': '203.0.113.50' });
  t.equal(spoofed[0]!.status, 429, 'TRUST_PROXY off: X-Forwarded-For does not buy a new budget');

  const proxied = await startTestService(
    t,
    { rateLimitShopperPerSecond: 1000, rateLimitIpPerSecond: 2, trustProxy: parseTrustProxy('on') },
    { frontEndNowMs: clock.nowMs },
    (await createTestDatabase(t)).url,
  );
  await proxied.putSku('RL-IP', { stock: 1000, perShopperLimit: 1000 });
  const a = await burst(proxied, 'RL-IP', 'px-a', 5, { 'x-forwarded-for': '203.0.113.1' });
  const b = await burst(proxied, 'RL-IP', 'px-b', 1, { 'x-forwarded-for': '203.0.113.2' });
  t.same(
    a.map((r) => r.status),
    [201, 201, 201, 201, 429],
    'TRUST_PROXY on: the forwarded client has its budget',
  );
  t.equal(b[0]!.status, 201, 'another forwarded client has its own');
});

t.test('stream: reserve/release past the limit get a 429 error message; the socket stays open', async (t) => {
  const clock = manualClock();
  const api = await startTestService(t, { rateLimitShopperPerSecond: 2, wsMaxMessagesPerSecond: 100 }, { frontEndNowMs: clock.nowMs });
  await api.putSku('RL-WS', { stock: 100, perShopperLimit: 100 });
  const client = await connectStream(t, api.url, api.token('rl-ws'));
  const replies = [];
  // The upgrade spent one point of the shopper's 4.
  for (let i = 0; i < 5; i++) {
    replies.push(await client.request({ type: 'reserve', id: `r${i}`, sku: 'RL-WS', quantity: 1, idempotencyKey: randomUUID() }));
  }
  t.same(
    replies.map((r) => r.type),
    ['reservation', 'reservation', 'reservation', 'error', 'error'],
  );
  t.match(replies[3], { type: 'error', id: 'r3', status: 429, code: 'rate_limited' });
  t.notOk(client.isClosed(), 'no 1008: rate limiting is not a flood');
  const release = await client.request({ type: 'release', id: 'x', reservationId: replies[0].reservation.reservationId });
  t.match(release, { type: 'error', status: 429, code: 'rate_limited' });
  client.close();
});

t.test('Redis store: the budget is shared by two nodes; Redis down: memory fallback, reservations go on', async (t) => {
  const redis = (await spawnRedis(t)) ?? (await testRedis(t));
  if (redis === null) {
    skipBecause(t, 'no REDIS_URL and no redis-server on PATH: the cross-node rate limit was not tested');
    return;
  }
  const db = await createTestDatabase(t);
  const clock = manualClock();
  const overrides = { redisUrl: redis.url, redisStockChannel: `rl-${randomUUID()}`, rateLimitShopperPerSecond: 2 };
  const a = await startTestService(t, overrides, { frontEndNowMs: clock.nowMs }, db.url);
  await a.putSku('RL-R', { stock: 1000, perShopperLimit: 1000 });
  // Node b serves a SKU of its own: two writers of one SKU would fence each other.
  const b = await startTestService(t, overrides, { frontEndNowMs: clock.nowMs }, db.url);
  await b.putSku('RL-R2', { stock: 1000, perShopperLimit: 1000 });
  // The Redis store's window runs on Redis's clock, which the test cannot move: it opens this shopper's
  // window itself, 60 s long instead of 2 (the store adds to an open window and keeps its expiry), so the
  // five requests below share one window however slow the machine.
  const shopper = `rl-redis-${randomUUID()}`;
  const key = `flashstock:rl:shopper:${shopper}`;
  const direct = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  direct.on('error', () => undefined); // the outage below; this client is closed before it anyway
  t.equal(await direct.set(key, 0, 'PX', 60_000, 'NX'), 'OK');
  const onA = await burst(a, 'RL-R', shopper, 2);
  const onB = await burst(b, 'RL-R2', shopper, 3);
  t.same(onA.map((r) => r.status), [201, 201]);
  t.same(onB.map((r) => r.status), [201, 201, 429], 'node b knows what node a spent');
  t.equal(await direct.get(key), '5', 'all five were counted in that one window in Redis');
  t.ok(Number(onB[2]!.headers.get('retry-after')) > 2, 'Retry-After comes from the Redis window');
  direct.disconnect();

  if (!redis.controllable) {
    skipBecause(t, 'REDIS_URL is external and cannot be stopped: the Redis-down fallback was not tested');
    return;
  }
  const fallbacks = async () => Number(/flashstock_rate_limiter_fallbacks_total (\d+)/.exec(await (await fetch(`${a.metricsUrl}/metrics`)).text())![1]);
  const before = await fallbacks();
  await redis.stop();
  const fresh = `rl-down-${randomUUID()}`;
  // The memory store runs on the test's clock: five in one window whatever the machine.
  const started = Date.now();
  const down = await burst(a, 'RL-R', fresh, 5);
  t.same(down.map((r) => r.status), [201, 201, 201, 201, 429], 'Redis down: the memory store limits this node');
  t.equal((await fallbacks()) - before, 5, 'each of the five was answered by the memory store');
  // Waiting for Redis would mean waiting for it to come back: forever. 20 s is no race on any machine.
  t.ok(Date.now() - started < 20_000, 'no reservation waited for Redis');
  await redis.start();
});
