import { createHmac, createSecretKey, type KeyObject } from 'node:crypto';

/**
 * The common case of a shopper's token, verified without fast-jwt's general
 * machinery: an HS256 JWT whose header is exactly `{"alg":"HS256"}` with at
 * most a string `typ`, a valid signature, and a JSON object payload holding
 * `sub` whose `nbf`/`exp`, when present, are numbers that hold now. It only
 * ever accepts: anything else (another header, a bad signature, a claim out of
 * range or of the wrong type, malformed text) returns null, and the caller asks
 * fast-jwt, which refuses with its precise reason. So it admits exactly what
 * fast-jwt configured with `algorithms: ['HS256'], requiredClaims: ['sub']`
 * admits, at a third of its cost (one HMAC, one JSON.parse, no per-token
 * header parse: header segments are decided once). The signature is compared
 * as text, in constant time, with the HMAC's own base64url digest: a digest as
 * a Buffer and the signature decoded into another cost more than the HMAC's
 * hashing. A signature segment that decodes to the right bytes but is not the
 * canonical encoding (other unused low bits in its last character) is not
 * accepted here, so fast-jwt decides it.
 */

const base64url = /^[A-Za-z0-9_-]+$/;
/** Distinct header segments remembered (signers emit one or two). */
const maxHeaders = 16;
/** Payload segments up to this many decoded bytes are decoded into one reused buffer. */
const scratchPayloadBytes = 1024;

export type AcceptedPayload = { sub: unknown; exp?: unknown; nbf?: unknown };

export function createHs256FastPath(secret: string, nowMs: () => number = Date.now): (token: string) => AcceptedPayload | null {
  const key: KeyObject = createSecretKey(Buffer.from(secret, 'utf8'));
  const headers = new Map<string, boolean>();
  const scratch = Buffer.allocUnsafe(scratchPayloadBytes);
  const headerAccepted = (segment: string): boolean => {
    let ok = headers.get(segment);
    if (ok === undefined) {
      ok = isPlainHs256Header(segment);
      if (headers.size < maxHeaders) headers.set(segment, ok);
    }
    return ok;
  };
  return (token) => {
    const first = token.indexOf('.');
    const last = token.lastIndexOf('.');
    if (first <= 0 || last <= first + 1 || last === token.length - 1) return null;
    const headerSegment = token.slice(0, first);
    if (!headerAccepted(headerSegment)) return null;
    const payloadSegment = token.slice(first + 1, last);
    const signatureSegment = token.slice(last + 1);
    if (!base64url.test(payloadSegment) || !base64url.test(signatureSegment)) return null;
    const expected = createHmac('sha256', key).update(token.slice(0, last)).digest('base64url');
    if (!sameText(signatureSegment, expected)) return null;
    let payload: unknown;
    try {
      payload = JSON.parse(decodeSegment(payloadSegment, scratch));
    } catch {
      return null;
    }
    if (payload === null || typeof payload !== 'object' || Array.isArray(payload) || !('sub' in payload)) return null;
    const claims = payload as AcceptedPayload;
    const now = nowMs();
    if ('nbf' in claims && !(typeof claims.nbf === 'number' && now >= claims.nbf * 1000)) return null;
    if ('exp' in claims && !(typeof claims.exp === 'number' && now <= claims.exp * 1000)) return null;
    return claims;
  };
}

/** Whether two strings are equal, in time that depends only on their lengths (signatures have one length). */
export function sameText(given: string, expected: string): boolean {
  if (given.length !== expected.length) return false;
  let difference = 0;
  for (let i = 0; i < expected.length; i++) difference |= given.charCodeAt(i) ^ expected.charCodeAt(i);
  return difference === 0;
}

/** A base64url segment's UTF-8 text, decoded into `scratch` when it fits (no Buffer per token). */
function decodeSegment(segment: string, scratch: Buffer): string {
  // Every 4 characters are 3 bytes: an upper bound of the decoded size.
  if (Math.ceil(segment.length / 4) * 3 > scratch.length) return Buffer.from(segment, 'base64url').toString('utf8');
  const bytes = scratch.write(segment, 0, 'base64url');
  return scratch.toString('utf8', 0, bytes);
}

/** `{"alg":"HS256"}`, optionally with a string `typ`, and nothing else (no `crit`, no `kid`). */
function isPlainHs256Header(segment: string): boolean {
  if (!base64url.test(segment)) return false;
  try {
    const header = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8')) as unknown;
    if (header === null || typeof header !== 'object' || Array.isArray(header)) return false;
    const keys = Object.keys(header);
    const h = header as { alg?: unknown; typ?: unknown };
    return h.alg === 'HS256' && keys.every((k) => k === 'alg' || (k === 'typ' && typeof h.typ === 'string'));
  } catch {
    return false;
  }
}
