import { waitlistStatuses, type WaitlistStatus } from '../allocator/waitlist.js';
import { isShopperId } from '../auth/auth.js';
import { idempotencyKeyPattern, isSkuName, isUuid } from '../http/validation.js';
import type { WaitlistOfferNotice, WaitlistView } from '../inventory/waitlist-view.js';
import type { ShardRequest, ShardRequests } from './messages.js';

/**
 * The waitlist's messages on the wire (see protocol.ts, which calls these):
 * requests from a peer and the owner's replies, checked field by field. Only
 * `bad_field` and `mismatch` can come out (both are protocol.ts RefusalReasons).
 */

type WaitlistRequestType = 'join_waitlist' | 'get_waitlist' | 'leave_waitlist';
type Refused = 'bad_field' | 'mismatch';

/** Largest quantity on the wire (the HTTP schema's bound). */
const maxQuantity = 1_000_000_000;
const isoInstantPattern = /^(?:\d{4}|[+-]\d{6})-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

export function isWaitlistRequest(type: unknown): type is WaitlistRequestType {
  return type === 'join_waitlist' || type === 'get_waitlist' || type === 'leave_waitlist';
}

function isId(value: unknown): value is string {
  return typeof value === 'string' && value.length === 36 && isUuid(value);
}

function isQuantity(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= maxQuantity;
}

function isIsoOrNull(value: unknown): value is string | null {
  return value === null || (typeof value === 'string' && value.length <= 27 && isoInstantPattern.test(value));
}

export function decodeWaitlistRequest(r: Record<string, unknown>): ShardRequest | Refused {
  if (!isShopperId(r.shopperId)) return 'bad_field';
  if (r.type === 'join_waitlist') {
    if (typeof r.sku !== 'string' || !isSkuName(r.sku) || !isQuantity(r.quantity)) return 'bad_field';
    if (typeof r.idempotencyKey !== 'string' || !idempotencyKeyPattern.test(r.idempotencyKey)) return 'bad_field';
    const request: ShardRequests['join_waitlist'] = {
      type: 'join_waitlist', sku: r.sku, shopperId: r.shopperId, quantity: r.quantity, idempotencyKey: r.idempotencyKey,
    };
    return request;
  }
  if (!isId(r.waitlistId)) return 'bad_field';
  return { type: r.type as 'get_waitlist' | 'leave_waitlist', waitlistId: r.waitlistId, shopperId: r.shopperId };
}

/** A waitlist view answering `request`: about its SKU (join) or its entry (get, leave). */
export function decodeWaitlistView(request: ShardRequest, value: unknown): WaitlistView | Refused {
  const view = decodeWaitlistEntryView(value);
  if (view === 'bad_field') return view;
  if ('sku' in request && request.sku !== view.sku) return 'mismatch';
  if ('waitlistId' in request && request.waitlistId !== view.waitlistId) return 'mismatch';
  return view;
}

/** A waitlist entry as shoppers see it, checked field by field (a reply, or an offer a peer pushed). */
export function decodeWaitlistEntryView(value: unknown): WaitlistView | 'bad_field' {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'bad_field';
  const v = value as Record<string, unknown>;
  if (!isId(v.waitlistId) || typeof v.sku !== 'string' || !isSkuName(v.sku) || !isQuantity(v.quantity)) return 'bad_field';
  if (typeof v.status !== 'string' || !waitlistStatuses.includes(v.status as WaitlistStatus)) return 'bad_field';
  if (v.position !== null && !isQuantity(v.position)) return 'bad_field';
  if (v.reservationId !== null && !isId(v.reservationId)) return 'bad_field';
  if (!isIsoOrNull(v.offerExpiresAt)) return 'bad_field';
  const view: WaitlistView = {
    waitlistId: v.waitlistId,
    sku: v.sku,
    quantity: v.quantity,
    status: v.status as WaitlistStatus,
    position: v.position as number | null,
    reservationId: v.reservationId as string | null,
    offerExpiresAt: v.offerExpiresAt as string | null,
  };
  return view;
}

/** An offer a peer pushed toward its shopper's streams: an `offered` entry with its reservation and expiry. */
export function decodeWaitlistOffer(shopperId: unknown, value: unknown): WaitlistOfferNotice | 'bad_field' {
  if (!isShopperId(shopperId)) return 'bad_field';
  const view = decodeWaitlistEntryView(value);
  if (view === 'bad_field' || view.status !== 'offered' || view.reservationId === null || view.offerExpiresAt === null) return 'bad_field';
  return { type: 'waitlist_offer', shopperId, view };
}
