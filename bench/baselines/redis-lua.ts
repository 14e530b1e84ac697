import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import uWS from 'uWebSockets.js';
import { adminSkuRoute, env, problem, reply, reservationRoute, serve, type Answer } from './common.js';

/**
 * The seeds' gatekeeper: a Lua script checks and decrements the stock in Redis
 * and the shopper hears yes at once. NOT DURABLE: nothing reaches a disk
 * before the answer (the harness starts its own Redis with persistence off;
 * the seeds persisted "later").
 */

const redis = new Redis(env('REDIS_URL'), { enableAutoPipelining: true, maxRetriesPerRequest: 1 });
const jwtSecret = env('JWT_SECRET');

// KEYS: sku hash, shopper totals hash, reservations hash. ARGV: shopper, quantity, reservation id.
redis.defineCommand('reserve', {
  numberOfKeys: 3,
  lua: `
    local available = redis.call('HGET', KEYS[1], 'available')
    if not available then return -1 end
    local q = tonumber(ARGV[2])
    local limit = tonumber(redis.call('HGET', KEYS[1], 'perShopperLimit'))
    local mine = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
    if mine + q > limit then return -2 end
    if tonumber(available) < q then return -3 end
    redis.call('HINCRBY', KEYS[1], 'available', -q)
    redis.call('HINCRBY', KEYS[2], ARGV[1], q)
    redis.call('HSET', KEYS[3], ARGV[3], ARGV[1] .. ' ' .. q)
    return 1`,
});
type Reserving = { reserve(a: string, b: string, c: string, shopper: string, q: number, id: string): Promise<number> };

const skuKey = (sku: string): string => `bench:sku:{${sku}}`;
const shoppersKey = (sku: string): string => `bench:shoppers:{${sku}}`;
const reservationsKey = (sku: string): string => `bench:reservations:{${sku}}`;

function view(sku: string, h: Record<string, string>): unknown {
  const stock = Number(h.stock);
  const available = Number(h.available);
  return {
    sku,
    stock,
    available,
    held: stock - available,
    sold: 0,
    perShopperLimit: Number(h.perShopperLimit),
    holdSeconds: Number(h.holdSeconds),
    priceCents: Number(h.priceCents),
    currency: h.currency,
    startsAt: null,
    endsAt: null,
  };
}

const app = uWS
  .App()
  .post(
    '/v1/skus/:sku/reservations',
    reservationRoute(jwtSecret, async ({ sku, shopperId, quantity }): Promise<Answer> => {
      const id = randomUUID();
      try {
        const r = await (redis as unknown as Reserving).reserve(skuKey(sku), shoppersKey(sku), reservationsKey(sku), shopperId, quantity, id);
        if (r === -1) return problem(404, 'not_found', `no SKU ${sku}`);
        if (r === -2) return problem(409, 'limit_exceeded', 'over the per-shopper limit');
        if (r === -3) return problem(409, 'sold_out', 'not enough left');
        return { status: 201, body: { reservationId: id, sku, quantity, status: 'held', expiresAt: new Date(Date.now() + 600_000).toISOString() } };
      } catch (error) {
        return problem(503, 'unavailable', (error as Error).message);
      }
    }),
  )
  .get('/v1/skus/:sku', (res, req) => {
    const sku = req.getParameter(0) ?? '';
    res.onAborted(() => {
      (res as { aborted?: boolean }).aborted = true;
    });
    redis.hgetall(skuKey(sku)).then(
      (h) => reply(res, h.stock === undefined ? problem(404, 'not_found', `no SKU ${sku}`) : { status: 200, body: view(sku, h) }),
      (error: Error) => reply(res, problem(503, 'unavailable', error.message)),
    );
  })
  .put(
    '/v1/admin/skus/:sku',
    adminSkuRoute(env('ADMIN_TOKEN'), async (sku, input): Promise<Answer> => {
      const existed = (await redis.exists(skuKey(sku))) === 1;
      if (existed) {
        const h = await redis.hgetall(skuKey(sku));
        const taken = Number(h.stock) - Number(h.available);
        await redis.hset(skuKey(sku), { ...input, available: input.stock - taken });
      } else {
        await redis.hset(skuKey(sku), { ...input, available: input.stock });
      }
      return { status: existed ? 200 : 201, body: view(sku, await redis.hgetall(skuKey(sku))) };
    }),
  )
  .get('/healthz', (res) => reply(res, { status: 200, body: { ok: true } }));

serve(app, async () => {
  await redis.quit();
});
