import type { ReservationStatus, SkuConfig } from '../allocator/types.js';
import { isShopperId, isWellFormedText } from '../auth/auth.js';
import { idempotencyKeyPattern, isSkuName, isUuid } from '../http/validation.js';
import { saleStates, type CheckoutView, type FailureCode, type ReservationView, type SaleState, type SkuView, type StockState } from '../inventory/inventory.js';
import type { ShardNotice, ShardReply, ShardRequest } from './messages.js';
import { decodeCartRecord, decodeCartRequest, decodeLineState, isCartRequestType } from '../carts/wire.js';
import { isWaitingRoomConfig, maxAdmitPerSecond } from '../allocator/waiting-room.js';
import type { QueueView } from '../queue/view.js';
import { shardOf, shardOfReservationId, shardOfWaitlistId } from './placement.js';
import { decodeWaitlistOffer, decodeWaitlistRequest, decodeWaitlistView, isWaitlistRequest } from './waitlist-protocol.js';

/**
 * The shard protocol on the wire between nodes: frames, and the one decoder of
 * everything a peer sends. A peer holds the cluster secret, but what it sends is
 * still input from outside this process (a bug, or two versions mid-upgrade):
 * every frame is checked here before any of it reaches a shard, a shopper or a
 * subscriber. A check that fails names its reason (a bounded set: the label of
 * flashstock_cluster_frames_refused_total), never throws.
 *
 * Frames are JSON text, one per WebSocket message:
 *   {"t":"req","m":[{"id":1,"shard":3,"payload":<ShardRequest>}…]}  caller → owner
 *   {"t":"res","m":[{"id":1,"ok":true,"payload":<ShardReply>}…]}    owner → caller
 *   {"t":"res","m":[{"id":1,"ok":false,"code":"unavailable","detail":"…"}…]}
 *   {"t":"note","m":[{"e":7,"n":<stock or passivated notice>}…]}     one-way
 *   {"t":"note","m":[{"f":"reset"},{"f":"on","sku":"A"}…]}          one-way: what the sender follows
 *
 * Decoders build a fresh object of the known fields only (nothing a peer adds
 * travels on), with hand-written checks: no schema engine, no allocation but
 * the decoded object. The types of every message are in messages.ts.
 */

/** Why a frame, or one message in it, was refused. */
export type RefusalReason =
  /** Not a JSON text frame (binary, truncated, not UTF-8 JSON). */
  | 'malformed'
  /** Not an object, unknown frame type, `m` not an array, an entry without a usable id. */
  | 'envelope'
  /** More messages in a frame than maxBatch, a text over its length, a frame over maxFrameBytes. */
  | 'oversized'
  /** A message `type` this node does not know (or that never travels between nodes). */
  | 'unknown_kind'
  /** A field missing, of the wrong type or out of range. */
  | 'bad_field'
  /** A shard number outside 0..SHARD_COUNT-1. */
  | 'unknown_shard'
  /** A SKU or reservation id that does not belong to the envelope's shard. */
  | 'wrong_shard'
  /** A reply to an id this node never sent. */
  | 'unsent_reply'
  /** A reply to a request already answered (timed out, or a reply repeated). */
  | 'late_reply'
  /** A well-formed reply that does not answer its request (another SKU, reservation or kind of value). */
  | 'mismatch';

export const refusalReasons: readonly RefusalReason[] = [
  'malformed',
  'envelope',
  'oversized',
  'unknown_kind',
  'bad_field',
  'unknown_shard',
  'wrong_shard',
  'unsent_reply',
  'late_reply',
  'mismatch',
];

/** Refusals counted per reason (metrics add them up). */
export type FrameRefusals = Record<RefusalReason, number>;

export function newFrameRefusals(): FrameRefusals {
  return Object.fromEntries(refusalReasons.map((reason) => [reason, 0])) as FrameRefusals;
}

/** A decoder's answer: the decoded value, or why it was refused (every decoded value is an object). */
export type Decoded<T> = T | RefusalReason;

