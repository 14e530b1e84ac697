import type { Exchange } from './exchange.js';
import type { RateLimits } from '../ratelimit/rate-limits.js';

/**
 * Run `then` unless `shopperId` (or the client's address, when per-IP limits
 * are on) is over its rate limit; then answer 429 `rate_limited` with
 * `Retry-After`. With every limit off, `then` runs at once (no promise, no cost).
 */
export function withinRateLimit(exchange: Exchange, limits: RateLimits | undefined, shopperId: string, then: () => void): void {
  if (limits === undefined || !limits.enabled) {
    then();
    return;
  }
  const ip = limits.ipEnabled && !exchange.aborted ? exchange.clientIp : null;
  exchange.settle(limits.check(shopperId, ip), (exceeded) => {
    if (exceeded === null) {
      then();
      return;
    }
    exchange.problem(
      'rate_limited',
      exceeded.limit === 'ip' ? 'too many requests from this address; slow down' : 'too many requests for this shopper; slow down',
      [['retry-after', String(exceeded.retryAfterSeconds)]],
    );
  });
}
