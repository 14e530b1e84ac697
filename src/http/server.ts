import uWS from 'uWebSockets.js';
import type { Logger } from 'pino';
import type { ShopperVerifier } from '../auth/auth.js';
import type { Inventory } from '../inventory/inventory.js';
import type { Payments } from '../payments/payments.js';
import { signatureHeader } from '../payments/webhook.js';
import { Exchange, type ExchangeContext } from './exchange.js';
import {
  describeErrors,
  idempotencyKeyPattern,
  isUuid,
  skuPattern,
  toSkuConfig,
  validateCheckoutBody,
  validateReserveBody,
  validateSkuBody,
  validateWebhookBody,
} from './validation.js';

export interface HttpDependencies {
  inventory: Inventory;
  payments: Payments;
  log: Logger;
  verifyShopper: ShopperVerifier;
  isAdmin: (authorization: string | undefined) => boolean;
  /** Postgres answers (for /readyz). */
  databaseAlive: () => Promise<boolean>;
  maxBodyBytes: number;
  retryAfterSeconds: number;
  /** A fault no request should cause (an invariant broke): log and crash. */
  onFatal: (error: unknown) => void;
}

/** Each route pattern with the methods it serves, so other methods get a 405 with `Allow`. */
type Handler = (exchange: Exchange, req: uWS.HttpRequest) => void;
type Method = 'get' | 'put' | 'post' | 'del';

