import TinyQueue from 'tinyqueue';
import { keepSeed, waitingRoomChangeRefusal, WaitingRoom, type JoinDecision as QueueJoinDecision, type QueueState } from './waiting-room.js';
import { Shoppers } from './shoppers.js';
import { saleClosed, shopperLimitRefusal } from './refusals.js';
import { RememberedKeys, slotHash, type PackedGeneration } from './remembered-keys.js';
import { Waitlist, type WaitlistState } from './waitlist.js';
import { decideJoin, decideLeave, decideOffers, lineHasClaim, type JoinCommand, type JoinDecision, type LeaveDecision } from './waitlist-decisions.js';
import {
  defaultIdempotencyKeyTtlMs,
  defaultMaxQueueTicketsPerSku,
  defaultReservationMemoryMs,
  cartLineKey,
  cartOfKey,
  defaultWaitlistMaxEntries,
  reservedAtMs,
  reservedBeforeExpiryMs,
  type AllocatorLimits,
  type CartAbortedEvent,
  type CartCommittedEvent,
  type CartPreparedEvent,
  type CheckoutStartedEvent,
  type ConfiguredEvent,
  type QueueJoinedEvent,
  type Rejection,
  type Reservation,
  type ReservedEvent,
  type SkuConfig,
  type StockEvent,
  type WaitlistEvent,
  type WaitlistOfferedEvent,
} from './types.js';

/**
 * The stock of one SKU as a deterministic state machine.
 *
 * Commands (`configure`, `reserve`, `release`, `expireDue`, `checkout`,
 * `settlePayment`) only decide: they read the state and return either a
 * rejection or the events that record the decision, without changing anything.
 * `apply` is the only mutator. The shell applies exactly the events it hands to
 * the outbox, and recovery applies the same events read back from Postgres, so
 * the live state and the replayed state cannot drift apart.
 *
 * No I/O, no clock, no awaits: time is an argument. One instance has exactly one
 * writer (the event loop of the process that owns the SKU), so no locks.
 *
 * Memory follows live work: a settled reservation (released, expired, paid,
 * payment_failed) is forgotten `reservationMemoryMs` after it settled
 * (`forgetSettled`, also run by every `apply`), and its idempotency key is then
 * remembered only as a 32-bit hash (see remembered-keys.ts) until
 * `idempotencyKeyTtlMs` after its request. A reserve whose key hash is
 * remembered answers `key_remembered`: the shell looks the key up in Postgres.
 * A forgotten checkout's key is remembered the same way until
 * `idempotencyKeyTtlMs` after its order settled, so a checkout key is refused
 * for reuse here, never by a constraint in the middle of a group commit.
 */

export class InvariantViolation extends Error {
  override name = 'InvariantViolation';
}

export interface ReserveCommand {
  reservationId: string;
  shopperId: string;
  quantity: number;
  idempotencyKey: string;
}

export type ReserveDecision =
  | { ok: true; kind: 'new'; event: StockEvent & { kind: 'reserved' } }
  /** Same shopper, same key, same request: answer with the original reservation. */
  | { ok: true; kind: 'replay'; reservation: Reservation }
  /**
   * The key's hash is remembered from a reservation that has left memory: the shell
   * looks the key up in Postgres and replays it, or (not there: a hash collision)
   * calls `reserve` again with `keyChecked: true`.
   */
  | { ok: true; kind: 'key_remembered' }
  | Rejection;

export interface ReserveOptions {
  /** The shell has checked a remembered key in Postgres and found no reservation (or order) for it. */
  keyChecked?: boolean;
}

export type ReleaseDecision =
  | { ok: true; reservation: Reservation; event: StockEvent | null }
  | Rejection;

export interface CheckoutCommand {
  reservationId: string;
  shopperId: string;
  orderId: string;
  idempotencyKey: string;
  paymentMethod: string;
}

export interface CheckoutRecord {
  orderId: string;
  reservationId: string;
  paymentMethod: string;
}

export type CheckoutDecision =
  | { ok: true; kind: 'new'; event: StockEvent & { kind: 'checkout_started' } }
  /** Same shopper, same key, same request: the order it already started. */
  | { ok: true; kind: 'replay'; orderId: string }
  /**
   * The key's hash is remembered from a checkout whose reservation has left memory: the
   * shell looks its order up in Postgres and refuses the reuse, or (none within the TTL:
   * a hash collision or an older use) calls `checkout` again with `keyChecked: true`.
   */
  | { ok: true; kind: 'key_remembered' }
  | Rejection;

/** One line of a cart, prepared on the shard of its SKU (src/carts). */
export interface CartLineCommand {
  reservationId: string;
  cartId: string;
  shopperId: string;
  quantity: number;
}

export type PrepareDecision =
  | { ok: true; kind: 'new'; event: CartPreparedEvent }
  /** The line exists already (a coordinator re-driving its cart): its current state. */
  | { ok: true; kind: 'replay'; reservation: Reservation }
  | Rejection;

export type ConfigureDecision =
  | { ok: true; created: boolean; event: StockEvent }
  | Rejection;

/** Units a reservation in this status still takes out of `available`. */
function isLive(status: Reservation['status']): boolean {
  return status === 'held' || status === 'checking_out' || status === 'tentative';
}

const inCart: Rejection = {
  ok: false,
  code: 'reservation_in_cart',
  detail: 'this reservation is a line of a cart: release or check out the cart',
};

export class SkuAllocator {
  readonly sku: string;
  private readonly limits: AllocatorLimits;
  /** Shoppers waiting for returned units (waitlist.ts); empty unless the SKU has `waitlistOfferSeconds`. */
  waitlist = new Waitlist();

