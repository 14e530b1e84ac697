import { parseCartBody } from '../../carts/body.js';
import type { CartOutcome } from '../../carts/types.js';
import type { HttpDependencies } from '../dependencies.js';
import type { Exchange } from '../exchange.js';
import { idempotencyKey, jsonBody, shopper, uuidParameter } from '../guards.js';
import { validateCheckoutBody } from '../validation.js';
import { problem } from '../problem.js';
import type { Router } from '../router.js';
import { ownedById } from './owned.js';
import { withinRateLimit } from '../rate-limit.js';

/** Default CART_MAX_LINES. */
export const defaultCartMaxLines = 20;

/** Carts: several SKUs held all-or-nothing (docs/carts.md). */
export function registerCartRoutes(router: Router, deps: Pick<HttpDependencies, 'carts' | 'cartMaxLines' | 'verifyShopper' | 'rateLimits' | 'metrics'>): void {
  const { verifyShopper, rateLimits } = deps;
  // Always registered (the route table is the same everywhere); a front end built without carts has none to find.
  const carts = deps.carts ?? noCarts;
  const maxLines = deps.cartMaxLines ?? defaultCartMaxLines;

  router.route('/v1/carts', {
    post: (exchange, req) => {
      const shopperId = shopper(exchange, req, verifyShopper);
      if (shopperId === null) return;
      const key = idempotencyKey(exchange, req);
      if (key === null) return;
      exchange.readJson(req, (body) => {
        const items = parseCartBody(body, maxLines);
        if (!Array.isArray(items)) {
          deps.metrics.carts.inc({ outcome: 'invalid_request' });
          cartOutcome(exchange, { ok: false, code: 'invalid_request', ...items }, 201);
          return;
        }
        withinRateLimit(exchange, rateLimits, shopperId, () =>
          exchange.settle(carts.create(shopperId, key, items), (outcome) => {
            deps.metrics.carts.inc({ outcome: outcome.ok ? 'held' : outcome.code });
            cartOutcome(exchange, outcome, 201);
          }),
        );
      });
    },
  });

  router.route(
    '/v1/carts/:id',
    ownedById(
      deps,
      'cart',
      (id, shopperId) => carts.get(id, shopperId),
      (id, shopperId) => carts.release(id, shopperId),
    ),
  );

  router.route('/v1/carts/:id/checkout', {
    post: (exchange, req) => {
      const shopperId = shopper(exchange, req, verifyShopper);
      if (shopperId === null) return;
      const id = uuidParameter(exchange, req, 'cart');
      if (id === null) return;
      const key = idempotencyKey(exchange, req);
      if (key === null) return;
      jsonBody(exchange, req, validateCheckoutBody, ({ paymentMethod }) =>
        withinRateLimit(exchange, rateLimits, shopperId, () =>
          exchange.settle(carts.checkout(id, shopperId, key, paymentMethod), (outcome) => exchange.outcome(outcome, 202)),
        ),
      );
    },
  });
}

const noCart = async () => ({ ok: false as const, code: 'not_found' as const, detail: 'carts are not served here' });
const noCarts: NonNullable<HttpDependencies['carts']> = { create: noCart, get: noCart, release: noCart, checkout: noCart };

/** The cart, or its problem naming the failing line (`line`, `sku`) when one failed. */
function cartOutcome<T>(exchange: Exchange, outcome: CartOutcome<T> | { ok: false; code: 'invalid_request'; detail: string; line?: number; sku?: string }, status: number): void {
  if (outcome.ok) {
    exchange.send(status, outcome.value);
    return;
  }
  if (outcome.line === undefined) {
    exchange.problem(outcome.code, outcome.detail);
    return;
  }
  const body = { ...problem(outcome.code, outcome.detail, exchange.url), line: outcome.line, ...(outcome.sku === undefined ? {} : { sku: outcome.sku }) };
  const headers: [string, string][] = body.status === 503 ? [['retry-after', String(exchange.ctx.retryAfterSeconds)]] : [];
  exchange.send(body.status, body, 'application/problem+json', headers);
}
