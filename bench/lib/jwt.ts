import { createHmac } from 'node:crypto';

/**
 * Shopper tokens for the load: HS256 JWTs with `sub` = shopper id, minted with
 * node:crypto so the harness does not depend on the service's JWT library.
 */
const header = Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT' })).toString('base64url');

export function mintShopperToken(secret: string, shopperId: string, nowSeconds = Math.floor(Date.now() / 1000), ttlSeconds = 3600): string {
  const payload = Buffer.from(JSON.stringify({ sub: shopperId, exp: nowSeconds + ttlSeconds })).toString('base64url');
  const signingInput = `${header}.${payload}`;
  const signature = createHmac('sha256', secret).update(signingInput).digest('base64url');
  return `${signingInput}.${signature}`;
}

export interface VerifiedToken {
  sub: string;
  exp: number;
}

/** Verification for the baselines (HS256 only, `exp` honoured); null when invalid. */
export function verifyShopperToken(secret: string, token: string, nowSeconds = Date.now() / 1000): VerifiedToken | null {
  const first = token.indexOf('.');
  const second = token.indexOf('.', first + 1);
  if (first < 0 || second < 0 || token.indexOf('.', second + 1) >= 0) return null;
  const signingInput = token.slice(0, second);
  const expected = createHmac('sha256', secret).update(signingInput).digest('base64url');
  if (expected !== token.slice(second + 1)) return null;
  try {
    const head = JSON.parse(Buffer.from(token.slice(0, first), 'base64url').toString()) as { alg?: unknown };
    if (head.alg !== 'HS256') return null;
    const payload = JSON.parse(Buffer.from(token.slice(first + 1, second), 'base64url').toString()) as { sub?: unknown; exp?: unknown };
    if (typeof payload.sub !== 'string' || payload.sub.length === 0) return null;
    if (typeof payload.exp === 'number' && payload.exp < nowSeconds) return null;
    return { sub: payload.sub, exp: typeof payload.exp === 'number' ? payload.exp : Infinity };
  } catch {
    return null;
  }
}
