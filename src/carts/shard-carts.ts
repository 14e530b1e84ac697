import type { Logger } from 'pino';
import type { SkuAllocator } from '../allocator/allocator.js';
import { cartOfKey, type StockEvent } from '../allocator/types.js';
import { holdView, reservationView, type OrderAttachment, type Outcome, type ReservationView } from '../inventory/inventory.js';
import type { ShardNotice, ShardRequests } from '../shard/messages.js';
import type { LogReader } from '../shard/log-reader.js';
import { CartStore } from './store.js';
import type { CartLineState, CartRecord } from './types.js';
import type pg from 'pg';

/** A tentative line whose cart has not decided within this long is aborted by its shard (CART_DECISION_TIMEOUT_MS). */
export const defaultCartDecisionTimeoutMs = 10_000;

/** What the cart side borrows from its Shard: its refusals, allocators, commits and clock. */
export interface CartShardOps {
  /** 503 while recovering, closing, rebuilding `sku`, or with the outbox full; else null. */
  refuse(sku: string | null): Outcome<never> | null;
  /** The SKU's allocator for a decision (loading it when needed), the shard's refusal, or not_found. */
  loadedForWrite(sku: string): Promise<Outcome<SkuAllocator>>;
  /** The allocator in memory now (not loading it), if any and not being rebuilt. */
  loaded(sku: string): SkuAllocator | null;
  commit<T>(allocator: SkuAllocator, event: StockEvent, value: () => T, attachment?: OrderAttachment): Promise<Outcome<T>>;
  notify: (notice: ShardNotice) => void;
  afterDurable<T>(sku: string, value: T): Promise<Outcome<T>>;
  /** Expire the SKU's holds that ran out (stock a prepare may use). */
  expire(allocator: SkuAllocator, nowMs: number): void;
  nowMs(): number;
  pool: pg.Pool;
  reader: LogReader;
  log: Logger;
  cartDecisionTimeoutMs: number;
}

/**
 * The shard's side of carts (docs/carts.md): the home shard's rows (begin,
 * decide, get), phase 1 and 2 on a line's shard (prepare, resolve), and the
 * sweep resolving tentative lines whose cart is late or whose coordinator
 * died with the process before (every tentative line found at recovery).
 */
export class ShardCarts {
  private readonly store: CartStore;
  /** Lines being resolved from the decision table (one query each at a time). */
  private readonly resolving = new Set<string>();
  /** Lines prepared before this moment belong to a previous life of this shard: resolved at once. */
  private readonly startedAtMs: number;

  constructor(private readonly ops: CartShardOps) {
    this.store = new CartStore(ops.pool);
    this.startedAtMs = ops.nowMs();
  }

  async begin(request: ShardRequests['cart_begin']): Promise<Outcome<CartRecord>> {
    const refused = this.ops.refuse(null);
    if (refused) return refused;
    const { cartId, shopperId, idempotencyKey, requestHash, lines } = request;
    return this.stored(this.store.begin(cartId, shopperId, idempotencyKey, requestHash, lines), shopperId);
  }

  async decide(request: ShardRequests['cart_decide']): Promise<Outcome<CartRecord>> {
    const refused = this.ops.refuse(null);
    if (refused) return refused;
    const { cartId, decision, expiresAtMs, failure, shopperId } = request;
    return this.stored(this.store.decide(cartId, decision, expiresAtMs, failure, 'coordinator'), shopperId);
  }

  async get(request: ShardRequests['cart_get']): Promise<Outcome<CartRecord>> {
    const refused = this.ops.refuse(null);
    if (refused) return refused;
    const record = await this.store.get(request.cartId).catch(() => undefined);
    if (record === undefined) return { ok: false, code: 'unavailable', detail: 'the cart could not be read; retry' };
    if (record === null || record.shopperId !== request.shopperId) return { ok: false, code: 'not_found', detail: `cart ${request.cartId} does not exist` };
    return { ok: true, value: record };
  }

  /** A statement's outcome: the record, or 503 when Postgres did not answer (the row may or may not be written). */
  private async stored(pending: Promise<CartRecord>, shopperId: string): Promise<Outcome<CartRecord>> {
    try {
      const record = await pending;
      if (record.shopperId !== shopperId) return { ok: false, code: 'not_found', detail: `cart ${record.cartId} does not exist` };
      return { ok: true, value: record };
    } catch (error) {
      this.ops.log.warn({ err: error }, 'cart row statement failed');
      return { ok: false, code: 'unavailable', detail: 'the cart could not be recorded; its outcome is unknown: retry with the same Idempotency-Key' };
    }
  }

  async prepare(request: ShardRequests['cart_prepare']): Promise<Outcome<ReservationView>> {
    const loaded = await this.ops.loadedForWrite(request.sku);
    if (!loaded.ok) return loaded;
    const allocator = loaded.value;
    const now = this.ops.nowMs();
    let decision = allocator.prepareLine(request, now);
    if (!decision.ok && decision.code === 'sold_out') {
      // Holds that ran out but were not swept yet are stock: free them first (as reserve does).
      const next = allocator.nextExpiryMs();
      if (next !== null && next <= now) {
        this.ops.expire(allocator, now);
        decision = allocator.prepareLine(request, now);
      }
    }
    if (!decision.ok) return decision;
    if (decision.kind === 'replay') return this.ops.afterDurable(request.sku, reservationView(request.sku, decision.reservation));
    const view = holdView(decision.event, 'tentative');
    return this.ops.commit(allocator, decision.event, () => view);
  }

