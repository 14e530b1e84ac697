import type { HttpDependencies } from '../dependencies.js';
import type { Router } from '../router.js';

/** Liveness and readiness, as Kubernetes probes them. */
export function registerOpsRoutes(router: Router, deps: Pick<HttpDependencies, 'inventory' | 'databaseAlive'>): void {
  router.route('/healthz', {
    get: (exchange) => exchange.send(200, { status: 'ok' }),
  });

  router.route('/readyz', {
    get: (exchange) => {
      if (!deps.inventory.isReady()) return exchange.problem('not_ready', 'allocators are still recovering from the event log');
      exchange.settle(deps.databaseAlive(), (alive) => {
        if (alive) exchange.send(200, { status: 'ready' });
        else exchange.problem('not_ready', 'PostgreSQL does not answer');
      });
    },
  });
}
