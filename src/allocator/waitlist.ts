/**
 * A SKU's waitlist: shoppers who asked for units while it was sold out, in join
 * order. Pure data owned by one SkuAllocator: no clock, no I/O, no ids of its
 * own (the shell mints them and passes them in). The allocator decides
 * (`join`, `leave`, offers) and applies the waitlist events; this module keeps
 * the entries and their indexes.
 *
 * An entry is open while `waiting` or `offered`; it closes as `taken` (its
 * offer went to checkout), `declined` (the shopper released the offer),
 * `expired` (the offer lapsed) or `left`. Closed entries stay readable for
 * `reservationMemoryMs`, like settled reservations, then leave memory: the
 * waitlist is bounded by its open entries (WAITLIST_MAX_ENTRIES) plus a window
 * of recently closed ones.
 */

export type WaitlistStatus = 'waiting' | 'offered' | 'taken' | 'declined' | 'expired' | 'left';
export const waitlistStatuses: readonly WaitlistStatus[] = ['waiting', 'offered', 'taken', 'declined', 'expired', 'left'];

export interface WaitlistEntry {
  readonly waitlistId: string;
  readonly shopperId: string;
  readonly quantity: number;
  readonly idempotencyKey: string;
  readonly joinedAtMs: number;
  status: WaitlistStatus;
  /** The offer's reservation once offered, else null. */
  reservationId: string | null;
  /** When the entry closed (taken, declined, expired, left), else null. */
  closedAtMs: number | null;
}

/** Counters since this allocator was built (rebuilt by replay; metrics read them). */
export interface WaitlistCounters {
  offersMade: number;
  offersLapsed: number;
  offersTaken: number;
}

/** The waitlist as plain data (snapshots): entries in join order, closed ones by index in close order. */
export interface WaitlistState {
  entries: WaitlistEntry[];
  closedOrder: number[];
}

export function isOpen(status: WaitlistStatus): boolean {
  return status === 'waiting' || status === 'offered';
}

export function waitlistSlot(shopperId: string, idempotencyKey: string): string {
  return `${shopperId}\u0000${idempotencyKey}`;
}

export class Waitlist {
  /** Every entry in memory, by id; insertion order is join order. */
  readonly entries = new Map<string, WaitlistEntry>();
  /** shopper → their open entry (one per shopper per SKU). */
  readonly openByShopper = new Map<string, WaitlistEntry>();
  /** shopper + NUL + key → entry, for repeats of a join. */
  readonly byKey = new Map<string, WaitlistEntry>();
  /** Offer reservation id → its entry, while offered. */
  readonly byReservation = new Map<string, WaitlistEntry>();
  /** Waiting entries in join order from `waitingHead`; entries that stopped waiting are skipped lazily. */
  private waitingQueue: WaitlistEntry[] = [];
  private waitingHead = 0;
  /**
   * A Fenwick tree over `waitingQueue`'s indexes (1 for a waiting entry, else 0), so a position is
   * a prefix sum: O(log n) per read, which shoppers poll. Rebuilt when the queue is compacted or grows past it.
   */
  private tree = new Int32Array(17);
  /** Index of each entry in `waitingQueue` (entries stay plain data: no bookkeeping fields on them). */
  private readonly queueIndex = new Map<WaitlistEntry, number>();
  waitingCount = 0;
  offeredCount = 0;
  /** Closed entries in close order from `closedHead`: forgetting pops from the front. */
  private closed: WaitlistEntry[] = [];
  private closedHead = 0;
  readonly counters: WaitlistCounters = { offersMade: 0, offersLapsed: 0, offersTaken: 0 };

  get openCount(): number {
    return this.waitingCount + this.offeredCount;
  }

  /** Waiting entries, first in line first. */
  *waiting(): IterableIterator<WaitlistEntry> {
    for (let i = this.waitingHead; i < this.waitingQueue.length; i++) {
      const entry = this.waitingQueue[i]!;
      if (entry.status === 'waiting') yield entry;
    }
  }

  /** 1 for the first in line; null when the entry is not waiting. O(log line length). */
  position(entry: WaitlistEntry): number | null {
    const index = this.queueIndex.get(entry);
    if (entry.status !== 'waiting' || index === undefined) return null;
    let sum = 0;
    for (let i = index + 1; i > 0; i -= i & -i) sum += this.tree[i]!;
    return sum;
  }

  private treeAdd(entry: WaitlistEntry, delta: number): void {
    const index = this.queueIndex.get(entry)!;
    for (let i = index + 1; i < this.tree.length; i += i & -i) this.tree[i]! += delta;
  }

  private rebuildTree(): void {
    let capacity = 16;
    while (capacity <= this.waitingQueue.length) capacity *= 2;
    this.tree = new Int32Array(capacity + 1);
    this.queueIndex.clear();
    this.waitingQueue.forEach((entry, index) => {
      this.queueIndex.set(entry, index);
      if (entry.status === 'waiting') this.treeAdd(entry, 1);
    });
  }