  /** Last applied event's seq; the next event gets seq + 1. */
  seq = 0;
  config: SkuConfig | null = null;
  available = 0;
  held = 0;
  sold = 0;
  liveHolds = 0;
  /** An admin archived the sale: reserve refuses until it is configured again. */
  archived = false;
  /** Live reservations and those settled less than `reservationMemoryMs` ago, by id (insertion = reservation order). */
  readonly reservations = new Map<string, Reservation>();
  /** Units each shopper holds or has paid for (what `perShopperLimit` caps), and which reservation owns each of their idempotency keys. */
  readonly shoppers = new Shoppers();
  /**
   * Reservations in memory whose key slot a newer reservation took over (the key outlived its TTL):
   * almost always empty, so whether a reservation owns its slot is one Set look-up (snapshots).
   */
  private readonly displaced = new Set<string>();
  /** shopperId + NUL + checkout idempotency key → the order it started. */
  readonly checkoutKeys = new Map<string, CheckoutRecord>();
  /** Keys of forgotten reservations, as hashes, until their TTL ends. */
  readonly rememberedKeys: RememberedKeys;
  /** Tentative cart lines → when they were prepared, oldest first: the shard resolves the ones whose cart is late. */
  readonly tentative = new Map<string, number>();
  /** Settled reservation ids in settle order (from `settledHead`): forgetting pops from the front. */
  private settledIds: string[] = [];
  /** settledAtMs of `settledIds`, side by side, so the check on every apply needs no Map lookup. */
  private settledTimes: number[] = [];
  private settledHead = 0;
  /** The SKU's waiting room (empty unless its config has one). */
  queue = new WaitingRoom();
  readonly reservationMemoryMs: number;
  readonly idempotencyKeyTtlMs: number;
  /**
   * Held reservations by expiry, the reservations themselves (no entry object per hold: a hold is
   * pushed once, when it becomes held, and its expiresAtMs never changes after); those that stopped
   * being held are skipped lazily.
   */
  private readonly expiryQueue = new TinyQueue<Reservation>(
    [],
    (a, b) => a.expiresAtMs - b.expiresAtMs,
  );

  constructor(sku: string, limits: AllocatorLimits) {
    this.sku = sku;
    this.limits = limits;
    this.reservationMemoryMs = limits.reservationMemoryMs ?? defaultReservationMemoryMs;
    this.idempotencyKeyTtlMs = limits.idempotencyKeyTtlMs ?? defaultIdempotencyKeyTtlMs;
    this.rememberedKeys = new RememberedKeys(this.idempotencyKeyTtlMs);
  }

  /** The sale is over (archived, or past `endsAt`) and nothing is live: the SKU may leave memory. */
  canPassivate(nowMs: number): boolean {
    return nowMs >= this.passivableFromMs();
  }

  /** From when `canPassivate` holds if nothing else happens: -Infinity (now), endsAt, or Infinity (never). */
  passivableFromMs(): number {
    const config = this.config;
    if (config === null || this.liveHolds !== 0) return Infinity;
    if (this.archived) return -Infinity;
    return config.endsAtMs ?? Infinity;
  }

  /**
   * The earliest time at which time alone changes what a sweep does here: a
   * hold expires, a settled reservation or a closed waitlist entry is
   * forgotten, remembered keys age out. -Infinity while a cart line is
   * tentative (its cart's decision is asked for on every sweep once late).
   * Any event changes `seq`, so until one comes a sweep before this time has
   * nothing to do: a shard with many quiet SKUs skips them (bench/idle-skus.ts).
   */
  nextDueMs(): number {
    if (this.tentative.size !== 0) return -Infinity;
    const settledDue = this.settledHead < this.settledIds.length ? this.settledTimes[this.settledHead]! + this.reservationMemoryMs : Infinity;
    return Math.min(
      this.nextExpiryMs() ?? Infinity,
      settledDue,
      this.rememberedKeys.nextDropAtMs,
      this.waitlist.nextForgetAtMs(this.reservationMemoryMs),
    );
  }

  get stock(): number {
    return this.config?.stock ?? 0;
  }

  get maxQuantityPerRequest(): number {
    return this.limits.maxQuantityPerRequest;
  }

  get waitlistMaxEntries(): number {
    return this.limits.waitlistMaxEntries ?? defaultWaitlistMaxEntries;
  }

  // ---------------------------------------------------------------- commands

  configure(config: SkuConfig, nowMs: number): ConfigureDecision {
    const committed = this.held + this.sold;
    const roomRefusal = waitingRoomChangeRefusal(this.config, config, this.queue.size);
    if (roomRefusal !== null) return roomRefusal;
    if (config.stock < committed) {
      return {
        ok: false,
        code: 'stock_below_committed',
        detail: `stock ${config.stock} is below the ${committed} units already held or sold`,
      };
    }
    return {
      ok: true,
      created: this.config === null,
      event: { kind: 'configured', sku: this.sku, seq: this.seq + 1, atMs: nowMs, config: keepSeed(this.config, config) },
    };
  }

  /** A ticket in the waiting room: the shopper's existing one, or the event of `ticketId`. */
  joinQueue(shopperId: string, ticketId: string, nowMs: number): QueueJoinDecision {
    if (this.config === null) return { ok: false, code: 'not_found', detail: `SKU ${this.sku} does not exist` };
    if (this.archived) return { ok: false, code: 'sale_not_open', detail: 'the sale is archived' };
    const max = this.limits.maxQueueTicketsPerSku ?? defaultMaxQueueTicketsPerSku;
    return this.queue.join(this.sku, this.seq + 1, shopperId, ticketId, this.config, max, nowMs);
  }

  reserve(cmd: ReserveCommand, nowMs: number, options?: ReserveOptions): ReserveDecision {
    const config = this.config;
    if (config === null) return { ok: false, code: 'not_found', detail: `SKU ${this.sku} does not exist` };

    const known = this.knownKey(cmd, nowMs, options);
    if (known !== null) return known;
    const refusal = this.reserveRefusal(cmd, config, nowMs);
    if (refusal !== null) return refusal;
    return {
      ok: true,
      kind: 'new',
      event: {
        kind: 'reserved',
        sku: this.sku,
        seq: this.seq + 1,
        atMs: nowMs,
        reservationId: cmd.reservationId,
        shopperId: cmd.shopperId,
        quantity: cmd.quantity,
        expiresAtMs: nowMs + config.holdSeconds * 1000,
        idempotencyKey: cmd.idempotencyKey,
      },
    };
  }

