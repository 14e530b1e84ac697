import t from 'tap';
import { readFile } from 'node:fs/promises';
import uWS from 'uWebSockets.js';
import pino from 'pino';
import { validate, compileErrors } from '@readme/openapi-parser';
import { openApiDocument } from '../src/http/openapi.js';
import { problemTypes } from '../src/http/problem.js';
import { createRouter } from '../src/http/router.js';
import { registerRoutes, type HttpDependencies } from '../src/http/server.js';
import { openApiFile, openApiText } from '../scripts/openapi.js';
import { contractViolations, templateOf, type ObservedResponse } from './helpers/contract.js';
import { startTestService } from './helpers/service.js';

/** The OpenAPI document: valid, current on disk, covering every route, served; and the contract check itself. */

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;
const doc = openApiDocument as Json;

/** Served on the metrics port (src/metrics), not by the API's route table. */
const metricsPort = new Set(['GET /metrics', 'HEAD /metrics']);
/** Served outside the route table (src/ws): the page and the WebSocket upgrade. */
const outsideRouter = ['GET /', 'HEAD /'];

const operationMethods = ['get', 'head', 'put', 'post', 'delete', 'patch'];

function documentedOperations(): string[] {
  return Object.entries<Json>(doc.paths).flatMap(([path, item]) =>
    operationMethods.filter((m) => item[m] !== undefined).map((m) => `${m.toUpperCase()} ${path}`),
  );
}

t.test('the document validates as OpenAPI 3.1 with a real parser; a broken copy does not', async (t) => {
  const result = await validate(structuredClone(doc));
  t.ok(result.valid, result.valid ? 'valid' : compileErrors(result));
  t.same(result.warnings, [], 'no warnings');
  t.equal(doc.openapi, '3.1.0');

  const broken = structuredClone(doc);
  delete broken.paths['/v1/skus/{sku}'].get.responses;
  broken.paths['/healthz'].get.operationId = 'getSku';
  const refused = await validate(broken);
  t.notOk(refused.valid, 'the parser notices a missing responses object and a duplicate operationId');
});

t.test('src/http/openapi.json is the served document (npm run openapi writes it)', async (t) => {
  t.equal(await readFile(openApiFile, 'utf8'), openApiText, 'current');
});

t.test('every route the service registers is documented with exactly its methods', async (t) => {
  const router = createRouter(uWS.App(), {
    log: pino({ level: 'silent' }),
    retryAfterSeconds: 1,
    maxBodyBytes: 1,
    onUnexpected: () => undefined,
  });
  registerRoutes(router, {} as HttpDependencies);
  const served = router
    .routes()
    .flatMap(({ pattern, methods }) => methods.map((m) => `${m} ${pattern.replace(/:([A-Za-z]+)/g, '{$1}')}`))
    .concat(outsideRouter);
  const documented = documentedOperations();
  for (const operation of served) t.ok(documented.includes(operation), `${operation} is documented`);
  for (const operation of documented) {
    if (served.includes(operation)) continue;
    t.ok(metricsPort.has(operation), `${operation} is served (on the API port, or the metrics port)`);
  }
  for (const [path, item] of Object.entries<Json>(doc.paths)) {
    const names = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
    for (const name of names) {
      const declared = (item.parameters ?? []).some((p: Json) => (p.$ref ?? '').length > 0 || p.name === name);
      t.ok(declared, `${path}: path parameter ${name} declared`);
    }
  }
});

t.test('every problem code a client can get is documented on some route', async (t) => {
  const documented = new Set<string>();
  for (const response of Object.values<Json>(doc.components.responses)) {
    const schema = response.content?.['application/problem+json']?.schema;
    for (const code of schema?.properties?.code?.enum ?? []) documented.add(code);
  }
  for (const code of Object.keys(problemTypes)) {
    if (code === 'forbidden') continue; // in the table, sent by no route
    t.ok(documented.has(code), `${code} is documented`);
  }
});

