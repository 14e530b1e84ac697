import { problemTypes, type ProblemCode } from './problem.js';
import { checkoutBodySchema, reserveBodySchema, skuBodySchema, skuPatternSource, webhookBodySchema } from './validation.js';
import { saleStates } from '../inventory/inventory.js';
import { waitlistStatuses } from '../allocator/waitlist.js';

/**
 * The OpenAPI 3.1 document of the whole HTTP API, built here and served at
 * `GET /openapi.json`; `npm run openapi` writes it to openapi.json at the root
 * of the repository for clients (a test checks the file is current). Request
 * bodies are the very schemas the service validates with (validation.ts), and
 * every response a contract test receives is checked against this document
 * (test/helpers/contract.ts), so the two cannot drift apart.
 *
 * Paths use OpenAPI templates (`/v1/skus/{sku}`) for the uWS patterns
 * (`/v1/skus/:sku`). Every GET has a HEAD twin (same status and headers, no body).
 */

type Json = Record<string, unknown>;

const json = 'application/json';
const problemJson = 'application/problem+json';
const uuid = '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';
/** Drop names: the SKU grammar, 54 characters at most so that `{name}.{cycle}` is a SKU. */
const dropNamePatternSource = '^(?!\\.{1,2}$)[A-Za-z0-9._-]{1,54}$';
const ref = (name: string): Json => ({ $ref: `#/components/schemas/${name}` });
const isoInstant = { type: 'string', format: 'date-time' };
const count = { type: 'integer', minimum: 0 };

// ------------------------------------------------------------------ schemas

