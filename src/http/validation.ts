import { Ajv, type ErrorObject } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { randomBytes } from 'node:crypto';
import { latestInstantMs, type SkuConfig } from '../allocator/types.js';
import { maxAdmitPerSecond } from '../allocator/waiting-room.js';

/**
 * Request schemas, compiled once. Strict: unknown fields are refused, so a
 * typo (`quantitiy`) is a 400, not a silent default.
 */
const ajv = new Ajv({ allErrors: false, strict: true });
// ajv-formats is CommonJS: under NodeNext its plugin is the `default` property.
addFormatsModule.default(ajv, ['date-time']);
// RFC 3339 allows a leap second (`23:59:60`), which ajv-formats accepts and Date.parse cannot read (NaN):
// a date must also be one JavaScript can represent, or the SKU would be configured with no window at all;
// and no later than `latestInstantMs` (a local time in 9999 may be an instant in 10000, which RFC 3339 cannot write).
ajv.addKeyword({
  keyword: 'parsableDate',
  type: 'string',
  schemaType: 'boolean',
  errors: false,
  validate: (wanted: boolean, value: string) => !wanted || Date.parse(value) <= latestInstantMs,
});

/**
 * The SKU grammar: `.` and `..` are excluded because URL-normalising clients
 * rewrite them away (`/v1/skus/..` becomes `/v1/`), so such a SKU could not be reached.
 * The same source serves the WebSocket protocol and the OpenAPI document.
 */
export const skuPatternSource = '^(?!\\.{1,2}$)[A-Za-z0-9._-]{1,64}$';
export const skuPattern = new RegExp(skuPatternSource);
/** The SKU grammar in words, for problems. */
export const skuRule = "1-64 characters of A-Z a-z 0-9 . _ -, not '.' or '..'";

export function isSkuName(value: string): boolean {
  return skuPattern.test(value);
}
/** Visible ASCII, 1–200 characters (the Idempotency-Key header). */
export const idempotencyKeyPattern = /^[\x21-\x7e]{1,200}$/;
const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function isUuid(value: string): boolean {
  return uuidPattern.test(value);
}

const maxInt = 1_000_000_000;

// The request schemas are exported as they are: the OpenAPI document (openapi.ts) shows these very objects.
export const reserveBodySchema = {
  type: 'object',
  properties: { quantity: { type: 'integer', minimum: 1, maximum: maxInt } },
  required: ['quantity'],
  additionalProperties: false,
};
export const validateReserveBody = ajv.compile<{ quantity: number }>(reserveBodySchema);

export interface SkuBody {
  stock: number;
  perShopperLimit: number;
  holdSeconds: number;
  priceCents: number;
  currency: string;
  startsAt?: string;
  endsAt?: string;
  waitingRoom?: { admitPerSecond: number } | null;
  waitlistOfferSeconds?: number;
}

export const skuBodySchema = {
  type: 'object',
  properties: {
    stock: { type: 'integer', minimum: 0, maximum: maxInt },
    perShopperLimit: { type: 'integer', minimum: 1, maximum: maxInt },
    holdSeconds: { type: 'integer', minimum: 1, maximum: 7 * 24 * 3600 },
    priceCents: { type: 'integer', minimum: 0, maximum: 100 * maxInt },
    currency: { type: 'string', pattern: '^[A-Z]{3}$' },
    startsAt: { type: 'string', format: 'date-time', parsableDate: true },
    endsAt: { type: 'string', format: 'date-time', parsableDate: true },
    waitingRoom: {
      type: ['object', 'null'],
      properties: { admitPerSecond: { type: 'integer', minimum: 1, maximum: maxAdmitPerSecond } },
      required: ['admitPerSecond'],
      additionalProperties: false,
    },
    // Opt-in waitlist: units that come back are offered to the line, each offer held this long.
    waitlistOfferSeconds: { type: 'integer', minimum: 1, maximum: 7 * 24 * 3600 },
  },
  required: ['stock', 'perShopperLimit', 'holdSeconds', 'priceCents', 'currency'],
  additionalProperties: false,
};
export const validateSkuBody = ajv.compile<SkuBody>(skuBodySchema);

export function describeErrors(errors: ErrorObject[] | null | undefined): string {
  const first = errors?.[0];
  if (first === undefined) return 'the body does not match the schema';
  const where = first.instancePath === '' ? 'body' : first.instancePath.slice(1).replace(/\//g, '.');
  if (first.keyword === 'parsableDate') {
    return `${where} is not a representable instant (leap seconds such as 23:59:60 are not accepted; the latest is ${new Date(latestInstantMs).toISOString()})`;
  }
  if (first.keyword === 'additionalProperties') {
    return `${where} has an unknown field "${(first.params as { additionalProperty: string }).additionalProperty}"`;
  }
  return `${where} ${first.message ?? 'is invalid'}`;
}

/** The admin body as the allocator's config; null with a reason when the window is backwards. */
export function toSkuConfig(body: SkuBody): { ok: true; config: SkuConfig } | { ok: false; detail: string } {
  const startsAtMs = body.startsAt === undefined ? null : Date.parse(body.startsAt);
  const endsAtMs = body.endsAt === undefined ? null : Date.parse(body.endsAt);
  // The schema refuses these already; a NaN must never become "no window".
  if (Number.isNaN(startsAtMs) || Number.isNaN(endsAtMs)) return { ok: false, detail: 'startsAt and endsAt must be readable dates' };
  if (startsAtMs !== null && endsAtMs !== null && endsAtMs <= startsAtMs) {
    return { ok: false, detail: 'endsAt must be after startsAt' };
  }
  return {
    ok: true,
    config: {
      stock: body.stock,
      perShopperLimit: body.perShopperLimit,
      holdSeconds: body.holdSeconds,
      priceCents: body.priceCents,
      currency: body.currency,
      startsAtMs,
      endsAtMs,
      // A fresh seed for a new waiting room; the allocator keeps the one it already has (keepSeed).
      ...(body.waitingRoom ? { waitingRoom: { admitPerSecond: body.waitingRoom.admitPerSecond, seed: randomBytes(16).toString('hex') } } : {}),
      ...(body.waitlistOfferSeconds === undefined ? {} : { waitlistOfferSeconds: body.waitlistOfferSeconds }),
    },
  };
}

export const checkoutBodySchema = {
  type: 'object',
  // Visible ASCII only: it is stored in the log's batch insert, where one NUL would fail the whole batch.
  properties: { paymentMethod: { type: 'string', pattern: '^[\\x21-\\x7e]{1,64}$' } },
  required: ['paymentMethod'],
  additionalProperties: false,
};
export const validateCheckoutBody = ajv.compile<{ paymentMethod: string }>(checkoutBodySchema);

export const webhookBodySchema = {
  type: 'object',
  properties: {
    id: { type: 'string', pattern: '^[\\x21-\\x7e]{1,200}$' },
    type: { type: 'string', enum: ['charge.succeeded', 'charge.failed'] },
    orderId: { type: 'string', pattern: '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' },
    reason: { type: 'string', pattern: '^[\\x20-\\x7e]{1,200}$' },
  },
  required: ['id', 'type', 'orderId'],
  additionalProperties: false,
};
export const validateWebhookBody = ajv.compile<{
  id: string;
  type: 'charge.succeeded' | 'charge.failed';
  orderId: string;
  reason?: string;
}>(webhookBodySchema);