  /** A repeat of a live request (replay or refusal), a remembered key for the shell to look up, or null: the key is new. */
  private knownKey(cmd: ReserveCommand, nowMs: number, options: ReserveOptions | undefined): ReserveDecision | null {
    const previous = this.shoppers.owner(cmd.shopperId, cmd.idempotencyKey);
    // A key older than its TTL is new again: the new reservation takes its slot over.
    if (previous !== undefined && reservedAtMs(previous) + this.idempotencyKeyTtlMs > nowMs) {
      if (previous.quantity !== cmd.quantity) {
        return {
          ok: false,
          code: 'idempotency_key_reused',
          detail: 'this Idempotency-Key was already used for a different request',
        };
      }
      return { ok: true, kind: 'replay', reservation: previous };
    }
    if (
      previous === undefined &&
      options?.keyChecked !== true &&
      !this.rememberedKeys.isEmpty &&
      this.rememberedKeys.has(slotHash(idempotencySlot(cmd.shopperId, cmd.idempotencyKey)), nowMs)
    ) {
      return { ok: true, kind: 'key_remembered' };
    }
    return null;
  }

  /** Why this new reservation cannot be granted, or null when it can. */
  private reserveRefusal(cmd: ReserveCommand, config: SkuConfig, nowMs: number): Rejection | null {
    const closed = saleClosed(this.archived, config, nowMs);
    if (closed !== null) return closed;
    if (cmd.quantity > this.limits.maxQuantityPerRequest) {
      return {
        ok: false,
        code: 'quantity_too_large',
        detail: `quantity may be at most ${this.limits.maxQuantityPerRequest} per reservation`,
      };
    }
    const overLimit = shopperLimitRefusal(config, this.shoppers.units(cmd.shopperId), cmd.quantity);
    if (overLimit !== null) return overLimit;
    if (this.available < cmd.quantity) {
      return { ok: false, code: 'sold_out', detail: `${this.available} available, ${cmd.quantity} asked` };
    }
    if (this.waitlist.waitingCount !== 0 && lineHasClaim(this)) {
      return { ok: false, code: 'sold_out', detail: 'units that come back go to the waitlist first' };
    }
    if (this.liveHolds >= this.limits.maxLiveHoldsPerSku) {
      return { ok: false, code: 'too_many_holds', detail: 'this SKU has as many live holds as it may keep' };
    }
    return null;
  }

  /**
   * The shopper lets go of a hold. Repeating it is harmless (no event), and a
   * hold whose time is up is recorded as expired, not released.
   */
  release(reservationId: string, shopperId: string, nowMs: number, cartId: string | null = null): ReleaseDecision {
    const reservation = this.reservations.get(reservationId);
    if (reservation === undefined || reservation.shopperId !== shopperId) {
      return { ok: false, code: 'not_found', detail: `reservation ${reservationId} does not exist` };
    }
    if (cartOfKey(reservation.idempotencyKey) !== cartId) return cartId === null ? inCart : notInCart(reservationId);
    if (reservation.status === 'held') {
      const kind = nowMs >= reservation.expiresAtMs ? 'expired' : 'released';
      return {
        ok: true,
        reservation,
        event: { kind, sku: this.sku, seq: this.seq + 1, atMs: nowMs, reservationId },
      };
    }
    if (reservation.status === 'released' || reservation.status === 'expired') {
      return { ok: true, reservation, event: null };
    }
    return {
      ok: false,
      code: 'reservation_not_held',
      detail: `reservation is ${reservation.status}; it can no longer be released`,
    };
  }

  /** Earliest expiry among held reservations, or null when nothing is held. */
  nextExpiryMs(): number | null {
    for (;;) {
      const head = this.expiryQueue.peek();
      if (head === undefined) return null;
      if (head.status === 'held') return head.expiresAtMs;
      this.expiryQueue.pop();
    }
  }

  /**
   * Events expiring every hold whose time is up at `nowMs`, at most
   * `maxEventsPerBatch` of them (call again for the rest). Pops the queue, so
   * the caller must apply the events it gets.
   */
  expireDue(nowMs: number): StockEvent[] {
    const events: StockEvent[] = [];
    let seq = this.seq;
    while (events.length < this.limits.maxEventsPerBatch) {
      const head = this.expiryQueue.peek();
      if (head === undefined || head.expiresAtMs > nowMs) break;
      this.expiryQueue.pop();
      if (head.status !== 'held') continue;
      seq += 1;
      events.push({ kind: 'expired', sku: this.sku, seq, atMs: nowMs, reservationId: head.reservationId });
    }
    return events;
  }