const schemas: Record<string, Json> = {
  Problem: {
    type: 'object',
    description: 'RFC 9457 problem details; `code` is stable, `type` is derived from it.',
    properties: {
      type: { type: 'string', format: 'uri' },
      title: { type: 'string' },
      status: { type: 'integer', minimum: 400, maximum: 599 },
      detail: { type: 'string' },
      instance: { type: 'string', description: 'the request path' },
      code: { type: 'string', enum: Object.keys(problemTypes).sort() },
      line: { type: 'integer', minimum: 0, description: "a cart's refusal: the index in `items` of the line that failed" },
      sku: { type: 'string', pattern: skuPatternSource, description: "a cart's refusal: the SKU of the line that failed" },
    },
    required: ['type', 'title', 'status', 'detail', 'code'],
    additionalProperties: false,
  },
  Health: {
    type: 'object',
    properties: { status: { const: 'ok' } },
    required: ['status'],
    additionalProperties: false,
  },
  Ready: {
    type: 'object',
    properties: { status: { const: 'ready' } },
    required: ['status'],
    additionalProperties: false,
  },
  SkuBody: withoutPrivateKeywords(skuBodySchema),
  QueueTicket: {
    type: 'object',
    description:
      "A waiting-room ticket. Before the start `position` is null (everyone who joined before startsAt is shuffled once at the start); `admitted` carries a signed `admissionToken` for the reservation's Admission-Token header, good until `admissionExpiresAt` (poll again for a fresh one).",
    properties: {
      ticket: { type: 'string', pattern: uuid },
      sku: { type: 'string' },
      status: { enum: ['waiting', 'admitted'] },
      position: { type: ['integer', 'null'], minimum: 1, description: '1 = next to be admitted; null before the start and once admitted' },
      estimatedWaitSeconds: { ...count, description: 'seconds until admission at the configured rate (until the start, before it); 0 once admitted' },
      admissionToken: { type: 'string' },
      admissionExpiresAt: isoInstant,
    },
    required: ['ticket', 'sku', 'status', 'position', 'estimatedWaitSeconds'],
    additionalProperties: false,
  },
  SaleState: {
    type: 'string',
    enum: [...saleStates],
    description:
      'on_sale: reservations are taken (also when sold out); not_started: before startsAt; ended: at or after endsAt; archived: an admin archived the SKU (available reads 0; PUT reopens it). Reservations outside on_sale get 409 sale_not_open.',
  },
  SkuView: {
    type: 'object',
    properties: {
      sku: { type: 'string', pattern: skuPatternSource },
      state: { $ref: '#/components/schemas/SaleState' },
      stock: count,
      available: { ...count, description: 'what can be reserved now; 0 when archived' },
      held: count,
      sold: count,
      perShopperLimit: { type: 'integer', minimum: 1 },
      holdSeconds: { type: 'integer', minimum: 1 },
      priceCents: count,
      currency: { type: 'string', pattern: '^[A-Z]{3}$' },
      startsAt: { type: ['string', 'null'], format: 'date-time' },
      endsAt: { type: ['string', 'null'], format: 'date-time' },
      waitingRoom: {
        type: 'object',
        description: 'present when the SKU has a waiting room: reservations need an Admission-Token (POST /v1/skus/{sku}/queue)',
        properties: { admitPerSecond: { type: 'integer', minimum: 1 } },
        required: ['admitPerSecond'],
        additionalProperties: false,
      },
      waitlistOfferSeconds: { type: 'integer', minimum: 1, description: 'present when the SKU has a waitlist: how long an offer to the line is held' },
    },
    required: ['sku', 'state', 'stock', 'available', 'held', 'sold', 'perShopperLimit', 'holdSeconds', 'priceCents', 'currency', 'startsAt', 'endsAt'],
    additionalProperties: false,
  },
  StockMessage: {
    type: 'object',
    description:
      '/v1/stream `stock` frame. `state` is as of the moment the frame is sent: crossing startsAt or endsAt sends no frame by itself, so a client compares them with its clock.',
    properties: {
      type: { const: 'stock' },
      sku: { type: 'string', pattern: skuPatternSource },
      state: { $ref: '#/components/schemas/SaleState' },
      available: count,
      held: count,
      sold: count,
      seq: count,
      startsAt: { type: ['string', 'null'], format: 'date-time' },
      endsAt: { type: ['string', 'null'], format: 'date-time' },
      waitlist: { type: 'boolean', description: 'whether the SKU has a waitlist (its waitlistOfferSeconds is set): shoppers may join it while it is sold out' },
    },
    required: ['type', 'sku', 'state', 'available', 'held', 'sold', 'seq', 'startsAt', 'endsAt', 'waitlist'],
    additionalProperties: false,
  },
  ReserveBody: withoutPrivateKeywords(reserveBodySchema),
  ReservationView: {
    type: 'object',
    properties: {
      reservationId: { type: 'string', pattern: uuid },
      sku: { type: 'string', pattern: skuPatternSource },
      quantity: { type: 'integer', minimum: 1 },
      status: {
        type: 'string',
        enum: ['held', 'released', 'expired', 'checking_out', 'paid', 'payment_failed', 'tentative'],
        description: '`tentative`: a cart line whose cart is being decided (for a moment; never answered to the cart request)',
      },
      expiresAt: isoInstant,
    },
    required: ['reservationId', 'sku', 'quantity', 'status', 'expiresAt'],
    additionalProperties: false,
  },
  WaitlistView: {
    type: 'object',
    description: 'A waitlist entry as its shopper sees it (docs/waitlist.md).',
    properties: {
      waitlistId: { type: 'string', pattern: uuid },
      sku: { type: 'string', pattern: skuPatternSource },
      quantity: { type: 'integer', minimum: 1 },
      status: {
        type: 'string',
        enum: [...waitlistStatuses],
        description: 'waiting: in line; offered: units are held for the shopper (reservationId, until offerExpiresAt); taken: the offer went to checkout; declined: the shopper released the offer; expired: the offer lapsed and went to the next in line; left: the shopper left the line',
      },
      position: { type: ['integer', 'null'], minimum: 1, description: '1 = first in line; null unless waiting' },
      reservationId: { type: ['string', 'null'], pattern: uuid, description: 'the offer: a held reservation, checked out like any' },
      offerExpiresAt: { type: ['string', 'null'], format: 'date-time' },
    },
    required: ['waitlistId', 'sku', 'quantity', 'status', 'position', 'reservationId', 'offerExpiresAt'],
    additionalProperties: false,
  },
  CheckoutBody: withoutPrivateKeywords(checkoutBodySchema),
  CheckoutView: {
    type: 'object',
    properties: {
      orderId: { type: 'string', pattern: uuid },
      reservationId: { type: 'string', pattern: uuid },
      status: { const: 'pending' },
    },
    required: ['orderId', 'reservationId', 'status'],
    additionalProperties: false,
  },
  OrderView: {
    type: 'object',
    properties: orderProperties(),
    required: ['orderId', 'reservationId', 'sku', 'quantity', 'amountCents', 'currency', 'status'],
    additionalProperties: false,
  },
  AdminOrderView: {
    type: 'object',
    properties: {
      ...orderProperties(),
      shopperId: { type: 'string' },
      paymentMethod: { type: 'string' },
      charges: { type: 'array', items: ref('ProviderCharge') },
    },
    required: ['orderId', 'reservationId', 'sku', 'quantity', 'amountCents', 'currency', 'status', 'shopperId', 'paymentMethod', 'charges'],
    additionalProperties: false,
  },
  ProviderCharge: {
    type: 'object',
    description: "The payment provider's own record of a charge.",
    properties: {
      id: { type: 'string' },
      amountCents: count,
      status: { type: 'string', enum: ['succeeded', 'declined'] },
      idempotencyKey: { type: 'string' },
    },
    required: ['id', 'amountCents', 'status', 'idempotencyKey'],
    additionalProperties: false,
  },
  AuditReport: {
    type: 'object',
    properties: {
      ok: { type: 'boolean' },
      checkedAt: isoInstant,
      skus: count,
      orders: count,
      successfulCharges: count,
      violations: { type: 'array', items: ref('Violation') },
    },
    required: ['ok', 'checkedAt', 'skus', 'orders', 'successfulCharges', 'violations'],
    additionalProperties: false,
  },
  Violation: {
    type: 'object',
    properties: {
      kind: {
        type: 'string',
        enum: ['ledger_invariant', 'live_state_mismatch', 'paid_order_without_one_charge', 'charge_without_paid_order', 'order_log_mismatch'],
      },
      detail: { type: 'string' },
      sku: { type: 'string' },
      orderId: { type: 'string' },
    },
    required: ['kind', 'detail'],
    additionalProperties: false,
  },
  WebhookBody: withoutPrivateKeywords(webhookBodySchema),
  WebhookReceipt: {
    type: 'object',
    properties: {
      received: { const: true },
      duplicate: { type: 'boolean', description: 'true: this delivery id was seen before and changed nothing' },
      orderStatus: { type: 'string', enum: ['pending', 'paid', 'failed'] },
    },
    required: ['received', 'duplicate', 'orderStatus'],
    additionalProperties: false,
  },
  DropBody: {
    type: 'object',
    properties: {
      firstStartsAt: isoInstant,
      everySeconds: { type: 'integer', minimum: 1, maximum: 366 * 24 * 3600 },
      openSeconds: { type: 'integer', minimum: 1, maximum: 366 * 24 * 3600, description: 'at most everySeconds' },
      stockPerCycle: { type: 'integer', minimum: 0, maximum: 1_000_000_000 },
      perShopperLimit: { type: 'integer', minimum: 1, maximum: 1_000_000_000 },
      holdSeconds: { type: 'integer', minimum: 1, maximum: 7 * 24 * 3600 },
      priceCents: { type: 'integer', minimum: 0, maximum: 100_000_000_000 },
      currency: { type: 'string', pattern: '^[A-Z]{3}$' },
      cycles: { type: 'integer', minimum: 1, maximum: 999_999_999, description: 'absent: forever' },
    },
    required: ['firstStartsAt', 'everySeconds', 'openSeconds', 'stockPerCycle', 'perShopperLimit', 'holdSeconds', 'priceCents', 'currency'],
    additionalProperties: false,
  },
  DropView: {
    type: 'object',
    properties: {
      name: { type: 'string', pattern: dropNamePatternSource },
      everySeconds: { type: 'integer', minimum: 1 },
      openSeconds: { type: 'integer', minimum: 1 },
      stockPerCycle: count,
      perShopperLimit: { type: 'integer', minimum: 1 },
      current: { oneOf: [ref('CycleView'), { type: 'null' }], description: 'the cycle whose window contains now' },
      next: { oneOf: [ref('CycleView'), { type: 'null' }] },
    },
    required: ['name', 'everySeconds', 'openSeconds', 'stockPerCycle', 'perShopperLimit', 'current', 'next'],
    additionalProperties: false,
  },
  CycleView: {
    type: 'object',
    description: 'Cycle n of drop `name` is the SKU `{name}.{n}`. Counts are null only while its SKU is on a node this one cannot see.',
    properties: {
      cycle: { type: 'integer', minimum: 1 },
      sku: { type: 'string', pattern: skuPatternSource },
      startsAt: isoInstant,
      endsAt: isoInstant,
      available: { type: ['integer', 'null'], minimum: 0 },
      held: { type: ['integer', 'null'], minimum: 0 },
      sold: { type: ['integer', 'null'], minimum: 0 },
    },
    required: ['cycle', 'sku', 'startsAt', 'endsAt', 'available', 'held', 'sold'],
    additionalProperties: false,
  },
  ClusterView: {
    type: 'object',
    properties: {
      self: { type: 'string', description: 'the node id of the node that answered' },
      nodes: {
        type: 'array',
        items: {
          type: 'object',
          properties: {
            nodeId: { type: 'string' },
            url: { type: 'string', format: 'uri' },
            shards: { type: 'array', items: { type: 'integer', minimum: 0 } },
            alive: { type: 'boolean' },
          },
          required: ['nodeId', 'url', 'shards', 'alive'],
          additionalProperties: false,
        },
      },
      shardCount: { type: 'integer', minimum: 1 },
    },
    required: ['self', 'nodes', 'shardCount'],
    additionalProperties: false,
  },
  Placement: {
    type: 'object',
    properties: {
      sku: { type: 'string', pattern: skuPatternSource },
      shard: { type: 'integer', minimum: 0 },
      owner: {
        oneOf: [
          {
            type: 'object',
            properties: { nodeId: { type: 'string' }, url: { type: 'string', format: 'uri' } },
            required: ['nodeId', 'url'],
            additionalProperties: false,
          },
          { type: 'null' },
        ],
        description: 'null while no node holds the shard (moving, or its owner died and it is not taken over yet)',
      },
      epoch: { type: ['integer', 'null'], minimum: 0, description: "the owner's lease epoch (fencing token)" },
    },
    required: ['sku', 'shard', 'owner', 'epoch'],
    additionalProperties: false,
  },
  CartBody: {
    type: 'object',
    properties: {
      items: {
        type: 'array',
        minItems: 1,
        description: 'at most CART_MAX_LINES (default 20) lines, each SKU once',
        items: {
          type: 'object',
          properties: { sku: { type: 'string', pattern: skuPatternSource }, quantity: { type: 'integer', minimum: 1, maximum: 1_000_000_000 } },
          required: ['sku', 'quantity'],
          additionalProperties: false,
        },
      },
    },
    required: ['items'],
    additionalProperties: false,
  },
  CartView: {
    type: 'object',
    properties: {
      cartId: { type: 'string', pattern: uuid },
      status: { type: 'string', enum: ['held', 'released', 'expired', 'pending', 'paid', 'payment_failed'] },
      expiresAt: { ...isoInstant, description: 'the whole cart expires at once, at its earliest line’s expiry' },
      items: {
        type: 'array',
        items: {
          type: 'object',
          properties: {
            sku: { type: 'string', pattern: skuPatternSource },
            quantity: { type: 'integer', minimum: 1 },
            reservationId: { type: 'string', pattern: uuid, description: 'the line is an ordinary reservation: GET /v1/reservations/{id}' },
            status: { type: 'string', enum: ['held', 'released', 'expired', 'checking_out', 'paid', 'payment_failed', 'tentative'] },
          },
          required: ['sku', 'quantity', 'reservationId'],
          additionalProperties: false,
        },
      },
      orderId: { type: 'string', pattern: uuid },
    },
    required: ['cartId', 'status', 'expiresAt', 'items'],
    additionalProperties: false,
  },
  CartCheckoutView: {
    type: 'object',
    properties: { orderId: { type: 'string', pattern: uuid }, cartId: { type: 'string', pattern: uuid }, status: { const: 'pending' } },
    required: ['orderId', 'cartId', 'status'],
    additionalProperties: false,
  },
  OpenApiDocument: {
    type: 'object',
    properties: { openapi: { const: '3.1.0' }, info: { type: 'object' }, paths: { type: 'object' } },
    required: ['openapi', 'info', 'paths'],
  },
};

