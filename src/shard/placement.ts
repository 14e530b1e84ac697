import { randomUUID } from 'node:crypto';

/**
 * Where a SKU lives. SKUs map to a fixed number of shards by a stable hash of
 * the SKU's name; a shard is the unit that moves between threads and nodes.
 *
 *   shardOf(sku) = fnv1a32(utf8(sku)) mod SHARD_COUNT
 *
 * FNV-1a 32 bit (offset basis 2166136261, prime 16777619) is stable across
 * processes, versions and machines, cheap, and spreads short ASCII names well.
 * Changing SHARD_COUNT moves SKUs between shards but loses nothing: every shard
 * recovers its SKUs from the log.
 *
 * Reservation ids carry their SKU's hash, so any front end finds the shard of a
 * reservation from its id alone, whatever SHARD_COUNT is: the id is an RFC 9562
 * version-8 UUID whose first 32 bits are fnv1a32(sku) and whose other 90 free
 * bits are random.
 */

export const defaultShardCount = 64;
export const maxShardCount = 4096;

export function skuHash(sku: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < sku.length; i++) {
    const code = sku.charCodeAt(i);
    // SKU names are ASCII by grammar (a UTF-8 byte each): no buffer on the hot path.
    if (code > 0x7f) return utf8Hash(sku);
    hash ^= code;
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

function utf8Hash(text: string): number {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(text, 'utf8')) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

export function shardOf(sku: string, shardCount: number): number {
  return skuHash(sku) % shardCount;
}

/**
 * A fresh reservation id for `sku`: version 8, variant 10, fnv1a32(sku) in the
 * first 32 bits. Given the decision time `atMs`, the next 28 bits are that
 * time in 16 ms steps (they wrap every 50 days), so a SKU's ids grow with time
 * and each one lands at the right-hand end of the log's index on reservation_id
 * instead of on a random page of it: measured 14.3 → 11.0 µs of Postgres CPU
 * per logged reservation (bench/log-shape.ts, docs/performance.md). The other
 * bits are random (62 of them, plus 12 when no time is given). They come from
 * randomUUID (a v4 UUID: its variant is already 10), which draws from a cached
 * entropy pool: one randomBytes call per reservation cost ~5% of the hot path.
 */
export function newReservationId(sku: string, prefix = reservationIdPrefix(sku), atMs?: number): string {
  const random = randomUUID();
  if (atMs === undefined) return flat(`${prefix}${random.slice(8, 14)}8${random.slice(15)}`);
  const time = (Math.floor(atMs / timeStepMs) % timeSteps).toString(16).padStart(7, '0');
  return flat(`${prefix}-${time.slice(0, 4)}-8${time.slice(4)}${random.slice(18)}`);
}

const idBytes = Buffer.alloc(36);

/**
 * The id as one 36-character string. Built by concatenation it is a rope (cons
 * strings over slices of the UUID, which itself is a rope of hex pairs) that
 * every live hold keeps for hours: measured ~400 heap bytes per hold more than
 * the same id read back from a snapshot (bench/hold-memory.ts). Copying it
 * through a buffer costs two native calls per id.
 */
function flat(id: string): string {
  idBytes.write(id, 0, 'latin1');
  return idBytes.toString('latin1', 0, id.length);
}

/** The time in a reservation id: 16 ms steps, 2^28 of them (about 50 days) before it wraps. */
const timeStepMs = 16;
const timeSteps = 2 ** 28;

/** The first 8 hex digits of every id of `sku` (a shard keeps it per SKU in memory). */
export function reservationIdPrefix(sku: string): string {
  return skuHash(sku).toString(16).padStart(8, '0');
}

/**
 * The shard of a reservation from its id, or null for an id that does not carry
 * a SKU hash (ids minted before shards: version 4), which the router resolves
 * through the log once.
 */
export function shardOfReservationId(reservationId: string, shardCount: number): number | null {
  if (reservationId.length !== 36 || reservationId[14] !== '8') return null;
  const hash = Number.parseInt(reservationId.slice(0, 8), 16);
  return Number.isNaN(hash) ? null : hash % shardCount;
}

/** Waitlist entry ids are minted like reservation ids (the SKU's hash first), so routing by id needs no lookup. */
export const newWaitlistId = newReservationId;
export const shardOfWaitlistId = shardOfReservationId;
