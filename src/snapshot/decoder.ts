import { InvariantViolation, SkuAllocator, type AllocatorState } from '../allocator/allocator.js';
import type { PackedGeneration } from '../allocator/remembered-keys.js';
import { reservedBeforeExpiryMs, type AllocatorLimits, type Reservation, type SkuConfig } from '../allocator/types.js';
import { isWaitingRoomConfig, type QueueState } from '../allocator/waiting-room.js';
import { headerBytes, magic, oldestReadableVersion, SnapshotFormatError, snapshotFormatVersion, statuses } from './format.js';
import { readWaitlistSection } from './waitlist-codec.js';

/**
 * Snapshot bytes back into an allocator, whole (`decodeSnapshot`) or as they
 * arrive (`SnapshotDecoder.push`): a million live holds are 169 MB that
 * PostgreSQL sends in slices (src/snapshot/load.ts), and decoding each slice
 * as it comes overlaps the decode with the transfer instead of waiting for
 * the last byte and copying every chunk into one buffer first
 * (docs/performance.md).
 */

/** Thrown by a streaming read that ran past the bytes received so far: a symbol, not an Error, so no stack is built. */
const needMore: unique symbol = Symbol('snapshot bytes still to come');

class Reader {
  /** The bytes received and not yet dropped; `offset` is the next one to read. */
  buffer: Buffer = Buffer.alloc(0);
  /** `buffer` as a DataView: a float read through it is ~1 ns where Buffer's readDoubleLE is ~14 (four per hold). */
  private view = new DataView(this.buffer.buffer, this.buffer.byteOffset, this.buffer.length);
  offset = 0;
  /** Bytes of the snapshot before `buffer[0]` (dropped once read). */
  base = 0;
  /** The reused buffer `append` gathers bytes in. */
  private window: Buffer = Buffer.alloc(0);
  /** Every byte is in `buffer`: running out is truncation, not a wait. */
  final = false;
  /** After a read ran out: the snapshot's length it needs before it is worth trying again. */
  wanted = 0;

  constructor(readonly total: number) {}

  /** The whole snapshot at once, read where it is (not copied). */
  readInPlace(buffer: Buffer): void {
    if (this.base + this.buffer.length !== 0) throw new RangeError('a whole snapshot after other bytes');
    this.setBuffer(buffer);
  }

  /**
   * `chunk` copied after the bytes not read yet, in one reused buffer: the
   * caller may reuse `chunk` once this returns (the slices' COPY reader does),
   * and nothing read keeps a reference into the buffer (strings and key
   * tables are copies).
   */
  append(chunk: Buffer): void {
    const restBytes = this.buffer.length - this.offset;
    const length = restBytes + chunk.length;
    let window = this.window;
    if (window.length < length) {
      window = Buffer.allocUnsafeSlow(Math.max(length, 2 * window.length));
      this.buffer.copy(window, 0, this.offset);
    } else if (this.buffer.buffer !== window.buffer) {
      this.buffer.copy(window, 0, this.offset);
    } else if (this.offset > 0) {
      window.copyWithin(0, this.offset, this.offset + restBytes);
    }
    chunk.copy(window, restBytes);
    this.window = window;
    this.base += this.offset;
    this.offset = 0;
    this.setBuffer(window.subarray(0, length));
  }

  private setBuffer(buffer: Buffer): void {
    this.buffer = buffer;
    this.view = new DataView(buffer.buffer, buffer.byteOffset, buffer.length);
  }

  private need(bytes: number): void {
    if (this.offset + bytes <= this.buffer.length) return;
    if (!this.final) {
      this.wanted = this.base + this.offset + bytes;
      throw needMore;
    }
    throw new SnapshotFormatError(`snapshot truncated: needs ${bytes} bytes at ${this.base + this.offset} of ${this.base + this.buffer.length}`);
  }

  u8(): number {
    this.need(1);
    return this.buffer[this.offset++]!;
  }

  flag(): boolean {
    const value = this.u8();
    if (value > 1) throw new SnapshotFormatError(`snapshot flag ${value} at ${this.base + this.offset - 1}`);
    return value === 1;
  }

  u32(): number {
    this.need(4);
    const value = this.view.getUint32(this.offset, true);
    this.offset += 4;
    return value;
  }

  f64(): number {
    this.need(8);
    const value = this.view.getFloat64(this.offset, true);
    this.offset += 8;
    if (!Number.isFinite(value)) throw new SnapshotFormatError(`snapshot number ${value} at ${this.base + this.offset - 8}`);
    return value;
  }

  nullableF64(): number | null {
    return this.flag() ? this.f64() : null;
  }