/**
 * The service's request schemas as a client may read them: `parsableDate` (the
 * service's own ajv keyword: a date Date.parse can read, so no leap second) becomes prose.
 */
function withoutPrivateKeywords(schema: Json): Json {
  return JSON.parse(JSON.stringify(schema), (_key, value: unknown) => {
    if (value === null || typeof value !== 'object' || !('parsableDate' in value)) return value;
    const { parsableDate: _, ...rest } = value as Json;
    return { ...rest, description: 'an RFC 3339 date-time that JavaScript can represent (no leap second 23:59:60), at most 9999-12-31T23:59:59.999Z' };
  });
}

function orderProperties(): Json {
  return {
    orderId: { type: 'string', pattern: uuid },
    reservationId: { type: 'string', pattern: uuid },
    sku: { type: 'string', pattern: skuPatternSource },
    quantity: { type: 'integer', minimum: 1 },
    amountCents: count,
    currency: { type: 'string', pattern: '^[A-Z]{3}$' },
    status: { type: 'string', enum: ['pending', 'paid', 'failed'] },
    failureReason: { type: 'string', description: 'only when failed: card_declined, payment_unavailable, ...' },
  };
}

// ---------------------------------------------------------------- responses

const headers: Record<string, Json> = {
  RequestId: {
    description: 'The request id: the `X-Request-Id` sent (1-100 visible ASCII characters), else one made up.',
    required: true,
    schema: { type: 'string', pattern: '^[\\x21-\\x7e]{1,100}$' },
  },
  RetryAfter: { description: 'Seconds to wait before retrying.', required: true, schema: { type: 'integer', minimum: 0 } },
  Allow: { description: 'The methods this path serves.', required: true, schema: { type: 'string' } },
  WwwAuthenticate: { description: 'Always `Bearer`.', required: true, schema: { const: 'Bearer' } },
  Upgrade: { description: 'Always `websocket`.', required: true, schema: { const: 'websocket' } },
};