export function createHttpApp(deps: HttpDependencies): uWS.TemplatedApp {
  const { inventory, payments, log } = deps;
  const app = uWS.App();
  const ctx: ExchangeContext = {
    log,
    retryAfterSeconds: deps.retryAfterSeconds,
    maxBodyBytes: deps.maxBodyBytes,
    onUnexpected: (error, exchange) => {
      log.error({ err: error, reqId: exchange.requestId, method: exchange.method, url: exchange.url }, 'unexpected error');
      exchange.problem('internal', 'an unexpected error occurred; nothing was acknowledged');
      if (error instanceof Error && error.name === 'InvariantViolation') deps.onFatal(error);
    },
  };

  const route = (pattern: string, handlers: Partial<Record<Method, Handler>>): void => {
    const allow = Object.keys(handlers)
      .map((m) => (m === 'del' ? 'DELETE' : m.toUpperCase()))
      .join(', ');
    for (const [method, handler] of Object.entries(handlers) as [Method, Handler][]) {
      app[method](pattern, (res, req) => {
        const exchange = new Exchange(res, req, ctx);
        try {
          handler(exchange, req);
        } catch (error) {
          ctx.onUnexpected(error, exchange);
        }
      });
    }
    app.any(pattern, (res, req) => {
      new Exchange(res, req, ctx).problem('method_not_allowed', `${req.getCaseSensitiveMethod()} is not allowed here`, [
        ['allow', allow],
      ]);
    });
  };

  const shopper = (exchange: Exchange, req: uWS.HttpRequest): string | null => {
    const auth = deps.verifyShopper(req.getHeader('authorization'));
    if (auth.ok) return auth.shopperId;
    exchange.problem('unauthorized', auth.detail, [['www-authenticate', 'Bearer']]);
    return null;
  };

  const admin = (exchange: Exchange, req: uWS.HttpRequest): boolean => {
    if (deps.isAdmin(req.getHeader('authorization'))) return true;
    exchange.problem('unauthorized', 'an admin bearer token is required', [['www-authenticate', 'Bearer']]);
    return false;
  };

  /** Ids in paths are UUIDs; anything else cannot exist. */
  const uuidParameter = (exchange: Exchange, req: uWS.HttpRequest, what: string): string | null => {
    const id = req.getParameter(0).toLowerCase();
    if (isUuid(id)) return id;
    exchange.problem('not_found', `${what} ${id} does not exist`);
    return null;
  };

  const idempotencyKey = (exchange: Exchange, req: uWS.HttpRequest): string | null => {
    const key = req.getHeader('idempotency-key');
    if (idempotencyKeyPattern.test(key)) return key;
    exchange.problem(
      'invalid_request',
      key === '' ? 'the Idempotency-Key header is required' : 'Idempotency-Key must be 1-200 visible ASCII characters',
    );
    return null;
  };

  route('/healthz', {
    get: (exchange) => exchange.send(200, { status: 'ok' }),
  });

  route('/readyz', {
    get: (exchange) => {
      if (!inventory.isReady()) {
        exchange.problem('not_ready', 'allocators are still recovering from the event log');
        return;
      }
      exchange.settle(deps.databaseAlive(), (alive) => {
        if (alive) exchange.send(200, { status: 'ready' });
        else exchange.problem('not_ready', 'PostgreSQL does not answer');
      });
    },
  });

  route('/v1/admin/skus/:sku', {
    put: (exchange, req) => {
      if (!admin(exchange, req)) return;
      const sku = req.getParameter(0);
      if (!skuPattern.test(sku)) {
        exchange.problem('invalid_request', 'sku must be 1-64 characters of A-Z a-z 0-9 . _ -');
        return;
      }
      exchange.readJson(req, (body) => {
        if (!validateSkuBody(body)) {
          exchange.problem('invalid_request', describeErrors(validateSkuBody.errors));
          return;
        }
        const parsed = toSkuConfig(body);
        if (!parsed.ok) {
          exchange.problem('invalid_request', parsed.detail);
          return;
        }
        exchange.settle(inventory.configureSku(sku, parsed.config), (outcome) => {
          if (outcome.ok) exchange.send(outcome.value.created ? 201 : 200, outcome.value.view);
          else exchange.problem(outcome.code, outcome.detail);
        });
      });
    },
  });

  route('/v1/skus/:sku', {
    get: (exchange, req) => {
      const sku = req.getParameter(0);
      if (!skuPattern.test(sku)) {
        exchange.problem('invalid_request', 'sku must be 1-64 characters of A-Z a-z 0-9 . _ -');
        return;
      }
      exchange.settle(inventory.getSku(sku), (outcome) => exchange.outcome(outcome, 200));
    },
  });

  route('/v1/skus/:sku/reservations', {
    post: (exchange, req) => {
      const shopperId = shopper(exchange, req);
      if (shopperId === null) return;
      const sku = req.getParameter(0);
      if (!skuPattern.test(sku)) {
        exchange.problem('invalid_request', 'sku must be 1-64 characters of A-Z a-z 0-9 . _ -');
        return;
      }
      const key = idempotencyKey(exchange, req);
      if (key === null) return;
      exchange.readJson(req, (body) => {
        if (!validateReserveBody(body)) {
          exchange.problem('invalid_request', describeErrors(validateReserveBody.errors));
          return;
        }
        exchange.settle(
          inventory.reserve({ sku, shopperId, quantity: body.quantity, idempotencyKey: key }),
          (outcome) => exchange.outcome(outcome, 201),
        );
      });
    },
  });

  route('/v1/reservations/:id', {
    get: (exchange, req) => {
      const shopperId = shopper(exchange, req);
      if (shopperId === null) return;
      const id = uuidParameter(exchange, req, 'reservation');
      if (id === null) return;
      exchange.settle(inventory.getReservation(id, shopperId), (outcome) => exchange.outcome(outcome, 200));
    },
    del: (exchange, req) => {
      const shopperId = shopper(exchange, req);
      if (shopperId === null) return;
      const id = uuidParameter(exchange, req, 'reservation');
      if (id === null) return;
      exchange.settle(inventory.release(id, shopperId), (outcome) => exchange.outcome(outcome, 200));
    },
  });

  route('/v1/reservations/:id/checkout', {
    post: (exchange, req) => {
      const shopperId = shopper(exchange, req);
      if (shopperId === null) return;
      const id = uuidParameter(exchange, req, 'reservation');
      if (id === null) return;
      const key = idempotencyKey(exchange, req);
      if (key === null) return;
      exchange.readJson(req, (body) => {
        if (!validateCheckoutBody(body)) {
          exchange.problem('invalid_request', describeErrors(validateCheckoutBody.errors));
          return;
        }
        exchange.settle(
          inventory.checkout({ reservationId: id, shopperId, idempotencyKey: key, paymentMethod: body.paymentMethod }),
          (outcome) => exchange.outcome(outcome, 202),
        );
      });
    },
  });

  route('/v1/orders/:id', {
    get: (exchange, req) => {
      const shopperId = shopper(exchange, req);
      if (shopperId === null) return;
      const id = uuidParameter(exchange, req, 'order');
      if (id === null) return;
      exchange.settle(payments.order(id, shopperId), (view) => {
        if (view === null) exchange.problem('not_found', `order ${id} does not exist`);
        else exchange.send(200, view);
      });
    },
  });

  route('/v1/admin/orders/:id', {
    get: (exchange, req) => {
      if (!admin(exchange, req)) return;
      const id = uuidParameter(exchange, req, 'order');
      if (id === null) return;
      exchange.settle(payments.adminOrder(id), (view) => {
        if (view === null) exchange.problem('not_found', `order ${id} does not exist`);
        else exchange.send(200, view);
      });
    },
  });

  route('/v1/admin/audit', {
    get: (exchange, req) => {
      if (!admin(exchange, req)) return;
      exchange.settle(payments.audit(), (report) => exchange.send(200, report));
    },
  });

  route('/v1/payments/webhook', {
    post: (exchange, req) => {
      const signature = req.getHeader(signatureHeader);
      exchange.readBody(req, (raw) => {
        if (!payments.verifyWebhook(raw, signature)) {
          exchange.problem('unauthorized', `a valid ${signatureHeader} (sha256=<hex HMAC of the body>) is required`);
          return;
        }
        exchange.parseJson(raw, (body) => {
          if (!validateWebhookBody(body)) {
            exchange.problem('invalid_request', describeErrors(validateWebhookBody.errors));
            return;
          }
          exchange.settle(payments.webhook(body), (result) => {
            if (result.ok) exchange.send(200, { received: true, duplicate: result.duplicate, orderStatus: result.orderStatus });
            else exchange.problem(result.code, result.detail);
          });
        });
      });
    },
  });

  app.any('/*', (res, req) => {
    new Exchange(res, req, ctx).problem('not_found', `no route for ${req.getCaseSensitiveMethod()} ${req.getUrl()}`);
  });

  return app;
}