export function isRefusal<T extends object>(decoded: Decoded<T>): decoded is RefusalReason {
  return typeof decoded === 'string';
}

// ------------------------------------------------------------------ frames

/** One command to a shard's owner; `id` is the caller's, unique per connection. */
export interface Envelope {
  id: number;
  shard: number;
  payload: ShardRequest;
}

/** Outcomes of a forwarded command: `ok` carries the owner's reply (see transport.ts for the others). */
export type ForwardResult =
  | { ok: true; payload: ShardReply }
  | { ok: false; code: 'unavailable' | 'unknown_outcome'; detail: string };

export type Reply = { id: number } & ForwardResult;

/** The live-stock notices (src/cluster/live.ts). */
export type StockNotice = Extract<ShardNotice, { type: 'stock' | 'passivated' }>;

/** The notices that leave their node: live stock, and waitlist offers toward their shopper's streams on any node. */
export type TravellingNotice = StockNotice | Extract<ShardNotice, { type: 'waitlist_offer' }>;

/** A notice as it travels: with the epoch of its shard as its sender held it. */
export interface PeerNotice {
  e: number;
  n: TravellingNotice;
}

/**
 * What a node tells its peers it follows (src/cluster/live.ts): `on` / `off`
 * one SKU, or `reset` (forget what it said before; its whole list follows).
 */
export type Following = { f: 'reset' } | { f: 'on' | 'off'; sku: string };

/** What a node pushes without being asked: a notice, or what it follows. */
export type Note = PeerNotice | Following;

export type Frame = { t: 'req'; m: Envelope[] } | { t: 'res'; m: Reply[] } | { t: 'note'; m: Note[] };

/** A frame whose outer shape is right; its messages are decoded one by one (a bad one does not spoil the others). */
export interface RawFrame {
  t: Frame['t'];
  m: unknown[];
}

export function encodeFrame(frame: Frame): string {
  return JSON.stringify(frame);
}

/**
 * Most messages one frame may carry. A sender batches fewer (TransportLimits.maxBatch,
 * 1,000 by default); this bound is the receiver's, the same on every version.
 */
export const maxMessagesPerFrame = 10_000;

/** The outer shape of a frame: a JSON object with a known `t` and at most maxMessagesPerFrame messages in `m`. */
export function decodeFrame(text: string): Decoded<RawFrame> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return 'malformed';
  }
  if (!isObject(value)) return 'envelope';
  const { t, m } = value as { t?: unknown; m?: unknown };
  if ((t !== 'req' && t !== 'res' && t !== 'note') || !Array.isArray(m)) return 'envelope';
  if (m.length > maxMessagesPerFrame) return 'oversized';
  return { t, m };
}

/** The id of a request or reply entry, or null if it has none usable (nothing can be answered). */
export function messageId(value: unknown): number | null {
  if (!isObject(value)) return null;
  const id = (value as { id?: unknown }).id;
  return typeof id === 'number' && Number.isSafeInteger(id) && id > 0 ? id : null;
}

/** A request envelope from a caller: a known shard of `shardCount`, and a request that belongs to it. */
export function decodeEnvelope(value: unknown, shardCount: number): Decoded<Envelope> {
  const id = messageId(value);
  if (id === null) return 'envelope';
  const { shard, payload } = value as { shard?: unknown; payload?: unknown };
  if (typeof shard !== 'number' || !Number.isInteger(shard) || shard < 0 || shard >= shardCount) return 'unknown_shard';
  const request = decodeShardRequest(payload, shard, shardCount);
  return isRefusal(request) ? request : { id, shard, payload: request };
}

/**
 * A reply from the owner, for `request` (the caller looked its id up in its
 * pending map: a reply to anything else is refused before this).
 */
