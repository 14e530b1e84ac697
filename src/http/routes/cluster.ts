import type { HttpDependencies } from '../dependencies.js';
import type { Exchange } from '../exchange.js';
import { admin, skuParameter } from '../guards.js';
import type { Router } from '../router.js';
import { clusterView, placementView } from '../../cluster/admin-routes.js';

/**
 * The cluster's admin views (src/cluster/admin-routes.ts). Registered on every
 * process, so that their methods and refusals are the same everywhere: a
 * process that is not a cluster node answers an admin with 404 `not_found`.
 */
export function registerClusterRoutes(router: Router, deps: Pick<HttpDependencies, 'isAdmin' | 'cluster'>): void {
  const snapshot = deps.cluster;
  const notANode = (exchange: Exchange): void => exchange.problem('not_found', 'this process is not a cluster node (CLUSTER_SECRET is not set)');

  router.route('/v1/admin/cluster', {
    get: (exchange, req) => {
      if (!admin(exchange, req, deps.isAdmin)) return;
      if (snapshot === undefined) return notANode(exchange);
      exchange.settle(snapshot(), (view) => exchange.send(200, clusterView(view)));
    },
  });

  router.route('/v1/admin/skus/:sku/placement', {
    get: (exchange, req) => {
      if (!admin(exchange, req, deps.isAdmin)) return;
      const sku = skuParameter(exchange, req);
      if (sku === null) return;
      if (snapshot === undefined) return notANode(exchange);
      exchange.settle(snapshot(), (view) => exchange.send(200, placementView(view, sku)));
    },
  });
}
