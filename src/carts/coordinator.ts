import type { ReservationStatus } from '../allocator/types.js';
import type { Outcome } from '../inventory/inventory.js';
import type { Link } from '../road/link.js';
import { shardOf, shardOfReservationId } from '../shard/placement.js';
import { cartIdFor, lineIdFor, orderIdFor, requestHashOf } from './ids.js';
import { CartCheckout, type CartCheckoutView } from './checkout.js';
import type { CartDecision, CartFailure, CartLine, CartOutcome, CartRecord, CartStatus, CartView } from './types.js';

/** A cart item as the shopper sent it. */
export interface CartItem {
  sku: string;
  quantity: number;
}

/** What the front end asks of carts (HTTP, WebSocket). */
export type CartsApi = Pick<CartCoordinator, 'create' | 'get' | 'release' | 'checkout'>;

/** Phase 1's result: every line tentatively held (with the cart's expiry), one line refused, or an unknown outcome. */
type Prepared =
  | { decision: CartDecision; expiresAtMs: number | null; failure: CartFailure | null; prepared: CartLine[] }
  | { unknown: string };


/**
 * The coordinator of a cart: the front end that got the request (docs/carts.md).
 * It writes the cart's row on its home shard, prepares every line on its
 * shard in a fixed order (shard, then SKU), records one decision in the
 * home shard's table (first writer wins), then sends that decision to every
 * line. Everything goes through the Link, so lines may be on this
 * thread, another thread or another node. It keeps no state of its own: a
 * retry re-drives the same cart from its rows.
 */
export class CartCoordinator {
  /** Checkout and the payment worker's side of cart orders. */
  readonly payments: CartCheckout;

  constructor(
    private readonly channel: Link,
    private readonly shardCount: number,
  ) {
    this.payments = new CartCheckout(channel, shardCount, (cartId, shopperId) => this.committed(cartId, shopperId));
  }

  /** One order and one payment for every line of a held cart (202 pending). */
  checkout(cartId: string, shopperId: string, idempotencyKey: string, paymentMethod: string): Promise<Outcome<CartCheckoutView>> {
    return this.payments.checkout(cartId, shopperId, idempotencyKey, paymentMethod);
  }

  private home(cartId: string): number {
    return shardOfReservationId(cartId, this.shardCount)!;
  }

  async create(shopperId: string, idempotencyKey: string, items: readonly CartItem[]): Promise<CartOutcome<CartView>> {
    const cartId = cartIdFor(shopperId, idempotencyKey);
    const requestHash = requestHashOf(items);
    const lines = items.map(({ sku, quantity }) => ({ sku, quantity, reservationId: lineIdFor(cartId, sku) }));
    const begun = await this.channel.request(this.home(cartId), { type: 'cart_begin', cartId, shopperId, idempotencyKey, requestHash, lines });
    if (!begun.ok) return begun;
    let record = begun.value;
    if (record.requestHash !== requestHash) {
      return { ok: false, code: 'idempotency_key_reused', detail: 'this Idempotency-Key was already used for a different cart' };
    }
    let toResolve = record.lines;
    if (record.decision === null) {
      const prepared = await this.prepare(record);
      if ('unknown' in prepared) return { ok: false, code: 'unavailable', detail: prepared.unknown };
      const { decision, expiresAtMs, failure } = prepared;
      const decided = await this.channel.request(this.home(cartId), { type: 'cart_decide', cartId, shopperId, decision, expiresAtMs, failure });
      if (!decided.ok) return { ok: false, code: 'unavailable', detail: 'the cart could not be decided; its outcome is unknown: retry with the same Idempotency-Key' };
      record = decided.value;
      // Lines that were never prepared have nothing to resolve.
      toResolve = prepared.prepared;
    }
    await this.resolve(record, toResolve);
    return answerOf(record);
  }

  /** Phase 1: one line after another in (shard, SKU) order; the first refusal stops it. Never waits on a line. */
  private async prepare(record: CartRecord): Promise<Prepared> {
    const { cartId, shopperId } = record;
    const order = record.lines.map((line, index) => ({ line, index, shard: shardOf(line.sku, this.shardCount) }));
    order.sort((a, b) => a.shard - b.shard || (a.line.sku < b.line.sku ? -1 : 1));
    let expiresAtMs = Number.POSITIVE_INFINITY;
    const prepared: CartLine[] = [];
    for (const { line, index, shard } of order) {
      const { sku, reservationId, quantity } = line;
      const reply = await this.channel.request(shard, { type: 'cart_prepare', sku, cartId, reservationId, shopperId, quantity });
      if (!reply.ok && reply.code === 'unavailable') {
        return { unknown: `line ${index} (${sku}) could not be prepared (${reply.detail}); nothing is decided: retry with the same Idempotency-Key` };
      }
      if (!reply.ok) return { decision: 'aborted', expiresAtMs: null, failure: { line: index, sku, code: reply.code, detail: reply.detail }, prepared };
      prepared.push(line);
      if (reply.value.status !== 'tentative' && reply.value.status !== 'held') {
        // Found resolved already: a shard aborted this late cart (the decision table says so).
        return { decision: 'aborted', expiresAtMs: null, failure: null, prepared };
      }
      expiresAtMs = Math.min(expiresAtMs, Date.parse(reply.value.expiresAt));
    }
    return { decision: 'committed', expiresAtMs, failure: null, prepared };
  }

