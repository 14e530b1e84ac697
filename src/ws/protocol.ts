import type { WaitlistView } from '../inventory/waitlist-view.js';
import { Ajv } from 'ajv';
import { problemTypes, type ProblemCode } from '../http/problem.js';
import { skuPatternSource } from '../http/validation.js';
import { saleState, type ReservationView, type StockState } from '../inventory/inventory.js';

/**
 * The `/v1/stream` protocol, pure: parsing client messages and building server
 * messages. JSON text frames both ways. The shell (stream.ts) does the I/O.
 */

export type ClientMessage =
  | { type: 'subscribe'; skus: string[] }
  | { type: 'unsubscribe'; skus: string[] }
  | { type: 'reserve'; id: string; sku: string; quantity: number; idempotencyKey: string; admissionToken?: string }
  | { type: 'release'; id: string; reservationId: string }
  /** A cart (docs/carts.md): every line held, or nothing; `items` as in POST /v1/carts. */
  | { type: 'cart'; id: string; items: unknown[]; idempotencyKey: string };

/**
 * Codes a stream client can see: the HTTP problem codes (same meaning, same
 * status) plus the two that only a stream has.
 */
export type StreamErrorCode = ProblemCode | 'invalid_message' | 'too_many_subscriptions';

const streamOnlyStatuses: Record<'invalid_message' | 'too_many_subscriptions', number> = {
  invalid_message: 400,
  too_many_subscriptions: 400,
};

export function statusOf(code: StreamErrorCode): number {
  return code === 'invalid_message' || code === 'too_many_subscriptions' ? streamOnlyStatuses[code] : problemTypes[code].status;
}

/** Most SKUs one subscribe/unsubscribe may name (WS_MAX_SUBSCRIPTIONS's upper bound). */
export const maxSkusPerMessage = 10_000;

// Same shapes as the HTTP validation (src/http/validation.ts), restated for the
// stream's envelope; strict, so a typo is an error, not a silent default.
const ajv = new Ajv({ allErrors: false, strict: true });
const sku = { type: 'string', pattern: skuPatternSource } as const;
const id = { type: 'string', minLength: 1, maxLength: 100 } as const;

const skuList = {
  type: 'object',
  properties: {
    type: { type: 'string' },
    skus: { type: 'array', items: sku, minItems: 1, maxItems: maxSkusPerMessage },
  },
  required: ['type', 'skus'],
  additionalProperties: false,
} as const;

const validators: Record<ClientMessage['type'], ReturnType<typeof ajv.compile>> = {
  subscribe: ajv.compile(skuList),
  unsubscribe: ajv.compile(skuList),
  reserve: ajv.compile({
    type: 'object',
    properties: {
      type: { type: 'string' },
      id,
      sku,
      quantity: { type: 'integer', minimum: 1, maximum: 1_000_000_000 },
      idempotencyKey: { type: 'string', pattern: '^[\\x21-\\x7e]{1,200}$' },
      // The HTTP Admission-Token header's value, for a SKU with a waiting room.
      admissionToken: { type: 'string', minLength: 1, maxLength: 2048 },
    },
    required: ['type', 'id', 'sku', 'quantity', 'idempotencyKey'],
    additionalProperties: false,
  }),
  release: ajv.compile({
    type: 'object',
    properties: { type: { type: 'string' }, id, reservationId: { type: 'string', minLength: 1, maxLength: 100 } },
    required: ['type', 'id', 'reservationId'],
    additionalProperties: false,
  }),
  // The lines are checked like the HTTP body (src/carts/body.ts), so a refusal names its line.
  cart: ajv.compile({
    type: 'object',
    properties: {
      type: { type: 'string' },
      id,
      items: { type: 'array', maxItems: 1000 },
      idempotencyKey: { type: 'string', pattern: '^[\\x21-\\x7e]{1,200}$' },
    },
    required: ['type', 'id', 'items', 'idempotencyKey'],
    additionalProperties: false,
  }),
};

export type Parsed =
  | { ok: true; message: ClientMessage }
  | { ok: false; detail: string; /** the message's `id`, when it had a usable one, to correlate the error */ id?: string };

export function parseClientMessage(data: ArrayBuffer, isBinary: boolean): Parsed {
  if (isBinary) return { ok: false, detail: 'messages are JSON text frames, not binary' };
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(data).toString('utf8'));
  } catch {
    return { ok: false, detail: 'the message is not valid JSON' };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { ok: false, detail: 'the message must be a JSON object' };
  }
  const record = value as Record<string, unknown>;
  const given = typeof record.id === 'string' && record.id.length >= 1 && record.id.length <= 100 ? record.id : undefined;
  const type = record.type;
  if (typeof type !== 'string' || !Object.hasOwn(validators, type)) {
    return withId({ ok: false, detail: 'type must be one of subscribe, unsubscribe, reserve, release, cart' }, given);
  }
  const validate = validators[type as ClientMessage['type']];
  if (!validate(value)) {
    const first = validate.errors?.[0];
    const where = first === undefined || first.instancePath === '' ? 'message' : first.instancePath.slice(1).replace(/\//g, '.');
    const detail =
      first?.keyword === 'additionalProperties'
        ? `${where} has an unknown field "${(first.params as { additionalProperty: string }).additionalProperty}"`
        : `${where} ${first?.message ?? 'is invalid'}`;
    return withId({ ok: false, detail: `${type}: ${detail}` }, given);
  }
  return { ok: true, message: value as ClientMessage };
}

