import { Redis } from 'ioredis';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { Logger } from 'pino';

/**
 * Per-shopper and per-client-IP rate limits (rate-limiter-flexible) on the
 * routes and stream messages that change stock: reserve, checkout, release.
 *
 * A limit of N per second is a budget of 2·N per 2-second window, so a shopper
 * can burst to twice the rate and averages N. One node: an in-memory store.
 * With REDIS_URL: a Redis store, so the budget is shared by every node; if
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

export class RateLimits {
  private readonly shopper: RateLimiterAbstract | null;
  private readonly ip: RateLimiterAbstract | null;
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
    this.shopper = this.limiter(`${prefix}:shopper`, settings.shopperPerSecond);
    this.ip = this.limiter(`${prefix}:ip`, settings.ipPerSecond);
  }

  get enabled(): boolean {
    return this.shopper !== null || this.ip !== null;
  }

  get ipEnabled(): boolean {
    return this.ip !== null;
  }

  /** Spend one point of each applicable budget; the first one exhausted, or null. Never rejects. */
  check(shopperId: string | null, ip: string | null): Promise<LimitExceeded | null> {
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
        if (outcome instanceof RateLimiterRes) {
          this.observer?.limited(limit);
          return { limit, retryAfterSeconds: Math.max(1, Math.ceil(outcome.msBeforeNext / 1000)) };
        }
        // Neither store could answer: let the request through rather than block it.
        this.log.error({ err: outcome, limit }, 'rate limit check failed; allowing the request');
        return null;
      },
    );
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
