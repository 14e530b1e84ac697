import type { ReservationStatus } from '../allocator/types.js';
import { isShopperId, isWellFormedText } from '../auth/auth.js';
import { idempotencyKeyPattern, isSkuName, isUuid } from '../http/validation.js';
import type { FailureCode, NewOrder } from '../inventory/inventory.js';
import type { ShardRequests } from '../shard/messages.js';
import type { CartFailure, CartLine, CartLineState, CartRecord } from './types.js';

/**
 * The cart messages' checks for frames from a peer (src/shard/protocol.ts calls
 * these): every field typed and bounded, a fresh object of the known fields.
 * A refusal is the protocol's reason name.
 */

type CartRequest = ShardRequests['cart_begin' | 'cart_decide' | 'cart_get' | 'cart_prepare' | 'cart_resolve' | 'cart_freeze'];
type Refusal = 'bad_field' | 'oversized' | 'mismatch';

/** Most lines a cart message may carry (the receiver's bound; CART_MAX_LINES is the shopper's, at most this). */
export const maxCartLinesOnWire = 1_000;
const maxQuantity = 1_000_000_000;
const maxDetailLength = 2_000;
const hashPattern = /^[0-9a-f]{64}$/;
const maxInstantMs = 8.64e15;

const isUuidText = (v: unknown): v is string => typeof v === 'string' && v.length === 36 && isUuid(v);
const isSku = (v: unknown): v is string => typeof v === 'string' && isSkuName(v);
const isQuantity = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= maxQuantity;
const isInstant = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && Math.abs(v) <= maxInstantMs;
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

export function isCartRequestType(type: unknown): type is CartRequest['type'] {
  return type === 'cart_begin' || type === 'cart_decide' || type === 'cart_get' || type === 'cart_prepare' || type === 'cart_resolve' || type === 'cart_freeze';
}

export function decodeCartRequest(r: Record<string, unknown>): CartRequest | Refusal {
  if (!isUuidText(r.cartId) || !isShopperId(r.shopperId)) return 'bad_field';
  const { cartId, shopperId } = r;
  switch (r.type) {
    case 'cart_begin': {
      if (typeof r.idempotencyKey !== 'string' || !idempotencyKeyPattern.test(r.idempotencyKey)) return 'bad_field';
      if (typeof r.requestHash !== 'string' || !hashPattern.test(r.requestHash)) return 'bad_field';
      const lines = decodeLines(r.lines);
      if (typeof lines === 'string') return lines;
      return { type: 'cart_begin', cartId, shopperId, idempotencyKey: r.idempotencyKey, requestHash: r.requestHash, lines };
    }
    case 'cart_decide': {
      if (r.decision !== 'committed' && r.decision !== 'aborted') return 'bad_field';
      if (r.expiresAtMs !== null && !isInstant(r.expiresAtMs)) return 'bad_field';
      const failure = r.failure === null ? null : decodeFailure(r.failure);
      if (typeof failure === 'string') return failure;
      return { type: 'cart_decide', cartId, shopperId, decision: r.decision, expiresAtMs: r.expiresAtMs, failure };
    }
    case 'cart_get':
      return { type: 'cart_get', cartId, shopperId };
    case 'cart_freeze':
      return decodeFreeze(r, cartId, shopperId);
    case 'cart_prepare':
      if (!isSku(r.sku) || !isUuidText(r.reservationId) || !isQuantity(r.quantity)) return 'bad_field';
      return { type: 'cart_prepare', sku: r.sku, cartId, reservationId: r.reservationId, shopperId, quantity: r.quantity };
    default:
      if (!isSku(r.sku) || !isUuidText(r.reservationId) || !isInstant(r.expiresAtMs)) return 'bad_field';
      if (r.action !== 'commit' && r.action !== 'abort' && r.action !== 'release') return 'bad_field';
      return { type: 'cart_resolve', sku: r.sku, cartId, reservationId: r.reservationId, shopperId, action: r.action, expiresAtMs: r.expiresAtMs };
  }
}

const paymentMethodPattern = /^[\x21-\x7e]{1,64}$/;
const isPaymentMethod = (v: unknown): v is string => typeof v === 'string' && paymentMethodPattern.test(v);