  async resolve(request: ShardRequests['cart_resolve']): Promise<Outcome<CartLineState>> {
    const loaded = await this.ops.loadedForWrite(request.sku);
    if (!loaded.ok) return loaded;
    const allocator = loaded.value;
    const { reservationId, cartId } = request;
    const line = allocator.reservations.get(reservationId);
    const state = (): CartLineState => ({ reservationId, status: allocator.reservations.get(reservationId)?.status ?? null });
    if (request.action === 'release') {
      if (line === undefined) return this.fromLog(reservationId);
      const decision = allocator.release(reservationId, request.shopperId, this.ops.nowMs(), cartId);
      if (!decision.ok) return decision;
      if (decision.event === null) return this.ops.afterDurable(request.sku, state());
      return this.ops.commit(allocator, decision.event, state);
    }
    const decision = request.action === 'commit' ? 'committed' : 'aborted';
    const event = allocator.resolveLine(reservationId, cartId, decision, request.expiresAtMs, this.ops.nowMs());
    if (event === null) return line === undefined ? this.fromLog(reservationId) : this.ops.afterDurable(request.sku, state());
    return this.ops.commit(allocator, event, state);
  }

  /**
   * Checkout, for one line: freeze it for the cart's order. The first line's freeze carries the
   * order (and its payment job, in the same transaction): a line is never frozen without an order
   * whose job will settle it (src/carts/checkout.ts re-drives the other lines' freezes).
   */
  async freeze(request: ShardRequests['cart_freeze']): Promise<Outcome<CartLineState>> {
    const loaded = await this.ops.loadedForWrite(request.sku);
    if (!loaded.ok) return loaded;
    const allocator = loaded.value;
    const { reservationId, cartId, orderId, paymentMethod } = request;
    const decision = allocator.freezeLine(reservationId, cartId, orderId, paymentMethod, this.ops.nowMs());
    if (!decision.ok) return decision;
    const state = (): CartLineState => ({ reservationId, status: allocator.reservations.get(reservationId)?.status ?? null });
    if (decision.kind !== 'new') return this.ops.afterDurable(request.sku, state());
    const attachment: OrderAttachment | undefined = request.order === null ? undefined : { kind: 'order_created', order: request.order };
    const outcome = await this.ops.commit(allocator, decision.event, state, attachment);
    if (outcome.ok && attachment !== undefined) this.ops.notify({ type: 'checkout_durable', orderId });
    return outcome;
  }

  /** A line not in memory: settled long ago (its status from the log), or never prepared here (null). */
  private async fromLog(reservationId: string): Promise<Outcome<CartLineState>> {
    const logged = await this.ops.reader.reservation(reservationId, this.ops.nowMs());
    return { ok: true, value: { reservationId, status: logged?.view.status ?? null } };
  }

  /**
   * Tentative lines of this SKU whose cart is late (prepared longer than the
   * timeout ago, or before this shard started): the decision table says what
   * becomes of them, and if nobody has decided yet this shard decides
   * `aborted` there first. Oldest first; a line is asked about once at a time.
   */
  sweep(allocator: SkuAllocator, nowMs: number): void {
    if (allocator.tentative.size === 0) return;
    const lateBefore = nowMs - this.ops.cartDecisionTimeoutMs;
    for (const [reservationId, preparedAtMs] of allocator.tentative) {
      if (preparedAtMs > lateBefore && preparedAtMs >= this.startedAtMs) break;
      if (this.resolving.has(reservationId)) continue;
      const cartId = cartOfKey(allocator.reservations.get(reservationId)!.idempotencyKey)!;
      this.resolving.add(reservationId);
      this.store
        .decide(cartId, 'aborted', null, null, 'shard')
        .then((record) => this.applyDecision(allocator.sku, reservationId, record))
        .catch((error: unknown) => this.ops.log.warn({ err: error, cartId }, 'a late cart line could not be resolved yet; retrying'))
        .finally(() => this.resolving.delete(reservationId));
    }
  }

  private async applyDecision(sku: string, reservationId: string, record: CartRecord): Promise<void> {
    // The SKU may have been rebuilt meanwhile: decide against what is in memory now.
    const allocator = this.ops.loaded(sku);
    if (allocator === null || this.ops.refuse(sku) !== null) return;
    const event = allocator.resolveLine(reservationId, record.cartId, record.decision!, record.expiresAtMs ?? 0, this.ops.nowMs());
    if (event === null) return;
    this.ops.log.info({ cartId: record.cartId, reservationId, decision: record.decision }, 'late cart line resolved from its decision');
    await this.ops.commit(allocator, event, () => null);
  }
}