export function decodeReply(value: unknown, id: number, request: ShardRequest): Decoded<Reply> {
  const { ok, code, detail, payload } = value as { ok?: unknown; code?: unknown; detail?: unknown; payload?: unknown };
  if (ok === true) {
    const reply = decodeShardReply(request, payload);
    return isRefusal(reply) ? reply : { id, ok: true, payload: reply };
  }
  if (ok !== false || (code !== 'unavailable' && code !== 'unknown_outcome')) return 'bad_field';
  return isText(detail, maxDetailLength) ? { id, ok: false, code, detail } : textRefusal(detail, maxDetailLength);
}

/** One entry of a `note` frame: what the sender follows (`f`), else a notice. */
export function decodeNote(value: unknown): Decoded<Note> {
  if (!isObject(value) || !('f' in value)) return decodePeerNotice(value);
  const { f, sku } = value as { f?: unknown; sku?: unknown };
  if (f === 'reset') return { f };
  if (f !== 'on' && f !== 'off') return typeof f === 'string' ? 'unknown_kind' : 'bad_field';
  return isSkuText(sku) ? { f, sku } : 'bad_field';
}

/** A pushed notice: `stock` with its counts, `passivated`, or a `waitlist_offer`; nothing else travels between nodes. */
export function decodePeerNotice(value: unknown): Decoded<PeerNotice> {
  if (!isObject(value)) return 'envelope';
  const { e, n } = value as { e?: unknown; n?: unknown };
  if (!isCount(e) || !isObject(n)) return 'bad_field';
  const notice = n as { type?: unknown; state?: unknown; sku?: unknown; shopperId?: unknown; view?: unknown };
  if (notice.type === 'waitlist_offer') {
    const offer = decodeWaitlistOffer(notice.shopperId, notice.view);
    return offer === 'bad_field' ? offer : { e, n: offer };
  }
  if (notice.type === 'stock') {
    const state = decodeStockState(notice.state);
    return isRefusal(state) ? state : { e, n: { type: 'stock', state } };
  }
  if (notice.type === 'passivated') return isSkuText(notice.sku) ? { e, n: { type: 'passivated', sku: notice.sku } } : 'bad_field';
  return typeof notice.type === 'string' ? 'unknown_kind' : 'bad_field';
}

// ------------------------------------------------------------------ requests

/** Longest problem detail a peer may send. */
const maxDetailLength = 2_000;
/** Longest payment failure reason (it is stored with the order). */
const maxFailureReasonLength = 200;
/** Largest count, quantity or limit in a SKU's configuration (the HTTP schema's bound). */
const maxConfigInt = 1_000_000_000;
/** Longest hold (the HTTP schema's bound). */
const maxHoldSeconds = 7 * 24 * 3600;
/** Visible ASCII, 1–64 characters (the checkout body's paymentMethod). */
const paymentMethodPattern = /^[\x21-\x7e]{1,64}$/;
const currencyPattern = /^[A-Z]{3}$/;
/** Date.prototype.toISOString's output (years past 9999 as ±YYYYYY). */
const isoInstantPattern = /^(?:\d{4}|[+-]\d{6})-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const controlCharacter = /[\u0000-\u001f\u007f]/;

/** A request for `shard`: every field typed and in range, and its SKU or reservation of that shard. */
export function decodeShardRequest(value: unknown, shard: number, shardCount: number): Decoded<ShardRequest> {
  if (!isObject(value)) return 'bad_field';
  const request = value as Record<string, unknown>;
  const decoded = decodeRequestFields(request);
  if (isRefusal(decoded)) return decoded;
  if ('sku' in decoded) return shardOf(decoded.sku, shardCount) === shard ? decoded : 'wrong_shard';
  if (decoded.type === 'queue_poll') {
    // A ticket always carries its SKU's hash.
    return shardOfReservationId(decoded.ticket, shardCount) === shard ? decoded : 'wrong_shard';
  }
  if ('waitlistId' in decoded) return shardOfWaitlistId(decoded.waitlistId, shardCount) === shard ? decoded : 'wrong_shard';
  // A cart's own messages go to its home shard, by the hash in its id.
  const fromId = shardOfReservationId('reservationId' in decoded ? decoded.reservationId : decoded.cartId, shardCount);
  // Ids minted before shards carry no SKU hash: the caller resolved their shard through the log.
  return fromId === null || fromId === shard ? decoded : 'wrong_shard';
}

