import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import type { Logger } from 'pino';
import { SkuAllocator, idempotencySlot, InvariantViolation } from '../allocator/allocator.js';
import type { AllocatorLimits, SkuConfig, StockEvent } from '../allocator/types.js';
import { readEvents, lastSeqs } from '../outbox/event-log.js';
import { Outbox, type AttachmentWriter, type BatchFailure, type OutboxOptions } from '../outbox/outbox.js';
import {
  reservationView,
  type CheckoutRequest,
  type CheckoutView,
  type OrderAttachment,
  type SettleRequest,
  skuView,
  type Inventory,
  type Outcome,
  type ReservationView,
  type ReserveRequest,
  type SkuView,
  type StockState,
} from './inventory.js';

export interface LocalInventoryOptions {
  limits: AllocatorLimits;
  outbox: OutboxOptions;
  expirySweepIntervalMs: number;
  /** Pause between attempts to rebuild a SKU while Postgres is unreachable. */
  rebuildRetryMs: number;
  /** Injectable clock for tests; the allocators never read it themselves. */
  nowMs: () => number;
  /** Called after each durable change of a SKU's counts (for live fan-out). */
  onSkuChanged?: (sku: string) => void;
  /** Writes orders and their jobs in the same transaction as the events (payments). */
  writeOrders?: AttachmentWriter<OrderAttachment>;
  /** Called once a checkout is durable (wake the payment worker). */
  onCheckoutDurable?: (orderId: string) => void;
}

type Unavailable = { ok: false; code: 'unavailable'; detail: string };

const commitFailed: Unavailable = {
  ok: false,
  code: 'unavailable',
  detail: 'the decision could not be made durable; nothing was reserved, retry with the same Idempotency-Key',
};

/**
 * The imperative shell around every SKU's allocator in this process: it feeds
 * commands in with the current time, hands the resulting events to the outbox,
 * applies them, and answers only once they are durable. It also rebuilds SKUs
 * from the log (at start, and after a failed commit), expires holds on a timer,
 * and stops serving a SKU another writer has taken (fencing).
 */
