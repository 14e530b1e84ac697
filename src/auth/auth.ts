import { timingSafeEqual, createHash } from 'node:crypto';
import { createSigner, createVerifier } from 'fast-jwt';

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

export function createShopperVerifier(jwtSecret: string): ShopperVerifier {
  // Verified tokens are cached (keyed by the whole token, bounded LRU, never past
  // `exp`): a shopper reserving again skips the HMAC.
  const verify = createVerifier({
    key: jwtSecret,
    algorithms: ['HS256'],
    requiredClaims: ['sub'],
    cache: 10_000,
  });
  return (authorization) => {
    const token = bearerToken(authorization);
    if (token === null) return { ok: false, detail: 'an Authorization: Bearer <JWT> header is required' };
    let payload: { sub?: unknown };
    try {
      payload = verify(token) as { sub?: unknown };
    } catch (error) {
      return { ok: false, detail: `invalid token: ${(error as Error).message}` };
    }
    const sub = payload.sub;
    if (typeof sub !== 'string' || sub.length === 0 || sub.length > maxShopperIdLength) {
      return { ok: false, detail: `the token's sub must be a shopper id of 1-${maxShopperIdLength} characters` };
    }
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
