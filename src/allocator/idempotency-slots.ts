import type { Reservation } from './types.js';

/**
 * Which reservation owns each idempotency slot (a shopper's idempotency key)
 * of one SKU. Keyed by the shopper, with the owners themselves as values: a
 * reservation already holds its shopper and its key, so a slot costs no string
 * of its own (a "shopper NUL key" string per live hold was ~64 heap bytes of
 * ~480, bench/hold-memory.ts).
 *
 * By shopper rather than by key: a request's shopper is the verified token's
 * string, the same object every time (src/auth/auth.ts), whose hash V8 keeps,
 * where its Idempotency-Key is a fresh string each time, hashed anew (~200 ns
 * a string, bench/restore-cost.ts). A restore hashes each hold's shopper once
 * for this index and the allocator's shopper quantities together, not a third
 * string per hold.
 *
 * A shopper's owners are one reservation, a short list, or, past
 * `ownersListMax`, a Map by key: a shopper who made thousands of reservations
 * still costs one look-up per request, not a scan.
 */
export class IdempotencySlots {
  private readonly byShopper = new Map<string, Owners>();
  private slots = 0;

  get size(): number {
    return this.slots;
  }

  /** The reservation owning `shopperId`'s slot of `idempotencyKey`. */
  get(shopperId: string, idempotencyKey: string): Reservation | undefined {
    const owners = this.byShopper.get(shopperId);
    if (owners === undefined) return undefined;
    if (owners instanceof Map) return owners.get(idempotencyKey);
    if (!Array.isArray(owners)) return owners.idempotencyKey === idempotencyKey ? owners : undefined;
    for (let i = 0; i < owners.length; i++) if (owners[i]!.idempotencyKey === idempotencyKey) return owners[i];
    return undefined;
  }

  /** `owner` takes its slot (over an older reservation's, which is returned). */
  take(owner: Reservation): Reservation | undefined {
    const shopper = owner.shopperId;
    const owners = this.byShopper.get(shopper);
    if (owners === undefined) {
      this.byShopper.set(shopper, owner);
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
        this.byShopper.set(shopper, owner);
        return owners;
      }
      this.byShopper.set(shopper, [owners, owner]);
      this.slots += 1;
      return undefined;
    }
    for (let i = 0; i < owners.length; i++) {
      const previous = owners[i]!;
      if (previous.idempotencyKey !== owner.idempotencyKey) continue;
      owners[i] = owner;
      return previous;
    }
    owners.push(owner);
    this.slots += 1;
    if (owners.length > ownersListMax) this.byShopper.set(shopper, new Map(owners.map((r) => [r.idempotencyKey, r])));
    return undefined;
  }

  /** Frees `owner`'s slot if it still owns it (a newer reservation may have taken it over). */
  release(owner: Reservation): void {
    const shopper = owner.shopperId;
    const owners = this.byShopper.get(shopper);
    if (owners === owner) {
      this.byShopper.delete(shopper);
      this.slots -= 1;
      return;
    }
    if (owners instanceof Map) {
      if (owners.get(owner.idempotencyKey) !== owner) return;
      owners.delete(owner.idempotencyKey);
      this.slots -= 1;
      if (owners.size === 0) this.byShopper.delete(shopper);
      return;
    }
    if (!Array.isArray(owners)) return;
    const i = owners.indexOf(owner);
    if (i < 0) return;
    owners.splice(i, 1);
    this.slots -= 1;
    if (owners.length === 1) this.byShopper.set(shopper, owners[0]!);
  }

  /** Every slot as [shopper NUL key, reservation id], for comparisons of whole states. */
  entries(): [string, string][] {
    const out: [string, string][] = [];
    for (const owners of this.byShopper.values()) {
      const list = owners instanceof Map ? [...owners.values()] : Array.isArray(owners) ? owners : [owners];
      for (const r of list) out.push([`${r.shopperId}\u0000${r.idempotencyKey}`, r.reservationId]);
    }
    return out;
  }
}

/** One shopper's slot owners: one, a list (scanned), or a Map by key once the list is long. */
type Owners = Reservation | Reservation[] | Map<string, Reservation>;

/** Owners a shopper's list holds before it becomes a Map: a scan of this many keys costs about one Map look-up. */
const ownersListMax = 8;
