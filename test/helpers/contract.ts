import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { dereference } from '@readme/openapi-parser';
import { openApiDocument } from '../../src/http/openapi.js';

/**
 * The contract check every HTTP test goes through (clientFor's `call`, and
 * raw exchanges): a response must be documented in src/http/openapi.ts for its
 * path, method and status, carry the headers documented as required, have a
 * documented media type, and its body must match that media type's schema.
 * A path the document does not have must be the 404 `NoRoute` problem; a
 * method the path does not list must be the 405 `MethodNotAllowed` problem
 * whose `Allow` lists exactly the documented methods. A HEAD response has no body.
 */

export interface ObservedResponse {
  method: string;
  /** The request target: path and optional query. */
  path: string;
  status: number;
  /** Lower-case name → value (fetch's Headers fits). */
  headers: { get(name: string): string | null };
  /** The body as text. */
  text: string;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;

const methods = ['get', 'head', 'put', 'post', 'delete', 'patch', 'options', 'trace'];

const document: Json = await dereference(structuredClone(openApiDocument) as never);
const ajv = new Ajv2020({ strict: true, allErrors: true, strictTypes: false });
addFormatsModule.default(ajv);
// OpenAPI's descriptive keywords, not validation.
ajv.addVocabulary(['example', 'discriminator', 'xml', 'externalDocs']);
const compiled = new Map<object, ValidateFunction>();

function validatorOf(schema: object): ValidateFunction {
  let validate = compiled.get(schema);
  if (validate === undefined) {
    validate = ajv.compile(schema);
    compiled.set(schema, validate);
  }
  return validate;
}

interface Template {
  template: string;
  segments: string[];
  literals: number;
}

// A path with servers of its own (/metrics: the metrics port) is not on the API port: there it is an undocumented path.
const templates: Template[] = Object.keys(document.paths).filter((template) => document.paths[template].servers === undefined).map((template) => {
  const segments = template.split('/');
  return { template, segments, literals: segments.filter((s) => !s.startsWith('{')).length };
});

/** The documented API-port path template a request path falls under (literal segments win, as in uWS), or null. */
export function templateOf(path: string): string | null {
  const segments = path.split('?', 1)[0]!.split('/');
  let best: Template | null = null;
  for (const candidate of templates) {
    if (candidate.segments.length !== segments.length) continue;
    const matches = candidate.segments.every((s, i) => (s.startsWith('{') ? segments[i] !== '' : s === segments[i]));
    if (matches && (best === null || candidate.literals > best.literals)) best = candidate;
  }
  return best?.template ?? null;
}

/** Every way `observed` departs from the document (empty: it conforms). */
export function contractViolations(observed: ObservedResponse): string[] {
  const what = `${observed.method} ${observed.path} → ${observed.status}`;
  const method = observed.method.toLowerCase();
  const template = templateOf(observed.path);
  if (template === null) {
    return checkResponse(what, observed, method, document.components.responses.NoRoute, 404, 'an undocumented path');
  }
  const item = document.paths[template];
  const operation = item[method];
  if (operation === undefined) {
    const documented = methods.filter((m) => item[m] !== undefined).map((m) => m.toUpperCase());
    const out = checkResponse(what, observed, method, document.components.responses.MethodNotAllowed, 405, `${template} without ${method.toUpperCase()}`);
    const allow = (observed.headers.get('allow') ?? '').split(',').map((m) => m.trim()).filter((m) => m !== '');
    if ([...allow].sort().join() !== [...documented].sort().join()) {
      out.push(`${what}: Allow is "${allow.join(', ')}" but ${template} documents ${documented.join(', ')}`);
    }
    return out;
  }
  const response = operation.responses[String(observed.status)];
  if (response === undefined) {
    return [`${what}: status ${observed.status} is not documented for ${method.toUpperCase()} ${template} (documented: ${Object.keys(operation.responses).join(', ')})`];
  }
  return checkResponse(what, observed, method, response, observed.status, `${method.toUpperCase()} ${template}`);
}

function checkResponse(what: string, observed: ObservedResponse, method: string, response: Json, status: number, where: string): string[] {
  const out: string[] = [];
  if (observed.status !== status) return [`${what}: ${where} must answer ${status}`];
  for (const [name, header] of Object.entries<Json>(response.headers ?? {})) {
    const value = observed.headers.get(name.toLowerCase());
    if (value === null) {
      if (header.required) out.push(`${what}: required header ${name} is missing`);
      continue;
    }
    const schema = header.schema ?? {};
    const typed = schema.type === 'integer' && /^-?\d+$/.test(value) ? Number(value) : value;
    const validate = validatorOf(schema);
    if (!validate(typed)) out.push(`${what}: header ${name}: ${JSON.stringify(value)} ${ajv.errorsText(validate.errors)}`);
  }
  const content: Record<string, Json> | undefined = response.content;
  const contentType = observed.headers.get('content-type');
  if (method === 'head') {
    if (observed.text !== '') out.push(`${what}: a HEAD response has a body`);
  } else if (content === undefined) {
    if (observed.text !== '') out.push(`${what}: ${where} documents no body, got ${observed.text.length} bytes`);
    return out;
  }
  if (content === undefined) return out;
  const mediaType = (contentType ?? '').split(';', 1)[0]!.trim().toLowerCase();
  const media = content[mediaType];
  if (media === undefined) {
    out.push(`${what}: content-type ${JSON.stringify(contentType)} is not documented (documented: ${Object.keys(content).join(', ')})`);
    return out;
  }
  if (method === 'head' || media.schema === undefined) return out;
  let body: unknown = observed.text;
  if (mediaType === 'application/json' || mediaType.endsWith('+json')) {
    try {
      body = JSON.parse(observed.text);
    } catch {
      out.push(`${what}: the ${mediaType} body is not JSON: ${observed.text.slice(0, 200)}`);
      return out;
    }
  }
  const validate = validatorOf(media.schema);
  if (!validate(body)) {
    out.push(`${what}: body does not match the ${mediaType} schema: ${ajv.errorsText(validate.errors)}; body ${JSON.stringify(body).slice(0, 500)}`);
  }
  return out;
}

/** Throws (failing the test that made the request) when the response departs from the document. */
export function assertContract(observed: ObservedResponse): void {
  const violations = contractViolations(observed);
  if (violations.length > 0) throw new Error(`response does not match the OpenAPI document:\n  ${violations.join('\n  ')}`);
}
