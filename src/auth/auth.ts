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

/** How far ahead of this clock an issuer's clock may be (`iat`, `nbf`, and the lifetime bound). */
export const jwtClockSkewSeconds = 60;
/** JWT_MAX_LIFETIME_SECONDS' default: a day. */
export const defaultJwtMaxLifetimeSeconds = 86_400;

export interface ShopperTokenRules {
  /** `exp` at most this far ahead of now (plus the skew). */
  maxLifetimeSeconds: number;
}

/**
 * The time claims, checked against the injected clock (fast-jwt reads its own):
 * `exp` required, in the future and at most the lifetime ahead, so a leaked
 * token does not work forever; `iat` and `nbf`, when present, not ahead of
 * now by more than the skew. A refusal's detail names the rule.
 */
export function checkTokenTimes(payload: { exp?: unknown; iat?: unknown; nbf?: unknown }, nowMs: number, rules: ShopperTokenRules): string | null {
  const now = nowMs / 1000;
  const { exp, iat, nbf } = payload;
  if (exp === undefined) return 'the token has no exp claim: shopper tokens must expire';
  if (!isNumericDate(exp)) return 'the token\'s exp must be a NumericDate (seconds since the epoch)';
  if (exp <= now) return `the token expired at ${isoSeconds(exp)}`;
  if (exp - now > rules.maxLifetimeSeconds + jwtClockSkewSeconds) {
    return `the token's exp is ${Math.round(exp - now)} s ahead; at most ${rules.maxLifetimeSeconds} s (JWT_MAX_LIFETIME_SECONDS) is accepted`;
  }
  if (iat !== undefined && !isNumericDate(iat)) return 'the token\'s iat must be a NumericDate (seconds since the epoch)';
  if (iat !== undefined && iat - now > jwtClockSkewSeconds) {
    return `the token's iat is ${Math.round(iat - now)} s in the future (${jwtClockSkewSeconds} s of clock skew allowed)`;
  }
  if (nbf !== undefined && !isNumericDate(nbf)) return 'the token\'s nbf must be a NumericDate (seconds since the epoch)';
  if (nbf !== undefined && nbf - now > jwtClockSkewSeconds) return `the token is not valid before ${isoSeconds(nbf)}`;
  return null;
}

function isNumericDate(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 && value < 1e11;
}

function isoSeconds(seconds: number): string {
  return new Date(Math.floor(seconds) * 1000).toISOString();
}

export function createShopperVerifier(
  jwtSecret: string,
  rules: ShopperTokenRules = { maxLifetimeSeconds: defaultJwtMaxLifetimeSeconds },
  nowMs: () => number = Date.now,
): ShopperVerifier {
  // Time claims are checked below, on the injected clock.
  const verifyFully = createVerifier({ key: jwtSecret, algorithms: ['HS256'], requiredClaims: ['sub'], ignoreExpiration: true, ignoreNotBefore: true });
  // The usual token takes the lean path; anything it does not accept is decided (and explained) by fast-jwt.
  const verifyUsual = createHs256FastPath(jwtSecret, nowMs);
  const verify = (token: string): unknown => verifyUsual(token) ?? verifyFully(token);
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
    let payload: { sub?: unknown; exp?: unknown; iat?: unknown; nbf?: unknown };
    try {
      payload = verify(token) as typeof payload;
    } catch (error) {
      return { ok: false, detail: `invalid token: ${(error as Error).message}` };
    }
    const timeRefusal = checkTokenTimes(payload, nowMs(), rules);
    if (timeRefusal !== null) return { ok: false, detail: timeRefusal };
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
    current.set(token, { shopperId: sub, expiresAtMs: (payload.exp as number) * 1000 });
    return { ok: true, shopperId: sub };
  };
}

/** A shopper token with `iat` now and `exp` that far ahead (at most the verifier's JWT_MAX_LIFETIME_SECONDS to pass). */
export function signShopperToken(
  jwtSecret: string,
  shopperId: string,
  expiresInSeconds = defaultJwtMaxLifetimeSeconds,
  nowMs: () => number = Date.now,
): string {
  const sign = createSigner({ key: jwtSecret, algorithm: 'HS256', expiresIn: expiresInSeconds * 1000, clockTimestamp: nowMs() });
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
