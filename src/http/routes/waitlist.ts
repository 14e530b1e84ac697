import type { HttpDependencies } from '../dependencies.js';
import { idempotencyKey, jsonBody, shopper, skuParameter } from '../guards.js';
import type { Router } from '../router.js';
import { ownedById } from './owned.js';
import { withinRateLimit } from '../rate-limit.js';
import { validateReserveBody } from '../validation.js';

/** A SKU's waitlist as its shoppers use it: join while sold out, read the entry (position, offer), leave. */
export function registerWaitlistRoutes(
  router: Router,
  deps: Pick<HttpDependencies, 'inventory' | 'verifyShopper' | 'rateLimits'>,
): void {
  const { inventory, verifyShopper, rateLimits } = deps;

  router.route('/v1/skus/:sku/waitlist', {
    post: (exchange, req) => {
      const shopperId = shopper(exchange, req, verifyShopper);
      if (shopperId === null) return;
      const sku = skuParameter(exchange, req);
      if (sku === null) return;
      const key = idempotencyKey(exchange, req);
      if (key === null) return;
      // The body is a reservation's: {"quantity"}.
      jsonBody(exchange, req, validateReserveBody, ({ quantity }) =>
        withinRateLimit(exchange, rateLimits, shopperId, () =>
          exchange.settle(inventory.joinWaitlist({ sku, shopperId, quantity, idempotencyKey: key }), (outcome) =>
            exchange.outcome(outcome, 201),
          ),
        ),
      );
    },
  });

  router.route(
    '/v1/waitlist/:id',
    ownedById(
      deps,
      'waitlist entry',
      (id, shopperId) => inventory.getWaitlistEntry(id, shopperId),
      (id, shopperId) => inventory.leaveWaitlist(id, shopperId),
    ),
  );
}
