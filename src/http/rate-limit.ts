import type { Exchange } from './exchange.js';
import type { LimitExceeded, RateLimits } from '../ratelimit/rate-limits.js';

/**
 * Run `then` unless `shopperId` (or the client's address, when per-IP limits
 * are on) is over its rate limit; then answer 429 `rate_limited` with
 * `Retry-After`. With every limit off, or the limits in memory (no Redis), it
 * decides at once (no promise).
 */
export function withinRateLimit(exchange: Exchange, limits: RateLimits | undefined, shopperId: string, then: () => void): void {
  if (limits === undefined || !limits.enabled) {
    then();
    return;
  }
  const ip = limits.ipEnabled && !exchange.aborted ? exchange.clientIp : null;
  if (limits.synchronous) {
    // Memory windows: decided now, no promise.
    const exceeded = limits.checkNow(shopperId, ip);
    if (exceeded === null) then();
    else refuse(exchange, exceeded);
    return;
  }
  exchange.settle(limits.check(shopperId, ip), (exceeded) => {
    if (exceeded === null) then();
    else refuse(exchange, exceeded);
  });
}

function refuse(exchange: Exchange, exceeded: LimitExceeded): void {
  exchange.problem(
    'rate_limited',
    exceeded.limit === 'ip' ? 'too many requests from this address; slow down' : 'too many requests for this shopper; slow down',
    [['retry-after', String(exceeded.retryAfterSeconds)]],
  );
}