function decodeRequestFields(r: Record<string, unknown>): Decoded<ShardRequest> {
  if (isWaitlistRequest(r.type)) return decodeWaitlistRequest(r);
  switch (r.type) {
    case 'configure': {
      if (!isSkuText(r.sku)) return 'bad_field';
      const config = decodeSkuConfig(r.config);
      return isRefusal(config) ? config : { type: 'configure', sku: r.sku, config };
    }
    case 'archive':
    case 'get_sku':
    case 'get_stock':
      return isSkuText(r.sku) ? { type: r.type, sku: r.sku } : 'bad_field';
    case 'reserve':
      if (!isSkuText(r.sku) || !isShopperId(r.shopperId) || !isIdempotencyKey(r.idempotencyKey)) return 'bad_field';
      if (!isIntIn(r.quantity, 1, maxConfigInt)) return 'bad_field';
      if (r.admitted !== undefined && typeof r.admitted !== 'boolean') return 'bad_field';
      return { type: 'reserve', sku: r.sku, shopperId: r.shopperId, quantity: r.quantity, idempotencyKey: r.idempotencyKey, ...(r.admitted === true ? { admitted: true } : {}) };
    case 'queue_join':
      return isSkuText(r.sku) && isShopperId(r.shopperId) ? { type: 'queue_join', sku: r.sku, shopperId: r.shopperId } : 'bad_field';
    case 'queue_poll':
      return isUuidText(r.ticket) && isShopperId(r.shopperId) ? { type: 'queue_poll', ticket: r.ticket, shopperId: r.shopperId } : 'bad_field';
    case 'get_reservation':
    case 'release':
      if (!isUuidText(r.reservationId) || !isShopperId(r.shopperId)) return 'bad_field';
      return { type: r.type, reservationId: r.reservationId, shopperId: r.shopperId };
    case 'checkout':
      if (!isUuidText(r.reservationId) || !isShopperId(r.shopperId) || !isIdempotencyKey(r.idempotencyKey)) return 'bad_field';
      if (typeof r.paymentMethod !== 'string' || !paymentMethodPattern.test(r.paymentMethod)) return 'bad_field';
      return { type: 'checkout', reservationId: r.reservationId, shopperId: r.shopperId, idempotencyKey: r.idempotencyKey, paymentMethod: r.paymentMethod };
    case 'settle':
      return decodeSettle(r);
    default:
      if (isCartRequestType(r.type)) return decodeCartRequest(r);
      return typeof r.type === 'string' ? 'unknown_kind' : 'bad_field';
  }
}

function decodeSettle(r: Record<string, unknown>): Decoded<ShardRequest> {
  if (!isSkuText(r.sku) || !isUuidText(r.reservationId) || !isUuidText(r.orderId)) return 'bad_field';
  if (r.outcome !== 'committed' && r.outcome !== 'payment_failed') return 'bad_field';
  const reason = r.failureReason;
  if (reason !== null && !(isText(reason, maxFailureReasonLength) && !controlCharacter.test(reason))) return textRefusal(reason, maxFailureReasonLength);
  return { type: 'settle', sku: r.sku, reservationId: r.reservationId, orderId: r.orderId, outcome: r.outcome, failureReason: reason };
}