export class LocalInventory implements Inventory {
  private readonly allocators = new Map<string, SkuAllocator>();
  /** reservationId → sku, to route lookups by id. */
  private readonly reservationSkus = new Map<string, string>();
  /** shopper+key → sku: an idempotency key belongs to one request, across SKUs. */
  private readonly keySkus = new Map<string, string>();
  /** SKUs being rebuilt from the log: their requests get 503 until done. */
  private readonly rebuilding = new Set<string>();
  /** SKUs another writer has written to: this process no longer serves them. */
  private readonly fenced = new Set<string>();
  private readonly outbox: Outbox<OrderAttachment>;
  private recovered = false;
  private closing = false;
  private sweepTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly pool: pg.Pool,
    private readonly log: Logger,
    private readonly options: LocalInventoryOptions,
  ) {
    this.outbox = new Outbox<OrderAttachment>(
      pool,
      options.outbox,
      log,
      (failure) => this.onBatchFailed(failure),
      options.writeOrders ?? null,
    );
  }

  get outboxStats() {
    return this.outbox.stats;
  }

  get pendingEvents(): number {
    return this.outbox.pendingEvents;
  }

  isReady(): boolean {
    return this.recovered && !this.closing;
  }

  // ------------------------------------------------------------ recovery

  /** Rebuild every SKU from the log, expire holds that ran out while down, start the sweeper. */
  async recover(): Promise<void> {
    const started = Date.now();
    let events = 0;
    let current: SkuAllocator | null = null;
    for await (const page of readEvents(this.pool)) {
      for (const event of page) {
        if (current === null || current.sku !== event.sku) {
          current = new SkuAllocator(event.sku, this.options.limits);
          this.allocators.set(event.sku, current);
        }
        current.apply(event);
        events += 1;
      }
    }
    for (const allocator of this.allocators.values()) this.index(allocator);
    const expired = await this.expireOverdue();
    this.recovered = true;
    this.sweepTimer = setInterval(() => this.sweep(), this.options.expirySweepIntervalMs);
    this.log.info(
      { skus: this.allocators.size, events, expiredAtRecovery: expired, ms: Date.now() - started },
      'allocators recovered from the event log',
    );
  }

  private index(allocator: SkuAllocator): void {
    for (const reservation of allocator.reservations.values()) {
      this.reservationSkus.set(reservation.reservationId, allocator.sku);
      this.keySkus.set(idempotencySlot(reservation.shopperId, reservation.idempotencyKey), allocator.sku);
    }
  }

  private async expireOverdue(): Promise<number> {
    const now = this.options.nowMs();
    const waits: Promise<void>[] = [];
    let count = 0;
    for (const allocator of this.allocators.values()) {
      for (;;) {
        const events = allocator.expireDue(now);
        if (events.length === 0) break;
        count += events.length;
        for (const event of events) waits.push(this.appendAndWait(allocator, event));
      }
    }
    await Promise.all(waits);
    return count;
  }

  private appendAndWait(allocator: SkuAllocator, event: StockEvent): Promise<void> {
    allocator.apply(event);
    return new Promise((resolve, reject) => this.outbox.append(event, (error) => (error ? reject(error) : resolve())));
  }

  /** Expire due holds of every SKU; runs on a timer, so stock comes back on its own. */
  private sweep(): void {
    if (this.closing) return;
    const now = this.options.nowMs();
    for (const allocator of this.allocators.values()) {
      if (this.rebuilding.has(allocator.sku) || this.fenced.has(allocator.sku)) continue;
      const next = allocator.nextExpiryMs();
      if (next !== null && next <= now) this.expire(allocator, now);
    }
  }

  private expire(allocator: SkuAllocator, now: number): void {
    const events = allocator.expireDue(now);
    if (events.length === 0) return;
    for (const event of events) {
      allocator.apply(event);
      this.outbox.append(event, (error) => {
        if (error === null && event === events[events.length - 1]) this.options.onSkuChanged?.(allocator.sku);
      });
    }
  }

  private onBatchFailed(failure: BatchFailure): void {
    for (const sku of failure.skus) this.rebuilding.add(sku);
    void this.rebuild(failure);
  }

  private async rebuild(failure: BatchFailure): Promise<void> {
    for (;;) {
      try {
        if (failure.error.fenced) {
          const logSeqs = await lastSeqs(this.pool, [...failure.skus]);
          for (const [sku, firstSeq] of failure.firstSeqs) {
            if ((logSeqs.get(sku) ?? 0) >= firstSeq) {
              this.fenced.add(sku);
              this.rebuilding.delete(sku);
              this.log.error({ sku, seq: firstSeq }, 'another writer owns this SKU: no longer serving it');
            }
          }
        }
        for (const sku of failure.skus) {
          if (this.fenced.has(sku)) continue;
          await this.rebuildSku(sku);
          this.rebuilding.delete(sku);
        }
        return;
      } catch (error) {
        if (error instanceof InvariantViolation) throw error;
        this.log.warn({ err: error, skus: [...failure.skus] }, 'rebuild from the log failed; retrying');
        await new Promise((resolve) => setTimeout(resolve, this.options.rebuildRetryMs));
        if (this.closing) return;
      }
    }
  }

  private async rebuildSku(sku: string): Promise<void> {
    const events: StockEvent[] = [];
    for await (const page of readEvents(this.pool, { sku })) events.push(...page);
    const previous = this.allocators.get(sku);
    const rebuilt = SkuAllocator.replay(sku, this.options.limits, events);
    if (previous !== undefined) {
      // Forget reservations the failed commit undid.
      for (const reservation of previous.reservations.values()) {
        if (!rebuilt.reservations.has(reservation.reservationId)) {
          this.reservationSkus.delete(reservation.reservationId);
          this.keySkus.delete(idempotencySlot(reservation.shopperId, reservation.idempotencyKey));
        }
      }
    }
    if (rebuilt.config === null) this.allocators.delete(sku);
    else this.allocators.set(sku, rebuilt);
    this.index(rebuilt);
    this.log.info({ sku, seq: rebuilt.seq }, 'SKU rebuilt from the event log');
    this.options.onSkuChanged?.(sku);
  }

  // ------------------------------------------------------------ commands

  private refuse(sku: string): Unavailable | null {
    if (this.closing) return { ok: false, code: 'unavailable', detail: 'the service is shutting down' };
    if (!this.recovered) return { ok: false, code: 'unavailable', detail: 'the service is still recovering' };
    if (this.fenced.has(sku)) {
      return { ok: false, code: 'unavailable', detail: `SKU ${sku} is served by another node` };
    }
    if (this.rebuilding.has(sku)) {
      return { ok: false, code: 'unavailable', detail: `SKU ${sku} is being rebuilt after a failed commit` };
    }
    return null;
  }

  private full(): Unavailable | null {
    if (this.outbox.hasRoom()) return null;
    return { ok: false, code: 'unavailable', detail: 'too many decisions are waiting for the database; retry shortly' };
  }

  /** Answer once `event` is durable; if its batch failed, the decision was undone: 503. */
  private commit<T>(
    allocator: SkuAllocator,
    event: StockEvent,
    value: () => T,
    attachment?: OrderAttachment,
  ): Promise<Outcome<T>> {
    allocator.apply(event);
    return new Promise((resolve) => {
      this.outbox.append(
        event,
        (error) => {
          if (error !== null) {
            resolve(commitFailed);
            return;
          }
          this.options.onSkuChanged?.(event.sku);
          resolve({ ok: true, value: value() });
        },
        attachment,
      );
    });
  }

  /** Answer once everything decided so far for `sku` is durable (replays, repeated releases). */
  private afterDurable<T>(sku: string, value: () => T): Promise<Outcome<T>> {
    return new Promise((resolve) => {
      this.outbox.barrier(sku, (error) => resolve(error === null ? { ok: true, value: value() } : commitFailed));
    });
  }

  async configureSku(sku: string, config: SkuConfig): Promise<Outcome<{ created: boolean; view: SkuView }>> {
    const refused = this.refuse(sku) ?? this.full();
    if (refused) return refused;
    let allocator = this.allocators.get(sku);
    if (allocator === undefined) {
      allocator = new SkuAllocator(sku, this.options.limits);
      this.allocators.set(sku, allocator);
    }
    const decision = allocator.configure(config, this.options.nowMs());
    if (!decision.ok) return decision;
    const configured = allocator;
    return this.commit(allocator, decision.event, () => ({ created: decision.created, view: skuView(configured) }));
  }

  async getSku(sku: string): Promise<SkuView | null> {
    const allocator = this.allocators.get(sku);
    return allocator?.config ? skuView(allocator) : null;
  }

  /**
   * Counts and seq of a SKU this process serves, synchronously (the live stream
   * reads it when it publishes); null when unknown or fenced (another node
   * writes it, so this copy is stale).
   * Counts may include decisions of the group commit in flight, which a failed
   * commit undoes (and the rebuild then reports through `onSkuChanged`).
   */
  stockState(sku: string): StockState | null {
    const allocator = this.allocators.get(sku);
    if (allocator?.config == null || this.fenced.has(sku)) return null;
    return { sku, available: allocator.available, held: allocator.held, sold: allocator.sold, seq: allocator.seq };
  }

  // Not `async`: on the hot path the commit's own promise is returned as is, one
  // promise and one microtask turn fewer per reservation.
  reserve(request: ReserveRequest): Promise<Outcome<ReservationView>> {
    const allocator = this.allocators.get(request.sku);
    if (allocator === undefined || allocator.config === null) {
      return Promise.resolve({ ok: false, code: 'not_found', detail: `SKU ${request.sku} does not exist` });
    }
    const refused = this.refuse(request.sku) ?? this.full();
    if (refused) return Promise.resolve(refused);
    const slot = idempotencySlot(request.shopperId, request.idempotencyKey);
    const keySku = this.keySkus.get(slot);
    if (keySku !== undefined && keySku !== request.sku) {
      return Promise.resolve({
        ok: false,
        code: 'idempotency_key_reused',
        detail: 'this Idempotency-Key was already used for a different request',
      });
    }
    const now = this.options.nowMs();
    const command = { ...request, reservationId: randomUUID() };
    let decision = allocator.reserve(command, now);
    if (!decision.ok && decision.code === 'sold_out') {
      // Holds that ran out but were not swept yet are stock: free them first.
      const next = allocator.nextExpiryMs();
      if (next !== null && next <= now) {
        this.expire(allocator, now);
        decision = allocator.reserve(command, now);
      }
    }
    if (!decision.ok) return Promise.resolve(decision);
    if (decision.kind === 'replay') {
      // The original answer, even if the hold has changed since: same key, same response.
      const original = decision.reservation;
      return this.afterDurable(request.sku, () => reservationView(original, 'held'));
    }
    const event = decision.event;
    this.reservationSkus.set(event.reservationId, request.sku);
    this.keySkus.set(slot, request.sku);
    return this.commit(allocator, event, () => reservationView(allocator.reservations.get(event.reservationId)!, 'held'));
  }

  async getReservation(reservationId: string, shopperId: string): Promise<ReservationView | null> {
    const sku = this.reservationSkus.get(reservationId);
    const reservation = sku === undefined ? undefined : this.allocators.get(sku)?.reservations.get(reservationId);
    if (reservation === undefined || reservation.shopperId !== shopperId) return null;
    // A hold past its time is expired even if the sweeper has not recorded it yet.
    const expired = reservation.status === 'held' && this.options.nowMs() >= reservation.expiresAtMs;
    return reservationView(reservation, expired ? 'expired' : reservation.status);
  }

  async release(reservationId: string, shopperId: string): Promise<Outcome<ReservationView>> {
    const sku = this.reservationSkus.get(reservationId);
    const allocator = sku === undefined ? undefined : this.allocators.get(sku);
    if (sku === undefined || allocator === undefined) {
      return { ok: false, code: 'not_found', detail: `reservation ${reservationId} does not exist` };
    }
    const refused = this.refuse(sku) ?? this.full();
    if (refused) return refused;
    const decision = allocator.release(reservationId, shopperId, this.options.nowMs());
    if (!decision.ok) return decision;
    const reservation = decision.reservation;
    if (decision.event === null) return this.afterDurable(sku, () => reservationView(reservation));
    return this.commit(allocator, decision.event, () => reservationView(reservation));
  }

  async checkout(request: CheckoutRequest): Promise<Outcome<CheckoutView>> {
    const sku = this.reservationSkus.get(request.reservationId);
    const allocator = sku === undefined ? undefined : this.allocators.get(sku);
    if (sku === undefined || allocator === undefined || allocator.config === null) {
      return { ok: false, code: 'not_found', detail: `reservation ${request.reservationId} does not exist` };
    }
    const refused = this.refuse(sku) ?? this.full();
    if (refused) return refused;
    const orderId = randomUUID();
    const decision = allocator.checkout({ ...request, orderId }, this.options.nowMs());
    if (!decision.ok) return decision;
    if (decision.kind === 'replay') {
      const original: CheckoutView = { orderId: decision.orderId, reservationId: request.reservationId, status: 'pending' };
      return this.afterDurable(sku, () => original);
    }
    const reservation = allocator.reservations.get(request.reservationId)!;
    const config = allocator.config;
    const order = {
      orderId,
      reservationId: request.reservationId,
      sku,
      shopperId: request.shopperId,
      quantity: reservation.quantity,
      amountCents: reservation.quantity * config.priceCents,
      currency: config.currency,
      paymentMethod: request.paymentMethod,
      idempotencyKey: request.idempotencyKey,
    };
    const outcome = await this.commit(
      allocator,
      decision.event,
      (): CheckoutView => ({ orderId, reservationId: request.reservationId, status: 'pending' }),
      { kind: 'order_created', order },
    );
    if (outcome.ok) this.options.onCheckoutDurable?.(orderId);
    return outcome;
  }

  async settle(request: SettleRequest): Promise<Outcome<{ changed: boolean }>> {
    const allocator = this.allocators.get(request.sku);
    if (allocator === undefined) {
      return { ok: false, code: 'not_found', detail: `SKU ${request.sku} does not exist` };
    }
    const refused = this.refuse(request.sku) ?? this.full();
    if (refused) return refused;
    const reservation = allocator.reservations.get(request.reservationId);
    if (reservation === undefined || reservation.orderId !== request.orderId) {
      return { ok: false, code: 'not_found', detail: `order ${request.orderId} holds no reservation here` };
    }
    const event = allocator.settlePayment(request.reservationId, request.outcome, this.options.nowMs());
    // Already settled (a repeated job or webhook): answer once that is durable.
    if (event === null) return this.afterDurable(request.sku, () => ({ changed: false }));
    return this.commit(allocator, event, () => ({ changed: true }), {
      kind: 'order_settled',
      orderId: request.orderId,
      status: request.outcome === 'committed' ? 'paid' : 'failed',
      failureReason: request.outcome === 'committed' ? null : request.failureReason,
    });
  }

  /** Resolves once everything decided so far is durable (or failed). */
  settled(): Promise<void> {
    return this.outbox.drained();
  }

  async close(): Promise<void> {
    this.closing = true;
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    await this.outbox.drained();
  }
}
