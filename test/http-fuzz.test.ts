import t from 'tap';
import fc from 'fast-check';
import net from 'node:net';
import { randomUUID } from 'node:crypto';
import { createSigner } from 'fast-jwt';
import { openApiDocument } from '../src/http/openapi.js';
import { signatureHeader } from '../src/payments/webhook.js';
import { adminToken, startTestService, type CallOptions } from './helpers/service.js';
import { installProcessTraps } from './helpers/traps.js';

/**
 * Generated hostile requests over every documented route: any method, hostile
 * path segments, tokens and headers, bodies of any shape (deep, long, not
 * JSON). Every answer must be a documented one (the contract check of `call`,
 * helpers/contract.ts) and none a 5xx; the service must answer every request
 * (a hang fails the file on tap's timeout) and keep serving, with nothing
 * unhandled in the process. Then malformed HTTP on a raw socket.
 */

const webhookSecret = 'fuzz-webhook-secret-0123456789abcdef-0123';
// No shopper rate limit: a 429 would stop most generated requests before the code they aim at.
const api = await startTestService(t, { paymentWebhookSecret: webhookSecret, rateLimitShopperPerSecond: 0 });
const traps = installProcessTraps(t);

const sku = 'FUZZ';
// Set up before any test point (tap ends a file that asserts at its top level between awaits).
const configured = await api.putSku(sku, { stock: 1_000_000, perShopperLimit: 1_000_000 });
const held = await api.reserve(sku, 'fuzz-holder');
if (configured.status !== 201 || held.status !== 201) throw new Error(`setup: PUT ${configured.status}, reserve ${held.status}`);
const reservationId: string = held.body.reservationId;

const templates = Object.keys(openApiDocument.paths as Record<string, unknown>);
const methods = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'];

/**
 * A path segment: one that exists, a well-formed one that does not, or hostile text (percent-encoded).
 * No dot segments: fetch resolves them before sending (test/http-edges.test.ts sends them raw).
 */
const isDotSegment = (s: string): boolean => /^(\.|%2e){1,2}$/i.test(s);
const segment = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(sku, reservationId) },
  fc.constantFrom(randomUUID(), '...', '%00', '%2F', '%FF', '%', 'a%2Fb', '-', '0'),
  fc.string({ maxLength: 40 }).map(encodeURIComponent).filter((s) => !isDotSegment(s)),
  fc.string({ unit: 'binary', maxLength: 20 }).map(encodeURIComponent),
  fc.integer({ min: 200, max: 5000 }).map((n) => 'x'.repeat(n)),
);

/** Documented operations as [method, template]: most requests aim at one, the rest at any method. */
const operations = templates.flatMap((template) =>
  methods.filter((m) => (openApiDocument.paths as Record<string, Record<string, unknown>>)[template]![m.toLowerCase()] !== undefined).map((m) => [m, template] as const),
);
const target = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...operations) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom(...methods), fc.constantFrom(...templates)) },
);

const request = fc
  .tuple(target, fc.array(segment, { minLength: 3, maxLength: 3 }), fc.option(fc.string({ maxLength: 30 }).map(encodeURIComponent)))
  .map(([[method, template], values, query]) => {
    let i = 0;
    const filled = template.replace(/\{[^}]+\}/g, () => values[i++ % values.length]!);
    return { method, path: query === null ? filled : `${filled}?sku=${query}` };
  });

const otherSecret = createSigner({ key: 'another-secret-0123456789abcdef-0123', algorithm: 'HS256' });
type Auth = Pick<CallOptions, 'admin' | 'shopper' | 'token' | 'headers'>;
const auth: fc.Arbitrary<Auth> = fc.oneof(
  fc.constant<Auth>({}),
  fc.constant({ admin: true }),
  fc.string({ minLength: 1, maxLength: 12 }).map((shopper) => ({ shopper })),
  fc.constantFrom<Auth>({ shopper: 'fuzz-a' }, { shopper: 'fuzz-b' }),
  fc.constantFrom<Auth>(
    { token: 'a.b.c' },
    { token: '' },
    { token: 'x'.repeat(20_000) },
    { token: otherSecret({ sub: 'mallory' }) },
    { token: api.token('') },
    { headers: { authorization: `Basic ${adminToken}` } },
    { headers: { authorization: 'Bearer' } },
    { headers: { authorization: `Bearer ${adminToken} ${adminToken}` } },
  ),
  fc.record({ token: fc.string({ maxLength: 300 }).map((s) => Buffer.from(s).toString('base64url')) }),
);

