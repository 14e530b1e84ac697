import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Node-to-node authentication on the cluster WebSocket's upgrade request: an
 * HMAC-SHA256 over (node id, time, nonce, the URL being called) with
 * CLUSTER_SECRET, in one header. The secret never crosses the wire; a token is
 * good for `windowMs` around its time, for one server URL, and once (nonces
 * seen within the window are refused). Traffic itself is not encrypted: run
 * nodes on a private network (or a mesh with mTLS).
 */

export const AUTH_HEADER = 'x-flashstock-cluster-auth';
const VERSION = 'v1';

/**
 * The node id in a token: percent-encoded (UTF-8) with the dot escaped too, so
 * the five dot-separated fields stay five whatever the id holds (the default
 * id is the advertised host:port: dots, colons, IPv6 brackets). An id without
 * such characters encodes as before, so nodes that still send or check the
 * older encoding agree with this one.
 */
export function encodeNodeId(nodeId: string): string {
  return encodeURIComponent(nodeId).replaceAll('.', '%2E');
}

function mac(secret: string, nodeId: string, timeMs: number, nonce: string, audience: string): string {
  return createHmac('sha256', secret).update(`${VERSION}\n${nodeId}\n${timeMs}\n${nonce}\n${audience}`).digest('hex');
}

/** The header value a node sends to `audience` (the callee's advertised URL). */
export function signUpgrade(secret: string, nodeId: string, audience: string, nowMs: number): string {
  const nonce = randomBytes(16).toString('hex');
  return `${VERSION}.${encodeNodeId(nodeId)}.${nowMs}.${nonce}.${mac(secret, nodeId, nowMs, nonce, audience)}`;
}

export type VerifyResult = { ok: true; nodeId: string } | { ok: false; reason: string };

/** Verifies upgrade tokens for one server URL; remembers nonces for the window (bounded). */
export class UpgradeVerifier {
  private readonly seen = new Map<string, number>();

  constructor(
    private readonly secret: string,
    /** This server's advertised URL (a function: with PORT=0 it is known only after listening). */
    private readonly audience: string | (() => string),
    private readonly windowMs: number,
    private readonly maxNonces: number,
  ) {}

  verify(header: string, nowMs: number): VerifyResult {
    const parts = header.split('.');
    if (parts.length !== 5 || parts[0] !== VERSION) return { ok: false, reason: `malformed token (expected ${VERSION} and 5 dot-separated fields)` };
    const [, encodedNode, time, nonce, given] = parts as [string, string, string, string, string];
    let nodeId: string;
    try {
      nodeId = decodeURIComponent(encodedNode);
    } catch {
      return { ok: false, reason: 'malformed node id' };
    }
    if (nodeId === '') return { ok: false, reason: 'malformed node id' };
    const timeMs = Number(time);
    if (!Number.isSafeInteger(timeMs) || Math.abs(nowMs - timeMs) > this.windowMs) return { ok: false, reason: 'token expired or clock skew (are the nodes\' clocks in sync?)' };
    if (!/^[0-9a-f]{32}$/.test(nonce) || !/^[0-9a-f]{64}$/.test(given)) return { ok: false, reason: 'malformed token (nonce or signature)' };
    const expected = Buffer.from(mac(this.secret, nodeId, timeMs, nonce, typeof this.audience === 'string' ? this.audience : this.audience()), 'hex');
    if (!timingSafeEqual(expected, Buffer.from(given, 'hex'))) return { ok: false, reason: 'bad signature (another CLUSTER_SECRET, or a token for another URL than this node advertises)' };
    this.prune(nowMs);
    if (this.seen.has(nonce)) return { ok: false, reason: 'token replayed' };
    if (this.seen.size >= this.maxNonces) return { ok: false, reason: 'too many upgrades in the window' };
    this.seen.set(nonce, timeMs);
    return { ok: true, nodeId };
  }

  private prune(nowMs: number): void {
    for (const [nonce, timeMs] of this.seen) if (Math.abs(nowMs - timeMs) > this.windowMs) this.seen.delete(nonce);
  }
}
