import type uWS from 'uWebSockets.js';
import type { ValidateFunction } from 'ajv';
import type { ShopperVerifier } from '../auth/auth.js';
import type { Exchange } from './exchange.js';
import { describeErrors, idempotencyKeyPattern, isSkuName, isUuid, skuRule } from './validation.js';

/**
 * The checks a handler runs before its work, each answering the request itself
 * when it refuses. A guard returns its value, or null (false) once it has sent
 * the problem: the handler then just returns. They read `req` synchronously
 * (uWS invalidates it when the handler returns).
 */

/** The shopper id of a valid bearer JWT, or a 401. */
export function shopper(exchange: Exchange, req: uWS.HttpRequest, verify: ShopperVerifier): string | null {
  const auth = verify(req.getHeader('authorization'));
  if (auth.ok) return auth.shopperId;
  exchange.problem('unauthorized', auth.detail, [['www-authenticate', 'Bearer']]);
  return null;
}

/** The admin bearer token, or a 401. */
export function admin(exchange: Exchange, req: uWS.HttpRequest, isAdmin: (authorization: string) => boolean): boolean {
  if (isAdmin(req.getHeader('authorization'))) return true;
  exchange.problem('unauthorized', 'an admin bearer token is required', [['www-authenticate', 'Bearer']]);
  return false;
}

/** A path parameter in the SKU grammar, or a 400. */
export function skuParameter(exchange: Exchange, req: uWS.HttpRequest, index = 0): string | null {
  const sku = req.getParameter(index);
  if (isSkuName(sku)) return sku;
  exchange.problem('invalid_request', `sku must be ${skuRule}`);
  return null;
}

/** Ids in paths are UUIDs; anything else cannot exist (404). */
export function uuidParameter(exchange: Exchange, req: uWS.HttpRequest, what: string, index = 0): string | null {
  const id = req.getParameter(index).toLowerCase();
  if (isUuid(id)) return id;
  exchange.problem('not_found', `${what} ${id} does not exist`);
  return null;
}

/** The `Idempotency-Key` header, or a 400. */
export function idempotencyKey(exchange: Exchange, req: uWS.HttpRequest): string | null {
  const key = req.getHeader('idempotency-key');
  if (idempotencyKeyPattern.test(key)) return key;
  exchange.problem(
    'invalid_request',
    key === '' ? 'the Idempotency-Key header is required' : 'Idempotency-Key must be 1-200 visible ASCII characters',
  );
  return null;
}

/**
 * A JSON body matching `validate` (media type, size bound and schema enforced
 * by Exchange and here); `onBody` runs only with a valid body.
 */
export function jsonBody<T>(
  exchange: Exchange,
  req: uWS.HttpRequest,
  validate: ValidateFunction<T>,
  onBody: (body: T) => void,
): void {
  exchange.readJson(req, (body) => {
    if (validate(body)) onBody(body);
    else exchange.problem('invalid_request', describeErrors(validate.errors));
  });
}