  /**
   * Freeze a hold while an order pays for it: it cannot expire meanwhile. One
   * order per reservation: a second key racing the first finds it not held.
   */
  checkout(cmd: CheckoutCommand, nowMs: number, options?: ReserveOptions): CheckoutDecision {
    const previous = this.checkoutKeys.get(idempotencySlot(cmd.shopperId, cmd.idempotencyKey));
    if (previous !== undefined) {
      if (previous.reservationId !== cmd.reservationId || previous.paymentMethod !== cmd.paymentMethod) {
        return {
          ok: false,
          code: 'idempotency_key_reused',
          detail: 'this Idempotency-Key was already used for a different checkout',
        };
      }
      return { ok: true, kind: 'replay', orderId: previous.orderId };
    }
    const reservation = this.reservations.get(cmd.reservationId);
    if (reservation === undefined || reservation.shopperId !== cmd.shopperId) {
      return { ok: false, code: 'not_found', detail: `reservation ${cmd.reservationId} does not exist` };
    }
    if (cartOfKey(reservation.idempotencyKey) !== null) return inCart;
    if (reservation.status !== 'held' || nowMs >= reservation.expiresAtMs) {
      const status = reservation.status === 'held' ? 'expired' : reservation.status;
      return { ok: false, code: 'reservation_not_held', detail: `reservation is ${status}` };
    }
    if (
      options?.keyChecked !== true &&
      !this.rememberedKeys.isEmpty &&
      this.rememberedKeys.has(slotHash(checkoutSlot(cmd.shopperId, cmd.idempotencyKey)), nowMs)
    ) {
      return { ok: true, kind: 'key_remembered' };
    }
    return {
      ok: true,
      kind: 'new',
      event: {
        kind: 'checkout_started',
        sku: this.sku,
        seq: this.seq + 1,
        atMs: nowMs,
        reservationId: cmd.reservationId,
        orderId: cmd.orderId,
        idempotencyKey: cmd.idempotencyKey,
        paymentMethod: cmd.paymentMethod,
      },
    };
  }

  /**
   * Settle a checkout: `committed` sells the units, `payment_failed` puts them
   * back. Returns null when it is already settled (a repeated job), so the
   * worker stays idempotent.
   */
  settlePayment(reservationId: string, outcome: 'committed' | 'payment_failed', nowMs: number): StockEvent | null {
    const reservation = this.reservations.get(reservationId);
    if (reservation === undefined || reservation.status !== 'checking_out') return null;
    return { kind: outcome, sku: this.sku, seq: this.seq + 1, atMs: nowMs, reservationId };
  }

  /** Join the waitlist (only while sold out): see waitlist-decisions.ts. */
  joinWaitlist(cmd: JoinCommand, nowMs: number): JoinDecision {
    return decideJoin(this, cmd, nowMs);
  }

  /** Leave the waitlist; an offer still held is released with it. */
  leaveWaitlist(waitlistId: string, shopperId: string, nowMs: number): LeaveDecision {
    const entry = this.waitlist.entries.get(waitlistId);
    const offer = entry?.reservationId == null ? undefined : this.reservations.get(entry.reservationId);
    // An offer past its time that the sweep has not recorded yet ends as expired, as a release of it would.
    const end = offer?.status !== 'held' ? null : nowMs >= offer.expiresAtMs ? 'expired' : 'released';
    return decideLeave(this, waitlistId, shopperId, nowMs, end);
  }

  /** Offers of units not held or sold to the waiting line (the shell asks after every event that may return units). */
  offerToWaitlist(nowMs: number, mintId: () => string): WaitlistOfferedEvent[] {
    return decideOffers(this, nowMs, this.limits.maxEventsPerBatch, mintId);
  }

  /**
   * Phase 1 of a cart: a tentative hold for one line, refused exactly as a reservation would be.
   * Never waits for anything, so carts cannot deadlock. A line that exists is answered as it is.
   */
  prepareLine(cmd: CartLineCommand, nowMs: number): PrepareDecision {
    const config = this.config;
    if (config === null) return { ok: false, code: 'not_found', detail: `SKU ${this.sku} does not exist` };
    const idempotencyKey = cartLineKey(cmd.cartId);
    const existing = this.reservations.get(cmd.reservationId);
    if (existing !== undefined) {
      if (existing.shopperId !== cmd.shopperId || existing.idempotencyKey !== idempotencyKey || existing.quantity !== cmd.quantity) {
        return { ok: false, code: 'idempotency_key_reused', detail: 'this cart line was prepared for another request' };
      }
      return { ok: true, kind: 'replay', reservation: existing };
    }
    const command = { reservationId: cmd.reservationId, shopperId: cmd.shopperId, quantity: cmd.quantity, idempotencyKey };
    const refusal = this.reserveRefusal(command, config, nowMs);
    if (refusal !== null) return refusal;
    return {
      ok: true,
      kind: 'new',
      event: { kind: 'cart_prepared', sku: this.sku, seq: this.seq + 1, atMs: nowMs, ...command, expiresAtMs: nowMs + config.holdSeconds * 1000 },
    };
  }

  /**
   * Phase 2 for one line: the cart's decision. Null when there is nothing to do (the line is
   * resolved already, or was never prepared here): resolving is idempotent.
   */
  resolveLine(reservationId: string, cartId: string, decision: 'committed' | 'aborted', expiresAtMs: number, nowMs: number): StockEvent | null {
    const line = this.reservations.get(reservationId);
    if (line === undefined || line.status !== 'tentative' || line.idempotencyKey !== cartLineKey(cartId)) return null;
    const base = { sku: this.sku, seq: this.seq + 1, atMs: nowMs, reservationId };
    return decision === 'committed' ? { ...base, kind: 'cart_committed', expiresAtMs } : { ...base, kind: 'cart_aborted' };
  }

  /**
   * Checkout of a cart, for one line: freeze it (`checkout_started`) for the cart's order. Its
   * checkout key is the line's own key (the cart's), so it never meets a shopper's checkout keys.
   * A line frozen for this order already answers `replay`.
   */
  freezeLine(reservationId: string, cartId: string, orderId: string, paymentMethod: string, nowMs: number): CheckoutDecision {
    const line = this.reservations.get(reservationId);
    const key = cartLineKey(cartId);
    if (line === undefined || line.idempotencyKey !== key) return notInCart(reservationId);
    // Frozen for this order already (or settled by it): the same checkout again.
    if (line.checkout?.orderId === orderId) return { ok: true, kind: 'replay', orderId };
    if (line.status !== 'held' || nowMs >= line.expiresAtMs) {
      return { ok: false, code: 'reservation_not_held', detail: `the cart's line ${reservationId} is ${line.status === 'held' ? 'expired' : line.status}` };
    }
    return {
      ok: true,
      kind: 'new',
      event: { kind: 'checkout_started', sku: this.sku, seq: this.seq + 1, atMs: nowMs, reservationId, orderId, idempotencyKey: key, paymentMethod },
    };
  }

