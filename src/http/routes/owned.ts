import type { Outcome } from '../../inventory/inventory.js';
import type { HttpDependencies } from '../dependencies.js';
import { shopper, uuidParameter } from '../guards.js';
import { withinRateLimit } from '../rate-limit.js';
import type { RouteHandlers } from '../router.js';

type ById<T> = (id: string, shopperId: string) => Promise<Outcome<T>>;

/**
 * GET and DELETE of one of the shopper's own things by its id (a reservation, a
 * waitlist entry): another shopper's is 404, both answer 200 with its view, and
 * the DELETE spends the shopper's rate budget.
 */
export function ownedById<T>(
  deps: Pick<HttpDependencies, 'verifyShopper' | 'rateLimits'>,
  what: string,
  read: ById<T>,
  remove: ById<T>,
): RouteHandlers {
  return {
    get: (exchange, req) => {
      const shopperId = shopper(exchange, req, deps.verifyShopper);
      if (shopperId === null) return;
      const id = uuidParameter(exchange, req, what);
      if (id === null) return;
      exchange.settle(read(id, shopperId), (outcome) => exchange.outcome(outcome, 200));
    },
    del: (exchange, req) => {
      const shopperId = shopper(exchange, req, deps.verifyShopper);
      if (shopperId === null) return;
      const id = uuidParameter(exchange, req, what);
      if (id === null) return;
      withinRateLimit(exchange, deps.rateLimits, shopperId, () =>
        exchange.settle(remove(id, shopperId), (outcome) => exchange.outcome(outcome, 200)),
      );
    },
  };
}
