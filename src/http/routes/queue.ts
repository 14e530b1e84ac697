import type uWS from 'uWebSockets.js';
import type { AdmissionTokens } from '../../queue/admission.js';
import type { QueueView } from '../../queue/view.js';
import type { Outcome } from '../../inventory/inventory.js';
import type { HttpDependencies } from '../dependencies.js';
import type { Exchange } from '../exchange.js';
import { shopper, skuParameter, uuidParameter } from '../guards.js';
import type { Router } from '../router.js';
import { withinRateLimit } from '../rate-limit.js';

/**
 * The waiting room (docs/waiting-room.md): take a ticket, poll it, and the
 * admission token an admitted ticket is worth. The shard decides positions;
 * the token is signed here, at the edge, and checked here on reservations.
 */
export function registerQueueRoutes(
  router: Router,
  deps: Pick<HttpDependencies, 'inventory' | 'verifyShopper' | 'rateLimits' | 'admission' | 'metrics'>,
): void {
  const { inventory, verifyShopper, rateLimits, admission, metrics } = deps;

  router.route('/v1/skus/:sku/queue', {
    post: (exchange, req) => {
      const shopperId = shopper(exchange, req, verifyShopper);
      if (shopperId === null) return;
      const sku = skuParameter(exchange, req);
      if (sku === null) return;
      withinRateLimit(exchange, rateLimits, shopperId, () =>
        exchange.settle(inventory.joinQueue(sku, shopperId), (outcome) => answer(exchange, outcome, 201, shopperId, admission, metrics)),
      );
    },
  });

  router.route('/v1/queue/:ticket', {
    get: (exchange, req) => {
      const shopperId = shopper(exchange, req, verifyShopper);
      if (shopperId === null) return;
      const ticket = uuidParameter(exchange, req, 'ticket');
      if (ticket === null) return;
      exchange.settle(inventory.pollQueue(ticket, shopperId), (outcome) => answer(exchange, outcome, 200, shopperId, admission, metrics));
    },
  });
}

/** The ticket's body: an admitted one carries a fresh admission token. */
function answer(
  exchange: Exchange,
  outcome: Outcome<QueueView>,
  status: number,
  shopperId: string,
  admission: AdmissionTokens,
  metrics: HttpDependencies['metrics'],
): void {
  if (!outcome.ok) return exchange.problem(outcome.code, outcome.detail);
  const view = outcome.value;
  metrics.queueAnswered(view.status);
  if (view.status !== 'admitted') return exchange.send(status, view);
  const { token, expiresAtMs } = admission.issue(shopperId, view.sku);
  exchange.send(status, { ...view, admissionToken: token, admissionExpiresAt: new Date(expiresAtMs).toISOString() });
}

/**
 * The `Admission-Token` header of a reservation: true when it admits this shopper to this SKU,
 * false when there is none (the shard refuses with admission_required if the SKU has a waiting
 * room), or null once a bad token has been answered with 403. Checked here, with no shard round trip.
 */
export function admissionToken(
  exchange: Exchange,
  req: uWS.HttpRequest,
  admission: AdmissionTokens | undefined,
  shopperId: string,
  sku: string,
): boolean | null {
  const token = req.getHeader('admission-token');
  if (token === '' || admission === undefined) return false;
  const refusal = admission.verify(token, shopperId, sku);
  if (refusal === null) return true;
  exchange.problem(refusal, refusalDetail[refusal]);
  return null;
}

const refusalDetail: Record<NonNullable<ReturnType<AdmissionTokens['verify']>>, string> = {
  admission_invalid: 'the Admission-Token is malformed or was not issued by this service',
  admission_expired: 'the Admission-Token has expired: poll your ticket again for a fresh one',
  admission_mismatch: 'the Admission-Token was issued to another shopper or for another SKU',
};
