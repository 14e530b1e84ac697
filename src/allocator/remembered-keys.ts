/**
 * Idempotency keys of reservations that have left memory, kept compactly until
 * their TTL runs out: a 32-bit hash of the key's slot (shopper + NUL + key) and
 * the second the reservation was made, in time-bucketed generations of
 * open-addressing tables over typed arrays (8 bytes a slot, at most 70% full
 * and at least 35% after growing: 11–23 bytes a key). A hit means "maybe seen":
 * the shell confirms it in Postgres (a 32-bit hash collides with probability
 * n / 2^32 for n remembered keys); a miss is certain, so fresh keys, the hot
 * path, never leave memory.
 *
 * Pure data structure: no clock, time is an argument.
 */

/** Generations a TTL is cut into: a whole generation is dropped at once when its newest key has expired. */
const generationsPerTtl = 8;
const initialCapacity = 16;
/** Grow past this load; linear probing stays short below it. */
const maxLoad = 0.7;

/** Scratch space for a slot's UTF-8 bytes (grown when a slot is longer). */
let scratch = new Uint8Array(1024);
const encoder = new TextEncoder();

/**
 * MurmurHash3 (x86, 32 bits, seed 0) over the UTF-8 bytes of the slot
 * (shopperId + NUL + key, the string `idempotencySlot` builds). Chosen over
 * FNV-1a, which on keys like `shopper-123`/`key-123` collided 2.5× as often as
 * a random 32-bit function would. Never 0: 0 marks an empty table slot, so a
 * hash of 0 becomes 1.
 */
export function slotHash(slot: string): number {
  if (slot.length * 3 > scratch.length) scratch = new Uint8Array(slot.length * 3);
  const bytes = scratch;
  // ASCII (the usual key) is copied here; anything else goes through the encoder.
  let length = 0;
  for (; length < slot.length; length++) {
    const code = slot.charCodeAt(length);
    if (code >= 0x80) break;
    bytes[length] = code;
  }
  if (length < slot.length) length = encoder.encodeInto(slot, bytes).written;
  let h = 0;
  const blocks = length & ~3;
  for (let i = 0; i < blocks; i += 4) {
    let k = bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24);
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  const tail = length & 3;
  if (tail !== 0) {
    let k = bytes[blocks]!;
    if (tail > 1) k ^= bytes[blocks + 1]! << 8;
    if (tail > 2) k ^= bytes[blocks + 2]! << 16;
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
  }
  h ^= length;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0 || 1;
}

/** One generation: hash → latest reservedAt second, open addressing with linear probing. */
class KeyTable {
  hashes: Uint32Array;
  seconds: Uint32Array;
  size = 0;

  constructor(capacity = initialCapacity) {
    this.hashes = new Uint32Array(capacity);
    this.seconds = new Uint32Array(capacity);
  }

  /** The remembered second of `hash`, or 0 when absent. */
  get(hash: number): number {
    const mask = this.hashes.length - 1;
    for (let i = hash & mask; ; i = (i + 1) & mask) {
      const h = this.hashes[i]!;
      if (h === hash) return this.seconds[i]!;
      if (h === 0) return 0;
    }
  }

  /** Remember `hash` at `second`, keeping the later second if it is already there. */
  set(hash: number, second: number): void {
    if ((this.size + 1) / this.hashes.length > maxLoad) this.grow();
    const mask = this.hashes.length - 1;
    for (let i = hash & mask; ; i = (i + 1) & mask) {
      const h = this.hashes[i]!;
      if (h === hash) {
        if (second > this.seconds[i]!) this.seconds[i] = second;
        return;
      }
      if (h === 0) {
        this.hashes[i] = hash;
        this.seconds[i] = second;
        this.size += 1;
        return;
      }
    }
  }

  private grow(): void {
    const { hashes, seconds } = this;
    this.hashes = new Uint32Array(hashes.length * 2);
    this.seconds = new Uint32Array(hashes.length * 2);
    this.size = 0;
    for (let i = 0; i < hashes.length; i++) if (hashes[i] !== 0) this.set(hashes[i]!, seconds[i]!);
  }

  /** The occupied entries, packed: what a snapshot stores. */
  packed(): { hashes: Uint32Array; seconds: Uint32Array } {
    const hashes = new Uint32Array(this.size);
    const seconds = new Uint32Array(this.size);
    let n = 0;
    for (let i = 0; i < this.hashes.length; i++) {
      if (this.hashes[i] === 0) continue;
      hashes[n] = this.hashes[i]!;
      seconds[n] = this.seconds[i]!;
      n += 1;
    }
    return { hashes, seconds };
  }
}

