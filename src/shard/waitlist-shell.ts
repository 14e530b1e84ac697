import type { SkuAllocator } from '../allocator/allocator.js';
import type { StockEvent } from '../allocator/types.js';
import type { WaitlistEntry } from '../allocator/waitlist.js';
import type { Outcome } from '../inventory/inventory.js';
import { waitlistView, type WaitlistView } from '../inventory/waitlist-view.js';
import type { ShardNotice, ShardRequests } from './messages.js';
import { newReservationId, newWaitlistId } from './placement.js';

/**
 * The shard's waitlist commands and offers: the shell around the allocator's
 * waitlist decisions (src/allocator/waitlist-decisions.ts). Like every shard
 * command it answers once the decision is durable. Offers are made right
 * after any event that may have returned units (the shard calls `offer`), in
 * the same event-loop turn, so no reserve can come between a returned unit and
 * its offer; after a restart or a rebuild the shard offers again before it serves.
 */

/** What the commands borrow from their Shard. */
export interface WaitlistHost {
  nowMs(): number;
  notify(notice: ShardNotice): void;
  /** 503 reasons: closing, recovering, rebuilding, outbox full. */
  refusal(sku: string | null): Outcome<never> | null;
  allocatorFor(sku: string): SkuAllocator | null | Promise<SkuAllocator | null>;
  /** Loaded allocators whose SKU hash is the id's first 8 hex digits. */
  allocatorsOfId(id: string): readonly SkuAllocator[];
  idPrefix(sku: string): string | undefined;
  /** Apply, append, answer `value()` once durable (503 if the batch failed). */
  commit<T>(allocator: SkuAllocator, event: StockEvent, value: () => T): Promise<Outcome<T>>;
  /** Apply and append, no offers after it; `done` once durable (or failed: the shard rebuilds the SKU). */
  applyAndAppend(allocator: SkuAllocator, event: StockEvent, done?: (error: Error | null) => void): void;
  afterDurable<T>(sku: string, value: T): Promise<Outcome<T>>;
  publish(allocator: SkuAllocator): void;
  /** An entry no longer in memory, from the log (null: none, or another shopper's). */
  fromLog(waitlistId: string, shopperId: string): Promise<WaitlistView | null>;
}

/** Shared: the reservation path asks on every commit, and nothing should be allocated for the usual "no one waits". */
const noOffers: Promise<void>[] = [];

export class WaitlistCommands {
  constructor(private readonly host: WaitlistHost) {}

  async join(request: ShardRequests['join_waitlist']): Promise<Outcome<WaitlistView>> {
    const refused = this.host.refusal(request.sku);
    if (refused) return refused;
    const allocator = await this.host.allocatorFor(request.sku);
    const again = this.host.refusal(request.sku);
    if (again) return again;
    if (allocator === null) return { ok: false, code: 'not_found', detail: `SKU ${request.sku} does not exist` };
    const now = this.host.nowMs();
    const command = {
      waitlistId: newWaitlistId(request.sku, this.host.idPrefix(request.sku)),
      shopperId: request.shopperId,
      quantity: request.quantity,
      idempotencyKey: request.idempotencyKey,
    };
    const decision = allocator.joinWaitlist(command, now);
    if (!decision.ok) return decision;
    if (decision.kind === 'replay') return this.host.afterDurable(request.sku, this.view(allocator, decision.entry, now));
    // The answer as decided: waiting, last in line (an offer may follow in the same turn: GET shows it).
    const view: WaitlistView = {
      waitlistId: decision.event.waitlistId,
      sku: request.sku,
      quantity: request.quantity,
      status: 'waiting',
      position: allocator.waitlist.waitingCount + 1,
      reservationId: null,
      offerExpiresAt: null,
    };
    return this.host.commit(allocator, decision.event, () => view);
  }

  async get(request: ShardRequests['get_waitlist']): Promise<Outcome<WaitlistView>> {
    const refused = this.host.refusal(null);
    if (refused) return refused;
    const found = this.find(request.waitlistId, request.shopperId);
    if (found !== null) return { ok: true, value: this.view(found.allocator, found.entry, this.host.nowMs()) };
    if (this.inMemory(request.waitlistId)) return notFound(request.waitlistId);
    const logged = await this.host.fromLog(request.waitlistId, request.shopperId);
    return logged === null ? notFound(request.waitlistId) : { ok: true, value: logged };
  }

