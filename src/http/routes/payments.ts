import { signatureHeader } from '../../payments/webhook.js';
import type { HttpDependencies } from '../dependencies.js';
import type { Router } from '../router.js';
import { describeErrors, validateWebhookBody } from '../validation.js';

/** The payment provider's webhook: the signature covers the exact body bytes. */
export function registerPaymentRoutes(router: Router, deps: Pick<HttpDependencies, 'payments'>): void {
  const { payments } = deps;

  router.route('/v1/payments/webhook', {
    post: (exchange, req) => {
      const signature = req.getHeader(signatureHeader);
      exchange.readBody(req, (raw) => {
        if (!payments.verifyWebhook(raw, signature)) {
          return exchange.problem('unauthorized', `a valid ${signatureHeader} (sha256=<hex HMAC of the body>) is required`);
        }
        exchange.parseJson(raw, (body) => {
          if (!validateWebhookBody(body)) return exchange.problem('invalid_request', describeErrors(validateWebhookBody.errors));
          exchange.settle(payments.webhook(body), (result) => {
            if (result.ok) exchange.send(200, { received: true, duplicate: result.duplicate, orderStatus: result.orderStatus });
            else exchange.problem(result.code, result.detail);
          });
        });
      });
    },
  });
}