  /**
   * End the sale: every held reservation is released (expired if its time is
   * up), then `archived`. Holds in checkout stay and settle later. Archiving an
   * archived SKU decides nothing ([]).
   */
  archive(nowMs: number): StockEvent[] | Rejection {
    if (this.config === null) return { ok: false, code: 'not_found', detail: `SKU ${this.sku} does not exist` };
    if (this.archived) return [];
    const events: StockEvent[] = [];
    let seq = this.seq;
    for (const r of this.reservations.values()) {
      if (r.status !== 'held') continue;
      seq += 1;
      const kind = nowMs >= r.expiresAtMs ? 'expired' : 'released';
      events.push({ kind, sku: this.sku, seq, atMs: nowMs, reservationId: r.reservationId });
    }
    events.push({ kind: 'archived', sku: this.sku, seq: seq + 1, atMs: nowMs });
    return events;
  }

  /**
   * Forget every reservation settled at least `reservationMemoryMs` before
   * `nowMs` (remembering its key's hash), and drop remembered keys past their
   * TTL. O(forgotten). Returns how many reservations were forgotten.
   */
  forgetSettled(nowMs: number): number {
    let forgotten = 0;
    const ids = this.settledIds;
    const times = this.settledTimes;
    while (this.settledHead < ids.length && times[this.settledHead]! + this.reservationMemoryMs <= nowMs) {
      this.forget(this.reservations.get(ids[this.settledHead]!)!, nowMs);
      this.settledHead += 1;
      forgotten += 1;
    }
    if (this.settledHead > 1024 && this.settledHead * 2 > ids.length) {
      this.settledIds = ids.slice(this.settledHead);
      this.settledTimes = times.slice(this.settledHead);
      this.settledHead = 0;
    }
    this.rememberedKeys.dropExpired(nowMs);
    if (this.waitlist.entries.size !== 0) this.waitlist.forgetClosed(nowMs, this.reservationMemoryMs);
    return forgotten;
  }

  private forget(reservation: Reservation, nowMs: number): void {
    const { reservationId, shopperId } = reservation;
    this.reservations.delete(reservationId);
    if (this.displaced.size > 0) this.displaced.delete(reservationId);
    const slot = idempotencySlot(shopperId, reservation.idempotencyKey);
    // A newer reservation may have taken the slot over (the key outlived its TTL): then it stays.
    this.shoppers.release(reservation);
    // Always remembered (the table ignores expired ones), so the result does not depend on when this runs.
    this.rememberedKeys.remember(slotHash(slot), reservedAtMs(reservation), nowMs);
    if (reservation.checkout !== null) {
      const slot = idempotencySlot(shopperId, reservation.checkout.idempotencyKey);
      if (this.checkoutKeys.get(slot)?.reservationId === reservationId) this.checkoutKeys.delete(slot);
      // Its order keeps the key taken: remembered from when it settled (after the checkout), so at least the TTL.
      this.rememberedKeys.remember(slotHash(checkoutSlot(shopperId, reservation.checkout.idempotencyKey)), reservation.settledAtMs!, nowMs);
    }
  }

  /** Settled ids not yet forgotten, oldest settle first (snapshots). */
  settledOrder(): string[] {
    return this.settledIds.slice(this.settledHead);
  }

  // ---------------------------------------------------------------- evolve

  /** The only mutator. Throws InvariantViolation on anything inconsistent. */
  apply(event: StockEvent): void {
    if (event.sku !== this.sku) throw new InvariantViolation(`event for ${event.sku} applied to ${this.sku}`);
    if (event.seq !== this.seq + 1) {
      throw new InvariantViolation(`${this.sku}: event seq ${event.seq} after ${this.seq}`);
    }
    switch (event.kind) {
      case 'configured':
        this.applyConfigured(event);
        break;
      case 'archived': {
        if (this.config === null) throw new InvariantViolation(`${this.sku}: archived before configured`);
        this.archived = true;
        break;
      }
      case 'reserved':
      case 'cart_prepared':
        this.applyReserved(event);
        break;
      case 'cart_committed':
      case 'cart_aborted':
        this.applyCartDecision(event);
        break;
      case 'released':
      case 'expired': {
        const reservation = this.requireReservation(event.reservationId, 'held');
        reservation.status = event.kind;
        this.returnToSale(reservation);
        this.settle(reservation, event.atMs);
        this.closeOffer(event.reservationId, event.kind === 'expired' ? 'expired' : 'declined', event.atMs);
        break;
      }
      case 'checkout_started':
        this.applyCheckoutStarted(event);
        this.closeOffer(event.reservationId, 'taken', event.atMs);
        break;
      case 'waitlist_joined':
      case 'waitlist_offered':
      case 'waitlist_left':
        this.applyWaitlist(event);
        break;
      case 'queue_joined':
        this.applyQueueJoined(event);
        break;
      case 'committed': {
        const reservation = this.requireReservation(event.reservationId, 'checking_out');
        reservation.status = 'paid';
        this.held -= reservation.quantity;
        this.sold += reservation.quantity;
        this.liveHolds -= 1;
        this.settle(reservation, event.atMs);
        break;
      }
      case 'payment_failed': {
        const reservation = this.requireReservation(event.reservationId, 'checking_out');
        reservation.status = 'payment_failed';
        this.returnToSale(reservation);
        this.settle(reservation, event.atMs);
        break;
      }
      default: {
        const unknown: never = event;
        throw new InvariantViolation(`${this.sku}: unknown event ${JSON.stringify(unknown)}`);
      }
    }
    this.seq = event.seq;
    this.forgetSettled(event.atMs);
    this.assertInvariants();
  }