t.test('GET and HEAD /openapi.json serve the document', async (t) => {
  const api = await startTestService(t);
  const res = await api.call('GET', '/openapi.json');
  t.equal(res.status, 200);
  t.equal(res.headers.get('content-type'), 'application/json');
  t.same(res.body, openApiDocument);
  const head = await api.call('HEAD', '/openapi.json');
  t.equal(head.status, 200);
  t.equal(head.headers.get('content-length'), String(Buffer.byteLength(JSON.stringify(openApiDocument))));
});

t.test('the contract check: uWS patterns map to templates, literal segments first', async (t) => {
  t.equal(templateOf('/v1/skus/A-1'), '/v1/skus/{sku}');
  t.equal(templateOf('/v1/skus/A-1/reservations'), '/v1/skus/{sku}/reservations');
  t.equal(templateOf('/v1/admin/skus/A/placement'), '/v1/admin/skus/{sku}/placement');
  t.equal(templateOf('/v1/reservations/x?y=1'), '/v1/reservations/{id}');
  t.equal(templateOf('/v1/skus/'), null, 'an empty segment is no parameter');
  t.equal(templateOf('/nope'), null);
});

t.test('the contract check fails what departs from the document', async (t) => {
  const headers = (h: Record<string, string>) => ({ get: (name: string) => h[name] ?? null });
  const problem = (status: number, code: string) =>
    JSON.stringify({ type: `https://flashstock.dev/problems/${code}`, title: 'x', status, detail: 'x', code, instance: '/x' });
  const sku = { sku: 'A', state: 'on_sale', stock: 1, available: 1, held: 0, sold: 0, perShopperLimit: 1, holdSeconds: 1, priceCents: 0, currency: 'USD', startsAt: null, endsAt: null };
  const base = { 'x-request-id': 'r1', 'content-type': 'application/json' };
  const conforming: ObservedResponse = { method: 'GET', path: '/v1/skus/A', status: 200, headers: headers(base), text: JSON.stringify(sku) };
  t.same(contractViolations(conforming), [], 'a conforming response passes');

  const cases: [string, ObservedResponse, RegExp][] = [
    ['undocumented status', { ...conforming, status: 418 }, /status 418 is not documented/],
    ['missing X-Request-Id', { ...conforming, headers: headers({ 'content-type': 'application/json' }) }, /X-Request-Id is missing/],
    ['an extra field', { ...conforming, text: JSON.stringify({ ...sku, extra: 1 }) }, /additional properties/],
    ['a wrong type', { ...conforming, text: JSON.stringify({ ...sku, held: '0' }) }, /held must be integer/],
    ['undocumented media type', { ...conforming, headers: headers({ ...base, 'content-type': 'text/plain' }) }, /text\/plain.*not documented/],
    ['a problem code not documented for that status', { ...conforming, status: 404, headers: headers({ ...base, 'content-type': 'application/problem+json' }), text: problem(404, 'sold_out') }, /code must be equal to one of the allowed values/],
    ['503 without Retry-After', { ...conforming, status: 503, headers: headers({ ...base, 'content-type': 'application/problem+json' }), text: problem(503, 'unavailable') }, /Retry-After is missing/],
    ['a body on HEAD', { ...conforming, method: 'HEAD' }, /HEAD response has a body/],
    ['405 with the wrong Allow', { method: 'PATCH', path: '/v1/skus/A', status: 405, headers: headers({ ...base, allow: 'GET', 'content-type': 'application/problem+json' }), text: problem(405, 'method_not_allowed') }, /Allow is "GET" but \/v1\/skus\/\{sku\} documents GET, HEAD/],
    ['an undocumented path that answers', { ...conforming, path: '/v2/skus/A' }, /must answer 404/],
    ['non-JSON under a JSON type', { ...conforming, text: '<html>' }, /is not JSON/],
  ];
  for (const [what, observed, expected] of cases) {
    const violations = contractViolations(observed);
    t.match(violations.join('\n'), expected, what);
  }
});