  string(): string {
    const bytes = this.u32();
    this.need(bytes);
    const value = this.buffer.toString('utf8', this.offset, this.offset + bytes);
    this.offset += bytes;
    return value;
  }

  /** Which reservation's shopper `shopperAmong` returned (-1: none, the name was decoded). */
  matched = -1;

  /**
   * The next string: the shopper of the first of `reservations[from..to)`
   * whose name these bytes spell (ASCII), that very string (one string object
   * where the state holds two equal ones); else decoded.
   */
  shopperAmong(reservations: readonly Reservation[], from: number, to: number): string {
    const bytes = this.u32();
    this.need(bytes);
    const at = this.offset;
    this.offset += bytes;
    for (let k = from; k < to; k++) {
      const known = reservations[k]!.shopperId;
      if (known.length === bytes && asciiEquals(this.buffer, at, known)) {
        this.matched = k;
        return known;
      }
    }
    this.matched = -1;
    return this.buffer.toString('utf8', at, at + bytes);
  }

  nullableString(): string | null {
    return this.flag() ? this.string() : null;
  }

  uint32s(count: number): Uint32Array {
    this.need(count * 4);
    const out = new Uint32Array(count);
    Buffer.from(out.buffer).set(this.buffer.subarray(this.offset, this.offset + count * 4));
    this.offset += count * 4;
    return out;
  }

  /** A count of items at least `minBytes` each: refuses counts the rest of the snapshot cannot hold. */
  count(minBytes: number): number {
    const n = this.u32();
    const left = this.total - this.base - this.offset;
    if (n * minBytes > left) throw new SnapshotFormatError(`snapshot truncated: ${n} items of ≥ ${minBytes} bytes in the ${left} left`);
    return n;
  }

  end(): void {
    if (this.offset !== this.buffer.length) throw new SnapshotFormatError(`snapshot has ${this.buffer.length - this.offset} bytes past its end`);
  }
}

export function decodeSnapshot(buffer: Buffer, limits: AllocatorLimits): SkuAllocator {
  const decoder = new SnapshotDecoder(buffer.length, limits);
  decoder.pushWhole(buffer);
  return decoder.finish();
}

/** The parts of the state decoded so far, in the order of the bytes. */
type Stage = 'header' | 'head' | 'reservations' | 'shoppers' | 'checkoutKeys' | 'settled' | 'rememberedKeys' | 'tail';

/**
 * A snapshot of `totalBytes` decoded as its bytes arrive: `push` each chunk in
 * order, then `finish`. Items (a reservation, a shopper…) are decoded as soon
 * as all their bytes are in; one cut by a chunk's end is read again, whole,
 * once the bytes it needs have come. The bytes are the same whatever the
 * chunks, and so is the allocator.
 */
export class SnapshotDecoder {
  private readonly r: Reader;
  private stage: Stage = 'header';
  private version = 0;
  /** Items of the current list: -1 until its count is read. */
  private count = -1;
  /** Items the current list has in all (its count as read). */
  private listLength = 0;
  /** Shoppers whose name is their reservation's very string (`readShopper`): what the tests and the bench read. */
  sharedShopperNames = 0;
  /** The reservation whose shopper the next shopper probably is. */
  private shopperCursor = 0;
  /** Where the item being read started: a read that runs out goes back to it. */
  private mark = 0;
  private readonly state: AllocatorState = {
    sku: '', seq: 0, config: null, archived: false, available: 0, held: 0, sold: 0, liveHolds: 0,
    reservations: [], slotOwners: [], shoppers: [], shopperQuantities: [], checkoutKeys: [], settledOrder: [], rememberedKeys: [],
  };

  constructor(
    totalBytes: number,
    private readonly limits: AllocatorLimits,
  ) {
    this.r = new Reader(totalBytes);
  }

  /** The next bytes; `chunk` is copied, so the caller may reuse it once this returns. */
  push(chunk: Buffer): void {
    const r = this.r;
    if (r.final) throw new RangeError('snapshot bytes pushed after finish');
    if (r.base + r.buffer.length + chunk.length > r.total) throw new SnapshotFormatError(`snapshot longer than its ${r.total} bytes`);
    r.append(chunk);
    if (r.base + r.buffer.length < r.wanted) return; // the cut item still lacks bytes
    this.decodeItems();
  }

  /** The whole snapshot in one buffer, before any other bytes: read in place, no copy. */
  pushWhole(buffer: Buffer): void {
    this.r.readInPlace(buffer);
    this.decodeItems();
  }

