import type { Reservation } from './types.js';

/**
 * A SKU's shoppers, in one Map by shopper: the units each holds or has paid
 * for (what `perShopperLimit` caps) and the reservations owning their
 * idempotency slots (a shopper's idempotency keys). One index, not two: a
 * reservation asks for its shopper's slot, then their units, then takes the
 * slot and adds the units, one entry found once; a restore hashes and inserts
 * each hold's shopper once (bench/restore-cost.ts: a Map insert with the hash
 * known costs ~350 ns a hold on a million, the second Map this replaced).
 *
 * Slots cost no string of their own: a reservation already holds its shopper
 * and its key (a "shopper NUL key" string per live hold was ~64 heap bytes of
 * ~480, bench/hold-memory.ts). The shopper is the key, not the Idempotency-Key:
 * a request's shopper is the verified token's string, the same object every
 * time (src/auth/auth.ts), whose hash V8 keeps, where an Idempotency-Key is a
 * fresh string each time (~200 ns to hash).
 *
 * A shopper's owners are one reservation, a short list, or, past
 * `ownersListMax`, a Map by key: a shopper who made thousands of reservations
 * still costs one look-up per request, not a scan. A shopper leaves the Map
 * when they have no units and no slot: its size is bounded by live work.
 */
export class Shoppers {
  private readonly byShopper = new Map<string, Shopper>();
  private slots = 0;
  /** The last shopper looked up or changed, found or not: one request asks for the same shopper up to four times. */
  private lastId: string | null = null;
  private last: Shopper | undefined = undefined;

  /** Idempotency slots taken. */
  get slotCount(): number {
    return this.slots;
  }

  /** Shoppers with units or a slot. */
  get size(): number {
    return this.byShopper.size;
  }

  /** The reservation owning `shopperId`'s slot of `idempotencyKey`. */
  owner(shopperId: string, idempotencyKey: string): Reservation | undefined {
    const owners = this.find(shopperId)?.owners;
    if (owners == null) return undefined;
    if (owners instanceof Map) return owners.get(idempotencyKey);
    if (!Array.isArray(owners)) return owners.idempotencyKey === idempotencyKey ? owners : undefined;
    for (let i = 0; i < owners.length; i++) if (owners[i]!.idempotencyKey === idempotencyKey) return owners[i];
    return undefined;
  }

  /** Units `shopperId` holds or has paid for. */
  units(shopperId: string): number {
    return this.find(shopperId)?.units ?? 0;
  }

  /** `units` more (or fewer, negative) for `shopperId`; never below 0. */
  addUnits(shopperId: string, units: number): void {
    const found = this.find(shopperId);
    const total = (found?.units ?? 0) + units;
    if (total < 0) throw new RangeError(`shopper ${shopperId} would hold ${total} units`);
    if (total === 0 && (found === undefined || found.owners === null)) {
      if (found !== undefined) this.remove(shopperId);
      return;
    }
    (found ?? this.add(shopperId)).units = total;
  }

  /** `owner` takes its slot (over an older reservation's, which is returned). */
  take(owner: Reservation): Reservation | undefined {
    const shopper = this.find(owner.shopperId) ?? this.add(owner.shopperId);
    const owners = shopper.owners;
    if (owners === null) {
      shopper.owners = owner;
      this.slots += 1;
      return undefined;
    }
    if (owners instanceof Map) {
      const previous = owners.get(owner.idempotencyKey);
      owners.set(owner.idempotencyKey, owner);
      if (previous === undefined) this.slots += 1;
      return previous;
    }
    if (!Array.isArray(owners)) {
      if (owners.idempotencyKey === owner.idempotencyKey) {
        shopper.owners = owner;
        return owners;
      }
      shopper.owners = [owners, owner];
      this.slots += 1;
      return undefined;
    }
    return this.takeFromList(shopper, owners, owner);
  }

  private takeFromList(shopper: Shopper, owners: Reservation[], owner: Reservation): Reservation | undefined {
    for (let i = 0; i < owners.length; i++) {
      const previous = owners[i]!;
      if (previous.idempotencyKey !== owner.idempotencyKey) continue;
      owners[i] = owner;
      return previous;
    }
    owners.push(owner);
    this.slots += 1;
    if (owners.length > ownersListMax) shopper.owners = new Map(owners.map((r) => [r.idempotencyKey, r]));
    return undefined;
  }

  /** Frees `owner`'s slot if it still owns it (a newer reservation may have taken it over). */
  release(owner: Reservation): void {
    const shopper = this.find(owner.shopperId);
    if (shopper === undefined) return;
    const owners = shopper.owners;
    if (owners === owner) {
      shopper.owners = null;
    } else if (owners instanceof Map) {
      if (owners.get(owner.idempotencyKey) !== owner) return;
      owners.delete(owner.idempotencyKey);
      if (owners.size === 0) shopper.owners = null;
    } else if (Array.isArray(owners)) {
      const i = owners.indexOf(owner);
      if (i < 0) return;
      owners.splice(i, 1);
      if (owners.length === 1) shopper.owners = owners[0]!;
    } else {
      return;
    }
    this.slots -= 1;
    if (shopper.owners === null && shopper.units === 0) this.remove(owner.shopperId);
  }

  /**
   * A restore's units for `shopperId` (after its slots were taken). False when
   * the shopper already has units: a state listing a shopper twice.
   */
  restoreUnits(shopperId: string, units: number): boolean {
    const shopper = this.find(shopperId) ?? this.add(shopperId);
    if (shopper.units !== 0) return false;
    shopper.units = units;
    return true;
  }

  /** Shoppers with units and their units, side by side, in the order they joined. */
  unitLists(): { shoppers: string[]; units: number[] } {
    const shoppers: string[] = [];
    const units: number[] = [];
    for (const [shopperId, shopper] of this.byShopper) {
      if (shopper.units === 0) continue;
      shoppers.push(shopperId);
      units.push(shopper.units);
    }
    return { shoppers, units };
  }

  /** Every slot as [shopper NUL key, reservation id], for comparisons of whole states. */
  slotEntries(): [string, string][] {
    const out: [string, string][] = [];
    for (const { owners } of this.byShopper.values()) {
      if (owners === null) continue;
      const list = owners instanceof Map ? [...owners.values()] : Array.isArray(owners) ? owners : [owners];
      for (const r of list) out.push([`${r.shopperId}\u0000${r.idempotencyKey}`, r.reservationId]);
    }
    return out;
  }

  private find(shopperId: string): Shopper | undefined {
    if (shopperId === this.lastId) return this.last;
    const shopper = this.byShopper.get(shopperId);
    this.lastId = shopperId;
    this.last = shopper;
    return shopper;
  }

  private add(shopperId: string): Shopper {
    const shopper: Shopper = { units: 0, owners: null };
    this.byShopper.set(shopperId, shopper);
    this.lastId = shopperId;
    this.last = shopper;
    return shopper;
  }

  private remove(shopperId: string): void {
    this.byShopper.delete(shopperId);
    this.lastId = shopperId;
    this.last = undefined;
  }
}

/** One shopper of a SKU. */
interface Shopper {
  /** Units held or paid for. */
  units: number;
  /** Reservations owning the shopper's idempotency slots (null: none). */
  owners: Owners | null;
}

/** One shopper's slot owners: one, a list (scanned), or a Map by key once the list is long. */
type Owners = Reservation | Reservation[] | Map<string, Reservation>;

/** Owners a shopper's list holds before it becomes a Map: a scan of this many keys costs about one Map look-up. */
const ownersListMax = 8;