const requestIdHeader = { 'X-Request-Id': { $ref: '#/components/headers/RequestId' } };

/** When each problem code happens, for the response descriptions. */
const problemWhen: Record<ProblemCode, string> = {
  invalid_request:
    'bad body, bad SKU or drop name, missing or bad Idempotency-Key, backwards sale window, a date JavaScript cannot represent (a leap second 23:59:60) or later than 9999-12-31T23:59:59.999Z',
  quantity_too_large: '`quantity` above MAX_QUANTITY_PER_REQUEST',
  unauthorized: "missing, invalid or expired token; wrong alg; a `sub` that is not 1-128 printable, well-formed UTF-16 characters; bad webhook signature",
  forbidden: 'reserved',
  not_found: 'unknown SKU, reservation, order, drop or route',
  method_not_allowed: 'known path, other method (`Allow` lists the right ones)',
  sold_out: 'fewer available than asked',
  limit_exceeded: "this shopper's held + paid quantity would pass perShopperLimit",
  sale_not_open: 'before startsAt, from endsAt on, or the SKU is archived',
  stock_below_committed: 'admin lowered stock under held + sold',
  reservation_not_held: 'checkout of a reservation that is not held; releasing one in checkout or paid',
  waitlist_not_enabled: 'the SKU has no waitlist (no waitlistOfferSeconds)',
  not_sold_out: 'units are on sale: reserve them instead of joining the waitlist',
  waitlist_full: 'the waitlist has WAITLIST_MAX_ENTRIES open entries',
  already_waitlisted: 'the shopper already has an open entry on this waitlist',
  waitlist_entry_closed: 'leaving an entry whose offer was taken, declined or lapsed',
  provider_mismatch: "a payment webhook the provider's own records contradict (not recorded, nothing changes)",
  payload_too_large: 'body over MAX_BODY_BYTES',
  unsupported_media_type: 'body is not application/json',
  idempotency_key_reused: 'same shopper and key, different request',
  drop_never_runs: 'a drop whose schedule can never produce a cycle: its last cycle (`cycles`, else cycle 999999999) has already closed',
  upgrade_required: '/v1/stream without a WebSocket upgrade',
  rate_limited: 'over RATE_LIMIT_SHOPPER_PER_SECOND or RATE_LIMIT_IP_PER_SECOND',
  internal: 'a bug; nothing was acknowledged',
  unavailable: 'recovering, SKU being rebuilt or owned by another node, too much waiting for the database, or the commit failed',
  too_many_holds: 'the SKU has MAX_LIVE_HOLDS_PER_SKU live holds',
  not_ready: 'before recovery finished or while PostgreSQL is down',
  reservation_in_cart: 'releasing or checking out one line of a cart alone (the cart decides its lines)',
  mixed_currencies: "checkout of a cart whose lines' SKUs are priced in different currencies",
  cart_aborted: 'the cart waited too long for its decision and a shard aborted it: nothing is held; a new Idempotency-Key starts a new cart',
  admission_required: 'a reservation on a SKU with a waiting room without an Admission-Token header',
  admission_invalid: 'an Admission-Token that is malformed, truncated or not signed by this service',
  admission_expired: 'an Admission-Token past its expiry (poll the ticket again for a fresh one)',
  admission_mismatch: "an Admission-Token issued to another shopper or for another SKU",
  no_waiting_room: 'joining the queue of a SKU without a waiting room',
  waiting_room_in_use: "changing a waiting room's admitPerSecond or the sale's startsAt (or removing it) once it holds tickets",
  queue_full: 'the waiting room holds QUEUE_MAX_TICKETS tickets',
};

/**
 * One status's problem response: its codes (all of that status when omitted), and the headers it carries.
 * A 401 challenges with `WWW-Authenticate: Bearer` unless `challenge` is false (the signed webhook).
 */