  /** Every byte is in: the rest decoded, checked whole, and restored as an allocator. */
  finish(): SkuAllocator {
    const r = this.r;
    r.final = true;
    if (r.base + r.buffer.length !== r.total) throw new SnapshotFormatError(`snapshot of ${r.base + r.buffer.length} bytes, ${r.total} expected`);
    this.decodeItems();
    const state = this.state;
    if (this.version >= 2) {
      state.queue = readQueue(r);
      state.waitlist = readWaitlistSection(r, state.config, (detail) => new SnapshotFormatError(detail));
    }
    r.end();
    try {
      return SkuAllocator.restore(state, this.limits, true);
    } catch (error) {
      if (error instanceof InvariantViolation || error instanceof RangeError) {
        throw new SnapshotFormatError(`snapshot of ${state.sku} at seq ${state.seq} is inconsistent: ${error.message}`, { cause: error });
      }
      throw error;
    }
  }

  /** Decodes every whole item received; an item cut by the end of the bytes so far is left for the next push. */
  private decodeItems(): void {
    const r = this.r;
    try {
      while (this.stage !== 'tail') {
        this.mark = r.offset;
        this.decodeStage();
      }
    } catch (error) {
      if (error !== needMore) throw error;
      r.offset = this.mark;
    }
  }

  private decodeStage(): void {
    const { r, state } = this;
    switch (this.stage) {
      case 'header':
        this.version = readHeader(r);
        this.stage = 'head';
        return;
      case 'head':
        readHead(r, state, this.version);
        this.stage = 'reservations';
        return;
      case 'reservations':
        return this.list(40, 'shoppers', (i) => {
          state.reservations[i] = readReservation(r, state.slotOwners, i);
        }, (n) => {
          state.reservations = new Array<Reservation>(n);
          state.slotOwners = new Array<boolean>(n);
        });
      case 'shoppers':
        return this.list(12, 'checkoutKeys', (i) => {
          const shopper = this.readShopper();
          const quantity = smallInteger(r.f64());
          state.shoppers[i] = shopper;
          state.shopperQuantities[i] = quantity;
          if (r.matched >= 0) {
            this.shopperCursor = r.matched + 1;
            this.sharedShopperNames += 1;
          }
        }, (n) => {
          state.shoppers = new Array<string>(n);
          state.shopperQuantities = new Array<number>(n);
        });
      case 'checkoutKeys':
        return this.list(16, 'settled', () => {
          state.checkoutKeys.push([r.string(), { orderId: r.string(), reservationId: r.string(), paymentMethod: r.string() }]);
        });
      case 'settled':
        return this.list(4, 'rememberedKeys', () => {
          const reservation = state.reservations[r.u32()];
          if (reservation === undefined) throw new SnapshotFormatError('settled index out of range');
          state.settledOrder.push(reservation.reservationId);
        });
      case 'rememberedKeys':
        return this.list(12, 'tail', () => state.rememberedKeys.push(readGeneration(r)));
      default:
        throw new RangeError(`no items in the ${this.stage} stage`);
    }
  }

  /**
   * The next shopper, as the very string of their reservation when it is near
   * `shopperCursor`: shoppers are listed in the order they first reserved, so
   * the shopper after one found at reservation k is almost always at k + 1, or
   * a few places on past reservations whose shoppers hold nothing now. A
   * million holds keep a million strings (~40 bytes each) instead of two
   * million, and skip as many decodes. Not found there: decoded, and the
   * cursor stays. The cursor moves at the item's end, from `r.matched` (a cut
   * item is read again).
   */
  private readShopper(): string {
    const reservations = this.state.reservations;
    const to = Math.min(reservations.length, this.shopperCursor + shopperLookahead);
    return this.r.shopperAmong(reservations, this.shopperCursor, to);
  }

  /**
   * The items of the current list, each read whole or not at all, then `next`.
   * `item` gets its index. `allocate`, given the count, makes the list's arrays
   * at their full length: grown by push, a million-item array is copied ~30
   * times, each larger copy fresh memory the kernel must fault in (a tenth of
   * a restart's page faults with a million holds; the decode costs a third
   * less CPU, bench/restore-cost.ts).
   */
  private list(minBytes: number, next: Stage, item: (i: number) => void, allocate?: (count: number) => void): void {
    const r = this.r;
    if (this.count < 0) {
      this.count = r.count(minBytes);
      this.listLength = this.count;
      allocate?.(this.count);
    }
    for (; this.count > 0; this.count--) {
      this.mark = r.offset;
      item(this.listLength - this.count);
    }
    this.count = -1;
    this.stage = next;
  }
}

