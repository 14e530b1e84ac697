import type { HttpDependencies } from '../dependencies.js';
import { idempotencyKey, jsonBody, shopper, skuParameter, uuidParameter } from '../guards.js';
import { admissionToken } from './queue.js';
import type { Router } from '../router.js';
import { ownedById } from './owned.js';
import { withinRateLimit } from '../rate-limit.js';
import { validateCheckoutBody, validateReserveBody } from '../validation.js';

/** A shopper's holds: reserve, read, release, and check out. */
export function registerReservationRoutes(
  router: Router,
  deps: Pick<HttpDependencies, 'inventory' | 'verifyShopper' | 'metrics' | 'rateLimits' | 'admission'>,
): void {
  const { inventory, verifyShopper, metrics, rateLimits } = deps;

  router.route('/v1/skus/:sku/reservations', {
    post: (exchange, req) => {
      const shopperId = shopper(exchange, req, verifyShopper);
      if (shopperId === null) return;
      const sku = skuParameter(exchange, req);
      if (sku === null) return;
      const key = idempotencyKey(exchange, req);
      if (key === null) return;
      const admitted = admissionToken(exchange, req, deps.admission, shopperId, sku);
      if (admitted === null) return;
      jsonBody(exchange, req, validateReserveBody, ({ quantity }) =>
        withinRateLimit(exchange, rateLimits, shopperId, () =>
          exchange.settle(inventory.reserve({ sku, shopperId, quantity, idempotencyKey: key, admitted }), (outcome) => {
            metrics.reservationAnswered(outcome.ok, outcome.ok ? undefined : outcome.code);
            exchange.outcome(outcome, 201);
          }),
        ),
      );
    },
  });

  router.route(
    '/v1/reservations/:id',
    ownedById(
      deps,
      'reservation',
      (id, shopperId) => inventory.getReservation(id, shopperId),
      (id, shopperId) => inventory.release(id, shopperId),
    ),
  );

  router.route('/v1/reservations/:id/checkout', {
    post: (exchange, req) => {
      const shopperId = shopper(exchange, req, verifyShopper);
      if (shopperId === null) return;
      const id = uuidParameter(exchange, req, 'reservation');
      if (id === null) return;
      const key = idempotencyKey(exchange, req);
      if (key === null) return;
      jsonBody(exchange, req, validateCheckoutBody, ({ paymentMethod }) =>
        withinRateLimit(exchange, rateLimits, shopperId, () =>
          exchange.settle(inventory.checkout({ reservationId: id, shopperId, idempotencyKey: key, paymentMethod }), (outcome) =>
            exchange.outcome(outcome, 202),
          ),
        ),
      );
    },
  });
}
