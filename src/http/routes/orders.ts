import type { HttpDependencies } from '../dependencies.js';
import { admin, shopper, uuidParameter } from '../guards.js';
import type { Router } from '../router.js';

/** Orders as their shopper sees them, as an admin sees them, and the ledger audit. */
export function registerOrderRoutes(router: Router, deps: Pick<HttpDependencies, 'payments' | 'verifyShopper' | 'isAdmin'>): void {
  const { payments } = deps;

  router.route('/v1/orders/:id', {
    get: (exchange, req) => {
      const shopperId = shopper(exchange, req, deps.verifyShopper);
      if (shopperId === null) return;
      const id = uuidParameter(exchange, req, 'order');
      if (id === null) return;
      exchange.settle(payments.order(id, shopperId), (view) => exchange.found(view, `order ${id} does not exist`));
    },
  });

  router.route('/v1/admin/orders/:id', {
    get: (exchange, req) => {
      if (!admin(exchange, req, deps.isAdmin)) return;
      const id = uuidParameter(exchange, req, 'order');
      if (id === null) return;
      exchange.settle(payments.adminOrder(id), (view) => exchange.found(view, `order ${id} does not exist`));
    },
  });

  router.route('/v1/admin/audit', {
    get: (exchange, req) => {
      if (!admin(exchange, req, deps.isAdmin)) return;
      exchange.settle(payments.audit(), (report) => exchange.send(200, report));
    },
  });
}
