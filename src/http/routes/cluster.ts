import type { HttpDependencies } from '../dependencies.js';
import { admin, skuParameter } from '../guards.js';
import type { Router } from '../router.js';
import { clusterView, placementView } from '../../cluster/admin-routes.js';

/** The cluster's admin views (src/cluster/admin-routes.ts): registered only on a cluster node. */
export function registerClusterRoutes(router: Router, deps: Pick<HttpDependencies, 'isAdmin' | 'cluster'>): void {
  const snapshot = deps.cluster;
  if (snapshot === undefined) return;

  router.route('/v1/admin/cluster', {
    get: (exchange, req) => {
      if (admin(exchange, req, deps.isAdmin)) exchange.settle(snapshot(), (view) => exchange.send(200, clusterView(view)));
    },
  });

  router.route('/v1/admin/skus/:sku/placement', {
    get: (exchange, req) => {
      if (!admin(exchange, req, deps.isAdmin)) return;
      const sku = skuParameter(exchange, req);
      if (sku !== null) exchange.settle(snapshot(), (view) => exchange.send(200, placementView(view, sku)));
    },
  });
}