// Header values fetch accepts (visible ASCII, spaces and tabs).
const headerText = fc.string({ maxLength: 300, unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)) });
const headers = fc.record(
  {
    'idempotency-key': fc.oneof(headerText, fc.constant('k'.repeat(10_000)), fc.uuid()),
    'content-type': fc.constantFrom('application/json', 'text/plain', 'application/json; charset=utf-16', 'multipart/form-data', ''),
    'x-forwarded-for': fc.oneof(headerText, fc.constant('1.2.3.4, ::1, not-an-ip')),
    [signatureHeader]: headerText,
    'x-request-id': headerText,
    'admission-token': headerText,
  },
  { requiredKeys: ['idempotency-key'] },
);

const deep = (n: number): string => '['.repeat(n) + ']'.repeat(n);
type Body = Pick<CallOptions, 'body' | 'rawBody'>;
const body: fc.Arbitrary<Body> = fc.oneof(
  fc.constant<Body>({}),
  fc.jsonValue().map((value) => ({ body: value })),
  fc.constantFrom({ body: { quantity: 1 } }, { body: { lines: [{ sku, quantity: 1 }] } }, { body: { paymentMethod: 'pm_ok' } }),
  fc.record({ quantity: fc.oneof(fc.integer(), fc.double(), fc.string(), fc.constant(null)) }).map((value) => ({ body: value })),
  fc.record({ lines: fc.array(fc.record({ sku: fc.oneof(fc.constant(sku), fc.string()), quantity: fc.integer({ min: -2, max: 5 }) })) }).map((value) => ({ body: value })),
  fc.string({ maxLength: 200 }).map((rawBody) => ({ rawBody })),
  fc.constantFrom(deep(10_000), '{"quantity":1', '\u0000', '{"__proto__":{"x":1}}', `{"quantity":${'9'.repeat(400)}}`).map((rawBody) => ({ rawBody })),
);

const requests = fc.tuple(request, fc.record({ auth, headers, body })).map(([target, rest]) => ({ ...target, ...rest }));

t.test('generated hostile requests: only documented answers, never a 5xx', async (t) => {
  const statuses = new Map<number, number>();
  await fc.assert(
    fc.asyncProperty(requests, async ({ method, path, auth, headers, body }) => {
      const withBody = method === 'GET' || method === 'HEAD' ? {} : body;
      const options: CallOptions = { ...auth, ...withBody, headers: { ...headers, ...auth.headers } };
      // `call` checks the answer against the OpenAPI document and throws when it departs.
      const { status } = await api.call(method, path, options);
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
      return status < 500;
    }),
    { numRuns: 600, seed: Number(process.env.FUZZ_SEED ?? 20261207) },
  );
  t.pass(`answers by status: ${JSON.stringify(Object.fromEntries([...statuses].sort((a, b) => a[0] - b[0])))}`);
  t.ok([...statuses.keys()].some((s) => s >= 200 && s < 300), 'some requests got through to the work they aim at');
  t.ok([...statuses.keys()].some((s) => s >= 400), 'and some were refused');
});

/**
 * One hostile part in an otherwise good reservation and checkout: every other
 * part is valid, so the request reaches the allocator and the payments code
 * unless the hostile part is refused on the way (the property then needs a 4xx).
 */
const oneHostilePart = fc.record({
  part: fc.constantFrom('none', 'body', 'key', 'token', 'contentType'),
  body: body.filter((b) => b.body !== undefined || b.rawBody !== undefined),
  key: headers.map((h) => h['idempotency-key']),
  token: auth.filter((a) => a.shopper === undefined && a.admin === undefined),
  contentType: fc.constantFrom('text/plain', 'application/json; charset=utf-16', 'multipart/form-data', ''),
});

/** The SKU on sale again: the generated requests may have archived it (an admin's DELETE). */
async function onSaleAgain(): Promise<void> {
  const { status } = await api.putSku(sku, { stock: 1_000_000, perShopperLimit: 1_000_000 });
  if (status !== 200 && status !== 201) throw new Error(`configuring ${sku} again: ${status}`);
}

