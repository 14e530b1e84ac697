import type uWS from 'uWebSockets.js';
import { Exchange, type ExchangeContext } from './exchange.js';
import type { RouteMetrics } from '../metrics/metrics.js';

/**
 * The route table: `route(pattern, handlers)` adds the handlers of some
 * methods for a uWS pattern (`/v1/skus/:sku`); modules may add different
 * methods to the same pattern. `mount()` registers everything on the app once:
 * each method's handler, HEAD wherever GET is (the GET handler: Exchange sends
 * its status and headers without the body), and for every other method a 405
 * with `Allow`.
 */

export type Handler = (exchange: Exchange, req: uWS.HttpRequest) => void;

export interface RouteHandlers {
  get?: Handler;
  put?: Handler;
  post?: Handler;
  del?: Handler;
}

type Method = keyof RouteHandlers;

/** The HTTP method names, in the order `Allow` lists them (HEAD goes after GET). */
const methodNames: Record<Method, string> = { get: 'GET', put: 'PUT', post: 'POST', del: 'DELETE' };

export interface RegisteredRoute {
  pattern: string;
  /** Upper-case, as `Allow` lists them (HEAD with GET). */
  methods: string[];
}

export interface Router {
  route(pattern: string, handlers: RouteHandlers): void;
  /**
   * A pattern whose `methods` another module serves on the app directly (the
   * page at `/`, src/ws/page.ts): only its 405 for every other method is mounted here.
   */
  servedElsewhere(pattern: string, methods: string[]): void;
  /** What is registered (the OpenAPI test checks each is documented). */
  routes(): RegisteredRoute[];
  /** Register every route on the app; later `route` calls are refused. */
  mount(): void;
}

export function createRouter(app: uWS.TemplatedApp, ctx: ExchangeContext): Router {
  const table = new Map<string, RouteHandlers>();
  const elsewhere = new Map<string, string[]>();
  let mounted = false;

  const serve = (pattern: string, method: string, handler: Handler) => {
    const route = ctx.metrics?.route(pattern, method) ?? null;
    return (res: uWS.HttpResponse, req: uWS.HttpRequest) => serveOne(res, req, route, handler);
  };

  const serveOne = (res: uWS.HttpResponse, req: uWS.HttpRequest, route: RouteMetrics | null, handler: Handler) => {
    const exchange = new Exchange(res, req, ctx, route);
    try {
      handler(exchange, req);
    } catch (error) {
      ctx.onUnexpected(error, exchange);
    }
  };

  const allowed = (handlers: RouteHandlers): string[] =>
    (Object.keys(methodNames) as Method[])
      .filter((m) => handlers[m] !== undefined)
      .flatMap((m) => (m === 'get' ? ['GET', 'HEAD'] : [methodNames[m]]));

  const mountOne = (pattern: string, handlers: RouteHandlers): void => {
    for (const method of Object.keys(methodNames) as Method[]) {
      const handler = handlers[method];
      if (handler !== undefined) app[method](pattern, serve(pattern, methodNames[method], handler));
    }
    if (handlers.get !== undefined) app.head(pattern, serve(pattern, 'HEAD', handlers.get));
    mountNotAllowed(pattern, allowed(handlers).join(', '));
  };

  /** Every method of `pattern` without a handler of its own: 405 with `Allow`. */
  const mountNotAllowed = (pattern: string, allow: string): void => {
    app.any(pattern, (res, req) => {
      const route = ctx.metrics?.route(pattern, req.getCaseSensitiveMethod()) ?? null;
      new Exchange(res, req, ctx, route).problem('method_not_allowed', `${req.getCaseSensitiveMethod()} is not allowed here`, [
        ['allow', allow],
      ]);
    });
  };

  return {
    route(pattern, handlers) {
      if (mounted) throw new Error(`route ${pattern} added after the routes were mounted`);
      const existing = table.get(pattern) ?? {};
      for (const method of Object.keys(handlers) as Method[]) {
        if (handlers[method] === undefined) continue;
        if (existing[method] !== undefined) throw new Error(`${methodNames[method]} ${pattern} is registered twice`);
        existing[method] = handlers[method];
      }
      if (allowed(existing).length === 0) throw new Error(`route ${pattern} has no handlers`);
      table.set(pattern, existing);
    },
    servedElsewhere(pattern, methods) {
      if (mounted) throw new Error(`route ${pattern} added after the routes were mounted`);
      if (table.has(pattern) || elsewhere.has(pattern)) throw new Error(`${pattern} is registered twice`);
      elsewhere.set(pattern, methods);
    },
    routes: () => [...table].map(([pattern, handlers]) => ({ pattern, methods: allowed(handlers) })),
    mount() {
      if (mounted) return;
      mounted = true;
      for (const [pattern, handlers] of table) mountOne(pattern, handlers);
      for (const [pattern, methods] of elsewhere) mountNotAllowed(pattern, methods.join(', '));
    },
  };
}
