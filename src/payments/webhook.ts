import { createHmac, timingSafeEqual } from 'node:crypto';
import type pg from 'pg';
import type { Logger } from 'pino';
import { getOrder } from './orders.js';
import type { PaymentFinalizer } from './finalizer.js';

/**
 * Asynchronous payment confirmations. The provider signs the raw body with
 * HMAC-SHA256 and `PAYMENT_WEBHOOK_SECRET`, hex, in `x-flashstock-signature:
 * sha256=<hex>`. Deliveries are deduplicated by their id, and settling is
 * idempotent anyway, so duplicates and replays change nothing.
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
  | { ok: false; code: 'not_found' | 'unavailable'; detail: string };

export async function handleWebhook(
  deps: { pool: pg.Pool; finalizer: PaymentFinalizer; log: Logger },
  delivery: WebhookDelivery,
): Promise<WebhookResult> {
  const { pool, finalizer, log } = deps;
  const seen = await pool.query({
    name: 'webhook-seen',
    text: 'SELECT 1 FROM payment_webhook_deliveries WHERE delivery_id = $1',
    values: [delivery.id],
  });
  const order = await getOrder(pool, delivery.orderId);
  if (order === null) return { ok: false, code: 'not_found', detail: `order ${delivery.orderId} does not exist` };
  if (seen.rowCount === 0) {
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
    // Recorded after settling: if settling failed, the provider's retry is not mistaken for a duplicate.
    await pool.query({
      name: 'webhook-record',
      text: 'INSERT INTO payment_webhook_deliveries (delivery_id, order_id) VALUES ($1, $2) ON CONFLICT DO NOTHING',
      values: [delivery.id, delivery.orderId],
    });
  }
  const now = await getOrder(pool, delivery.orderId);
  return { ok: true, duplicate: seen.rowCount !== 0, orderStatus: now!.status };
}
