import { createHash } from 'node:crypto';
import { reservationIdPrefix } from '../shard/placement.js';

/**
 * Cart and line ids are derived, never drawn: the same shopper and
 * Idempotency-Key always name the same cart, and the same cart and SKU the same
 * line, so a retry after any crash re-drives the very same cart.
 *
 * Both are version-8 UUIDs like reservation ids (src/shard/placement.ts): a
 * line id starts with its SKU's hash, so it routes to the SKU's shard like any
 * reservation; a cart id starts with the hash of its shopper and key, which
 * spreads carts' rows over the shards that read and write them (the "home" shard).
 */

function v8(prefix: string, digest: string): string {
  return `${prefix}-${digest.slice(0, 4)}-8${digest.slice(4, 7)}-${variant(digest[7]!)}${digest.slice(8, 11)}-${digest.slice(11, 23)}`;
}

/** RFC 9562 variant 10: the top two bits of the clock-seq nibble. */
function variant(hex: string): string {
  return ((Number.parseInt(hex, 16) & 0x3) | 0x8).toString(16);
}

function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

export function cartIdFor(shopperId: string, idempotencyKey: string): string {
  const digest = sha256Hex(`cart\u0000${shopperId}\u0000${idempotencyKey}`);
  return v8(digest.slice(0, 8), digest.slice(8));
}

export function lineIdFor(cartId: string, sku: string): string {
  const digest = sha256Hex(`line\u0000${cartId}\u0000${sku}`);
  return v8(reservationIdPrefix(sku), digest);
}

/** A cart's one order: derived from the cart, so a repeated checkout finds the same order. Starts with its first line's SKU hash, like any order id. */
export function orderIdFor(cartId: string, firstSku: string): string {
  const digest = sha256Hex(`order\u0000${cartId}`);
  return v8(reservationIdPrefix(firstSku), digest);
}

/** The body's fingerprint: a retry with the same key and another body is refused. */
export function requestHashOf(items: readonly { sku: string; quantity: number }[]): string {
  return sha256Hex(items.map((item) => `${item.sku}\u0000${item.quantity}`).join('\u0001'));
}