function problemResponse(status: number, codes?: ProblemCode[], challenge = true): Json {
  const allowed = codes ?? (Object.keys(problemTypes) as ProblemCode[]).filter((code) => problemTypes[code].status === status);
  for (const code of allowed) {
    if (problemTypes[code].status !== status) throw new Error(`problem ${code} is ${problemTypes[code].status}, not ${status}`);
  }
  const extra: Json = {};
  if (status === 503 || allowed.includes('rate_limited')) extra['Retry-After'] = { $ref: '#/components/headers/RetryAfter' };
  if (status === 401 && challenge) extra['WWW-Authenticate'] = { $ref: '#/components/headers/WwwAuthenticate' };
  if (status === 405) extra.Allow = { $ref: '#/components/headers/Allow' };
  if (allowed.includes('upgrade_required')) extra.Upgrade = { $ref: '#/components/headers/Upgrade' };
  return {
    description: allowed.map((code) => `\`${code}\`: ${problemWhen[code]}`).join('; '),
    headers: { ...requestIdHeader, ...extra },
    content: {
      [problemJson]: {
        schema: {
          allOf: [ref('Problem')],
          properties: { status: { const: status }, code: { enum: allowed } },
        },
      },
    },
  };
}

function ok(schema: string, description: string, mediaType = json): Json {
  return { description, headers: requestIdHeader, content: { [mediaType]: { schema: ref(schema) } } };
}

type Responses = Record<string, Json>;

/** Problems by status: `[401]`, or `[409, ['sold_out', ...]]` to narrow the codes. */
type ProblemSpec = number | [number, ProblemCode[]];

/** Problem responses are shared components, one per status and set of codes, named after them. */
const sharedResponses: Responses = {};

function problems(...specs: ProblemSpec[]): Responses {
  const out: Responses = {};
  for (const spec of [...specs, 500]) {
    const [status, codes] = typeof spec === 'number' ? [spec, undefined] : spec;
    const name = `problem-${status}${codes === undefined ? '' : `-${codes.join('-')}`}`;
    sharedResponses[name] ??= problemResponse(status, codes);
    out[String(status)] = { $ref: `#/components/responses/${name}` };
  }
  return out;
}

// ----------------------------------------------------------------- operations

const parameters: Record<string, Json> = {
  Sku: {
    name: 'sku',
    in: 'path',
    required: true,
    description: "1-64 characters of A-Z a-z 0-9 . _ -, not '.' or '..' (otherwise 400 invalid_request)",
    schema: { type: 'string', pattern: skuPatternSource },
  },
  ReservationId: {
    name: 'id',
    in: 'path',
    required: true,
    description: 'a reservation id (a UUID; anything else is 404)',
    schema: { type: 'string' },
  },
  CartId: { name: 'id', in: 'path', required: true, description: 'a cart id (a UUID; anything else is 404)', schema: { type: 'string' } },
  WaitlistId: { name: 'id', in: 'path', required: true, description: 'a waitlist entry id (a UUID; anything else is 404)', schema: { type: 'string' } },
  OrderId: { name: 'id', in: 'path', required: true, description: 'an order id (a UUID; anything else is 404)', schema: { type: 'string' } },
  DropName: {
    name: 'name',
    in: 'path',
    required: true,
    description: "the SKU grammar, at most 54 characters (cycle n is the SKU `{name}.{n}`); otherwise 400 invalid_request",
    schema: { type: 'string', pattern: dropNamePatternSource },
  },
  IdempotencyKey: {
    name: 'Idempotency-Key',
    in: 'header',
    required: true,
    description: '1-200 visible ASCII characters; the same shopper repeating it with the same request gets the original answer',
    schema: { type: 'string', pattern: '^[\\x21-\\x7e]{1,200}$' },
  },
  RequestId: {
    name: 'X-Request-Id',
    in: 'header',
    required: false,
    description: 'echoed in the response when it is 1-100 visible ASCII characters',
    schema: { type: 'string' },
  },
  Ticket: { name: 'ticket', in: 'path', required: true, description: 'a waiting-room ticket (a UUID; anything else is 404)', schema: { type: 'string' } },
  AdmissionToken: {
    name: 'Admission-Token',
    in: 'header',
    required: false,
    description: "the admissionToken of the shopper's admitted waiting-room ticket for this SKU; required when the SKU has a waiting room",
    schema: { type: 'string' },
  },
  StreamToken: {
    name: 'token',
    in: 'query',
    required: false,
    description: 'a shopper JWT; without a valid one the socket may subscribe but not reserve or release',
    schema: { type: 'string' },
  },
  WebhookSignature: {
    name: 'x-flashstock-signature',
    in: 'header',
    required: true,
    description: '`sha256=<hex HMAC-SHA256 of the raw body with PAYMENT_WEBHOOK_SECRET>`',
    schema: { type: 'string' },
  },
};

const param = (name: string): Json => ({ $ref: `#/components/parameters/${name}` });
const body = (schema: string): Json => ({ required: true, content: { [json]: { schema: ref(schema) } } });
const shopperAuth = [{ shopperJwt: [] }];
const adminAuth = [{ adminToken: [] }];
/** Problems of every route that reads a JSON body. */
const bodyProblems: ProblemSpec[] = [413, 415];

interface Operation {
  summary: string;
  operationId: string;
  tags: string[];
  description?: string;
  security?: Json[];
  parameters?: Json[];
  requestBody?: Json;
  responses: Responses;
}

/** A GET and its HEAD twin (same responses; a HEAD response has no body). */
function readable(get: Operation): Json {
  const head: Operation = {
    ...get,
    summary: `${get.summary} (headers only)`,
    operationId: `${get.operationId}Head`,
    description: 'The same status and headers as GET, without the body.',
  };
  return { get, head };
}

const sku = param('Sku');

