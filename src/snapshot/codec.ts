import type { SkuAllocator, AllocatorState } from '../allocator/allocator.js';
import type { PackedGeneration } from '../allocator/remembered-keys.js';
import { reservedAtMs, type Reservation, type SkuConfig } from '../allocator/types.js';
import type { QueueState } from '../allocator/waiting-room.js';
import { headerBytes, magic, snapshotFormatVersion, statuses } from './format.js';
import { writeWaitlistSection } from './waitlist-codec.js';

/**
 * A SKU allocator's state as bytes, for `sku_snapshots.state` (the layout:
 * format.ts), and back (decoder.ts).
 */
export { decodeSnapshot, SnapshotDecoder } from './decoder.js';
export { snapshotFormatVersion, SnapshotFormatError } from './format.js';

/**
 * Sized once from an estimate, and grows by doubling past it. Numbers go
 * through a DataView and ASCII strings byte by byte (no native call per
 * field): a hot SKU's 183,000 reservations are encoded in slices on the
 * shard's own thread (src/snapshot/live.ts), where every microsecond per field
 * is loop delay. Growing copied the bytes so far and touched fresh pages each
 * time (a 24 MB snapshot grew 13 times, and `finish` copied it once more): the
 * estimate and the view `finish` returns cut that (docs/performance.md).
 */
class Writer {
  private buffer: Buffer;
  private view: DataView;
  length = 0;

  constructor(capacityBytes: number) {
    this.buffer = Buffer.allocUnsafe(Math.max(minimumCapacityBytes, Math.ceil(capacityBytes)));
    this.view = new DataView(this.buffer.buffer, this.buffer.byteOffset, this.buffer.length);
  }

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

  /** The bytes written: a view of the writer's buffer (not a copy), which the writer no longer touches. */
  finish(): Buffer {
    this.buffer.writeUInt32LE(this.length - headerBytes, 8);
    return this.buffer.subarray(0, this.length);
  }
}

const minimumCapacityBytes = 4096;
/**
 * Bytes per item the first buffer is sized for: a reservation of the hot-SKU
 * bench takes 129 (three ids, four numbers, flags), a shopper's units ~50; an
 * estimate a little above what most SKUs take. Pages of the buffer never
 * written are never touched, so a high estimate costs address space, not memory.
 */
const estimatedBytesPerReservation = 160;
const estimatedBytesPerShopper = 64;
const estimatedBytesPerCheckoutKey = 200;

function estimatedBytes(state: AllocatorState): number {
  let bytes = minimumCapacityBytes;
  bytes += state.reservations.length * estimatedBytesPerReservation;
  bytes += state.shoppers.length * estimatedBytesPerShopper;
  bytes += state.checkoutKeys.length * estimatedBytesPerCheckoutKey;
  bytes += state.settledOrder.length * 4;
  for (const g of state.rememberedKeys) bytes += 12 + g.hashes.byteLength + g.seconds.byteLength;
  return bytes;
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
  private readonly w: Writer;
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
    const w = (this.w = new Writer(estimatedBytes(state)));
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