/** A generation as plain data (snapshots). */
export interface PackedGeneration {
  index: number;
  hashes: Uint32Array;
  seconds: Uint32Array;
}

export class RememberedKeys {
  readonly ttlMs: number;
  readonly generationMs: number;
  private readonly generations = new Map<number, KeyTable>();
  /** When the oldest generation expires: `dropExpired` before then is one comparison. */
  private nextDropMs = Infinity;

  constructor(ttlMs: number) {
    this.ttlMs = ttlMs;
    this.generationMs = Math.max(1000, Math.ceil(ttlMs / generationsPerTtl / 1000) * 1000);
  }

  get isEmpty(): boolean {
    return this.generations.size === 0;
  }

  /** When `dropExpired` next drops a generation (Infinity: none held). */
  get nextDropAtMs(): number {
    return this.nextDropMs;
  }

  get size(): number {
    let n = 0;
    for (const table of this.generations.values()) n += table.size;
    return n;
  }

  /** Bytes held by the tables (typed arrays only). */
  get bytes(): number {
    let n = 0;
    for (const table of this.generations.values()) n += table.hashes.byteLength + table.seconds.byteLength;
    return n;
  }

  /**
   * Remember a key made at `reservedAtMs`, unless its whole generation has
   * already expired at `nowMs` (then `dropExpired(nowMs)` would drop it anyway;
   * skipping keeps the result independent of when this is called).
   */
  remember(hash: number, reservedAtMs: number, nowMs: number): void {
    const index = Math.floor(reservedAtMs / this.generationMs);
    if (this.generationExpired(index, nowMs)) return;
    let table = this.generations.get(index);
    if (table === undefined) {
      table = new KeyTable();
      this.generations.set(index, table);
      this.nextDropMs = Math.min(this.nextDropMs, this.expiresAtMs(index));
    }
    // Seconds round up: a remembered key may outlive its TTL by < 1 s, never fall short of it.
    table.set(hash, Math.ceil(reservedAtMs / 1000));
  }

  /** Is a key with this hash remembered and still within its TTL at `nowMs`? */
  has(hash: number, nowMs: number): boolean {
    for (const table of this.generations.values()) {
      const second = table.get(hash);
      if (second !== 0 && second * 1000 + this.ttlMs > nowMs) return true;
    }
    return false;
  }

  /** Drop every generation whose newest possible key has expired at `nowMs`. */
  dropExpired(nowMs: number): void {
    if (nowMs < this.nextDropMs) return;
    this.nextDropMs = Infinity;
    for (const index of this.generations.keys()) {
      if (this.generationExpired(index, nowMs)) this.generations.delete(index);
      else this.nextDropMs = Math.min(this.nextDropMs, this.expiresAtMs(index));
    }
  }

  /**
   * When every key of generation `index` has expired: its newest key was made at most at
   * (index + 1) * generationMs - 1 and is stored rounded up to the next whole second, which
   * the generation size is a multiple of.
   */
  private expiresAtMs(index: number): number {
    return (index + 1) * this.generationMs + this.ttlMs;
  }

  private generationExpired(index: number, nowMs: number): boolean {
    return this.expiresAtMs(index) <= nowMs;
  }

  /** Every generation, packed, in index order (snapshots and comparisons). */
  pack(): PackedGeneration[] {
    return [...this.generations.entries()]
      .sort(([a], [b]) => a - b)
      .map(([index, table]) => ({ index, ...table.packed() }));
  }

  /** Load packed generations (a decoded snapshot). */
  load(generations: readonly PackedGeneration[]): void {
    this.generations.clear();
    this.nextDropMs = Infinity;
    for (const g of generations) {
      const table = new KeyTable(Math.max(initialCapacity, nextPowerOfTwo(Math.ceil(g.hashes.length / maxLoad) + 1)));
      for (let i = 0; i < g.hashes.length; i++) {
        if (g.hashes[i] === 0) throw new RangeError('a remembered key hash of 0');
        table.set(g.hashes[i]!, g.seconds[i]!);
      }
      this.generations.set(g.index, table);
      this.nextDropMs = Math.min(this.nextDropMs, this.expiresAtMs(g.index));
    }
  }

  /** Sorted [generation, hash, second] triples of every remembered key: a comparable picture. */
  entries(): [number, number, number][] {
    const out: [number, number, number][] = [];
    for (const g of this.pack()) for (let i = 0; i < g.hashes.length; i++) out.push([g.index, g.hashes[i]!, g.seconds[i]!]);
    return out.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  }
}

function nextPowerOfTwo(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}