t.test('a good reservation and checkout with one hostile part: 201 without it, a documented 4xx with it', async (t) => {
  await onSaleAgain();
  const created = new Map<string, number>();
  await fc.assert(
    fc.asyncProperty(oneHostilePart, async ({ part, body, key, token, contentType }) => {
      // Fresh per run, shrinking included: a key used before would be a replay, not a new hold.
      const goodKey = randomUUID();
      const shopper = `fuzz-${goodKey.slice(0, 8)}`;
      const options: CallOptions = {
        shopper,
        body: { quantity: 1 },
        headers: { 'idempotency-key': goodKey, 'content-type': 'application/json' },
      };
      if (part === 'body') Object.assign(options, { body: undefined, rawBody: undefined }, body);
      if (part === 'key') options.headers!['idempotency-key'] = key;
      if (part === 'token') Object.assign(options, { shopper: undefined }, token, { headers: { ...options.headers, ...token.headers } });
      if (part === 'contentType') options.headers!['content-type'] = contentType;
      const reserved = await api.call('POST', `/v1/skus/${sku}/reservations`, options);
      created.set(`reserve ${reserved.status}`, (created.get(`reserve ${reserved.status}`) ?? 0) + 1);
      if (reserved.status >= 500 || (part === 'none' && reserved.status !== 201) || (reserved.status !== 201 && reserved.status < 400)) {
        throw new Error(`a reservation with ${part} hostile: ${reserved.status} ${JSON.stringify(reserved.body)}`);
      }
      if (reserved.status !== 201) return true;
      // The hold exists: now its checkout, with the same part hostile (a body that is not a payment method, say).
      const pay: CallOptions = { ...options, body: { paymentMethod: 'pm_ok' }, headers: { ...options.headers, 'idempotency-key': `pay-${goodKey}` } };
      if (part === 'body') Object.assign(pay, { body: undefined, rawBody: undefined }, body);
      const paid = await api.call('POST', `/v1/reservations/${reserved.body.reservationId}/checkout`, pay);
      created.set(`checkout ${paid.status}`, (created.get(`checkout ${paid.status}`) ?? 0) + 1);
      return paid.status < 500;
    }),
    { numRuns: 300, seed: Number(process.env.FUZZ_SEED ?? 20261207) },
  );
  t.pass(`answers: ${JSON.stringify(Object.fromEntries([...created].sort()))}`);
  const { body: state } = await api.call('GET', `/v1/skus/${sku}`);
  t.equal(state.available + state.held + state.sold, state.stock, `available + held + sold = stock (${JSON.stringify(state)})`);
  t.ok((created.get('reserve 201') ?? 0) > 0 && (created.get('checkout 201') ?? created.get('checkout 202') ?? 0) > 0, 'holds were made and paid for');
});

/** A number or date an admin might type, or one no admin should: edges, huge, negative, fractional, not a number. */
const hostileField = fc.oneof(
  fc.constantFrom(0, -1, 1.5, 2 ** 31, 2 ** 53, 2 ** 53 + 2, 1e308, -0, Number.MAX_SAFE_INTEGER, '10', '', null, true, [], {}),
  fc.constantFrom('2030-06-30T23:59:60Z', '2030-13-01T00:00:00Z', '1970-01-01T00:00:00Z', '9999-12-31T23:59:59Z', '9999-12-31T23:59:59-12:00', '+275760-09-13T00:00:00Z', 'tomorrow'),
  fc.constantFrom('usd', 'US', 'EURO', '€€€', 'X'.repeat(1000)),
  fc.jsonValue(),
);