function decodeSkuConfig(value: unknown): Decoded<SkuConfig> {
  if (!isObject(value)) return 'bad_field';
  const c = value as Record<string, unknown>;
  if (!isIntIn(c.stock, 0, maxConfigInt) || !isIntIn(c.perShopperLimit, 1, maxConfigInt)) return 'bad_field';
  if (!isIntIn(c.holdSeconds, 1, maxHoldSeconds) || !isIntIn(c.priceCents, 0, 100 * maxConfigInt)) return 'bad_field';
  if (typeof c.currency !== 'string' || !currencyPattern.test(c.currency)) return 'bad_field';
  const { startsAtMs, endsAtMs } = c;
  if (!isInstantOrNull(startsAtMs) || !isInstantOrNull(endsAtMs)) return 'bad_field';
  if (startsAtMs !== null && endsAtMs !== null && endsAtMs <= startsAtMs) return 'bad_field';
  const config: SkuConfig = { stock: c.stock, perShopperLimit: c.perShopperLimit, holdSeconds: c.holdSeconds, priceCents: c.priceCents, currency: c.currency, startsAtMs, endsAtMs };
  if (c.waitingRoom !== undefined && c.waitingRoom !== null) {
    if (!isWaitingRoomConfig(c.waitingRoom)) return 'bad_field';
    config.waitingRoom = { admitPerSecond: c.waitingRoom.admitPerSecond, seed: c.waitingRoom.seed };
  }
  if (c.waitlistOfferSeconds != null) {
    if (!isIntIn(c.waitlistOfferSeconds, 1, maxHoldSeconds)) return 'bad_field';
    config.waitlistOfferSeconds = c.waitlistOfferSeconds;
  }
  return config;
}

// ------------------------------------------------------------------ replies

/** Every FailureCode (the Record makes the compiler check the list against the type). */
const failureCodes: Readonly<Record<FailureCode, true>> = {
  sold_out: true,
  limit_exceeded: true,
  sale_not_open: true,
  idempotency_key_reused: true,
  quantity_too_large: true,
  too_many_holds: true,
  stock_below_committed: true,
  not_found: true,
  reservation_not_held: true,
  waitlist_not_enabled: true,
  not_sold_out: true,
  waitlist_full: true,
  already_waitlisted: true,
  waitlist_entry_closed: true,
  unavailable: true,
  reservation_in_cart: true,
  cart_aborted: true,
  mixed_currencies: true,
  queue_full: true,
  no_waiting_room: true,
  waiting_room_in_use: true,
  admission_required: true,
};

const reservationStatuses: Readonly<Record<ReservationStatus, true>> = {
  held: true,
  released: true,
  expired: true,
  checking_out: true,
  paid: true,
  payment_failed: true,
  tentative: true,
};

/** The owner's answer to `request`: an Outcome whose value is the kind that request gets, about the same SKU or reservation. */
export function decodeShardReply(request: ShardRequest, value: unknown): Decoded<ShardReply> {
  if (!isObject(value)) return 'bad_field';
  const { ok, code, detail, value: result } = value as { ok?: unknown; code?: unknown; detail?: unknown; value?: unknown };
  if (ok === false) {
    if (typeof code !== 'string' || !Object.hasOwn(failureCodes, code)) return 'bad_field';
    return isText(detail, maxDetailLength) ? { ok: false, code: code as FailureCode, detail } : textRefusal(detail, maxDetailLength);
  }
  if (ok !== true) return 'bad_field';
  const decoded = decodeReplyValue(request, result);
  return isRefusal(decoded) ? decoded : ({ ok: true, value: decoded } as ShardReply);
}

type ReplyValue = ShardReply extends infer O ? (O extends { ok: true; value: infer V } ? V : never) : never;

