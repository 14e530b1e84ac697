import { timingSafeEqual, createHash } from 'node:crypto';
import { createSigner, createVerifier } from 'fast-jwt';
import { createHs256FastPath } from './hs256.js';

/**
 * Who is calling. Shoppers carry an HS256 JWT whose `sub` is their id; admins a
 * static bearer token. Both checks are pure functions of the header and the
 * secrets, so the HTTP and WebSocket shells share them.
 */

export const maxShopperIdLength = 128;

export type ShopperAuth = { ok: true; shopperId: string } | { ok: false; detail: string };

export interface ShopperVerifier {
  (authorization: string | undefined): ShopperAuth;
}

export function bearerToken(authorization: string | undefined): string | null {
  if (authorization === undefined || authorization.length < 8) return null;
  if (authorization.slice(0, 7).toLowerCase() !== 'bearer ') return null;
  const token = authorization.slice(7).trim();
  return token.length === 0 ? null : token;
}

const controlCharacter = /[\u0000-\u001f\u007f]/;

/** Node 20 has String.prototype.isWellFormed; the typings of this TypeScript target may not list it. */
export function isWellFormedText(value: string): boolean {
  return (value as string & { isWellFormed(): boolean }).isWellFormed();
}

/** 1–128 printable, well-formed characters: the same id before and after a round trip through Postgres. */
export function isShopperId(sub: unknown): sub is string {
  return (
    typeof sub === 'string' &&
    sub.length > 0 &&
    sub.length <= maxShopperIdLength &&
    !controlCharacter.test(sub) &&
    isWellFormedText(sub)
  );
}

/** Most verified tokens remembered (two generations of half this size each). */
const verifiedCacheSize = 100_000;

export function createShopperVerifier(jwtSecret: string, nowMs: () => number = Date.now): ShopperVerifier {
  const verifyFully = createVerifier({ key: jwtSecret, algorithms: ['HS256'], requiredClaims: ['sub'] });
  // The usual token takes the lean path; anything it does not accept is decided (and explained) by fast-jwt.
  const verifyUsual = createHs256FastPath(jwtSecret);
  const verify = (token: string): { sub?: unknown; exp?: unknown } => verifyUsual(token) ?? (verifyFully(token) as { sub?: unknown; exp?: unknown });
  // A shopper sends the same token with every request: remember verified ones
  // (keyed by the whole token, so no collisions; never past their `exp`) and
  // skip the HMAC. Two generations bound memory without LRU bookkeeping.
  let current = new Map<string, { shopperId: string; expiresAtMs: number }>();
  let previous = new Map<string, { shopperId: string; expiresAtMs: number }>();
  return (authorization) => {
    const token = bearerToken(authorization);
    if (token === null) return { ok: false, detail: 'an Authorization: Bearer <JWT> header is required' };
    const cached = current.get(token) ?? previous.get(token);
    if (cached !== undefined && nowMs() < cached.expiresAtMs) return { ok: true, shopperId: cached.shopperId };
    let payload: { sub?: unknown; exp?: unknown };
    try {
      payload = verify(token);
    } catch (error) {
      return { ok: false, detail: `invalid token: ${(error as Error).message}` };
    }
    const sub = payload.sub;
    // No control characters: shopper ids go into batch inserts, where one NUL would fail the whole batch.
    // Well-formed UTF-16 only: Postgres stores text as UTF-8, where a lone surrogate becomes U+FFFD, so
    // such a `sub` would name a different shopper after a restart (and collide with others).
    if (!isShopperId(sub)) {
      return { ok: false, detail: `the token's sub must be a shopper id of 1-${maxShopperIdLength} printable characters` };
    }
    if (current.size >= verifiedCacheSize / 2) {
      previous = current;
      current = new Map();
    }
    const expiresAtMs = typeof payload.exp === 'number' ? payload.exp * 1000 : Number.POSITIVE_INFINITY;
    current.set(token, { shopperId: sub, expiresAtMs });
    return { ok: true, shopperId: sub };
  };
}

export function signShopperToken(jwtSecret: string, shopperId: string, expiresInSeconds = 24 * 3600): string {
  const sign = createSigner({ key: jwtSecret, algorithm: 'HS256', expiresIn: expiresInSeconds * 1000 });
  return sign({ sub: shopperId });
}

/** Constant-time comparison of the admin bearer token (hashing first equalizes lengths). */
export function createAdminCheck(adminToken: string): (authorization: string | undefined) => boolean {
  const expected = createHash('sha256').update(adminToken).digest();
  return (authorization) => {
    const token = bearerToken(authorization);
    if (token === null) return false;
    return timingSafeEqual(createHash('sha256').update(token).digest(), expected);
  };
}
