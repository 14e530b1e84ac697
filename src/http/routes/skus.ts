import type { HttpDependencies } from '../dependencies.js';
import { admin, jsonBody, skuParameter } from '../guards.js';
import type { Router } from '../router.js';
import { toSkuConfig, validateSkuBody } from '../validation.js';

/** Configuring and archiving a SKU (admin) and reading it (public). */
export function registerSkuRoutes(router: Router, deps: Pick<HttpDependencies, 'inventory' | 'isAdmin'>): void {
  const { inventory } = deps;

  router.route('/v1/admin/skus/:sku', {
    put: (exchange, req) => {
      if (!admin(exchange, req, deps.isAdmin)) return;
      const sku = skuParameter(exchange, req);
      if (sku === null) return;
      jsonBody(exchange, req, validateSkuBody, (body) => {
        const parsed = toSkuConfig(body);
        if (!parsed.ok) return exchange.problem('invalid_request', parsed.detail);
        exchange.settle(inventory.configureSku(sku, parsed.config), (outcome) => {
          if (outcome.ok) exchange.send(outcome.value.created ? 201 : 200, outcome.value.view);
          else exchange.problem(outcome.code, outcome.detail);
        });
      });
    },
    // Archive: the sale ends for good (holds released, payments still settle), the SKU leaves memory; PUT reopens.
    del: (exchange, req) => {
      if (!admin(exchange, req, deps.isAdmin)) return;
      const sku = skuParameter(exchange, req);
      if (sku === null) return;
      exchange.settle(inventory.archiveSku(sku), (outcome) => exchange.outcome(outcome, 200));
    },
  });

  router.route('/v1/skus/:sku', {
    get: (exchange, req) => {
      const sku = skuParameter(exchange, req);
      if (sku === null) return;
      exchange.settle(inventory.getSku(sku), (outcome) => exchange.outcome(outcome, 200));
    },
  });
}