  /** A tentative cart line learns its cart's decision: a hold expiring with the cart, or units back. */
  private applyCartDecision(event: CartCommittedEvent | CartAbortedEvent): void {
    const line = this.requireReservation(event.reservationId, 'tentative');
    this.tentative.delete(line.reservationId);
    if (event.kind === 'cart_committed') {
      line.status = 'held';
      const madeAtMs = reservedAtMs(line);
      line.expiresAtMs = event.expiresAtMs;
      line.reservedBeforeExpiryMs = reservedBeforeExpiryMs(madeAtMs, event.expiresAtMs);
      this.expiryQueue.push(line);
      return;
    }
    line.status = 'released';
    this.returnToSale(line);
    this.settle(line, event.atMs);
  }

  private applyWaitlist(event: WaitlistEvent): void {
    // Leaving is allowed after an admin turned the waitlist off; joining and offers are not.
    if (this.config?.waitlistOfferSeconds == null && event.kind !== 'waitlist_left') {
      throw new InvariantViolation(`${this.sku}: ${event.kind} without a waitlist`);
    }
    if (event.kind === 'waitlist_joined') {
      if (this.waitlist.entries.has(event.waitlistId)) throw new InvariantViolation(`${this.sku}: duplicate waitlist entry ${event.waitlistId}`);
      const { waitlistId, shopperId, quantity, idempotencyKey } = event;
      this.waitlist.add({ waitlistId, shopperId, quantity, idempotencyKey, joinedAtMs: event.atMs, status: 'waiting', reservationId: null, closedAtMs: null });
      return;
    }
    const entry = this.waitlist.entries.get(event.waitlistId);
    const expected = event.kind === 'waitlist_offered' ? entry?.status === 'waiting' : entry?.status === 'waiting' || entry?.status === 'offered';
    if (entry === undefined || !expected) {
      throw new InvariantViolation(`${this.sku}: ${event.kind} of waitlist entry ${event.waitlistId} that is ${entry?.status ?? 'missing'}`);
    }
    if (event.kind === 'waitlist_left') {
      this.waitlist.close(entry, 'left', event.atMs);
      return;
    }
    if (event.shopperId !== entry.shopperId || event.quantity !== entry.quantity) {
      throw new InvariantViolation(`${this.sku}: offer ${event.reservationId} does not match waitlist entry ${entry.waitlistId}`);
    }
    this.applyReserved({ ...event, kind: 'reserved', idempotencyKey: entry.idempotencyKey }, false);
    this.waitlist.offer(entry, event.reservationId);
  }

  /** An offer's reservation stopped being held: its entry closes (the units go to the next in line). */
  private closeOffer(reservationId: string, status: 'expired' | 'declined' | 'taken', atMs: number): void {
    if (this.waitlist.offeredCount === 0) return;
    const entry = this.waitlist.byReservation.get(reservationId);
    if (entry !== undefined && entry.status === 'offered') this.waitlist.close(entry, status, atMs);
  }

  private applyConfigured(event: ConfiguredEvent): void {
    const committed = this.held + this.sold;
    if (event.config.stock < committed) {
      throw new InvariantViolation(`${this.sku}: stock ${event.config.stock} below committed ${committed}`);
    }
    this.config = { ...event.config };
    // No waitlist is one shape (absent), whether the definition said null or nothing: replay and snapshots agree.
    if (this.config.waitlistOfferSeconds == null) delete this.config.waitlistOfferSeconds;
    this.available = event.config.stock - committed;
    this.archived = false;
  }

  /** `ownsKey` false: an offer, whose key (its waitlist entry's) never answers a reserve. */
  private applyReserved(event: ReservedEvent | CartPreparedEvent, ownsKey = true): void {
    const config = this.config;
    if (config === null) throw new InvariantViolation(`${this.sku}: reserved before configured`);
    if (this.reservations.has(event.reservationId)) {
      throw new InvariantViolation(`${this.sku}: duplicate reservation ${event.reservationId}`);
    }
    if (event.quantity < 1 || event.quantity > this.available) {
      throw new InvariantViolation(`${this.sku}: reserving ${event.quantity} with ${this.available} available`);
    }
    const reservation: Reservation = {
      reservationId: event.reservationId,
      shopperId: event.shopperId,
      quantity: event.quantity,
      idempotencyKey: event.idempotencyKey,
      expiresAtMs: event.expiresAtMs,
      status: event.kind === 'reserved' ? 'held' : 'tentative',
      reservedBeforeExpiryMs: reservedBeforeExpiryMs(event.atMs, event.expiresAtMs),
      settledAtMs: null,
      checkout: null,
    };
    this.reservations.set(event.reservationId, reservation);
    if (ownsKey) {
      const previous = this.shoppers.take(reservation);
      if (previous !== undefined) this.displaced.add(previous.reservationId);
    } else {
      // An offer never owns its slot: a snapshot must not give it one.
      this.displaced.add(event.reservationId);
    }
    this.shoppers.addUnits(event.shopperId, event.quantity);
    this.available -= event.quantity;
    this.held += event.quantity;
    this.liveHolds += 1;
    if (event.kind === 'reserved') this.expiryQueue.push(reservation);
    else this.tentative.set(event.reservationId, event.atMs);
  }

  private applyQueueJoined(event: QueueJoinedEvent): void {
    if (this.config === null) throw new InvariantViolation(`${this.sku}: queue_joined before configured`);
    try {
      this.queue.apply(event, this.config);
    } catch (error) {
      throw new InvariantViolation((error as Error).message);
    }
  }

  private applyCheckoutStarted(event: CheckoutStartedEvent): void {
    const reservation = this.requireReservation(event.reservationId, 'held');
    reservation.status = 'checking_out';
    reservation.checkout = { orderId: event.orderId, idempotencyKey: event.idempotencyKey };
    this.checkoutKeys.set(idempotencySlot(reservation.shopperId, event.idempotencyKey), {
      orderId: event.orderId,
      reservationId: event.reservationId,
      paymentMethod: event.paymentMethod,
    });
  }

