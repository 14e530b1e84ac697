import { Redis } from 'ioredis';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { Logger } from 'pino';
import { RateWindows } from './windows.js';

/**
 * Per-shopper and per-client-IP rate limits (rate-limiter-flexible) on the
 * routes and stream messages that change stock: reserve, checkout, release.
 *
 * A limit of N per second is a budget of 2·N per 2-second window, so a shopper
 * can burst to twice the rate and averages N. One node: the windows in memory
 * (windows.ts: one small integer per key, no timer, no promise, bounded by
 * `maxTrackedKeys`), checked synchronously.
 * With REDIS_URL: a Redis store (rate-limiter-flexible, the same windows), so
 * the budget is shared by every node; if
 * Redis is unreachable each node falls back to its own memory store (the
 * `insuranceLimiter`), logs that once per outage, and never waits for Redis:
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
  /** The service's clock (default Date.now): the memory windows open and end by it. */
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
/**
 * Keys (shoppers or addresses) one generation of the memory windows holds; at
 * most twice this many are kept (~100 B each: the key string and a Map entry).
 * Past it within one window, the least recent keys are forgotten (their next
 * request opens a fresh window).
 */
export const maxTrackedKeys = 262_144;
/** A Redis check slower than this is answered by the memory store instead (never hold a reservation). */
const redisTimeoutMs = 250;

export class RateLimits {
  /** Redis mode only (shared budgets); null without REDIS_URL or with the limit off. */
  private readonly shopper: RateLimiterAbstract | null;
  private readonly ip: RateLimiterAbstract | null;
  /** Memory mode only (no REDIS_URL); null in Redis mode or with the limit off. */
  private readonly shopperWindows: RateWindows | null;
  private readonly ipWindows: RateWindows | null;
  private readonly nowMs: () => number;
  private readonly redis: Redis | null = null;
  private fallbackLogged = false;

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
    const shared = this.redis !== null;
    this.shopper = shared ? this.limiter(`${prefix}:shopper`, settings.shopperPerSecond) : null;
    this.ip = shared ? this.limiter(`${prefix}:ip`, settings.ipPerSecond) : null;
    this.shopperWindows = shared ? null : windows(settings.shopperPerSecond, this.nowMs());
    this.ipWindows = shared ? null : windows(settings.ipPerSecond, this.nowMs());
  }

  get enabled(): boolean {
    return this.shopper !== null || this.ip !== null || this.shopperWindows !== null || this.ipWindows !== null;
  }

  get ipEnabled(): boolean {
    return this.ip !== null || this.ipWindows !== null;
  }

  /** True when `checkNow` answers (memory mode): no promise needed. */
  get synchronous(): boolean {
    return this.redis === null;
  }

  /**
   * Memory mode: spend one point of each applicable budget now; the first one
   * exhausted, or null. The address is checked first; a request it refuses
   * spends nothing of the shopper's. Redis mode: use `check`.
   */
  checkNow(shopperId: string | null, ip: string | null): LimitExceeded | null {
    const now = this.nowMs();
    if (this.ipWindows !== null && ip !== null) {
      const waitMs = this.ipWindows.take(ip, now);
      if (waitMs > 0) return this.exceeded('ip', waitMs);
    }
    if (this.shopperWindows !== null && shopperId !== null) {
      const waitMs = this.shopperWindows.take(shopperId, now);
      if (waitMs > 0) return this.exceeded('shopper', waitMs);
    }
    return null;
  }

  /** Spend one point of each applicable budget; the first one exhausted, or null. Never rejects. */
  check(shopperId: string | null, ip: string | null): Promise<LimitExceeded | null> {
    if (this.redis === null) return Promise.resolve(this.checkNow(shopperId, ip));
    const ipCheck = this.ip !== null && ip !== null ? this.consume(this.ip, 'ip', ip) : null;
    const shopperCheck = this.shopper !== null && shopperId !== null ? this.consume(this.shopper, 'shopper', shopperId) : null;
    // One check (the default: per shopper only) is returned as is: no extra promise per request.
    if (ipCheck === null) return shopperCheck === null ? Promise.resolve(null) : shopperCheck;
    if (shopperCheck === null) return ipCheck;
    return Promise.all([ipCheck, shopperCheck]).then(([ipVerdict, shopperVerdict]) => ipVerdict ?? shopperVerdict);
  }

  async close(): Promise<void> {
    this.redis?.disconnect();
  }

  private limiter(keyPrefix: string, perSecond: number): RateLimiterAbstract | null {
    if (perSecond <= 0) return null;
    const options = { keyPrefix, points: perSecond * windowSeconds, duration: windowSeconds };
    if (this.redis === null) return new RateLimiterMemory(options);
    const insurance = new RateLimiterMemory(options);
    const consume = insurance.consume.bind(insurance);
    // Every answer of the insurance limiter is a fallback: count it, log the first one.
    insurance.consume = (key, points, opts) => {
      this.fellBack(null);
      return consume(key, points, opts);
    };
    return new RateLimiterRedis({
      ...options,
      storeClient: this.redis,
      rejectIfRedisNotReady: true,
      insuranceLimiter: insurance,
    });
  }

  private consume(limiter: RateLimiterAbstract, limit: LimitName, key: string): Promise<LimitExceeded | null> {
    return limiter.consume(key).then(
      () => null,
      (outcome: unknown) => {
        if (outcome instanceof RateLimiterRes) return this.exceeded(limit, outcome.msBeforeNext);
        // Neither store could answer: let the request through rather than block it.
        this.log.error({ err: outcome, limit }, 'rate limit check failed; allowing the request');
        return null;
      },
    );
  }

  private exceeded(limit: LimitName, waitMs: number): LimitExceeded {
    this.observer?.limited(limit);
    return { limit, retryAfterSeconds: Math.max(1, Math.ceil(waitMs / 1000)) };
  }

  private fellBack(err: Error | null): void {
    if (err === null) this.observer?.fellBack();
    if (this.fallbackLogged) return;
    this.fallbackLogged = true;
    this.log.warn(
      err === null ? {} : { err: { message: err.message, code: (err as { code?: string }).code } },
      'rate limits: Redis unreachable; each node limits on its own (memory) until it is back',
    );
  }
}

function windows(perSecond: number, nowMs: number): RateWindows | null {
  return perSecond > 0 ? new RateWindows({ points: perSecond * windowSeconds, windowMs: windowSeconds * 1000, maxKeys: maxTrackedKeys }, nowMs) : null;
}
