import { randomFillSync } from 'node:crypto';

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
 * bits are random (62 of them, plus 12 when no time is given), drawn from a
 * pool refilled by one randomFillSync per 512 ids (one randomBytes call per
 * reservation cost ~5% of the hot path). The id's 36 characters are written
 * into one reused buffer and read out as one flat string: built from a v4
 * UUID's text by concatenation it was a rope of slices that every live hold
 * kept for hours (~400 heap bytes per hold, bench/hold-memory.ts).
 */
export function newReservationId(sku: string, prefix = reservationIdPrefix(sku), atMs?: number): string {
  const id = idScratch;
  id.write(prefix, 0, 8, 'latin1');
  const random = takeEntropy(atMs === undefined ? 12 : 8);
  // Nibble 0 gives the variant's two free bits; nibbles 1.. fill the random digits in order.
  let nibble = 1;
  if (atMs === undefined) {
    for (let at = 9; at < 13; at++) id[at] = hexDigit(random, nibble++);
    for (let at = 15; at < 18; at++) id[at] = hexDigit(random, nibble++);
  } else {
    const time = Math.floor(atMs / timeStepMs) % timeSteps;
    for (let k = 0; k < 4; k++) id[9 + k] = hexCodes[(time >>> (4 * (6 - k))) & 15]!;
    for (let k = 4; k < 7; k++) id[11 + k] = hexCodes[(time >>> (4 * (6 - k))) & 15]!;
  }
  id[19] = hexCodes[8 | (nibbleOf(random, 0) & 3)]!;
  for (let at = 20; at < 23; at++) id[at] = hexDigit(random, nibble++);
  for (let at = 24; at < 36; at++) id[at] = hexDigit(random, nibble++);
  return id.toString('latin1', 0, 36);
}

const hexCodes = Buffer.from('0123456789abcdef', 'latin1');
/** The fixed characters of every id; the rest is overwritten per id. */
const idScratch = Buffer.from('00000000-0000-8000-8000-000000000000', 'latin1');
const entropy = Buffer.alloc(4096);
let entropyOffset = entropy.length;

/** The offset in `entropy` of `bytes` fresh random bytes (refilling the pool when it runs out). */
function takeEntropy(bytes: number): number {
  if (entropyOffset + bytes > entropy.length) {
    randomFillSync(entropy);
    entropyOffset = 0;
  }
  const at = entropyOffset;
  entropyOffset += bytes;
  return at;
}

function nibbleOf(offset: number, index: number): number {
  const byte = entropy[offset + (index >> 1)]!;
  return (index & 1) === 0 ? byte >> 4 : byte & 15;
}

function hexDigit(offset: number, index: number): number {
  return hexCodes[nibbleOf(offset, index)]!;
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
