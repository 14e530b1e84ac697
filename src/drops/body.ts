import { Ajv, type ErrorObject } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { latestInstantMs } from '../allocator/types.js';
import { dropNamePattern, maxCycleNumber, type DropDefinition } from './schedule.js';

/**
 * The admin body of `PUT /v1/admin/drops/{name}`: strict (unknown fields are
 * refused), with the same bounds as a SKU's terms and the same date rule as a
 * SKU's window (ISO-8601 date-time that Date.parse accepts).
 */
const ajv = new Ajv({ allErrors: false, strict: true });
// ajv-formats is CommonJS: under NodeNext its plugin is the `default` property.
addFormatsModule.default(ajv, ['date-time']);

const maxInt = 1_000_000_000;
/** A year: longer periods are not a flash sale, and it keeps every instant within Date's range. */
export const maxEverySeconds = 366 * 24 * 3600;

export interface DropBody {
  firstStartsAt: string;
  everySeconds: number;
  openSeconds: number;
  stockPerCycle: number;
  perShopperLimit: number;
  holdSeconds: number;
  priceCents: number;
  currency: string;
  cycles?: number;
}

export const validateDropBody = ajv.compile<DropBody>({
  type: 'object',
  properties: {
    firstStartsAt: { type: 'string', format: 'date-time' },
    everySeconds: { type: 'integer', minimum: 1, maximum: maxEverySeconds },
    openSeconds: { type: 'integer', minimum: 1, maximum: maxEverySeconds },
    stockPerCycle: { type: 'integer', minimum: 0, maximum: maxInt },
    perShopperLimit: { type: 'integer', minimum: 1, maximum: maxInt },
    holdSeconds: { type: 'integer', minimum: 1, maximum: 7 * 24 * 3600 },
    priceCents: { type: 'integer', minimum: 0, maximum: 100 * maxInt },
    currency: { type: 'string', pattern: '^[A-Z]{3}$' },
    cycles: { type: 'integer', minimum: 1, maximum: maxCycleNumber },
  },
  required: ['firstStartsAt', 'everySeconds', 'openSeconds', 'stockPerCycle', 'perShopperLimit', 'holdSeconds', 'priceCents', 'currency'],
  additionalProperties: false,
});

/** `.` and `..` are path segments, not names. */
export function isDropName(name: string): boolean {
  return dropNamePattern.test(name) && name !== '.' && name !== '..';
}

export const dropNameRule = 'drop name must be 1-54 characters of A-Z a-z 0-9 . _ - other than . and .. (so that {name}.{cycle} is a SKU)';

export function describeDropErrors(errors: ErrorObject[] | null | undefined): string {
  const first = errors?.[0];
  if (first === undefined) return 'the body does not match the schema';
  const where = first.instancePath === '' ? 'body' : first.instancePath.slice(1).replace(/\//g, '.');
  if (first.keyword === 'additionalProperties') {
    return `${where} has an unknown field "${(first.params as { additionalProperty: string }).additionalProperty}"`;
  }
  return `${where} ${first.message ?? 'is invalid'}`;
}

/** A body the schema accepted, as a definition; or why it is still refused. */
export function toDropDefinition(body: DropBody): { ok: true; definition: DropDefinition } | { ok: false; detail: string } {
  const firstStartsAtMs = Date.parse(body.firstStartsAt);
  if (Number.isNaN(firstStartsAtMs)) return { ok: false, detail: 'firstStartsAt is not a date' };
  if (body.openSeconds > body.everySeconds) {
    return { ok: false, detail: 'openSeconds must be at most everySeconds (one cycle at a time)' };
  }
  if (firstStartsAtMs + body.openSeconds * 1000 > latestInstantMs) {
    return { ok: false, detail: `firstStartsAt is too late: the first cycle must close by ${new Date(latestInstantMs).toISOString()}` };
  }
  return {
    ok: true,
    definition: {
      firstStartsAtMs,
      everySeconds: body.everySeconds,
      openSeconds: body.openSeconds,
      stockPerCycle: body.stockPerCycle,
      perShopperLimit: body.perShopperLimit,
      holdSeconds: body.holdSeconds,
      priceCents: body.priceCents,
      currency: body.currency,
      cycles: body.cycles ?? null,
    },
  };
}

/** Schema, then the rules across fields. */
export function parseDropBody(body: unknown): { ok: true; definition: DropDefinition } | { ok: false; detail: string } {
  if (!validateDropBody(body)) return { ok: false, detail: describeDropErrors(validateDropBody.errors) };
  return toDropDefinition(body);
}