/** Header checks: magic, known version, the length the header says. Returns the version. */
function readHeader(r: Reader): number {
  if (r.final && r.total < headerBytes) throw new SnapshotFormatError(`snapshot of ${r.total} bytes has no header`);
  if (r.u32() !== magic) throw new SnapshotFormatError('not a flashstock snapshot (bad magic)');
  const version = r.u32();
  if (version < oldestReadableVersion || version > snapshotFormatVersion) {
    throw new SnapshotFormatError(`snapshot format version ${version} is unknown (this code reads ${snapshotFormatVersion})`);
  }
  const body = r.u32();
  if (body !== r.total - headerBytes) throw new SnapshotFormatError(`snapshot body is ${r.total - headerBytes} bytes, header says ${body}`);
  return version;
}

/** Everything before the lists: the SKU, its seq and config, its totals. */
function readHead(r: Reader, state: AllocatorState, version: number): void {
  const sku = r.string();
  const seq = r.f64();
  const archived = r.flag();
  const config = readConfig(r, version);
  const [available, held, sold, liveHolds] = [r.f64(), r.f64(), r.f64(), r.f64()];
  Object.assign(state, { sku, seq, archived, config, available, held, sold, liveHolds });
}

function readConfig(r: Reader, version: number): SkuConfig | null {
  if (!r.flag()) return null;
  const [stock, perShopperLimit, holdSeconds, priceCents] = [r.f64(), r.f64(), r.f64(), r.f64()];
  const config: SkuConfig = { stock, perShopperLimit, holdSeconds, priceCents, currency: r.string(), startsAtMs: r.nullableF64(), endsAtMs: r.nullableF64() };
  if (version >= 2 && r.flag()) {
    const waitingRoom = { admitPerSecond: r.f64(), seed: r.string() };
    if (!isWaitingRoomConfig(waitingRoom)) throw new SnapshotFormatError(`snapshot waiting room is malformed`);
    config.waitingRoom = waitingRoom;
  }
  return config;
}

function readGeneration(r: Reader): PackedGeneration {
  const index = r.f64();
  const count = r.count(8);
  return { index, hashes: r.uint32s(count), seconds: r.uint32s(count) };
}

/** Version 2: the waiting room's joins, in join order (positions and admissions are derived from them). */
function readQueue(r: Reader): QueueState {
  const queue: QueueState = { ticketIds: [], shopperIds: [], joinedAtMs: [] };
  for (let i = 0, n = r.count(16); i < n; i++) {
    queue.ticketIds.push(r.string());
    queue.shopperIds.push(r.string());
    queue.joinedAtMs.push(r.f64());
  }
  return queue;
}

/** Reservations `readShopper` looks at past its cursor before it decodes the shopper's name. */
const shopperLookahead = 16;

/** Do the `known.length` bytes at `at` spell `known`, every one ASCII? */
function asciiEquals(buffer: Buffer, at: number, known: string): boolean {
  for (let i = known.length - 1; i >= 0; i--) {
    const c = buffer[at + i]!;
    if (c >= 0x80 || c !== known.charCodeAt(i)) return false;
  }
  return true;
}

function smallInteger(value: number): number {
  return (value | 0) === value ? value | 0 : value;
}

/**
 * The next reservation, the `i`th; whether it owns its idempotency slot goes in `slotOwners[i]` (no pair
 * per hold: a million holds decode at once). Nothing is stored until its last byte is read.
 */
function readReservation(r: Reader, slotOwners: boolean[], i: number): Reservation {
  const reservationId = r.string();
  const shopperId = r.string();
  const idempotencyKey = r.string();
  // As a small integer when it is one (it always is): a float would cost a boxed number per hold.
  const quantity = smallInteger(r.f64());
  const expiresAtMs = r.f64();
  const madeAtMs = r.f64();
  const settledAtMs = r.nullableF64();
  const status = statuses[r.u8()];
  if (status === undefined) throw new SnapshotFormatError(`unknown reservation status in ${reservationId}`);
  const orderId = r.nullableString();
  const checkoutIdempotencyKey = r.nullableString();
  if ((orderId === null) !== (checkoutIdempotencyKey === null)) throw new SnapshotFormatError(`${reservationId} has half a checkout`);
  const checkout = orderId === null ? null : { orderId, idempotencyKey: checkoutIdempotencyKey! };
  slotOwners[i] = r.flag();
  return {
    // The allocator's field order (src/allocator/allocator.ts applyReserved): one hidden class for decoded and live holds.
    reservationId, shopperId, quantity, idempotencyKey, expiresAtMs, status,
    reservedBeforeExpiryMs: reservedBeforeExpiryMs(madeAtMs, expiresAtMs), settledAtMs, checkout,
  };
}
