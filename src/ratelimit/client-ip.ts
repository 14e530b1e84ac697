import { BlockList, isIP } from 'node:net';

/**
 * Which address is the client. Without TRUST_PROXY, the TCP peer, and
 * `X-Forwarded-For` is ignored (any client can write it). With it, the peer
 * must itself be a trusted proxy; then X-Forwarded-For is read right to left
 * and the first address that is not a trusted proxy is the client — the
 * right-most untrusted one, since each proxy appends the address it received
 * from and only the entries our own proxies appended can be believed.
 *
 * TRUST_PROXY: unset, `off`, `false` or `0`: off. `on`, `true` or `1`:
 * loopback and private addresses (127/8, 10/8, 172.16/12, 192.168/16,
 * 169.254/16, ::1, fc00::/7, fe80::/10) are proxies. Otherwise a comma-separated
 * list of addresses and CIDRs (`10.0.0.5, 10.1.0.0/16`).
 */
export type TrustedProxies = BlockList | null;

const privateRanges: [string, number, 'ipv4' | 'ipv6'][] = [
  ['127.0.0.0', 8, 'ipv4'],
  ['10.0.0.0', 8, 'ipv4'],
  ['172.16.0.0', 12, 'ipv4'],
  ['192.168.0.0', 16, 'ipv4'],
  ['169.254.0.0', 16, 'ipv4'],
  ['::1', 128, 'ipv6'],
  ['fc00::', 7, 'ipv6'],
  ['fe80::', 10, 'ipv6'],
];

/** Parse TRUST_PROXY; throws with a message naming the bad entry. */
export function parseTrustProxy(raw: string | null): TrustedProxies {
  const value = (raw ?? '').trim().toLowerCase();
  if (value === '' || value === 'off' || value === 'false' || value === '0') return null;
  const list = new BlockList();
  if (value === 'on' || value === 'true' || value === '1') {
    for (const [address, prefix, family] of privateRanges) list.addSubnet(address, prefix, family);
    return list;
  }
  for (const entry of value.split(',').map((part) => part.trim())) {
    const [address = '', prefixText] = entry.split('/');
    const family = isIP(address);
    const prefix = prefixText === undefined ? (family === 6 ? 128 : 32) : Number(prefixText);
    if (family === 0 || !Number.isInteger(prefix) || prefix < 0 || prefix > (family === 6 ? 128 : 32)) {
      throw new Error(`TRUST_PROXY: ${JSON.stringify(entry)} is not an address or CIDR (or on/off)`);
    }
    list.addSubnet(address, prefix, family === 6 ? 'ipv6' : 'ipv4');
  }
  return list;
}

/** IPv4-mapped IPv6 (`::ffff:1.2.3.4`) as plain IPv4, so one client has one key. */
export function normalizeIp(address: string): string {
  const trimmed = address.trim();
  return trimmed.toLowerCase().startsWith('::ffff:') && isIP(trimmed.slice(7)) === 4 ? trimmed.slice(7) : trimmed;
}

function isTrusted(list: BlockList, address: string): boolean {
  const family = isIP(address);
  return family !== 0 && list.check(address, family === 6 ? 'ipv6' : 'ipv4');
}

/** The client address of a request from `peer` carrying `forwardedFor` (the header, '' when absent). */
export function clientIp(peer: string, forwardedFor: string, trusted: TrustedProxies): string {
  const direct = normalizeIp(peer);
  if (trusted === null || forwardedFor === '' || !isTrusted(trusted, direct)) return direct;
  const hops = forwardedFor.split(',');
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = normalizeIp(hops[i]!);
    // Garbage in the header cannot be a proxy we trust: stop at it, keyed by the last good hop.
    if (isIP(hop) === 0) return i === hops.length - 1 ? direct : normalizeIp(hops[i + 1]!);
    if (!isTrusted(trusted, hop)) return hop;
  }
  // Every hop is one of ours: the left-most is as far as we can see.
  return normalizeIp(hops[0]!);
}
