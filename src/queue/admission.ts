import { createHmac, createSecretKey, timingSafeEqual, type KeyObject } from 'node:crypto';

/**
 * Admission tokens: what an admitted waiting-room ticket is worth at the
 * reservation endpoint. Self-contained and signed, so a front end checks one
 * with a single HMAC and no shard round trip:
 *
 *   base64url(JSON [1, sku, shopperId, expiresAtSeconds]) "." base64url(HMAC-SHA256(key, first part))
 *
 * The key is derived from JWT_SECRET with its own label, so no shopper JWT is
 * an admission token or the other way round. A token names its shopper and SKU
 * (another shopper's or SKU's is refused) and expires
 * QUEUE_ADMISSION_TOKEN_SECONDS after it was issued; polling the admitted
 * ticket again issues a fresh one.
 */

export type AdmissionRefusal = 'admission_invalid' | 'admission_expired' | 'admission_mismatch';

export interface AdmissionTokens {
  /** A token for `shopperId` on `sku`, and when it expires (epoch ms). */
  issue(shopperId: string, sku: string): { token: string; expiresAtMs: number };
  /** null when the token admits this shopper to this SKU now, else why not. */
  verify(token: string, shopperId: string, sku: string): AdmissionRefusal | null;
}

/** Longer tokens are refused before any work (SKU and shopper names are bounded). */
const maxTokenLength = 1024;
const signatureLength = 43;
const tokenVersion = 1;

export function createAdmissionTokens(jwtSecret: string, lifetimeSeconds: number, nowMs: () => number = Date.now): AdmissionTokens {
  const key: KeyObject = createSecretKey(createHmac('sha256', jwtSecret).update('flashstock admission token v1').digest());
  const sign = (payload: string): string => createHmac('sha256', key).update(payload).digest('base64url');
  return {
    issue(shopperId, sku) {
      const expiresAtSeconds = Math.floor(nowMs() / 1000) + lifetimeSeconds;
      const payload = Buffer.from(JSON.stringify([tokenVersion, sku, shopperId, expiresAtSeconds])).toString('base64url');
      return { token: `${payload}.${sign(payload)}`, expiresAtMs: expiresAtSeconds * 1000 };
    },
    verify(token, shopperId, sku) {
      const dot = token.length <= maxTokenLength ? token.indexOf('.') : -1;
      if (dot <= 0 || token.length - dot - 1 !== signatureLength) return 'admission_invalid';
      const payload = token.slice(0, dot);
      const given = Buffer.from(token.slice(dot + 1), 'latin1');
      if (!timingSafeEqual(given, Buffer.from(sign(payload), 'latin1'))) return 'admission_invalid';
      const claims = parseClaims(payload);
      if (claims === null) return 'admission_invalid';
      if (claims[1] !== sku || claims[2] !== shopperId) return 'admission_mismatch';
      return nowMs() < claims[3] * 1000 ? null : 'admission_expired';
    },
  };
}

/** The signed claims, or null when they are not ours (only reachable with the key: a bug, or an old format). */
function parseClaims(payload: string): [number, string, string, number] | null {
  try {
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as unknown;
    if (!Array.isArray(claims) || claims.length !== 4 || claims[0] !== tokenVersion) return null;
    if (typeof claims[1] !== 'string' || typeof claims[2] !== 'string' || typeof claims[3] !== 'number') return null;
    return claims as [number, string, string, number];
  } catch {
    return null;
  }
}
