import { isOpen, waitlistSlot, type Waitlist, type WaitlistEntry } from './waitlist.js';
import { saleClosed, shopperLimitRefusal } from './refusals.js';
import type { Shoppers } from './shoppers.js';
import type { Rejection, SkuConfig, StockEvent, WaitlistJoinedEvent, WaitlistOfferedEvent } from './types.js';

/**
 * The waitlist's decisions, for SkuAllocator: like its other commands they
 * read the state and return a rejection or the events recording the decision,
 * changing nothing (`SkuAllocator.apply` applies them). Kept apart from the
 * allocator so its reservation path stays as it is; the allocator hands itself
 * in as a `WaitlistSubject`.
 */

/** What the decisions read of a SKU's allocator. */
export interface WaitlistSubject {
  readonly sku: string;
  readonly seq: number;
  readonly config: SkuConfig | null;
  readonly available: number;
  readonly archived: boolean;
  readonly shoppers: Pick<Shoppers, 'units'>;
  readonly waitlist: Waitlist;
  readonly maxQuantityPerRequest: number;
  readonly waitlistMaxEntries: number;
}

export interface JoinCommand {
  /** Minted by the shell (placement.ts: it carries the SKU's hash). */
  waitlistId: string;
  shopperId: string;
  quantity: number;
  idempotencyKey: string;
}

export type JoinDecision =
  | { ok: true; kind: 'new'; event: WaitlistJoinedEvent }
  /** The same shopper and key again: the entry it made, as it is now. */
  | { ok: true; kind: 'replay'; entry: WaitlistEntry }
  | Rejection;

export type LeaveDecision = { ok: true; entry: WaitlistEntry; events: StockEvent[] } | Rejection;

/** Whether units not held or sold belong to the line: someone waits and the waitlist is on. */
export function lineHasClaim(subject: Pick<WaitlistSubject, 'config' | 'waitlist'>): boolean {
  return subject.waitlist.waitingCount !== 0 && subject.config?.waitlistOfferSeconds != null;
}

/** Units a newcomer may reserve: none while the line has a claim on them. */
export function saleableUnits(subject: Pick<WaitlistSubject, 'available' | 'waitlist' | 'config'>): number {
  return lineHasClaim(subject) ? 0 : subject.available;
}

export function decideJoin(subject: WaitlistSubject, cmd: JoinCommand, nowMs: number): JoinDecision {
  const config = subject.config;
  if (config === null) return { ok: false, code: 'not_found', detail: `SKU ${subject.sku} does not exist` };
  const waitlist = subject.waitlist;
  const previous = waitlist.byKey.get(waitlistSlot(cmd.shopperId, cmd.idempotencyKey));
  if (previous !== undefined) {
    if (previous.quantity !== cmd.quantity) {
      return { ok: false, code: 'idempotency_key_reused', detail: 'this Idempotency-Key was already used for a different request' };
    }
    return { ok: true, kind: 'replay', entry: previous };
  }
  const refusal = joinRefusal(subject, config, cmd, nowMs);
  if (refusal !== null) return refusal;
  const event: WaitlistJoinedEvent = {
    kind: 'waitlist_joined',
    sku: subject.sku,
    seq: subject.seq + 1,
    atMs: nowMs,
    waitlistId: cmd.waitlistId,
    shopperId: cmd.shopperId,
    quantity: cmd.quantity,
    idempotencyKey: cmd.idempotencyKey,
  };
  return { ok: true, kind: 'new', event };
}