const paths: Record<string, Json> = {
  '/healthz': readable({
    summary: 'The process is alive (Kubernetes livenessProbe)',
    operationId: 'health',
    tags: ['ops'],
    security: [],
    responses: { '200': ok('Health', 'alive'), ...problems() },
  }),
  '/readyz': readable({
    summary: 'Ready to serve: every allocator recovered and PostgreSQL answers (readinessProbe, startupProbe)',
    operationId: 'ready',
    tags: ['ops'],
    security: [],
    responses: { '200': ok('Ready', 'ready'), ...problems([503, ['not_ready']]) },
  }),
  '/metrics': {
    // Not on the API port: the metrics listener (src/metrics/listener.ts) serves this path alone.
    servers: [{ url: 'http://127.0.0.1:9464', description: 'the metrics listener, METRICS_HOST:METRICS_PORT (default 127.0.0.1:9464); the API port answers 404' }],
    ...readable({
      summary: 'Prometheus metrics (text exposition format), on the metrics listener only',
      operationId: 'metrics',
      tags: ['ops'],
      security: [],
      responses: {
        '200': { description: 'the metrics', content: { 'text/plain': { schema: { type: 'string' } } } },
        '404': { description: 'any other path on the metrics listener', content: { 'text/plain': { schema: { type: 'string' } } } },
        '405': { description: 'a method other than GET or HEAD', content: { 'text/plain': { schema: { type: 'string' } } } },
      },
    }),
  },
  '/openapi.json': readable({
    summary: 'This document',
    operationId: 'openApi',
    tags: ['ops'],
    security: [],
    responses: { '200': ok('OpenApiDocument', 'the OpenAPI 3.1 document'), ...problems() },
  }),
  '/': readable({
    summary: 'The watch-a-drop page (`?sku=NAME&token=JWT`)',
    operationId: 'page',
    tags: ['stream'],
    security: [],
    responses: { '200': { description: 'the page', content: { 'text/html': { schema: { type: 'string' } } } } },
  }),
  '/v1/stream': readable({
    summary: 'The live-stock WebSocket (see docs/api.md for its messages; `stock` frames: the StockMessage schema)',
    operationId: 'stream',
    tags: ['stream'],
    security: [],
    parameters: [param('StreamToken')],
    responses: {
      '101': {
        description: 'switched to the WebSocket protocol (no subprotocol is ever agreed)',
        headers: {
          Upgrade: { $ref: '#/components/headers/Upgrade' },
          'Sec-WebSocket-Accept': { required: true, schema: { type: 'string' } },
        },
      },
      ...problems([426, ['upgrade_required']], [429, ['rate_limited']], [503, ['unavailable']]),
    },
  }),
  '/v1/admin/skus/{sku}': {
    parameters: [sku],
    put: {
      summary: 'Create or replace a SKU (the whole configuration)',
      operationId: 'putSku',
      tags: ['admin'],
      security: adminAuth,
      requestBody: body('SkuBody'),
      responses: {
        '200': ok('SkuView', 'updated'),
        '201': ok('SkuView', 'created'),
        ...problems([400, ['invalid_request']], 401, [409, ['stock_below_committed', 'waiting_room_in_use']], ...bodyProblems, [503, ['unavailable']]),
      },
    },
    delete: {
      summary: 'Archive a SKU: reservations are refused (409 sale_not_open) until it is configured again',
      operationId: 'archiveSku',
      tags: ['admin'],
      security: adminAuth,
      description: 'Live holds are released; pending payments still settle. The allocator leaves memory; GET still answers.',
      responses: { '200': ok('SkuView', 'archived'), ...problems([400, ['invalid_request']], 401, [404, ['not_found']], [503, ['unavailable']]) },
    },
  },
  '/v1/admin/skus/{sku}/placement': {
    parameters: [sku],
    ...readable({
      summary: "The SKU's shard and the node that owns it",
      operationId: 'skuPlacement',
      tags: ['admin', 'cluster'],
      security: adminAuth,
      description: 'On a process that is not a cluster node: 404 `not_found` (after the admin check).',
      responses: { '200': ok('Placement', 'placement'), ...problems([400, ['invalid_request']], 401, [404, ['not_found']]) },
    }),
  },
  '/v1/admin/cluster': readable({
    summary: 'The cluster: nodes, their shards, liveness',
    operationId: 'cluster',
    tags: ['admin', 'cluster'],
    security: adminAuth,
    description: 'On a process that is not a cluster node: 404 `not_found` (after the admin check).',
    responses: { '200': ok('ClusterView', 'the cluster as this node sees it'), ...problems(401, [404, ['not_found']]) },
  }),
  '/v1/skus/{sku}': {
    parameters: [sku],
    ...readable({
      summary: "A SKU's configuration and live counts",
      operationId: 'getSku',
      tags: ['public'],
      security: [],
      responses: { '200': ok('SkuView', 'the SKU'), ...problems([400, ['invalid_request']], [404, ['not_found']], [503, ['unavailable']]) },
    }),
  },
  '/v1/skus/{sku}/reservations': {
    parameters: [sku],
    post: {
      summary: 'Reserve units (a hold until expiresAt)',
      operationId: 'reserve',
      tags: ['shopper'],
      security: shopperAuth,
      parameters: [param('IdempotencyKey'), param('AdmissionToken')],
      requestBody: body('ReserveBody'),
      responses: {
        '201': ok('ReservationView', 'held (or the original answer to a repeated key)'),
        ...problems(
          [400, ['invalid_request', 'quantity_too_large']],
          401,
          [403, ['admission_required', 'admission_invalid', 'admission_expired', 'admission_mismatch']],
          [404, ['not_found']],
          [409, ['sold_out', 'limit_exceeded', 'sale_not_open']],
          ...bodyProblems,
          [422, ['idempotency_key_reused']],
          [429, ['rate_limited']],
          [503, ['unavailable', 'too_many_holds']],
        ),
      },
    },
  },
  '/v1/skus/{sku}/queue': {
    parameters: [sku],
    post: {
      summary: "Take a ticket in the SKU's waiting room (asking again returns the same ticket)",
      operationId: 'joinQueue',
      tags: ['shopper'],
      security: shopperAuth,
      responses: {
        '201': ok('QueueTicket', "the shopper's ticket (the same one on every call)"),
        ...problems(
          [400, ['invalid_request']],
          401,
          [404, ['not_found']],
          [409, ['no_waiting_room', 'sale_not_open']],
          [429, ['rate_limited']],
          [503, ['unavailable', 'queue_full']],
        ),
      },
    },
  },
  '/v1/skus/{sku}/waitlist': {
    parameters: [sku],
    post: {
      summary: 'Join the waitlist of a sold-out SKU (returned units are offered in join order)',
      operationId: 'joinWaitlist',
      tags: ['shopper'],
      security: shopperAuth,
      parameters: [param('IdempotencyKey')],
      requestBody: body('ReserveBody'),
      responses: {
        '201': ok('WaitlistView', 'waiting, with its position (or the entry a repeated key made, as it is now)'),
        ...problems(
          [400, ['invalid_request', 'quantity_too_large']],
          401,
          [404, ['not_found']],
          [409, ['waitlist_not_enabled', 'not_sold_out', 'waitlist_full', 'already_waitlisted', 'limit_exceeded', 'sale_not_open']],
          ...bodyProblems,
          [422, ['idempotency_key_reused']],
          [429, ['rate_limited']],
          [503, ['unavailable']],
        ),
      },
    },
  },
  '/v1/queue/{ticket}': {
    parameters: [param('Ticket')],
    ...readable({
      summary: "Where the shopper's ticket stands: waiting (position, estimated wait) or admitted (admission token)",
      operationId: 'pollQueue',
      tags: ['shopper'],
      security: shopperAuth,
      responses: { '200': ok('QueueTicket', 'the ticket'), ...problems(401, [404, ['not_found']], [503, ['unavailable']]) },
    }),
  },
  '/v1/waitlist/{id}': {
    parameters: [param('WaitlistId')],
    ...readable({
      summary: "One of the shopper's waitlist entries: position while waiting, the offer once offered",
      operationId: 'getWaitlistEntry',
      tags: ['shopper'],
      security: shopperAuth,
      responses: { '200': ok('WaitlistView', 'the entry'), ...problems(401, [404, ['not_found']], [503, ['unavailable']]) },
    }),
    delete: {
      summary: 'Leave the waitlist (a standing offer is released to the next in line)',
      operationId: 'leaveWaitlist',
      tags: ['shopper'],
      security: shopperAuth,
      responses: {
        '200': ok('WaitlistView', 'left'),
        ...problems(401, [404, ['not_found']], [409, ['waitlist_entry_closed']], [429, ['rate_limited']], [503, ['unavailable']]),
      },
    },
  },
  '/v1/reservations/{id}': {
    parameters: [param('ReservationId')],
    ...readable({
      summary: "One of the shopper's reservations",
      operationId: 'getReservation',
      tags: ['shopper'],
      security: shopperAuth,
      responses: { '200': ok('ReservationView', 'the reservation'), ...problems(401, [404, ['not_found']], [503, ['unavailable']]) },
    }),
    delete: {
      summary: 'Release a reservation (idempotent)',
      operationId: 'release',
      tags: ['shopper'],
      security: shopperAuth,
      responses: {
        '200': ok('ReservationView', 'released (or expired, if its time was up)'),
        ...problems(401, [404, ['not_found']], [409, ['reservation_not_held', 'reservation_in_cart']], [429, ['rate_limited']], [503, ['unavailable']]),
      },
    },
  },
  '/v1/reservations/{id}/checkout': {
    parameters: [param('ReservationId')],
    post: {
      summary: 'Start paying for a held reservation (one order per reservation)',
      operationId: 'checkout',
      tags: ['shopper', 'payments'],
      security: shopperAuth,
      parameters: [param('IdempotencyKey')],
      requestBody: body('CheckoutBody'),
      responses: {
        '202': ok('CheckoutView', 'the order, pending its payment'),
        ...problems(
          [400, ['invalid_request']],
          401,
          [404, ['not_found']],
          [409, ['reservation_not_held', 'reservation_in_cart']],
          ...bodyProblems,
          [422, ['idempotency_key_reused']],
          [429, ['rate_limited']],
          [503, ['unavailable']],
        ),
      },
    },
  },
  '/v1/carts': {
    post: {
      summary: 'Hold several SKUs all-or-nothing: every line held, or nothing held anywhere',
      operationId: 'createCart',
      tags: ['shopper'],
      security: shopperAuth,
      parameters: [param('IdempotencyKey')],
      requestBody: body('CartBody'),
      responses: {
        '201': ok('CartView', 'every line held; the same key and body answer the same cart again'),
        ...problems(
          [400, ['invalid_request', 'quantity_too_large']],
          401,
          [404, ['not_found']],
          [409, ['sold_out', 'limit_exceeded', 'sale_not_open', 'cart_aborted']],
          ...bodyProblems,
          [422, ['idempotency_key_reused']],
          [429, ['rate_limited']],
          [503, ['unavailable', 'too_many_holds']],
        ),
      },
    },
  },
  '/v1/carts/{id}': {
    parameters: [param('CartId')],
    ...readable({
      summary: "One of the shopper's carts, with its lines",
      operationId: 'getCart',
      tags: ['shopper'],
      security: shopperAuth,
      responses: { '200': ok('CartView', 'the cart'), ...problems(401, [404, ['not_found']], [503, ['unavailable']]) },
    }),
    delete: {
      summary: 'Release every line of a held cart (idempotent)',
      operationId: 'releaseCart',
      tags: ['shopper'],
      security: shopperAuth,
      responses: {
        '200': ok('CartView', 'released (or expired, if its time was up)'),
        ...problems(401, [404, ['not_found']], [409, ['reservation_not_held']], [429, ['rate_limited']], [503, ['unavailable']]),
      },
    },
  },
  '/v1/carts/{id}/checkout': {
    parameters: [param('CartId')],
    post: {
      summary: 'Start paying for a held cart: one order, one payment for the sum of its lines',
      operationId: 'checkoutCart',
      tags: ['shopper', 'payments'],
      security: shopperAuth,
      parameters: [param('IdempotencyKey')],
      requestBody: body('CheckoutBody'),
      responses: {
        '202': ok('CartCheckoutView', 'the order, pending its payment (a repeated checkout answers the same order)'),
        ...problems(
          [400, ['invalid_request']],
          401,
          [404, ['not_found']],
          [409, ['reservation_not_held', 'mixed_currencies']],
          ...bodyProblems,
          [422, ['idempotency_key_reused']],
          [429, ['rate_limited']],
          [503, ['unavailable']],
        ),
      },
    },
  },
  '/v1/orders/{id}': {
    parameters: [param('OrderId')],
    ...readable({
      summary: "One of the shopper's orders",
      operationId: 'getOrder',
      tags: ['shopper', 'payments'],
      security: shopperAuth,
      responses: { '200': ok('OrderView', 'the order'), ...problems(401, [404, ['not_found']]) },
    }),
  },
  '/v1/admin/orders/{id}': {
    parameters: [param('OrderId')],
    ...readable({
      summary: "An order with its shopper, payment method and the provider's charges",
      operationId: 'adminGetOrder',
      tags: ['admin', 'payments'],
      security: adminAuth,
      responses: { '200': ok('AdminOrderView', 'the order'), ...problems(401, [404, ['not_found']]) },
    }),
  },
  '/v1/admin/audit': readable({
    summary: 'Run the ledger audit now',
    operationId: 'audit',
    tags: ['admin', 'payments'],
    security: adminAuth,
    responses: { '200': ok('AuditReport', 'the report (ok: false lists the violations)'), ...problems(401) },
  }),
  '/v1/payments/webhook': {
    post: {
      summary: "The payment provider's asynchronous confirmations",
      operationId: 'paymentWebhook',
      tags: ['payments'],
      security: [{ webhookSignature: [] }],
      description: 'Duplicate or replayed deliveries change nothing.',
      parameters: [param('WebhookSignature')],
      requestBody: body('WebhookBody'),
      responses: {
        '200': ok('WebhookReceipt', 'received'),
        ...problems([400, ['invalid_request']], [404, ['not_found']], [409, ['provider_mismatch']], ...bodyProblems, [503, ['unavailable']]),
        '401': { $ref: '#/components/responses/problem-401-signature' },
      },
    },
  },
  '/v1/admin/drops/{name}': {
    parameters: [param('DropName')],
    put: {
      summary: 'Create or replace a drop (applies from the next cycle that has not started)',
      operationId: 'putDrop',
      tags: ['admin', 'drops'],
      security: adminAuth,
      requestBody: body('DropBody'),
      responses: {
        '200': ok('DropView', 'updated'),
        '201': ok('DropView', 'created'),
        ...problems([400, ['invalid_request']], 401, [422, ['drop_never_runs']], ...bodyProblems, [503, ['unavailable']]),
      },
    },
    ...readable({
      summary: 'A drop (admin)',
      operationId: 'adminGetDrop',
      tags: ['admin', 'drops'],
      security: adminAuth,
      responses: { '200': ok('DropView', 'the drop'), ...problems([400, ['invalid_request']], 401, [404, ['not_found']]) },
    }),
    delete: {
      summary: 'Stop future cycles (the current one runs to its end)',
      operationId: 'deleteDrop',
      tags: ['admin', 'drops'],
      security: adminAuth,
      responses: { '200': ok('DropView', 'stopped'), ...problems([400, ['invalid_request']], 401, [404, ['not_found']]) },
    },
  },
  '/v1/drops/{name}': {
    parameters: [param('DropName')],
    ...readable({
      summary: 'A drop with its current and next cycle',
      operationId: 'getDrop',
      tags: ['public', 'drops'],
      security: [],
      responses: { '200': ok('DropView', 'the drop'), ...problems([400, ['invalid_request']], [404, ['not_found']]) },
    }),
  },
};

