import { InvariantViolation, SkuAllocator, type AllocatorState } from '../allocator/allocator.js';
import type { PackedGeneration } from '../allocator/remembered-keys.js';
import { reservedAtMs, reservedBeforeExpiryMs, type AllocatorLimits, type Reservation, type ReservationStatus, type SkuConfig } from '../allocator/types.js';
import { isWaitingRoomConfig, type QueueState } from '../allocator/waiting-room.js';
import { readWaitlistSection, writeWaitlistSection } from './waitlist-codec.js';

/**
 * A SKU allocator's state as bytes, for `sku_snapshots.state`.
 *
 * Layout (little-endian): magic "FSNP", u32 format version, u32 body length,
 * then the body: numbers as f64, strings as u32 byte length + UTF-8, flags as
 * u8, remembered keys as raw Uint32 arrays. A buffer of another magic or
 * version, shorter or longer than its header says, or whose parts disagree
 * (totals against reservations) throws SnapshotFormatError: never half-read.
 */

/**
 * 2 added, after the remembered keys, the waiting-room section and then the waitlist section (and the
 * config's waitingRoom and waitlistOfferSeconds). Version 1 is still read: it has neither section.
 */
export const snapshotFormatVersion = 2;
const oldestReadableVersion = 1;
const magic = 0x504e5346; // "FSNP" read as a little-endian u32
const headerBytes = 12;

export class SnapshotFormatError extends Error {
  override name = 'SnapshotFormatError';
}

// Appended to, never reordered: the index is the encoding.
const statuses: readonly ReservationStatus[] = ['held', 'released', 'expired', 'checking_out', 'paid', 'payment_failed', 'tentative'];

/**
 * Grows by doubling. Numbers go through a DataView and ASCII strings byte by
 * byte (no native call per field): a hot SKU's 183,000 reservations are encoded
 * in slices on the shard's own thread (src/snapshot/live.ts), where every
 * microsecond per field is loop delay.
 */
class Writer {
  private buffer = Buffer.allocUnsafe(4096);
  private view = new DataView(this.buffer.buffer, this.buffer.byteOffset, this.buffer.length);
  length = 0;

  private room(bytes: number): void {
    if (this.length + bytes <= this.buffer.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buffer.length * 2, this.length + bytes));
    this.buffer.copy(next, 0, 0, this.length);
    this.buffer = next;
    this.view = new DataView(next.buffer, next.byteOffset, next.length);
  }

  u8(value: number): void {
    this.room(1);
    this.buffer[this.length] = value;
    this.length += 1;
  }

  u32(value: number): void {
    this.room(4);
    this.view.setUint32(this.length, value, true);
    this.length += 4;
  }

  f64(value: number): void {
    this.room(8);
    this.view.setFloat64(this.length, value, true);
    this.length += 8;
  }

  nullableF64(value: number | null): void {
    this.u8(value === null ? 0 : 1);
    if (value !== null) this.f64(value);
  }

  string(value: string): void {
    const n = value.length;
    this.room(4 + n);
    const buffer = this.buffer;
    const start = this.length + 4;
    for (let i = 0; i < n; i++) {
      const c = value.charCodeAt(i);
      if (c >= 0x80) {
        this.utf8(value);
        return;
      }
      buffer[start + i] = c;
    }
    this.view.setUint32(this.length, n, true);
    this.length = start + n;
  }

  private utf8(value: string): void {
    const bytes = Buffer.byteLength(value);
    this.room(4 + bytes);
    this.view.setUint32(this.length, bytes, true);
    this.buffer.write(value, this.length + 4, 'utf8');
    this.length += 4 + bytes;
  }

  nullableString(value: string | null): void {
    this.u8(value === null ? 0 : 1);
    if (value !== null) this.string(value);
  }

  uint32s(values: Uint32Array): void {
    this.room(values.byteLength);
    Buffer.from(values.buffer, values.byteOffset, values.byteLength).copy(this.buffer, this.length);
    this.length += values.byteLength;
  }

  finish(): Buffer {
    this.buffer.writeUInt32LE(this.length - headerBytes, 8);
    return Buffer.from(this.buffer.subarray(0, this.length));
  }
}

