import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { RedisWindows } from './redis-windows.js';
import { RateWindows } from './windows.js';

/**
 * Per-shopper and per-client-IP rate limits on the routes and stream messages
 * that change stock: reserve, checkout, release.
 *
 * A limit of N per second is a budget of 2·N per 2-second window, so a shopper
 * can burst to twice the rate and averages N. One node: an in-memory store
 * (windows.ts: one small integer per key, no timer, no promise, no object per
 * check, bounded by `maxTrackedKeys`; on the clock it is handed). With REDIS_URL: a Redis store, so
 * the budget is shared by every node; if Redis is unreachable each node falls
 * back to its own memory store, logs that once per outage, and never waits for Redis:
 * the client does not queue commands while disconnected, so a check fails over
 * at once instead of holding a reservation.
 */

export interface RateLimitSettings {
  /** 0 = off. */
  shopperPerSecond: number;
  /** 0 = off. */
  ipPerSecond: number;
  redisUrl: string | null;
  /** Redis key prefix (deployments sharing a Redis, tests). */
  keyPrefix?: string;
  /** The clock the memory store's windows are counted by (default Date.now; tests hand in their own). */
  nowMs?: () => number;
}

export type LimitName = 'shopper' | 'ip';

export interface LimitExceeded {
  limit: LimitName;
  /** Seconds until the window frees a point, rounded up (Retry-After). */
  retryAfterSeconds: number;
}

export interface RateLimitObserver {
  limited(limit: LimitName): void;
  fellBack(): void;
}

/** Window length: a budget of `windowSeconds · rate` points per window gives a burst of twice the rate. */
export const windowSeconds = 2;
/** A Redis check slower than this is answered by the memory store instead (never hold a reservation). */
const redisTimeoutMs = 250;
/** Keys one generation of the memory windows holds before it rotates early: at most twice this many are held per limit. */
export const maxTrackedKeys = 262_144;

/** One limit: its memory budget, and the Redis store in front of it when REDIS_URL is set. */
interface Limiter {
  name: LimitName;
  memory: RateWindows;
  redis: RedisWindows | null;
}

export class RateLimits {
  private readonly shopper: Limiter | null;
  private readonly ip: Limiter | null;
  private readonly redis: Redis | null = null;
  private fallbackLogged = false;
  private readonly nowMs: () => number;

  constructor(
    settings: RateLimitSettings,
    private readonly log: Logger,
    private readonly observer: RateLimitObserver | null = null,
  ) {
    const prefix = settings.keyPrefix ?? 'flashstock:rl';
    const anyLimit = settings.shopperPerSecond > 0 || settings.ipPerSecond > 0;
    if (settings.redisUrl !== null && anyLimit) {
      this.redis = new Redis(settings.redisUrl, {
        // Fail fast while disconnected: the insurance limiter answers instead.
        enableOfflineQueue: false,
        // Every check of an event-loop turn in one write (a pipeline), not a write per request.
        enableAutoPipelining: true,
        maxRetriesPerRequest: 0,
        commandTimeout: redisTimeoutMs,
        retryStrategy: (attempt) => Math.min(attempt * 200, 2000),
      });
      this.redis.on('error', (err: Error) => this.fellBack(err));
      this.redis.on('ready', () => {
        if (this.fallbackLogged) this.log.info('rate limits: Redis is back; limits are shared across nodes again');
        this.fallbackLogged = false;
      });
    }
    this.nowMs = settings.nowMs ?? Date.now;
    this.shopper = this.limiter('shopper', `${prefix}:shopper`, settings.shopperPerSecond);
    this.ip = this.limiter('ip', `${prefix}:ip`, settings.ipPerSecond);
  }

  get enabled(): boolean {
    return this.shopper !== null || this.ip !== null;
  }

  get ipEnabled(): boolean {
    return this.ip !== null;
  }

  /** True when `checkNow` answers (memory mode, no REDIS_URL): no promise needed. */
  get synchronous(): boolean {
    return this.redis === null;
  }

  /**
   * Memory mode: spend one point of each applicable budget now; the first one
   * exhausted, or null. The address is checked first; a request it refuses
   * spends nothing of the shopper's. Redis mode: use `check`.
   */
  checkNow(shopperId: string | null, ip: string | null): LimitExceeded | null {
    if (this.ip !== null && ip !== null) {
      const exceeded = this.spendInMemory(this.ip, ip);
      if (exceeded !== null) return exceeded;
    }
    return this.shopper !== null && shopperId !== null ? this.spendInMemory(this.shopper, shopperId) : null;
  }

  /** Spend one point of each applicable budget; the first one exhausted, or null. Never rejects. */
  check(shopperId: string | null, ip: string | null): Promise<LimitExceeded | null> {
    const ipCheck = this.ip !== null && ip !== null ? this.consume(this.ip, ip) : null;
    const shopperCheck = this.shopper !== null && shopperId !== null ? this.consume(this.shopper, shopperId) : null;
    // One check (the default: per shopper only) is returned as is: no extra promise per request.
    if (ipCheck === null) return shopperCheck === null ? Promise.resolve(null) : shopperCheck;
    if (shopperCheck === null) return ipCheck;
    return Promise.all([ipCheck, shopperCheck]).then(([ipVerdict, shopperVerdict]) => ipVerdict ?? shopperVerdict);
  }

  async close(): Promise<void> {
    this.redis?.disconnect();
  }

  private limiter(name: LimitName, keyPrefix: string, perSecond: number): Limiter | null {
    if (perSecond <= 0) return null;
    const points = perSecond * windowSeconds;
    const memory = new RateWindows({ points, windowMs: windowSeconds * 1000, maxKeys: maxTrackedKeys }, this.nowMs());
    // A check Redis cannot answer is answered by `memory` (consume below).
    const redis = this.redis === null ? null : new RedisWindows(this.redis, keyPrefix, points, windowSeconds);
    return { name, memory, redis };
  }

  private consume(limiter: Limiter, key: string): Promise<LimitExceeded | null> {
    if (limiter.redis === null) return Promise.resolve(this.spendInMemory(limiter, key));
    return limiter.redis.take(key).then((verdict) => {
      if (verdict === 0) return null;
      if (typeof verdict === 'number') return this.exceeded(limiter.name, verdict);
      // Redis could not answer: this node's memory budget does, and the fallback is counted.
      this.observer?.fellBack();
      this.fellBack(verdict);
      return this.spendInMemory(limiter, key);
    });
  }

  private spendInMemory(limiter: Limiter, key: string): LimitExceeded | null {
    const msBeforeNext = limiter.memory.take(key, this.nowMs());
    return msBeforeNext === 0 ? null : this.exceeded(limiter.name, msBeforeNext);
  }

  private exceeded(limit: LimitName, msBeforeNext: number): LimitExceeded {
    this.observer?.limited(limit);
    return { limit, retryAfterSeconds: Math.max(1, Math.ceil(msBeforeNext / 1000)) };
  }

  /** Log the first fallback of an outage. */
  private fellBack(err: Error | null): void {
    if (this.fallbackLogged) return;
    this.fallbackLogged = true;
    this.log.warn(
      err === null ? {} : { err: { message: err.message, code: (err as { code?: string }).code } },
      'rate limits: Redis unreachable; each node limits on its own (memory) until it is back',
    );
  }
}
