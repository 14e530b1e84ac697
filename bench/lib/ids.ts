/**
 * Reservation ids, kept compactly: 16 bytes each in one growing buffer (millions
 * of 201s must not become millions of strings), and a hash set over them for the
 * post-run check.
 */

const hexValue = new Int8Array(128).fill(-1);
for (let i = 0; i < 10; i++) hexValue[48 + i] = i;
for (let i = 0; i < 6; i++) {
  hexValue[97 + i] = 10 + i;
  hexValue[65 + i] = 10 + i;
}

/** Writes the 16 bytes of a canonical UUID found in `text` at `at` into `out`; false when malformed. */
export function parseUuidInto(text: string, at: number, out: Uint8Array, outOffset: number): boolean {
  if (text.length < at + 36) return false;
  let byte = 0;
  let high = -1;
  for (let i = 0; i < 36; i++) {
    const c = text.charCodeAt(at + i);
    if (i === 8 || i === 13 || i === 18 || i === 23) {
      if (c !== 45) return false;
      continue;
    }
    const v = c < 128 ? hexValue[c]! : -1;
    if (v < 0) return false;
    if (high < 0) high = v;
    else {
      out[outOffset + byte++] = (high << 4) | v;
      high = -1;
    }
  }
  return true;
}

export function uuidToString(bytes: Uint8Array, offset = 0): string {
  const hex = Buffer.from(bytes.buffer, bytes.byteOffset + offset, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Append-only list of 16-byte ids. */
export class IdList {
  bytes: Uint8Array;
  count = 0;

  constructor(capacity = 1024) {
    this.bytes = new Uint8Array(capacity * 16);
  }

  private ensure(extra: number): void {
    const need = (this.count + extra) * 16;
    if (need <= this.bytes.length) return;
    let size = this.bytes.length * 2;
    while (size < need) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.bytes.subarray(0, this.count * 16));
    this.bytes = next;
  }

  /** Parses the UUID at `text[at..]` and appends it; false when malformed. */
  pushUuid(text: string, at = 0): boolean {
    this.ensure(1);
    if (!parseUuidInto(text, at, this.bytes, this.count * 16)) return false;
    this.count++;
    return true;
  }

  pushBytes(bytes: Uint8Array, count: number): void {
    this.ensure(count);
    this.bytes.set(bytes.subarray(0, count * 16), this.count * 16);
    this.count += count;
  }

  /** The used part, as a fresh ArrayBuffer (transferable between threads). */
  toArrayBuffer(): ArrayBuffer {
    return this.bytes.slice(0, this.count * 16).buffer;
  }

  get(i: number): string {
    return uuidToString(this.bytes, i * 16);
  }
}

function hashAt(bytes: Uint8Array, o: number): number {
  // The last 8 bytes are random in both UUIDv4 and UUIDv7.
  let h = 0x811c9dc5;
  for (let i = 8; i < 16; i++) h = Math.imul(h ^ bytes[o + i]!, 0x01000193);
  return h >>> 0;
}

function equalAt(a: Uint8Array, ao: number, b: Uint8Array, bo: number): boolean {
  for (let i = 0; i < 16; i++) if (a[ao + i] !== b[bo + i]) return false;
  return true;
}

/**
 * Open-addressing set over an IdList, for "is every acknowledged id in the
 * log?": `mark` each id seen in the database, then read the unmarked ones.
 */
export class IdSet {
  readonly list: IdList;
  private readonly table: Int32Array;
  private readonly mask: number;
  private readonly marked: Uint8Array;
  /** Ids that appear more than once in the list (e.g. a baseline answering a constant). */
  duplicates = 0;
  markedCount = 0;

  constructor(list: IdList) {
    this.list = list;
    let size = 16;
    while (size < list.count * 2) size *= 2;
    this.table = new Int32Array(size).fill(-1);
    this.mask = size - 1;
    this.marked = new Uint8Array(list.count);
    const bytes = list.bytes;
    for (let i = 0; i < list.count; i++) {
      let slot = hashAt(bytes, i * 16) & this.mask;
      let duplicate = false;
      for (;;) {
        const at = this.table[slot]!;
        if (at < 0) break;
        if (equalAt(bytes, at * 16, bytes, i * 16)) {
          duplicate = true;
          break;
        }
        slot = (slot + 1) & this.mask;
      }
      if (duplicate) this.duplicates++;
      else this.table[slot] = i;
    }
  }

  /** Forgets every mark (each check starts from none found). */
  resetMarks(): void {
    this.marked.fill(0);
    this.markedCount = 0;
  }

  get size(): number {
    return this.list.count - this.duplicates;
  }

  private find(bytes: Uint8Array, offset: number): number {
    let slot = hashAt(bytes, offset) & this.mask;
    for (;;) {
      const at = this.table[slot]!;
      if (at < 0) return -1;
      if (equalAt(this.list.bytes, at * 16, bytes, offset)) return at;
      slot = (slot + 1) & this.mask;
    }
  }

  private readonly scratch = new Uint8Array(16);

  has(uuid: string): boolean {
    return parseUuidInto(uuid, 0, this.scratch, 0) && this.find(this.scratch, 0) >= 0;
  }

  /** Marks `uuid` as found; returns false when it is not in the set. */
  mark(uuid: string): boolean {
    if (!parseUuidInto(uuid, 0, this.scratch, 0)) return false;
    const at = this.find(this.scratch, 0);
    if (at < 0) return false;
    if (this.marked[at] === 0) {
      this.marked[at] = 1;
      this.markedCount++;
    }
    return true;
  }

  /** Up to `limit` ids never marked, and how many there are. */
  unmarked(limit = 10): { count: number; sample: string[] } {
    const sample: string[] = [];
    let count = 0;
    for (let slot = 0; slot < this.table.length; slot++) {
      const at = this.table[slot]!;
      if (at < 0 || this.marked[at] === 1) continue;
      count++;
      if (sample.length < limit) sample.push(this.list.get(at));
    }
    return { count, sample };
  }
}
