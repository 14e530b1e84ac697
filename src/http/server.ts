import uWS from 'uWebSockets.js';
import type { HttpDependencies } from './dependencies.js';
import { Exchange, type ExchangeContext } from './exchange.js';
import { createRouter, type Router } from './router.js';
import { registerOpenApiRoutes } from './routes/openapi.js';
import { registerOpsRoutes } from './routes/ops.js';
import { registerOrderRoutes } from './routes/orders.js';
import { registerPaymentRoutes } from './routes/payments.js';
import { registerReservationRoutes } from './routes/reservations.js';
import { registerWaitlistRoutes } from './routes/waitlist.js';
import { registerSkuRoutes } from './routes/skus.js';
import { registerStreamRoutes } from './routes/stream.js';
import { registerClusterRoutes } from './routes/cluster.js';
import { unmatchedRoute } from '../metrics/metrics.js';
import { registerDropRoutes } from './routes/drops.js';
import { registerCartRoutes } from './routes/carts.js';
import { registerQueueRoutes } from './routes/queue.js';

export type { HttpDependencies } from './dependencies.js';

/**
 * The HTTP front end: the route modules on one uWS app, and a 404 problem for
 * everything else. A new module exports `register…Routes(router, deps)` and
 * gets one line here.
 */
export function createHttpApp(deps: HttpDependencies): uWS.TemplatedApp {
  const app = uWS.App();
  const ctx = exchangeContext(deps);
  const router = createRouter(app, ctx);
  registerRoutes(router, deps);
  // The page (src/ws/page.ts) answers GET and HEAD of `/` on the app itself; any other method is a 405 as on every route.
  router.servedElsewhere('/', ['GET', 'HEAD']);
  router.mount();
  app.any('/*', (res, req) => {
    new Exchange(res, req, ctx, deps.metrics.route(unmatchedRoute, req.getCaseSensitiveMethod())).problem('not_found', `no route for ${req.getCaseSensitiveMethod()} ${req.getUrl()}`);
  });
  return app;
}

/** Every route module; the OpenAPI test lists what this registers. */
export function registerRoutes(router: Router, deps: HttpDependencies): void {
  registerOpsRoutes(router, deps);
  registerOpenApiRoutes(router);
  registerSkuRoutes(router, deps);
  registerReservationRoutes(router, deps);
  registerWaitlistRoutes(router, deps);
  registerOrderRoutes(router, deps);
  registerPaymentRoutes(router, deps);
  registerDropRoutes(router, deps);
  registerCartRoutes(router, deps);
  registerQueueRoutes(router, deps);
  registerStreamRoutes(router);
  // No /metrics here: it has its own listener (src/metrics/listener.ts), off the public port.
  registerClusterRoutes(router, deps);
}

function exchangeContext(deps: HttpDependencies): ExchangeContext {
  const { log } = deps;
  return {
    log,
    retryAfterSeconds: deps.retryAfterSeconds,
    maxBodyBytes: deps.maxBodyBytes,
    trustProxy: deps.trustProxy ?? null,
    metrics: deps.metrics,
    onUnexpected: (error, exchange) => {
      log.error({ err: error, reqId: exchange.requestId, method: exchange.method, url: exchange.url }, 'unexpected error');
      exchange.problem('internal', 'an unexpected error occurred; nothing was acknowledged');
      if (error instanceof Error && error.name === 'InvariantViolation') deps.onFatal(error);
    },
  };
}