function decodeReplyValue(request: ShardRequest, value: unknown): Decoded<ReplyValue> {
  switch (request.type) {
    case 'configure': {
      if (!isObject(value) || typeof (value as { created?: unknown }).created !== 'boolean') return 'bad_field';
      const { created, view } = value as { created: boolean; view?: unknown };
      const sku = decodeSkuView(view, request.sku);
      return isRefusal(sku) ? sku : { created, view: sku };
    }
    case 'archive':
    case 'get_sku':
      return decodeSkuView(value, request.sku);
    case 'get_stock': {
      const state = decodeStockState(value);
      return isRefusal(state) || state.sku === request.sku ? state : 'mismatch';
    }
    case 'reserve': {
      const view = decodeReservationView(value);
      if (isRefusal(view)) return view;
      return view.sku === request.sku && view.quantity === request.quantity ? view : 'mismatch';
    }
    case 'get_reservation':
    case 'cart_prepare':
    case 'release': {
      const view = decodeReservationView(value);
      return isRefusal(view) || view.reservationId === request.reservationId ? view : 'mismatch';
    }
    case 'checkout':
      return decodeCheckoutView(value, request.reservationId);
    case 'settle':
      return isObject(value) && typeof (value as { changed?: unknown }).changed === 'boolean'
        ? { changed: (value as { changed: boolean }).changed }
        : 'bad_field';
    case 'cart_begin':
    case 'cart_decide':
    case 'cart_get':
      return decodeCartRecord(value, request);
    case 'cart_resolve':
    case 'cart_freeze':
      return decodeLineState(value, request.reservationId, reservationStatuses);
    case 'queue_join':
    case 'queue_poll': {
      const view = decodeQueueView(value);
      if (isRefusal(view)) return view;
      const same = request.type === 'queue_join' ? view.sku === request.sku : view.ticket === request.ticket;
      return same ? view : 'mismatch';
    }
    case 'join_waitlist':
    case 'get_waitlist':
    case 'leave_waitlist':
      return decodeWaitlistView(request, value);
  }
}

function decodeSkuView(value: unknown, sku: string): Decoded<SkuView> {
  if (!isObject(value)) return 'bad_field';
  const v = value as Record<string, unknown>;
  if (!isSkuText(v.sku)) return 'bad_field';
  if (!isCount(v.stock) || !isCount(v.available) || !isCount(v.held) || !isCount(v.sold)) return 'bad_field';
  if (!isCount(v.perShopperLimit) || !isCount(v.holdSeconds) || !isCount(v.priceCents)) return 'bad_field';
  if (typeof v.currency !== 'string' || !currencyPattern.test(v.currency)) return 'bad_field';
  if (!isIsoOrNull(v.startsAt) || !isIsoOrNull(v.endsAt)) return 'bad_field';
  if (typeof v.state !== 'string' || !saleStates.includes(v.state as SaleState)) return 'bad_field';
  if (v.sku !== sku) return 'mismatch';
  const room = v.waitingRoom as { admitPerSecond?: unknown } | undefined;
  if (room !== undefined && !(isObject(room) && isIntIn(room.admitPerSecond, 1, maxAdmitPerSecond))) return 'bad_field';
  if (v.waitlistOfferSeconds !== undefined && !isIntIn(v.waitlistOfferSeconds, 1, maxHoldSeconds)) return 'bad_field';
  const view: SkuView = {
    sku: v.sku,
    state: v.state as SaleState,
    stock: v.stock,
    available: v.available,
    held: v.held,
    sold: v.sold,
    perShopperLimit: v.perShopperLimit,
    holdSeconds: v.holdSeconds,
    priceCents: v.priceCents,
    currency: v.currency,
    startsAt: v.startsAt,
    endsAt: v.endsAt,
  };
  if (room !== undefined) view.waitingRoom = { admitPerSecond: room.admitPerSecond as number };
  if (v.waitlistOfferSeconds !== undefined) view.waitlistOfferSeconds = v.waitlistOfferSeconds as number;
  return view;
}

function decodeReservationView(value: unknown): Decoded<ReservationView> {
  if (!isObject(value)) return 'bad_field';
  const v = value as Record<string, unknown>;
  if (!isUuidText(v.reservationId) || !isSkuText(v.sku) || !isIntIn(v.quantity, 1, maxConfigInt)) return 'bad_field';
  if (typeof v.status !== 'string' || !Object.hasOwn(reservationStatuses, v.status)) return 'bad_field';
  if (!isIso(v.expiresAt)) return 'bad_field';
  return { reservationId: v.reservationId, sku: v.sku, quantity: v.quantity, status: v.status as ReservationStatus, expiresAt: v.expiresAt };
}