const description = `Flash-sale inventory: each SKU's stock in one in-memory allocator, every decision durable in PostgreSQL before the answer.

Errors are RFC 9457 problem details (\`application/problem+json\`) with a stable \`code\`. Every response carries \`X-Request-Id\`.
A path that is not in this document answers 404 \`not_found\` (the \`NoRoute\` response); a method a documented path does not list
answers 405 \`method_not_allowed\` with \`Allow\` listing exactly the methods documented here (the \`MethodNotAllowed\` response).
Every GET is also served as HEAD. docs/api.md is the reference prose.`;
// (The page at \`/\` is static HTML and carries no X-Request-Id.)

/** The document, built once. */
export const openApiDocument: Json = {
  openapi: '3.1.0',
  info: { title: 'flashstock', version: '1', description },
  jsonSchemaDialect: 'https://spec.openapis.org/oas/3.1/dialect/base',
  tags: ['ops', 'admin', 'public', 'shopper', 'payments', 'stream', 'drops', 'cluster'].map((name) => ({ name })),
  security: [],
  paths,
  components: {
    schemas,
    parameters,
    headers,
    responses: {
      ...sharedResponses,
      'problem-401-signature': problemResponse(401, ['unauthorized'], false),
      NoRoute: problemResponse(404, ['not_found']),
      MethodNotAllowed: problemResponse(405, ['method_not_allowed']),
    },
    securitySchemes: {
      shopperJwt: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: 'HS256 with JWT_SECRET, `sub` = shopper id, `exp` honoured' },
      adminToken: { type: 'http', scheme: 'bearer', description: 'ADMIN_TOKEN' },
      webhookSignature: { type: 'apiKey', in: 'header', name: 'x-flashstock-signature', description: 'HMAC-SHA256 of the raw body' },
    },
  },
};
