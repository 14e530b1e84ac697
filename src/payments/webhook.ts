import { createHmac, timingSafeEqual } from 'node:crypto';
import type pg from 'pg';
import type { Logger } from 'pino';
import { getOrder } from './orders.js';
import type { PaymentFinalizer } from './finalizer.js';
import type { PaymentProvider, ProviderCharge } from './provider.js';

/**
 * Asynchronous payment confirmations. The provider signs the raw body with
 * HMAC-SHA256 and `PAYMENT_WEBHOOK_SECRET`, hex, in `x-flashstock-signature:
 * sha256=<hex>`. Deliveries are deduplicated by their id, and settling is
 * idempotent anyway, so duplicates and replays change nothing; what a delivery
 * claims is checked against the provider's records before it changes anything.
 */

export const signatureHeader = 'x-flashstock-signature';

export function signWebhook(secret: string, rawBody: Buffer | string): string {
  return `sha256=${createHmac('sha256', secret).update(rawBody).digest('hex')}`;
}

export function verifyWebhookSignature(secret: string, rawBody: Buffer, header: string): boolean {
  const expected = Buffer.from(signWebhook(secret, rawBody));
  const given = Buffer.from(header);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

export interface WebhookDelivery {
  id: string;
  type: 'charge.succeeded' | 'charge.failed';
  orderId: string;
  reason?: string;
}

export type WebhookResult =
  | { ok: true; duplicate: boolean; orderStatus: string }
  | { ok: false; code: 'not_found' | 'provider_mismatch' | 'unavailable'; detail: string };

// The module's SQL. Recording a delivery is one statement that also reads the order's status, so
// of any number of concurrent copies exactly one inserts (duplicate: false) and every copy answers
// with the status as of its own record.
const recordDeliveryQuery = (delivery: WebhookDelivery): pg.QueryConfig => ({
  name: 'webhook-record',
  text: `WITH inserted AS (
           INSERT INTO payment_webhook_deliveries (delivery_id, order_id) VALUES ($1, $2)
           ON CONFLICT (delivery_id) DO NOTHING
           RETURNING 1)
         SELECT EXISTS (SELECT 1 FROM inserted) AS inserted,
                (SELECT status FROM orders WHERE order_id = $2) AS status`,
  values: [delivery.id, delivery.orderId],
});

/** Whether the provider's own records say what the delivery says. */
function confirmedByProvider(delivery: WebhookDelivery, charges: ProviderCharge[]): boolean {
  const succeeded = charges.some((c) => c.status === 'succeeded');
  if (delivery.type === 'charge.succeeded') return succeeded;
  return !succeeded && charges.some((c) => c.status === 'declined');
}

/**
 * A signed delivery is still only a claim: an order is settled from the
 * provider's records (a bug or a replayed secret must not mark an uncharged
 * order paid, nor fail a charged one). A delivery the records contradict is
 * refused with 409 `provider_mismatch` and not recorded, so nothing changes.
 *
 * Settling goes through the SKU's single writer (its own group-commit
 * transaction) and is idempotent; the delivery is recorded after it in one
 * atomic statement. A crash between the two leaves the delivery unrecorded,
 * and the provider's retry settles again (a no-op) and records it.
 */
export async function handleWebhook(
  deps: { pool: pg.Pool; finalizer: PaymentFinalizer; provider: PaymentProvider; log: Logger },
  delivery: WebhookDelivery,
): Promise<WebhookResult> {
  const { pool, finalizer, provider, log } = deps;
  const order = await getOrder(pool, delivery.orderId);
  if (order === null) return { ok: false, code: 'not_found', detail: `order ${delivery.orderId} does not exist` };
  let charges: ProviderCharge[];
  try {
    charges = await provider.chargesFor(order.orderId);
  } catch (error) {
    return { ok: false, code: 'unavailable', detail: `the payment provider's records cannot be read: ${(error as Error).message}` };
  }
  if (!confirmedByProvider(delivery, charges)) {
    log.error({ delivery, charges: charges.map((c) => c.status), orderStatus: order.status }, 'webhook contradicts the provider\'s records: refused');
    return {
      ok: false,
      code: 'provider_mismatch',
      detail: `the payment provider has no ${delivery.type === 'charge.succeeded' ? 'successful' : 'declined'} charge for order ${order.orderId}${
        delivery.type === 'charge.failed' && charges.some((c) => c.status === 'succeeded') ? ' (it was charged)' : ''
      }`,
    };
  }
  const outcome = delivery.type === 'charge.succeeded' ? 'committed' : 'payment_failed';
  if (order.status === 'pending') {
    try {
      await finalizer.record(order, outcome, outcome === 'committed' ? null : delivery.reason ?? 'card_declined');
    } catch (error) {
      return { ok: false, code: 'unavailable', detail: (error as Error).message };
    }
  } else if ((order.status === 'paid') !== (outcome === 'committed')) {
    log.error({ orderId: order.orderId, orderStatus: order.status, delivery }, 'webhook contradicts a settled order');
  }
  const recorded = await pool.query<{ inserted: boolean; status: string }>(recordDeliveryQuery(delivery));
  const row = recorded.rows[0]!;
  return { ok: true, duplicate: !row.inserted, orderStatus: row.status };
}