function decodeCheckoutView(value: unknown, reservationId: string): Decoded<CheckoutView> {
  if (!isObject(value)) return 'bad_field';
  const v = value as Record<string, unknown>;
  if (!isUuidText(v.orderId) || !isUuidText(v.reservationId) || v.status !== 'pending') return 'bad_field';
  return v.reservationId === reservationId ? { orderId: v.orderId, reservationId: v.reservationId, status: 'pending' } : 'mismatch';
}

function decodeQueueView(value: unknown): Decoded<QueueView> {
  if (!isObject(value)) return 'bad_field';
  const v = value as Record<string, unknown>;
  if (!isUuidText(v.ticket) || !isSkuText(v.sku) || (v.status !== 'waiting' && v.status !== 'admitted')) return 'bad_field';
  if ((v.position !== null && !isCount(v.position)) || !isCount(v.estimatedWaitSeconds)) return 'bad_field';
  return { ticket: v.ticket, sku: v.sku, status: v.status, position: v.position as number | null, estimatedWaitSeconds: v.estimatedWaitSeconds };
}

/** A StockState from outside this thread: another thread, a cluster peer, or Redis (src/ws/fanout.ts). */
export function decodeStockState(value: unknown): Decoded<StockState> {
  if (!isObject(value)) return 'bad_field';
  const s = value as Record<string, unknown>;
  if (!isSkuText(s.sku) || !isCount(s.available) || !isCount(s.held) || !isCount(s.sold) || !isCount(s.seq)) return 'bad_field';
  if (s.archived !== undefined && typeof s.archived !== 'boolean') return 'bad_field';
  if (s.startsAtMs !== undefined && !isInstantOrNull(s.startsAtMs)) return 'bad_field';
  if (s.endsAtMs !== undefined && !isInstantOrNull(s.endsAtMs)) return 'bad_field';
  if (s.waitlist !== undefined && typeof s.waitlist !== 'boolean') return 'bad_field';
  const state: StockState = { sku: s.sku, available: s.available, held: s.held, sold: s.sold, seq: s.seq };
  // Absent on a node that does not send them (an older version): on sale, no window, no waitlist.
  if (s.archived !== undefined) state.archived = s.archived as boolean;
  if (s.startsAtMs !== undefined) state.startsAtMs = s.startsAtMs as number | null;
  if (s.endsAtMs !== undefined) state.endsAtMs = s.endsAtMs as number | null;
  if (s.waitlist !== undefined) state.waitlist = s.waitlist as boolean;
  return state;
}

// ------------------------------------------------------------------ fields

function isObject(value: unknown): value is object {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function isIntIn(value: unknown, min: number, max: number): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max;
}

function isInstantOrNull(value: unknown): value is number | null {
  return value === null || (typeof value === 'number' && Number.isSafeInteger(value) && Math.abs(value) <= maxInstantMs);
}

/** The largest instant a Date can hold (ms). */
const maxInstantMs = 8.64e15;

function isSkuText(value: unknown): value is string {
  return typeof value === 'string' && isSkuName(value);
}

function isUuidText(value: unknown): value is string {
  return typeof value === 'string' && value.length === 36 && isUuid(value);
}

function isIdempotencyKey(value: unknown): value is string {
  return typeof value === 'string' && idempotencyKeyPattern.test(value);
}

function isIso(value: unknown): value is string {
  return typeof value === 'string' && value.length <= 27 && isoInstantPattern.test(value);
}

function isIsoOrNull(value: unknown): value is string | null {
  return value === null || isIso(value);
}

function isText(value: unknown, maxLength: number): value is string {
  return typeof value === 'string' && value.length <= maxLength && isWellFormedText(value);
}

/** A text field that failed: too long, or not a text at all. */
function textRefusal(value: unknown, maxLength: number): RefusalReason {
  return typeof value === 'string' && value.length > maxLength ? 'oversized' : 'bad_field';
}