class Reader {
  offset = headerBytes;
  constructor(private readonly buffer: Buffer) {}

  private need(bytes: number): void {
    if (this.offset + bytes > this.buffer.length) {
      throw new SnapshotFormatError(`snapshot truncated: needs ${bytes} bytes at ${this.offset} of ${this.buffer.length}`);
    }
  }

  u8(): number {
    this.need(1);
    return this.buffer.readUInt8(this.offset++);
  }

  flag(): boolean {
    const value = this.u8();
    if (value > 1) throw new SnapshotFormatError(`snapshot flag ${value} at ${this.offset - 1}`);
    return value === 1;
  }

  u32(): number {
    this.need(4);
    const value = this.buffer.readUInt32LE(this.offset);
    this.offset += 4;
    return value;
  }

  f64(): number {
    this.need(8);
    const value = this.buffer.readDoubleLE(this.offset);
    this.offset += 8;
    if (!Number.isFinite(value)) throw new SnapshotFormatError(`snapshot number ${value} at ${this.offset - 8}`);
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

  /** A count of items at least `minBytes` each: refuses counts the rest of the buffer cannot hold. */
  count(minBytes: number): number {
    const n = this.u32();
    this.need(n * minBytes);
    return n;
  }

  end(): void {
    if (this.offset !== this.buffer.length) {
      throw new SnapshotFormatError(`snapshot has ${this.buffer.length - this.offset} bytes past its end`);
    }
  }
}

export function encodeSnapshot(allocator: SkuAllocator): Buffer {
  const encoder = new SnapshotEncoder(allocator.exportState());
  encoder.step(Infinity);
  return encoder.finish();
}

/**
 * Exported state as snapshot bytes, the reservations a slice at a time, so a
 * shard can encode its own state between requests (src/snapshot/live.ts).
 * `current` gives a reservation as it was when the state was exported (the
 * allocator changes reservations in place; the live snapshot keeps their
 * earlier copies). The bytes are the same whatever the slices.
 */
export class SnapshotEncoder {
  private readonly w = new Writer();
  private readonly index = new Map<string, number>();
  /** The lists after the counts, in order; each is written as its length, then its items. */
  private readonly lists: { length: number; item: (i: number) => void }[];
  private list = 0;
  /** Next item of the current list; -1: its length is not written yet. */
  private next = -1;

  constructor(
    private readonly state: AllocatorState,
    current: (r: Reservation) => Reservation = (r) => r,
  ) {
    const w = this.w;
    w.u32(magic);
    w.u32(snapshotFormatVersion);
    w.u32(0); // body length, filled in by finish()
    w.string(state.sku);
    w.f64(state.seq);
    w.u8(state.archived ? 1 : 0);
    writeConfig(w, state.config);
    for (const n of [state.available, state.held, state.sold, state.liveHolds]) w.f64(n);
    this.lists = [
      {
        length: state.reservations.length,
        item: (i) => {
          const r = current(state.reservations[i]!);
          // Only settled reservations are in settledOrder (a copy kept as it was is not settled).
          if (r.settledAtMs !== null) this.index.set(r.reservationId, i);
          writeReservation(w, r, state.slotOwners[i]!);
        },
      },
      { length: state.shoppers.length, item: (i) => writeShopperQuantity(w, state.shoppers[i]!, state.shopperQuantities[i]!) },
      { length: state.checkoutKeys.length, item: (i) => writeCheckoutKey(w, state.checkoutKeys[i]!) },
      { length: state.settledOrder.length, item: (i) => w.u32(this.index.get(state.settledOrder[i]!)!) },
      { length: state.rememberedKeys.length, item: (i) => writeGeneration(w, state.rememberedKeys[i]!) },
    ];
  }