  /** Phase 2: the decision to every line at once. A line that does not hear it is resolved by its shard's sweep. */
  private async resolve(record: CartRecord, lines: readonly CartLine[]): Promise<void> {
    const action = record.decision === 'committed' ? 'commit' : 'abort';
    const expiresAtMs = record.expiresAtMs ?? 0;
    const { cartId, shopperId } = record;
    await Promise.all(
      lines.map(({ sku, reservationId }) =>
        this.channel.request(shardOf(sku, this.shardCount), { type: 'cart_resolve', sku, cartId, reservationId, shopperId, action, expiresAtMs }),
      ),
    );
  }

  /** A committed cart's record; anything else does not exist for its shopper. */
  private async committed(cartId: string, shopperId: string): Promise<Outcome<CartRecord>> {
    const home = shardOfReservationId(cartId, this.shardCount);
    if (home === null) return cartNotFound(cartId);
    const reply = await this.channel.request(home, { type: 'cart_get', cartId, shopperId });
    if (!reply.ok) return reply;
    return reply.value.decision === 'committed' ? reply : cartNotFound(cartId);
  }

  async get(cartId: string, shopperId: string): Promise<Outcome<CartView>> {
    const record = await this.committed(cartId, shopperId);
    if (!record.ok) return record;
    const { lines } = record.value;
    const replies = await Promise.all(
      lines.map(({ sku, reservationId }) => this.channel.request(shardOf(sku, this.shardCount), { type: 'get_reservation', reservationId, shopperId })),
    );
    const items: CartView['items'] = [];
    for (const [i, reply] of replies.entries()) {
      if (!reply.ok) return reply.code === 'unavailable' ? reply : { ok: false, code: 'unavailable', detail: `line ${i}: ${reply.detail}` };
      items.push({ ...lines[i]!, status: reply.value.status });
    }
    const view: CartView = {
      cartId,
      status: cartStatus(items.map((item) => item.status!)),
      expiresAt: new Date(record.value.expiresAtMs!).toISOString(),
      items,
    };
    if (view.status === 'pending' || view.status === 'paid' || view.status === 'payment_failed') view.orderId = orderIdFor(cartId, lines[0]!.sku);
    return { ok: true, value: view };
  }

  /** Let go of every line of a held cart; releasing a released cart again changes nothing. */
  async release(cartId: string, shopperId: string): Promise<Outcome<CartView>> {
    const record = await this.committed(cartId, shopperId);
    if (!record.ok) return record;
    const { lines, expiresAtMs } = record.value;
    const replies = await Promise.all(
      lines.map(({ sku, reservationId }) =>
        this.channel.request(shardOf(sku, this.shardCount), { type: 'cart_resolve', sku, cartId, reservationId, shopperId, action: 'release', expiresAtMs: expiresAtMs! }),
      ),
    );
    for (const reply of replies) if (!reply.ok) return reply;
    return this.get(cartId, shopperId);
  }
}

function answerOf(record: CartRecord): CartOutcome<CartView> {
  if (record.decision === 'committed') {
    // The original answer, like a reservation's replay: the cart as it was held.
    return { ok: true, value: { cartId: record.cartId, status: 'held', expiresAt: new Date(record.expiresAtMs!).toISOString(), items: record.lines } };
  }
  const failure = record.failure;
  if (failure === null) {
    return { ok: false, code: 'cart_aborted', detail: 'the cart was aborted before every line was held; nothing is held: use a new Idempotency-Key' };
  }
  return { ok: false, code: failure.code, detail: failure.detail, line: failure.line, sku: failure.sku };
}

/** A cart's status from its lines': the furthest along wins (a cart in checkout is pending even if one line expired meanwhile). */
function cartStatus(statuses: readonly ReservationStatus[]): CartStatus {
  const has = (status: ReservationStatus) => statuses.includes(status);
  if (has('checking_out')) return 'pending';
  if (has('payment_failed')) return 'payment_failed';
  if (has('paid')) return 'paid';
  if (has('expired')) return 'expired';
  if (has('released')) return 'released';
  return 'held';
}

function cartNotFound(cartId: string): Outcome<never> {
  return { ok: false, code: 'not_found', detail: `cart ${cartId} does not exist` };
}