function withId(parsed: { ok: false; detail: string }, id: string | undefined): Parsed {
  return id === undefined ? parsed : { ...parsed, id };
}

// ------------------------------------------------------------ server messages

/**
 * The sale state is as of `nowMs` (the moment the message is sent): the
 * crossing of `startsAt` or `endsAt` sends nothing by itself, so a client
 * compares the two with its clock to flip the state between messages.
 */
export function stockMessage(state: StockState, nowMs: number): string {
  const archived = state.archived ?? false;
  const startsAtMs = state.startsAtMs ?? null;
  const endsAtMs = state.endsAtMs ?? null;
  return JSON.stringify({
    type: 'stock',
    sku: state.sku,
    state: saleState(archived, startsAtMs, endsAtMs, nowMs),
    available: archived ? 0 : state.available,
    held: state.held,
    sold: state.sold,
    seq: state.seq,
    startsAt: startsAtMs === null ? null : new Date(startsAtMs).toISOString(),
    endsAt: endsAtMs === null ? null : new Date(endsAtMs).toISOString(),
    waitlist: state.waitlist ?? false,
  });
}

export interface ErrorFields {
  code: StreamErrorCode;
  detail: string;
  id?: string;
  sku?: string;
  /** A cart's refusal: the index of the line that failed. */
  line?: number;
}

export function errorMessage(fields: ErrorFields): string {
  const body: Record<string, unknown> = { type: 'error' };
  if (fields.id !== undefined) body.id = fields.id;
  body.status = statusOf(fields.code);
  body.code = fields.code;
  if (fields.line !== undefined) body.line = fields.line;
  if (fields.sku !== undefined) body.sku = fields.sku;
  body.detail = fields.detail;
  return JSON.stringify(body);
}

/** A waitlist offer for the socket's shopper: `entry` is the GET /v1/waitlist/{id} body. */
export function waitlistOfferMessage(entry: WaitlistView): string {
  return JSON.stringify({ type: 'waitlist_offer', entry });
}

export function reservationMessage(id: string, reservation: ReservationView): string {
  return JSON.stringify({ type: 'reservation', id, reservation });
}

export function cartMessage(id: string, cart: unknown): string {
  return JSON.stringify({ type: 'cart', id, cart });
}

export interface HelloFields {
  shopperId: string | null;
  /** Why a given token was not accepted (the socket may still subscribe). */
  tokenError?: string;
  maxSubscriptions: number;
  maxMessageBytes: number;
  coalesceMs: number;
}

export function helloMessage(fields: HelloFields): string {
  return JSON.stringify({ type: 'hello', ...fields });
}

/** Worst-case size of one `stock` frame: a 64-character SKU, 10-digit counts, a 16-digit seq, the longest dates, state and flag, plus the frame header. */
export const maxStockFrameBytes = 4 + stockMessage(
  {
    sku: 'x'.repeat(64),
    available: 1_000_000_000,
    held: 1_000_000_000,
    sold: 1_000_000_000,
    seq: Number.MAX_SAFE_INTEGER,
    archived: false,
    // Six-digit years are the longest ISO strings a Date makes.
    startsAtMs: -8.64e15,
    endsAtMs: 8.64e15,
    waitlist: false,
  },
  0,
).length + 'not_started'.length;

// ------------------------------------------------------------ rate limit

/** A token bucket: `capacity` messages at once, refilled at `perSecond`. */
export interface TokenBucket {
  tokens: number;
  refilledAtMs: number;
}

export function newBucket(capacity: number, nowMs: number): TokenBucket {
  return { tokens: capacity, refilledAtMs: nowMs };
}

/** Take one token; false when the bucket is empty (the caller is over its rate). */
export function takeToken(bucket: TokenBucket, nowMs: number, perSecond: number, capacity: number): boolean {
  const elapsedMs = Math.max(0, nowMs - bucket.refilledAtMs);
  bucket.tokens = Math.min(capacity, bucket.tokens + (elapsedMs * perSecond) / 1000);
  bucket.refilledAtMs = nowMs;
  if (bucket.tokens < 1) return false;
  bucket.tokens -= 1;
  return true;
}