  private inMemory(waitlistId: string): boolean {
    return this.host.allocatorsOfId(waitlistId).some((allocator) => allocator.waitlist.entries.has(waitlistId));
  }

  leave(request: ShardRequests['leave_waitlist']): Promise<Outcome<WaitlistView>> {
    const found = this.find(request.waitlistId, request.shopperId);
    if (found === null) return this.leaveFromLog(request);
    const { allocator, entry } = found;
    const refused = this.host.refusal(allocator.sku);
    if (refused) return Promise.resolve(refused);
    const decision = allocator.leaveWaitlist(request.waitlistId, request.shopperId, this.host.nowMs());
    if (!decision.ok) return Promise.resolve(decision);
    const value = () => this.view(allocator, entry, this.host.nowMs());
    if (decision.events.length === 0) return this.host.afterDurable(allocator.sku, value());
    for (const event of decision.events.slice(0, -1)) this.host.applyAndAppend(allocator, event);
    // One batch is serial and in order: when the last is durable, all are.
    return this.host.commit(allocator, decision.events[decision.events.length - 1]!, value);
  }

  /** Leaving an entry that left memory: it is closed, so leaving again answers it if it left, else 409. */
  private async leaveFromLog(request: ShardRequests['leave_waitlist']): Promise<Outcome<WaitlistView>> {
    const outcome = await this.get({ type: 'get_waitlist', waitlistId: request.waitlistId, shopperId: request.shopperId });
    if (!outcome.ok || outcome.value.status === 'left') return outcome;
    if (outcome.value.status === 'waiting' || outcome.value.status === 'offered') {
      return { ok: false, code: 'unavailable', detail: `the SKU of waitlist entry ${request.waitlistId} is not loaded; retry shortly` };
    }
    return { ok: false, code: 'waitlist_entry_closed', detail: `the entry is ${outcome.value.status}; it can no longer leave` };
  }

  /**
   * Offer units nobody holds to the line (nothing to do unless someone waits
   * and units are there); each offer is pushed to its shopper once durable.
   * Returns the offers' durability, for recovery to wait on.
   */
  offer(allocator: SkuAllocator, now: number): Promise<void>[] {
    if (allocator.waitlist.waitingCount === 0 || allocator.available === 0) return noOffers;
    const prefix = this.host.idPrefix(allocator.sku);
    const offers = allocator.offerToWaitlist(now, () => newReservationId(allocator.sku, prefix));
    return offers.map(
      (offer, i) =>
        new Promise<void>((resolve) => {
          const entry = allocator.waitlist.entries.get(offer.waitlistId)!;
          this.host.applyAndAppend(allocator, offer, (error) => {
            // A failed batch makes the shard rebuild the SKU from the log and offer again.
            if (error !== null) return resolve();
            if (i === offers.length - 1) this.host.publish(allocator);
            this.host.notify({ type: 'waitlist_offer', shopperId: entry.shopperId, view: this.view(allocator, entry, now) });
            resolve();
          });
        }),
    );
  }

  private find(waitlistId: string, shopperId: string): { allocator: SkuAllocator; entry: WaitlistEntry } | null {
    for (const allocator of this.host.allocatorsOfId(waitlistId)) {
      const entry = allocator.waitlist.entries.get(waitlistId);
      // Another shopper's entry does not exist, as far as this shopper can tell.
      if (entry !== undefined) return entry.shopperId === shopperId ? { allocator, entry } : null;
    }
    return null;
  }

  /** An entry as its shopper sees it now: an offer past its time reads expired even before the sweep records it. */
  private view(allocator: SkuAllocator, entry: WaitlistEntry, now: number): WaitlistView {
    const offer = entry.reservationId === null ? undefined : allocator.reservations.get(entry.reservationId);
    const expiresAtMs = offer?.expiresAtMs ?? null;
    const lapsed = entry.status === 'offered' && expiresAtMs !== null && now >= expiresAtMs;
    return waitlistView(allocator.sku, entry, allocator.waitlist.position(entry), expiresAtMs, lapsed ? 'expired' : entry.status);
  }
}

function notFound(waitlistId: string): Outcome<never> {
  return { ok: false, code: 'not_found', detail: `waitlist entry ${waitlistId} does not exist` };
}
