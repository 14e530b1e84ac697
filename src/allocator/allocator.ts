import TinyQueue from 'tinyqueue';
import type {
  AllocatorLimits,
  Rejection,
  Reservation,
  SkuConfig,
  StockEvent,
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
  | Rejection;

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
  | Rejection;

export type ConfigureDecision =
  | { ok: true; created: boolean; event: StockEvent }
  | Rejection;

interface ExpiryEntry {
  expiresAtMs: number;
  reservationId: string;
}

/** Units a reservation in this status still takes out of `available`. */
function isLive(status: Reservation['status']): boolean {
  return status === 'held' || status === 'checking_out';
}

export class SkuAllocator {
  readonly sku: string;
  private readonly limits: AllocatorLimits;

  /** Last applied event's seq; the next event gets seq + 1. */
  seq = 0;
  config: SkuConfig | null = null;
  available = 0;
  held = 0;
  sold = 0;
  liveHolds = 0;
  /** Every reservation ever made on this SKU, by id. */
  readonly reservations = new Map<string, Reservation>();
  /** Units a shopper holds or has paid for (what `perShopperLimit` caps). */
  readonly shopperQuantity = new Map<string, number>();
  /** shopperId + NUL + idempotency key → reservation id. */
  readonly idempotencyKeys = new Map<string, string>();
  /** shopperId + NUL + checkout idempotency key → the order it started. */
  readonly checkoutKeys = new Map<string, CheckoutRecord>();
  /** Held reservations by expiry; entries that stopped being held are skipped lazily. */
  private readonly expiryQueue = new TinyQueue<ExpiryEntry>(
    [],
    (a, b) => a.expiresAtMs - b.expiresAtMs,
  );

  constructor(sku: string, limits: AllocatorLimits) {
    this.sku = sku;
    this.limits = limits;
  }

  get stock(): number {
    return this.config?.stock ?? 0;
  }

  // ---------------------------------------------------------------- commands

  configure(config: SkuConfig, nowMs: number): ConfigureDecision {
    const committed = this.held + this.sold;
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
      event: { kind: 'configured', sku: this.sku, seq: this.seq + 1, atMs: nowMs, config: { ...config } },
    };
  }

  reserve(cmd: ReserveCommand, nowMs: number): ReserveDecision {
    const config = this.config;
    if (config === null) return { ok: false, code: 'not_found', detail: `SKU ${this.sku} does not exist` };

    const previousId = this.idempotencyKeys.get(idempotencySlot(cmd.shopperId, cmd.idempotencyKey));
    if (previousId !== undefined) {
      const previous = this.reservations.get(previousId)!;
      if (previous.quantity !== cmd.quantity) {
        return {
          ok: false,
          code: 'idempotency_key_reused',
          detail: 'this Idempotency-Key was already used for a different request',
        };
      }
      return { ok: true, kind: 'replay', reservation: previous };
    }

    if (config.startsAtMs !== null && nowMs < config.startsAtMs) {
      return { ok: false, code: 'sale_not_open', detail: `the sale opens at ${new Date(config.startsAtMs).toISOString()}` };
    }
    if (config.endsAtMs !== null && nowMs >= config.endsAtMs) {
      return { ok: false, code: 'sale_not_open', detail: `the sale closed at ${new Date(config.endsAtMs).toISOString()}` };
    }
    if (cmd.quantity > this.limits.maxQuantityPerRequest) {
      return {
        ok: false,
        code: 'quantity_too_large',
        detail: `quantity may be at most ${this.limits.maxQuantityPerRequest} per reservation`,
      };
    }
    const shopperHas = this.shopperQuantity.get(cmd.shopperId) ?? 0;
    if (shopperHas + cmd.quantity > config.perShopperLimit) {
      return {
        ok: false,
        code: 'limit_exceeded',
        detail: `at most ${config.perShopperLimit} per shopper; you already hold or bought ${shopperHas}`,
      };
    }
    if (this.available < cmd.quantity) {
      return { ok: false, code: 'sold_out', detail: `${this.available} available, ${cmd.quantity} asked` };
    }
    if (this.liveHolds >= this.limits.maxLiveHoldsPerSku) {
      return { ok: false, code: 'too_many_holds', detail: 'this SKU has as many live holds as it may keep' };
    }
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

  /**
   * The shopper lets go of a hold. Repeating it is harmless (no event), and a
   * hold whose time is up is recorded as expired, not released.
   */
  release(reservationId: string, shopperId: string, nowMs: number): ReleaseDecision {
    const reservation = this.reservations.get(reservationId);
    if (reservation === undefined || reservation.shopperId !== shopperId) {
      return { ok: false, code: 'not_found', detail: `reservation ${reservationId} does not exist` };
    }
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
      if (this.reservations.get(head.reservationId)?.status === 'held') return head.expiresAtMs;
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
      if (this.reservations.get(head.reservationId)?.status !== 'held') continue;
      seq += 1;
      events.push({ kind: 'expired', sku: this.sku, seq, atMs: nowMs, reservationId: head.reservationId });
    }
    return events;
  }

  /**
   * Freeze a hold while an order pays for it: it cannot expire meanwhile. One
   * order per reservation: a second key racing the first finds it not held.
   */
  checkout(cmd: CheckoutCommand, nowMs: number): CheckoutDecision {
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
    if (reservation.status !== 'held' || nowMs >= reservation.expiresAtMs) {
      const status = reservation.status === 'held' ? 'expired' : reservation.status;
      return { ok: false, code: 'reservation_not_held', detail: `reservation is ${status}` };
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

  // ---------------------------------------------------------------- evolve

  /** The only mutator. Throws InvariantViolation on anything inconsistent. */
  apply(event: StockEvent): void {
    if (event.sku !== this.sku) throw new InvariantViolation(`event for ${event.sku} applied to ${this.sku}`);
    if (event.seq !== this.seq + 1) {
      throw new InvariantViolation(`${this.sku}: event seq ${event.seq} after ${this.seq}`);
    }
    switch (event.kind) {
      case 'configured': {
        const committed = this.held + this.sold;
        if (event.config.stock < committed) {
          throw new InvariantViolation(`${this.sku}: stock ${event.config.stock} below committed ${committed}`);
        }
        this.config = { ...event.config };
        this.available = event.config.stock - committed;
        break;
      }
      case 'reserved': {
        const config = this.config;
        if (config === null) throw new InvariantViolation(`${this.sku}: reserved before configured`);
        if (this.reservations.has(event.reservationId)) {
          throw new InvariantViolation(`${this.sku}: duplicate reservation ${event.reservationId}`);
        }
        if (event.quantity < 1 || event.quantity > this.available) {
          throw new InvariantViolation(`${this.sku}: reserving ${event.quantity} with ${this.available} available`);
        }
        this.reservations.set(event.reservationId, {
          reservationId: event.reservationId,
          sku: this.sku,
          shopperId: event.shopperId,
          quantity: event.quantity,
          idempotencyKey: event.idempotencyKey,
          expiresAtMs: event.expiresAtMs,
          status: 'held',
          orderId: null,
        });
        this.idempotencyKeys.set(idempotencySlot(event.shopperId, event.idempotencyKey), event.reservationId);
        this.shopperQuantity.set(event.shopperId, (this.shopperQuantity.get(event.shopperId) ?? 0) + event.quantity);
        this.available -= event.quantity;
        this.held += event.quantity;
        this.liveHolds += 1;
        this.expiryQueue.push({ expiresAtMs: event.expiresAtMs, reservationId: event.reservationId });
        break;
      }
      case 'released':
      case 'expired': {
        const reservation = this.requireReservation(event.reservationId, 'held');
        reservation.status = event.kind;
        this.returnToSale(reservation);
        break;
      }
      case 'checkout_started': {
        const reservation = this.requireReservation(event.reservationId, 'held');
        reservation.status = 'checking_out';
        reservation.orderId = event.orderId;
        this.checkoutKeys.set(idempotencySlot(reservation.shopperId, event.idempotencyKey), {
          orderId: event.orderId,
          reservationId: event.reservationId,
          paymentMethod: event.paymentMethod,
        });
        break;
      }
      case 'committed': {
        const reservation = this.requireReservation(event.reservationId, 'checking_out');
        reservation.status = 'paid';
        this.held -= reservation.quantity;
        this.sold += reservation.quantity;
        this.liveHolds -= 1;
        break;
      }
      case 'payment_failed': {
        const reservation = this.requireReservation(event.reservationId, 'checking_out');
        reservation.status = 'payment_failed';
        this.returnToSale(reservation);
        break;
      }
      default: {
        const unknown: never = event;
        throw new InvariantViolation(`${this.sku}: unknown event ${JSON.stringify(unknown)}`);
      }
    }
    this.seq = event.seq;
    this.assertInvariants();
  }

  private returnToSale(reservation: Reservation): void {
    this.available += reservation.quantity;
    this.held -= reservation.quantity;
    this.liveHolds -= 1;
    const left = (this.shopperQuantity.get(reservation.shopperId) ?? 0) - reservation.quantity;
    if (left === 0) this.shopperQuantity.delete(reservation.shopperId);
    else this.shopperQuantity.set(reservation.shopperId, left);
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
      reservations: [...this.reservations.values()].map((r) => ({ ...r })),
      shopperQuantity: [...this.shopperQuantity.entries()].sort(),
      idempotencyKeys: [...this.idempotencyKeys.entries()].sort(),
      checkoutKeys: [...this.checkoutKeys.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
    };
  }

  /** Rebuild a SKU from its log. */
  static replay(sku: string, limits: AllocatorLimits, events: Iterable<StockEvent>): SkuAllocator {
    const allocator = new SkuAllocator(sku, limits);
    for (const event of events) allocator.apply(event);
    return allocator;
  }
}

export interface AllocatorSnapshot {
  sku: string;
  seq: number;
  config: SkuConfig | null;
  available: number;
  held: number;
  sold: number;
  liveHolds: number;
  reservations: Reservation[];
  shopperQuantity: [string, number][];
  idempotencyKeys: [string, string][];
  checkoutKeys: [string, CheckoutRecord][];
}

export function idempotencySlot(shopperId: string, idempotencyKey: string): string {
  return `${shopperId}\u0000${idempotencyKey}`;
}