  private settle(reservation: Reservation, atMs: number): void {
    reservation.settledAtMs = atMs;
    this.settledIds.push(reservation.reservationId);
    this.settledTimes.push(atMs);
  }

  private returnToSale(reservation: Reservation): void {
    this.available += reservation.quantity;
    this.held -= reservation.quantity;
    this.liveHolds -= 1;
    this.shoppers.addUnits(reservation.shopperId, -reservation.quantity);
  }

  private requireReservation(reservationId: string, status: Reservation['status']): Reservation {
    const reservation = this.reservations.get(reservationId);
    if (reservation === undefined || reservation.status !== status) {
      throw new InvariantViolation(
        `${this.sku}: reservation ${reservationId} is ${reservation?.status ?? 'missing'}, expected ${status}`,
      );
    }
    return reservation;
  }

  /** available + held + sold = stock, nothing negative. Cheap enough to run on every event. */
  assertInvariants(): void {
    const { available, held, sold } = this;
    if (available < 0 || held < 0 || sold < 0 || this.liveHolds < 0 || available + held + sold !== this.stock) {
      throw new InvariantViolation(
        `${this.sku}: available ${available} + held ${held} + sold ${sold} != stock ${this.stock} (live holds ${this.liveHolds})`,
      );
    }
  }

  /** Every live reservation, for re-arming timers and for audits. */
  *liveReservations(): IterableIterator<Reservation> {
    for (const reservation of this.reservations.values()) {
      if (isLive(reservation.status)) yield reservation;
    }
  }