function decodeFreeze(r: Record<string, unknown>, cartId: string, shopperId: string): CartRequest | Refusal {
  if (!isSku(r.sku) || !isUuidText(r.reservationId) || !isUuidText(r.orderId) || !isPaymentMethod(r.paymentMethod)) return 'bad_field';
  const order = r.order === null ? null : decodeOrder(r.order);
  if (typeof order === 'string') return order;
  if (order !== null && (order.orderId !== r.orderId || order.reservationId !== r.reservationId || order.cartId !== cartId)) return 'mismatch';
  return { type: 'cart_freeze', sku: r.sku, cartId, reservationId: r.reservationId, shopperId, orderId: r.orderId, paymentMethod: r.paymentMethod, order };
}

function decodeOrder(value: unknown): NewOrder | Refusal {
  if (!isObject(value) || !isUuidText(value.orderId) || !isUuidText(value.reservationId) || !isUuidText(value.cartId)) return 'bad_field';
  if (!isSku(value.sku) || !isShopperId(value.shopperId) || !isQuantity(value.quantity) || !isPaymentMethod(value.paymentMethod)) return 'bad_field';
  const amount = value.amountCents;
  if (typeof amount !== 'number' || !Number.isSafeInteger(amount) || amount < 0) return 'bad_field';
  if (typeof value.currency !== 'string' || !/^[A-Z]{3}$/.test(value.currency)) return 'bad_field';
  if (typeof value.idempotencyKey !== 'string' || !idempotencyKeyPattern.test(value.idempotencyKey)) return 'bad_field';
  const { orderId, reservationId, cartId, sku, shopperId, quantity, paymentMethod, currency, idempotencyKey } = value;
  return { orderId, reservationId, cartId, sku, shopperId, quantity, amountCents: amount, currency, paymentMethod, idempotencyKey };
}

function decodeLines(value: unknown): CartLine[] | Refusal {
  if (!Array.isArray(value) || value.length === 0) return 'bad_field';
  if (value.length > maxCartLinesOnWire) return 'oversized';
  const lines: CartLine[] = [];
  for (const line of value) {
    if (!isObject(line) || !isSku(line.sku) || !isQuantity(line.quantity) || !isUuidText(line.reservationId)) return 'bad_field';
    lines.push({ sku: line.sku, quantity: line.quantity, reservationId: line.reservationId });
  }
  return lines;
}

function decodeFailure(value: unknown): CartFailure | Refusal {
  if (!isObject(value) || !isSku(value.sku) || typeof value.line !== 'number' || !Number.isInteger(value.line)) return 'bad_field';
  if (value.line < 0 || value.line >= maxCartLinesOnWire || typeof value.code !== 'string' || !/^[a-z_]{1,40}$/.test(value.code)) return 'bad_field';
  if (typeof value.detail !== 'string' || !isWellFormedText(value.detail)) return 'bad_field';
  if (value.detail.length > maxDetailLength) return 'oversized';
  return { line: value.line, sku: value.sku, code: value.code as FailureCode, detail: value.detail };
}

/** A cart record answering `request` (the same cart, the same shopper). */
export function decodeCartRecord(value: unknown, request: { cartId: string; shopperId: string }): CartRecord | Refusal {
  if (!isObject(value) || !isUuidText(value.cartId) || !isShopperId(value.shopperId)) return 'bad_field';
  if (typeof value.requestHash !== 'string' || !hashPattern.test(value.requestHash)) return 'bad_field';
  if (value.decision !== null && value.decision !== 'committed' && value.decision !== 'aborted') return 'bad_field';
  if (value.expiresAtMs !== null && !isInstant(value.expiresAtMs)) return 'bad_field';
  const lines = decodeLines(value.lines);
  if (typeof lines === 'string') return lines;
  const failure = value.failure === null ? null : decodeFailure(value.failure);
  if (typeof failure === 'string') return failure;
  if (value.cartId !== request.cartId || value.shopperId !== request.shopperId) return 'mismatch';
  return {
    cartId: value.cartId,
    shopperId: value.shopperId,
    requestHash: value.requestHash,
    lines,
    decision: value.decision,
    expiresAtMs: value.expiresAtMs,
    failure,
  };
}

export function decodeLineState(value: unknown, reservationId: string, statuses: Readonly<Record<ReservationStatus, true>>): CartLineState | Refusal {
  if (!isObject(value) || !isUuidText(value.reservationId)) return 'bad_field';
  const status = value.status;
  if (status !== null && (typeof status !== 'string' || !Object.hasOwn(statuses, status))) return 'bad_field';
  if (value.reservationId !== reservationId) return 'mismatch';
  return { reservationId, status: status as ReservationStatus | null };
}