  add(entry: WaitlistEntry): void {
    this.entries.set(entry.waitlistId, entry);
    this.byKey.set(waitlistSlot(entry.shopperId, entry.idempotencyKey), entry);
    if (isOpen(entry.status)) this.openByShopper.set(entry.shopperId, entry);
    if (entry.status === 'waiting') {
      this.waitingQueue.push(entry);
      this.waitingCount += 1;
      if (this.waitingQueue.length >= this.tree.length) this.rebuildTree();
      else {
        this.queueIndex.set(entry, this.waitingQueue.length - 1);
        this.treeAdd(entry, 1);
      }
    } else if (entry.status === 'offered') {
      this.byReservation.set(entry.reservationId!, entry);
      this.offeredCount += 1;
    }
  }

  offer(entry: WaitlistEntry, reservationId: string): void {
    this.treeAdd(entry, -1);
    entry.status = 'offered';
    entry.reservationId = reservationId;
    this.byReservation.set(reservationId, entry);
    this.waitingCount -= 1;
    this.offeredCount += 1;
    this.counters.offersMade += 1;
    this.compactWaiting();
  }

  close(entry: WaitlistEntry, status: Exclude<WaitlistStatus, 'waiting' | 'offered'>, atMs: number): void {
    if (entry.status === 'waiting') {
      this.waitingCount -= 1;
      this.treeAdd(entry, -1);
    } else {
      this.offeredCount -= 1;
      this.byReservation.delete(entry.reservationId!);
    }
    if (status === 'expired') this.counters.offersLapsed += 1;
    if (status === 'taken') this.counters.offersTaken += 1;
    entry.status = status;
    entry.closedAtMs = atMs;
    if (this.openByShopper.get(entry.shopperId) === entry) this.openByShopper.delete(entry.shopperId);
    this.closed.push(entry);
    this.compactWaiting();
  }

  /** When `forgetClosed(…, memoryMs)` next forgets an entry (Infinity: none closed). */
  nextForgetAtMs(memoryMs: number): number {
    return this.closedHead < this.closed.length ? this.closed[this.closedHead]!.closedAtMs! + memoryMs : Infinity;
  }

  /** Forget entries closed at least `memoryMs` before `nowMs`. O(forgotten). */
  forgetClosed(nowMs: number, memoryMs: number): void {
    while (this.closedHead < this.closed.length && this.closed[this.closedHead]!.closedAtMs! + memoryMs <= nowMs) {
      const entry = this.closed[this.closedHead]!;
      this.entries.delete(entry.waitlistId);
      const slot = waitlistSlot(entry.shopperId, entry.idempotencyKey);
      if (this.byKey.get(slot) === entry) this.byKey.delete(slot);
      this.closedHead += 1;
    }
    if (this.closedHead > 1024 && this.closedHead * 2 > this.closed.length) {
      this.closed = this.closed.slice(this.closedHead);
      this.closedHead = 0;
    }
  }

  private compactWaiting(): void {
    while (this.waitingHead < this.waitingQueue.length && this.waitingQueue[this.waitingHead]!.status !== 'waiting') {
      this.waitingHead += 1;
    }
    // Entries that left from the middle are dropped when the queue is mostly dead weight.
    const live = this.waitingQueue.length - this.waitingHead;
    if (live > 64 && this.waitingCount * 2 < live) {
      this.waitingQueue = this.waitingQueue.slice(this.waitingHead).filter((e) => e.status === 'waiting');
      this.waitingHead = 0;
      this.rebuildTree();
    } else if (this.waitingHead > 1024 && this.waitingHead * 2 > this.waitingQueue.length) {
      this.waitingQueue = this.waitingQueue.slice(this.waitingHead);
      this.waitingHead = 0;
      this.rebuildTree();
    }
  }

  exportState(): WaitlistState {
    const entries = [...this.entries.values()];
    const index = new Map(entries.map((e, i) => [e, i]));
    return { entries, closedOrder: this.closed.slice(this.closedHead).map((e) => index.get(e)!) };
  }

  /** Rebuild from exported state; throws on parts that disagree (the caller turns it into a refused snapshot). */
  static restore(state: WaitlistState): Waitlist {
    const waitlist = new Waitlist();
    for (const e of state.entries) {
      if (waitlist.entries.has(e.waitlistId)) throw new Error(`waitlist entry ${e.waitlistId} is duplicated`);
      if ((e.status === 'offered') !== (e.reservationId !== null && isOpen(e.status))) {
        throw new Error(`waitlist entry ${e.waitlistId} is ${e.status} with reservation ${e.reservationId}`);
      }
      waitlist.add({ ...e });
    }
    for (const i of state.closedOrder) {
      const entry = state.entries[i];
      if (entry === undefined || isOpen(entry.status) || entry.closedAtMs === null) throw new Error(`closed waitlist index ${i} is not closed`);
      waitlist.closed.push(waitlist.entries.get(entry.waitlistId)!);
    }
    return waitlist;
  }
}
