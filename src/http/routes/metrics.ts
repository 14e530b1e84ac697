import type { HttpDependencies } from '../dependencies.js';
import type { Router } from '../router.js';

/** `GET /metrics`: this service's Prometheus registry in the text format (see src/metrics). */
export function registerMetricsRoutes(router: Router, deps: Pick<HttpDependencies, 'metrics'>): void {
  const { metrics } = deps;
  router.route('/metrics', {
    get: (exchange) => exchange.settle(metrics.text(), (text) => exchange.sendText(200, text, metrics.contentType())),
  });
}
