import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import t, { type Test } from 'tap';
import { maxChecksPerCall, RedisWindows } from '../src/ratelimit/redis-windows.js';
import { skipBecause } from './helpers/skip.js';
import { testRedis } from './helpers/redis.js';

/**
 * The Redis rate-limit windows: a turn's checks go as one script call; each is
 * admitted by its place in its key's count; the budget is shared by every
 * client of the same Redis; a batch Redis cannot answer fails each of its checks.
 */

async function redisOrSkip(t: Test): Promise<string | null> {
  const redis = await testRedis(t);
  if (redis === null) skipBecause(t, 'no REDIS_URL and no redis-server on PATH: the Redis windows were not tested');
  return redis?.url ?? null;
}

function client(t: Test, url: string): Redis {
  const redis = new Redis(url, { enableOfflineQueue: false, maxRetriesPerRequest: 0, enableAutoPipelining: true });
  redis.on('error', () => undefined);
  t.teardown(() => redis.disconnect());
  return redis;
}

async function ready(redis: Redis): Promise<void> {
  if (redis.status !== 'ready') await new Promise((resolve) => redis.once('ready', resolve));
}

/** A ready client of the test's Redis and a key prefix of its own (null: no Redis here, the test is skipped). */
async function readyClient(t: Test): Promise<{ redis: Redis; prefix: string } | null> {
  const url = await redisOrSkip(t);
  if (url === null) return null;
  const redis = client(t, url);
  await ready(redis);
  return { redis, prefix: `rw-${randomUUID()}` };
}

t.test('one turn: the first `points` checks of a key are admitted, the rest refused with the window left, and all are counted', async (t) => {
  const setup = await readyClient(t);
  if (setup === null) return;
  const { redis, prefix } = setup;
  const windows = new RedisWindows(redis, prefix, 3, 60);
  const verdicts = await Promise.all([0, 1, 2, 3, 4].map(() => windows.take('alice')));
  t.same(verdicts.slice(0, 3), [0, 0, 0], 'three of three admitted');
  for (const refused of verdicts.slice(3)) {
    t.ok(typeof refused === 'number' && refused > 55_000 && refused <= 60_000, `refused until the window ends (${String(refused)} ms)`);
  }
  t.equal(await redis.get(`${prefix}:alice`), '5', 'every check was counted, admitted or not');
  const ttl = await redis.pttl(`${prefix}:alice`);
  t.ok(ttl > 55_000 && ttl <= 60_000, 'the key lives for the window');
});

t.test('keys of one turn are counted apart, in the order their checks came', async (t) => {
  const setup = await readyClient(t);
  if (setup === null) return;
  const { redis, prefix } = setup;
  const windows = new RedisWindows(redis, prefix, 2, 60);
  const order = ['a', 'b', 'a', 'c', 'a', 'b', 'b'];
  const verdicts = await Promise.all(order.map((key) => windows.take(key)));
  t.same(
    verdicts.map((v) => v === 0),
    [true, true, true, true, false, true, false],
    'per key, the first two in order are admitted',
  );
  t.same([await redis.get(`${prefix}:a`), await redis.get(`${prefix}:b`), await redis.get(`${prefix}:c`)], ['3', '3', '1']);
});

t.test('a turn with more checks than one call carries: several calls, in order, one count', async (t) => {
  const setup = await readyClient(t);
  if (setup === null) return;
  const { redis, prefix } = setup;
  const checks = maxChecksPerCall * 2 + maxChecksPerCall / 2;
  const points = maxChecksPerCall + maxChecksPerCall / 2;
  const windows = new RedisWindows(redis, prefix, points, 60);
  const verdicts = await Promise.all(Array.from({ length: checks }, () => windows.take('flood')));
  const admitted = verdicts.filter((v) => v === 0).length;
  t.equal(admitted, points, 'exactly the budget is admitted');
  t.ok(verdicts.slice(0, points).every((v) => v === 0), 'and it is the first ones, across the calls');
  t.equal(await redis.get(`${prefix}:flood`), String(checks), 'every check counted once');
});

t.test('the budget is shared by every client of the Redis, across turns; an open window keeps its expiry', async (t) => {
  const url = await redisOrSkip(t);
  if (url === null) return;
  const [one, two] = [client(t, url), client(t, url)];
  await Promise.all([ready(one), ready(two)]);
  const prefix = `rw-${randomUUID()}`;
  // A window opened elsewhere (another node, or a test) with 30 s left: checks add to it.
  t.equal(await one.set(`${prefix}:shared`, 0, 'PX', 30_000, 'NX'), 'OK');
  const a = new RedisWindows(one, prefix, 4, 2);
  const b = new RedisWindows(two, prefix, 4, 2);
  t.same(await Promise.all([a.take('shared'), a.take('shared')]), [0, 0], 'node a spends two');
  t.same(await Promise.all([b.take('shared'), b.take('shared')]), [0, 0], 'node b spends the other two');
  const refused = await a.take('shared');
  t.ok(typeof refused === 'number' && refused > 25_000, `the fifth is refused until the 30 s window ends (${String(refused)} ms)`);
  t.equal(await one.get(`${prefix}:shared`), '5');
});

t.test('Redis away: every check of the batch hears an Error at once (the caller falls back)', async (t) => {
  const setup = await readyClient(t);
  if (setup === null) return;
  const { redis, prefix } = setup;
  const windows = new RedisWindows(redis, prefix, 10, 2);
  redis.disconnect();
  const verdicts = await Promise.all([windows.take('x'), windows.take('y')]);
  for (const verdict of verdicts) t.ok(verdict instanceof Error, `an Error: ${String(verdict)}`);
});

t.test('bad settings are refused', async (t) => {
  const url = await redisOrSkip(t);
  if (url === null) return;
  const redis = client(t, url);
  t.throws(() => new RedisWindows(redis, 'p', 0, 2), RangeError);
  t.throws(() => new RedisWindows(redis, 'p', 1.5, 2), RangeError);
  t.throws(() => new RedisWindows(redis, 'p', 3, 0), RangeError);
});