t.test("an admin's SKU and drop with one hostile field: accepted and then sold as configured, or a 400; never a 5xx", async (t) => {
  const skuBody: Record<string, unknown> = { stock: 5, perShopperLimit: 2, holdSeconds: 300, priceCents: 1999, currency: 'USD' };
  const dropFields: Record<string, unknown> = {
    firstStartsAt: new Date(Date.now() + 3_600_000).toISOString(), everySeconds: 3600, openSeconds: 600, stockPerCycle: 5, perShopperLimit: 1, holdSeconds: 300, priceCents: 100, currency: 'USD',
  };
  const answers = new Map<string, number>();
  let n = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(...Object.keys(skuBody), 'startsAt', 'endsAt', 'waitingRoom', 'extra'),
      fc.constantFrom(...Object.keys(dropFields)),
      // undefined: no field hostile (a good configuration, which must be accepted).
      fc.option(hostileField, { nil: undefined, freq: 5 }),
      async (skuField, dropField, value) => {
        const name = `ADM-${n++}`;
        const put = await api.call('PUT', `/v1/admin/skus/${name}`, { admin: true, body: value === undefined ? skuBody : { ...skuBody, [skuField]: value } });
        if (value === undefined && put.status !== 201) throw new Error(`a good SKU configuration: ${put.status} ${JSON.stringify(put.body)}`);
        answers.set(`sku ${put.status}`, (answers.get(`sku ${put.status}`) ?? 0) + 1);
        if (put.status !== 201 && put.status !== 400) throw new Error(`PUT sku with ${skuField} = ${JSON.stringify(value)}: ${put.status} ${JSON.stringify(put.body)}`);
        if (put.status === 201) {
          // Accepted: the SKU answers as configured, and a reservation is either made or refused by the rules.
          const view = await api.call('GET', `/v1/skus/${name}`);
          if (view.status !== 200 || view.body.available + view.body.held + view.body.sold !== view.body.stock) throw new Error(`GET ${name}: ${JSON.stringify(view.body)}`);
          const reserved = await api.reserve(name, `adm-${n}`);
          if (reserved.status >= 500) throw new Error(`reserving ${name} (${skuField} = ${JSON.stringify(value)}): ${reserved.status} ${JSON.stringify(reserved.body)}`);
        }
        const drop = await api.call('PUT', `/v1/admin/drops/DROP-${n}`, { admin: true, body: value === undefined ? dropFields : { ...dropFields, [dropField]: value } });
        if (value === undefined && drop.status !== 201) throw new Error(`a good drop: ${drop.status} ${JSON.stringify(drop.body)}`);
        answers.set(`drop ${drop.status}`, (answers.get(`drop ${drop.status}`) ?? 0) + 1);
        if (drop.status !== 201 && drop.status !== 400) throw new Error(`PUT drop with ${dropField} = ${JSON.stringify(value)}: ${drop.status} ${JSON.stringify(drop.body)}`);
        return true;
      },
    ),
    { numRuns: 250, seed: Number(process.env.FUZZ_SEED ?? 20261207) },
  );
  t.pass(`answers: ${JSON.stringify(Object.fromEntries([...answers].sort()))}`);
  t.ok(answers.has('sku 201') && answers.has('sku 400') && answers.has('drop 201') && answers.has('drop 400'), 'both accepted and refused configurations were seen');
});

/** What a raw socket gets back for `bytes`: the response's text, up to the server's close or 2 s of silence. */
function raw(bytes: string | Buffer): Promise<string> {
  const { hostname, port } = new URL(api.url);
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const socket = net.connect(Number(port), hostname, () => socket.end(bytes));
    let quiet = setTimeout(() => socket.destroy(), 2000);
    socket.on('data', (chunk) => {
      chunks.push(chunk);
      clearTimeout(quiet);
      quiet = setTimeout(() => socket.destroy(), 2000);
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(quiet);
      resolve(Buffer.concat(chunks).toString('latin1'));
    });
  });
}

t.test('malformed HTTP on a raw socket: a 4xx or a closed socket, never a 5xx, and the service serves on', async (t) => {
  const cases: [string, string | Buffer][] = [
    ['garbage', Buffer.from([0, 1, 2, 255, 254, 13, 10, 13, 10])],
    ['no version', 'GET /healthz\r\n\r\n'],
    ['an absurd method', `${'X'.repeat(5000)} /healthz HTTP/1.1\r\nHost: x\r\n\r\n`],
    ['a 100 KB target', `GET /${'a'.repeat(100_000)} HTTP/1.1\r\nHost: x\r\n\r\n`],
    ['a header without a colon', 'GET /healthz HTTP/1.1\r\nHost x\r\n\r\n'],
    ['200 KB of headers', `GET /healthz HTTP/1.1\r\nHost: x\r\n${'X-A: b\r\n'.repeat(25_000)}\r\n`],
    ['two Content-Lengths', `POST /v1/skus/${sku}/reservations HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}`],
    ['a negative Content-Length', `POST /v1/skus/${sku}/reservations HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}`],
    ['a body shorter than its length, then EOF', `POST /v1/skus/${sku}/reservations HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nAuthorization: Bearer ${api.token('raw')}\r\n\r\n{"quantity":1`],
    ['bad chunked encoding', `POST /v1/carts HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n`],
    ['a request smuggling attempt', `POST /v1/carts HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /v1/admin/cluster HTTP/1.1\r\nHost: x\r\n\r\n`],
    ['a NUL in the target', 'GET /v1/skus/a\u0000b HTTP/1.1\r\nHost: x\r\n\r\n'],
  ];
  for (const [what, bytes] of cases) {
    const answer = await raw(bytes);
    const status = /^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1];
    t.ok(status === undefined || Number(status) < 500, `${what}: ${status ?? 'closed'}`);
    t.notMatch(answer, /HTTP\/1\.1 5\d\d/, `${what}: no 5xx anywhere in the answer`);
  }
  t.match(await api.call('GET', '/healthz'), { status: 200 }, 'still serving');
  await onSaleAgain();
  t.match(await api.reserve(sku, 'after-raw'), { status: 201 }, 'and still selling');
});

t.test('nothing unhandled in the process', async (t) => {
  t.same(traps.seen(), []);
});