function joinRefusal(subject: WaitlistSubject, config: SkuConfig, cmd: JoinCommand, nowMs: number): Rejection | null {
  if (config.waitlistOfferSeconds == null) {
    return { ok: false, code: 'waitlist_not_enabled', detail: `SKU ${subject.sku} has no waitlist` };
  }
  const closed = saleClosed(subject.archived, config, nowMs);
  if (closed !== null) return closed;
  if (cmd.quantity > subject.maxQuantityPerRequest) {
    return { ok: false, code: 'quantity_too_large', detail: `quantity may be at most ${subject.maxQuantityPerRequest}` };
  }
  const open = subject.waitlist.openByShopper.get(cmd.shopperId);
  if (open !== undefined) {
    return { ok: false, code: 'already_waitlisted', detail: `you are already on this waitlist as ${open.waitlistId}` };
  }
  const units = saleableUnits(subject);
  if (units > 0) return { ok: false, code: 'not_sold_out', detail: `${units} available: reserve them instead` };
  const overLimit = shopperLimitRefusal(config, subject.shoppers.units(cmd.shopperId), cmd.quantity);
  if (overLimit !== null) return overLimit;
  if (subject.waitlist.openCount >= subject.waitlistMaxEntries) {
    return { ok: false, code: 'waitlist_full', detail: `the waitlist has ${subject.waitlistMaxEntries} entries, as many as it may keep` };
  }
  return null;
}

/**
 * Leave the line. A waiting entry leaves; an offered one leaves and its held
 * offer ends (`offerEnd`: released, or expired if its time is up), so the
 * units go to the next in line. Leaving again
 * changes nothing; an entry whose offer was taken, declined or lapsed cannot leave.
 */
export function decideLeave(
  subject: WaitlistSubject,
  waitlistId: string,
  shopperId: string,
  nowMs: number,
  offerEnd: 'released' | 'expired' | null,
): LeaveDecision {
  const entry = subject.waitlist.entries.get(waitlistId);
  if (entry === undefined || entry.shopperId !== shopperId) {
    return { ok: false, code: 'not_found', detail: `waitlist entry ${waitlistId} does not exist` };
  }
  if (entry.status === 'left') return { ok: true, entry, events: [] };
  if (!isOpen(entry.status)) {
    return { ok: false, code: 'waitlist_entry_closed', detail: `the entry is ${entry.status}; it can no longer leave` };
  }
  const base = { sku: subject.sku, atMs: nowMs };
  const events: StockEvent[] = [{ ...base, kind: 'waitlist_left', seq: subject.seq + 1, waitlistId }];
  if (entry.status === 'offered' && offerEnd !== null) {
    events.push({ ...base, kind: offerEnd, seq: subject.seq + 2, reservationId: entry.reservationId! });
  }
  return { ok: true, entry, events };
}

/**
 * Offer units not held or sold to the line, first entry that fits first (its
 * quantity is there and within the shopper's limit), while anyone waits and
 * the sale is open: each offer a hold of `waitlistOfferSeconds`. At most
 * `maxEvents`; `mintId` gives each offer's reservation id.
 */
export function decideOffers(subject: WaitlistSubject, nowMs: number, maxEvents: number, mintId: () => string): WaitlistOfferedEvent[] {
  const config = subject.config;
  const offers: WaitlistOfferedEvent[] = [];
  if (config === null || config.waitlistOfferSeconds == null || subject.waitlist.waitingCount === 0) return offers;
  if (subject.available === 0 || saleClosed(subject.archived, config, nowMs) !== null) return offers;
  let left = subject.available;
  for (const entry of subject.waitlist.waiting()) {
    if (left === 0 || offers.length >= maxEvents) break;
    const shopperHas = subject.shoppers.units(entry.shopperId);
    if (entry.quantity > left || shopperHas + entry.quantity > config.perShopperLimit) continue;
    left -= entry.quantity;
    offers.push({
      kind: 'waitlist_offered',
      sku: subject.sku,
      seq: subject.seq + offers.length + 1,
      atMs: nowMs,
      waitlistId: entry.waitlistId,
      reservationId: mintId(),
      shopperId: entry.shopperId,
      quantity: entry.quantity,
      expiresAtMs: nowMs + config.waitlistOfferSeconds * 1000,
    });
  }
  return offers;
}
