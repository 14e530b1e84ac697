import { InvariantViolation, SkuAllocator, type AllocatorState } from '../allocator/allocator.js';
import type { PackedGeneration } from '../allocator/remembered-keys.js';
import type { AllocatorLimits, Reservation, ReservationStatus, SkuConfig } from '../allocator/types.js';
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

class Writer {
  private buffer = Buffer.allocUnsafe(4096);
  length = 0;

  private room(bytes: number): void {
    if (this.length + bytes <= this.buffer.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buffer.length * 2, this.length + bytes));
    this.buffer.copy(next, 0, 0, this.length);
    this.buffer = next;
  }

  u8(value: number): void {
    this.room(1);
    this.buffer.writeUInt8(value, this.length);
    this.length += 1;
  }

  u32(value: number): void {
    this.room(4);
    this.buffer.writeUInt32LE(value, this.length);
    this.length += 4;
  }

  f64(value: number): void {
    this.room(8);
    this.buffer.writeDoubleLE(value, this.length);
    this.length += 8;
  }

  nullableF64(value: number | null): void {
    this.u8(value === null ? 0 : 1);
    if (value !== null) this.f64(value);
  }

  string(value: string): void {
    const bytes = Buffer.byteLength(value);
    this.u32(bytes);
    this.room(bytes);
    this.buffer.write(value, this.length, 'utf8');
    this.length += bytes;
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
  const state = allocator.exportState();
  const w = new Writer();
  w.u32(magic);
  w.u32(snapshotFormatVersion);
  w.u32(0); // body length, filled in by finish()
  w.string(state.sku);
  w.f64(state.seq);
  w.u8(state.archived ? 1 : 0);
  writeConfig(w, state.config);
  for (const n of [state.available, state.held, state.sold, state.liveHolds]) w.f64(n);
  w.u32(state.reservations.length);
  const index = new Map<string, number>();
  state.reservations.forEach((r, i) => {
    index.set(r.reservationId, i);
    writeReservation(w, r, state.slotOwners[i]!);
  });
  w.u32(state.shopperQuantity.length);
  for (const [shopper, quantity] of state.shopperQuantity) {
    w.string(shopper);
    w.f64(quantity);
  }
  w.u32(state.checkoutKeys.length);
  for (const [slot, record] of state.checkoutKeys) {
    w.string(slot);
    w.string(record.orderId);
    w.string(record.reservationId);
    w.string(record.paymentMethod);
  }
  w.u32(state.settledOrder.length);
  for (const id of state.settledOrder) w.u32(index.get(id)!);
  w.u32(state.rememberedKeys.length);
  for (const g of state.rememberedKeys) {
    w.f64(g.index);
    w.u32(g.hashes.length);
    w.uint32s(g.hashes);
    w.uint32s(g.seconds);
  }
  writeQueue(w, state.queue);
  writeWaitlistSection(w, state.config, state.waitlist);
  return w.finish();
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
  w.f64(r.reservedAtMs);
  w.nullableF64(r.settledAtMs);
  w.u8(statuses.indexOf(r.status));
  w.nullableString(r.orderId);
  w.nullableString(r.checkoutIdempotencyKey);
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
  for (let i = 0, n = r.count(40); i < n; i++) {
    const [reservation, owns] = readReservation(r, sku);
    reservations.push(reservation);
    slotOwners.push(owns);
  }
  const shopperQuantity: [string, number][] = [];
  for (let i = 0, n = r.count(12); i < n; i++) shopperQuantity.push([r.string(), r.f64()]);
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
    reservations, slotOwners, shopperQuantity, checkoutKeys, settledOrder, rememberedKeys,
  };
  if (queue !== undefined) state.queue = queue;
  if (waitlist !== undefined) state.waitlist = waitlist;
  try {
    return SkuAllocator.restore(state, limits);
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

function readReservation(r: Reader, sku: string): [Reservation, boolean] {
  const reservationId = r.string();
  const shopperId = r.string();
  const idempotencyKey = r.string();
  const quantity = r.f64();
  const expiresAtMs = r.f64();
  const reservedAtMs = r.f64();
  const settledAtMs = r.nullableF64();
  const status = statuses[r.u8()];
  if (status === undefined) throw new SnapshotFormatError(`unknown reservation status in ${reservationId}`);
  const orderId = r.nullableString();
  const checkoutIdempotencyKey = r.nullableString();
  const owns = r.flag();
  const reservation: Reservation = {
    reservationId, sku, shopperId, quantity, idempotencyKey, expiresAtMs, status, orderId,
    reservedAtMs, settledAtMs, checkoutIdempotencyKey,
  };
  return [reservation, owns];
}