  /** A comparable picture of the whole state, for replay-equals-state checks. */
  snapshot(): AllocatorSnapshot {
    return {
      sku: this.sku,
      seq: this.seq,
      config: this.config === null ? null : { ...this.config },
      available: this.available,
      held: this.held,
      sold: this.sold,
      liveHolds: this.liveHolds,
      archived: this.archived,
      reservations: [...this.reservations.values()].map((r) => ({ ...r })),
      shopperQuantity: shopperUnitEntries(this.shoppers).sort(),
      idempotencyKeys: this.shoppers.slotEntries().sort(),
      checkoutKeys: [...this.checkoutKeys.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
      settledOrder: this.settledOrder(),
      rememberedKeys: this.rememberedKeys.entries(),
      queue: structuredClone(this.queue.exportState()),
      waitlist: this.waitlist.exportState().entries.map((e) => ({ ...e })),
    };
  }

  /** The waitlist from a snapshot: every offer must be a held reservation of its shopper. */
  private restoreWaitlist(state: WaitlistState): void {
    try {
      this.waitlist = Waitlist.restore(state);
    } catch (error) {
      throw new InvariantViolation(`${this.sku}: restored waitlist: ${(error as Error).message}`);
    }
    for (const entry of this.waitlist.byReservation.values()) {
      const offer = this.reservations.get(entry.reservationId!);
      if (offer === undefined || offer.shopperId !== entry.shopperId || !isLive(offer.status)) {
        throw new InvariantViolation(`${this.sku}: waitlist offer ${entry.reservationId} is not a live hold of its shopper`);
      }
    }
  }

  /** Rebuild a SKU from its log. */
  static replay(sku: string, limits: AllocatorLimits, events: Iterable<StockEvent>): SkuAllocator {
    const allocator = new SkuAllocator(sku, limits);
    for (const event of events) allocator.apply(event);
    return allocator;
  }

  /** The whole state as plain data (shared references: read it, do not keep it across applies). */
  exportState(): AllocatorState {
    // Two flat arrays, not entries: no object per shopper (a hot SKU has one per hold).
    const { shoppers, units } = this.shoppers.unitLists();
    return {
      sku: this.sku,
      seq: this.seq,
      config: this.config,
      archived: this.archived,
      available: this.available,
      held: this.held,
      sold: this.sold,
      liveHolds: this.liveHolds,
      reservations: [...this.reservations.values()],
      slotOwners: [...this.reservations.values()].map((r) => !this.displaced.has(r.reservationId)),
      shoppers,
      shopperQuantities: units,
      checkoutKeys: [...this.checkoutKeys.entries()],
      settledOrder: this.settledOrder(),
      rememberedKeys: this.rememberedKeys.pack(),
      // Copies: a live snapshot encodes this state while later joins append to the queue and
      // offers change entries in place (their rows would land twice on replay from the snapshot's seq).
      queue: structuredClone(this.queue.exportState()),
      waitlist: copyWaitlistState(this.waitlist.exportState()),
    };
  }

  /**
   * An allocator from exported state (a decoded snapshot). Checks that the parts
   * agree (totals against reservations, indexes against reservations) and throws
   * InvariantViolation when they do not: a bad snapshot is refused, never half-used.
   * `adopt`: the state's reservations are the caller's to give (a decoded snapshot's), so they are
   * kept as they are instead of copied (a million holds: a million objects less to allocate).
   */
  static restore(state: AllocatorState, limits: AllocatorLimits, adopt = false): SkuAllocator {
    const a = new SkuAllocator(state.sku, limits);
    a.seq = state.seq;
    a.config = state.config === null ? null : { ...state.config };
    a.archived = state.archived;
    a.available = state.available;
    a.held = state.held;
    a.sold = state.sold;
    a.liveHolds = state.liveHolds;
    if (state.shoppers.length !== state.shopperQuantities.length) throw new InvariantViolation(`${state.sku}: shoppers and their quantities differ in length`);
    const unitsRestored = a.restoreReservations(state, adopt);
    for (let j = 0; j < unitsRestored.length; j++) if (unitsRestored[j] === 0) a.restoreShopperUnits(state, j);
    for (const [slot, record] of state.checkoutKeys) a.checkoutKeys.set(slot, { ...record });
    for (const id of state.settledOrder) {
      const settledAtMs = a.reservations.get(id)?.settledAtMs;
      if (settledAtMs == null) throw new InvariantViolation(`${state.sku}: settled id ${id} is not settled`);
      a.settledTimes.push(settledAtMs);
    }
    a.settledIds = [...state.settledOrder];
    a.rememberedKeys.load(state.rememberedKeys);
    if (state.queue !== undefined) {
      try {
        a.queue = WaitingRoom.restore(state.queue, state.sku, a.config);
      } catch (error) {
        throw new InvariantViolation((error as Error).message);
      }
    }
    if (state.waitlist !== undefined) a.restoreWaitlist(state.waitlist);
    a.assertInvariants();
    return a;
  }

  /**
   * The state's reservations into the indexes, each shopper's units beside
   * their reservation: shoppers are listed in the order they first reserved,
   * so the next shopper whose units are not yet restored is almost always the
   * one of the reservation just restored, whose entry taking the slot left at
   * hand (Shoppers keeps the last one): no second look-up in a Map of a
   * million shoppers (bench/restore-cost.ts). Returns, per listed shopper, 1
   * if their units were restored here.
   */
  private restoreReservations(state: AllocatorState, adopt: boolean): Uint8Array {
    const unitsRestored = new Uint8Array(state.shoppers.length);
    let nextShopper = 0;
    let held = 0;
    let live = 0;
    const reservations = state.reservations;
    for (let i = 0; i < reservations.length; i++) {
      const r = reservations[i]!;
      const copy = adopt ? r : { ...r };
      const before = this.reservations.size;
      // One hash look-up per hold, not a has() and a set(): a duplicate leaves the size as it was.
      if (this.reservations.set(r.reservationId, copy).size === before) {
        throw new InvariantViolation(`${state.sku}: restored reservation ${r.reservationId} is duplicated`);
      }
      if (state.slotOwners[i] === true) this.shoppers.take(copy);
      else this.displaced.add(r.reservationId);
      while (nextShopper < unitsRestored.length && unitsRestored[nextShopper] === 1) nextShopper += 1;
      const lookUntil = Math.min(unitsRestored.length, nextShopper + restoreShopperLookahead);
      for (let j = nextShopper; j < lookUntil; j++) {
        if (unitsRestored[j] === 1 || state.shoppers[j] !== r.shopperId) continue;
        this.restoreShopperUnits(state, j);
        unitsRestored[j] = 1;
        break;
      }
      if (isLive(r.status)) {
        held += r.quantity;
        live += 1;
      }
      if (r.status === 'held') this.expiryQueue.push(copy);
      if (r.status === 'tentative') this.tentative.set(r.reservationId, reservedAtMs(r));
    }
    if (held !== this.held || live !== this.liveHolds) {
      throw new InvariantViolation(`${state.sku}: restored held ${this.held}/${this.liveHolds} but reservations hold ${held}/${live}`);
    }
    return unitsRestored;
  }

  private restoreShopperUnits(state: AllocatorState, j: number): void {
    const shopper = state.shoppers[j]!;
    const units = state.shopperQuantities[j]!;
    if (!Number.isSafeInteger(units) || units <= 0 || !this.shoppers.restoreUnits(shopper, units)) {
      throw new InvariantViolation(`${state.sku}: restored shopper ${shopper} with ${units} units, or twice`);
    }
  }
}

/**
 * Listed shoppers a restore compares with each reservation's: shoppers whose
 * reservations are all forgotten (paid long ago) are passed over this way.
 */
const restoreShopperLookahead = 4;

/** Everything an allocator is, as plain data: what a snapshot encodes. */
export interface AllocatorState {
  sku: string;
  seq: number;
  config: SkuConfig | null;
  archived: boolean;
  available: number;
  held: number;
  sold: number;
  liveHolds: number;
  /** In reservation order. */
  reservations: Reservation[];
  /** Per reservation: does its idempotency slot point at it (a newer reservation may have taken it over)? */
  slotOwners: boolean[];
  /** Shoppers holding or having bought units, and how many (side by side). */
  shoppers: string[];
  shopperQuantities: number[];
  checkoutKeys: [string, CheckoutRecord][];
  settledOrder: string[];
  rememberedKeys: PackedGeneration[];
  /** The waiting room's joins (absent in states written before waiting rooms: none). */
  queue?: QueueState;
  /** Absent: no waitlist entries (states written before waitlists). */
  waitlist?: WaitlistState;
}

export interface AllocatorSnapshot {
  sku: string;
  seq: number;
  config: SkuConfig | null;
  available: number;
  held: number;
  sold: number;
  liveHolds: number;
  archived: boolean;
  reservations: Reservation[];
  shopperQuantity: [string, number][];
  idempotencyKeys: [string, string][];
  checkoutKeys: [string, CheckoutRecord][];
  settledOrder: string[];
  /** [generation, hash, second] of every remembered key. */
  rememberedKeys: [number, number, number][];
  queue: QueueState;
  waitlist: import('./waitlist.js').WaitlistEntry[];
}

function shopperUnitEntries(index: Shoppers): [string, number][] {
  const { shoppers, units } = index.unitLists();
  return shoppers.map((shopper, i) => [shopper, units[i]!]);
}

function notInCart(reservationId: string): Rejection {
  return { ok: false, code: 'not_found', detail: `reservation ${reservationId} is not a line of this cart` };
}

export function idempotencySlot(shopperId: string, idempotencyKey: string): string {
  return `${shopperId}\u0000${idempotencyKey}`;
}

/**
 * A checkout key's slot among the remembered hashes: apart from reservation keys (a key may guard
 * both a reservation and its checkout). Keys are visible ASCII, so no reservation slot spells it.
 */
export function checkoutSlot(shopperId: string, idempotencyKey: string): string {
  return `checkout\u0000${shopperId}\u0000${idempotencyKey}`;
}

function copyWaitlistState(state: WaitlistState): WaitlistState {
  return { entries: state.entries.map((e) => ({ ...e })), closedOrder: state.closedOrder };
}
