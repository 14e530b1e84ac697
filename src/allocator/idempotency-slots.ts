import type { Reservation } from './types.js';

/**
 * Which reservation owns each idempotency slot (a shopper's idempotency key)
 * of one SKU. Keyed by the key alone, with the owners themselves as values:
 * a reservation already holds its shopper and its key, so a slot costs a Map
 * entry and no string of its own (a "shopper NUL key" string per live hold was
 * ~64 heap bytes of ~480, bench/hold-memory.ts). Keys are the shoppers' choice,
 * so shoppers may share one: that key's value is then a list, one owner per
 * shopper (short: a key shared by many shoppers is a client bug, not a load).
 */
export class IdempotencySlots {
  private readonly byKey = new Map<string, Reservation | Reservation[]>();
  private slots = 0;

  get size(): number {
    return this.slots;
  }

  /** The reservation owning `shopperId`'s slot of `idempotencyKey`. */
  get(shopperId: string, idempotencyKey: string): Reservation | undefined {
    const owners = this.byKey.get(idempotencyKey);
    if (owners === undefined) return undefined;
    if (!Array.isArray(owners)) return owners.shopperId === shopperId ? owners : undefined;
    return owners.find((r) => r.shopperId === shopperId);
  }

  /** `owner` takes its slot (over an older reservation's, which is returned). */
  take(owner: Reservation): Reservation | undefined {
    const key = owner.idempotencyKey;
    const owners = this.byKey.get(key);
    if (owners === undefined) {
      this.byKey.set(key, owner);
      this.slots += 1;
      return undefined;
    }
    if (!Array.isArray(owners)) {
      if (owners.shopperId === owner.shopperId) {
        this.byKey.set(key, owner);
        return owners;
      }
      this.byKey.set(key, [owners, owner]);
      this.slots += 1;
      return undefined;
    }
    const i = owners.findIndex((r) => r.shopperId === owner.shopperId);
    if (i >= 0) {
      const previous = owners[i];
      owners[i] = owner;
      return previous;
    }
    owners.push(owner);
    this.slots += 1;
    return undefined;
  }

  /** Frees `owner`'s slot if it still owns it (a newer reservation may have taken it over). */
  release(owner: Reservation): void {
    const key = owner.idempotencyKey;
    const owners = this.byKey.get(key);
    if (owners === owner) {
      this.byKey.delete(key);
      this.slots -= 1;
      return;
    }
    if (!Array.isArray(owners)) return;
    const i = owners.indexOf(owner);
    if (i < 0) return;
    owners.splice(i, 1);
    this.slots -= 1;
    if (owners.length === 1) this.byKey.set(key, owners[0]!);
  }

  /** Every slot as [shopper NUL key, reservation id], for comparisons of whole states. */
  entries(): [string, string][] {
    const out: [string, string][] = [];
    for (const owners of this.byKey.values()) {
      for (const r of Array.isArray(owners) ? owners : [owners]) out.push([`${r.shopperId}\u0000${r.idempotencyKey}`, r.reservationId]);
    }
    return out;
  }
}