  /** Encode up to `maxItems` more items (reservations, shoppers, keys…): true once everything is encoded. */
  step(maxItems: number): boolean {
    let left = maxItems;
    while (this.list < this.lists.length) {
      const list = this.lists[this.list]!;
      if (this.next < 0) {
        this.w.u32(list.length);
        this.next = 0;
      }
      const end = Math.min(list.length, this.next + left);
      for (let i = this.next; i < end; i++) list.item(i);
      left -= end - this.next;
      this.next = end;
      if (end < list.length) return false;
      this.list += 1;
      this.next = -1;
    }
    return true;
  }

  /** The bytes, once `step` said everything is encoded: the waiting room's and the waitlist's sections close them. */
  finish(): Buffer {
    writeQueue(this.w, this.state.queue);
    writeWaitlistSection(this.w, this.state.config, this.state.waitlist);
    return this.w.finish();
  }
}

function writeShopperQuantity(w: Writer, shopper: string, quantity: number): void {
  w.string(shopper);
  w.f64(quantity);
}

function writeCheckoutKey(w: Writer, [slot, record]: AllocatorState['checkoutKeys'][number]): void {
  w.string(slot);
  w.string(record.orderId);
  w.string(record.reservationId);
  w.string(record.paymentMethod);
}

function writeGeneration(w: Writer, g: PackedGeneration): void {
  w.f64(g.index);
  w.u32(g.hashes.length);
  w.uint32s(g.hashes);
  w.uint32s(g.seconds);
}

function writeConfig(w: Writer, config: SkuConfig | null): void {
  w.u8(config === null ? 0 : 1);
  if (config === null) return;
  for (const n of [config.stock, config.perShopperLimit, config.holdSeconds, config.priceCents]) w.f64(n);
  w.string(config.currency);
  w.nullableF64(config.startsAtMs);
  w.nullableF64(config.endsAtMs);
  const room = config.waitingRoom ?? null;
  w.u8(room === null ? 0 : 1);
  if (room !== null) {
    w.f64(room.admitPerSecond);
    w.string(room.seed);
  }
}

/** Version 2: the waiting room's joins, in join order (positions and admissions are derived from them). */
function writeQueue(w: Writer, queue: QueueState | undefined): void {
  const n = queue?.ticketIds.length ?? 0;
  w.u32(n);
  for (let i = 0; i < n; i++) {
    w.string(queue!.ticketIds[i]!);
    w.string(queue!.shopperIds[i]!);
    w.f64(queue!.joinedAtMs[i]!);
  }
}

function readQueue(r: Reader): QueueState {
  const queue: QueueState = { ticketIds: [], shopperIds: [], joinedAtMs: [] };
  for (let i = 0, n = r.count(16); i < n; i++) {
    queue.ticketIds.push(r.string());
    queue.shopperIds.push(r.string());
    queue.joinedAtMs.push(r.f64());
  }
  return queue;
}

function writeReservation(w: Writer, r: Reservation, ownsSlot: boolean): void {
  w.string(r.reservationId);
  w.string(r.shopperId);
  w.string(r.idempotencyKey);
  w.f64(r.quantity);
  w.f64(r.expiresAtMs);
  w.f64(reservedAtMs(r));
  w.nullableF64(r.settledAtMs);
  w.u8(statuses.indexOf(r.status));
  w.nullableString(r.checkout?.orderId ?? null);
  w.nullableString(r.checkout?.idempotencyKey ?? null);
  w.u8(ownsSlot ? 1 : 0);
}

/** Header checks only: magic, known version, exact length. Returns the version. */
function readHeader(buffer: Buffer): number {
  if (buffer.length < headerBytes) throw new SnapshotFormatError(`snapshot of ${buffer.length} bytes has no header`);
  if (buffer.readUInt32LE(0) !== magic) throw new SnapshotFormatError('not a flashstock snapshot (bad magic)');
  const version = buffer.readUInt32LE(4);
  if (version < oldestReadableVersion || version > snapshotFormatVersion) {
    throw new SnapshotFormatError(`snapshot format version ${version} is unknown (this code reads ${snapshotFormatVersion})`);
  }
  const body = buffer.readUInt32LE(8);
  if (body !== buffer.length - headerBytes) {
    throw new SnapshotFormatError(`snapshot body is ${buffer.length - headerBytes} bytes, header says ${body}`);
  }
  return version;
}

export function decodeSnapshot(buffer: Buffer, limits: AllocatorLimits): SkuAllocator {
  const version = readHeader(buffer);
  const r = new Reader(buffer);
  const sku = r.string();
  const seq = r.f64();
  const archived = r.flag();
  const config = readConfig(r, version);
  const [available, held, sold, liveHolds] = [r.f64(), r.f64(), r.f64(), r.f64()];
  const reservations: Reservation[] = [];
  const slotOwners: boolean[] = [];
  for (let i = 0, n = r.count(40); i < n; i++) reservations.push(readReservation(r, slotOwners));
  const shoppers: string[] = [];
  const shopperQuantities: number[] = [];
  for (let i = 0, n = r.count(12); i < n; i++) {
    shoppers.push(r.string());
    shopperQuantities.push(smallInteger(r.f64()));
  }
  const checkoutKeys: AllocatorState['checkoutKeys'] = [];
  for (let i = 0, n = r.count(16); i < n; i++) {
    checkoutKeys.push([r.string(), { orderId: r.string(), reservationId: r.string(), paymentMethod: r.string() }]);
  }
  const settledOrder: string[] = [];
  for (let i = 0, n = r.count(4); i < n; i++) {
    const reservation = reservations[r.u32()];
    if (reservation === undefined) throw new SnapshotFormatError('settled index out of range');
    settledOrder.push(reservation.reservationId);
  }
  const rememberedKeys: PackedGeneration[] = [];
  for (let i = 0, n = r.count(12); i < n; i++) {
    const index = r.f64();
    const count = r.count(8);
    rememberedKeys.push({ index, hashes: r.uint32s(count), seconds: r.uint32s(count) });
  }
  const queue = version >= 2 ? readQueue(r) : undefined;
  const waitlist = version >= 2 ? readWaitlistSection(r, config, (detail) => new SnapshotFormatError(detail)) : undefined;
  r.end();
  const state: AllocatorState = {
    sku, seq, config, archived, available, held, sold, liveHolds,
    reservations, slotOwners, shoppers, shopperQuantities, checkoutKeys, settledOrder, rememberedKeys,
  };
  if (queue !== undefined) state.queue = queue;
  if (waitlist !== undefined) state.waitlist = waitlist;
  try {
    return SkuAllocator.restore(state, limits, true);
  } catch (error) {
    if (error instanceof InvariantViolation || error instanceof RangeError) {
      throw new SnapshotFormatError(`snapshot of ${sku} at seq ${seq} is inconsistent: ${error.message}`, { cause: error });
    }
    throw error;
  }
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

function smallInteger(value: number): number {
  return (value | 0) === value ? value | 0 : value;
}

/** The next reservation; whether it owns its idempotency slot goes on `slotOwners` (no pair per hold: a million holds decode at once). */
function readReservation(r: Reader, slotOwners: boolean[]): Reservation {
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
  slotOwners.push(r.flag());
  return {
    // The allocator's field order (src/allocator/allocator.ts applyReserved): one hidden class for decoded and live holds.
    reservationId, shopperId, quantity, idempotencyKey, expiresAtMs, status,
    reservedBeforeExpiryMs: reservedBeforeExpiryMs(madeAtMs, expiresAtMs), settledAtMs, checkout,
  };
}
