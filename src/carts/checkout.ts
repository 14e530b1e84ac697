import type { NewOrder, Outcome } from '../inventory/inventory.js';
import type { Link } from '../road/link.js';
import { shardOf } from '../shard/placement.js';
import { orderIdFor } from './ids.js';
import type { CartLine, CartRecord } from './types.js';

/**
 * Checkout of a held cart (docs/carts.md): one order, one payment for the sum
 * of its lines. The first line's freeze writes the order and its payment job
 * in the same transaction as the freeze, so no line is ever frozen without an
 * order whose job settles it; the other lines are frozen after it, and the job
 * freezes them again (idempotently) before it charges. A line that can no
 * longer be frozen (it expired meanwhile) fails the order without a charge and
 * every frozen line goes back on sale.
 */

/** What the payment worker asks of carts (the order's lines, through the shard channel). */
export interface CartPayments {
  /** Freeze every line for the order; false when one cannot be (the order must fail uncharged). Throws when a shard does not answer. */
  freezeOrder(order: CartOrder): Promise<boolean>;
  /** Settle every line this order froze: sold, or given back. Throws when a shard does not answer (the job retries). */
  settleOrder(order: CartOrder, outcome: 'committed' | 'payment_failed', failureReason: string | null): Promise<void>;
}

export interface CartOrder {
  orderId: string;
  cartId?: string | null;
  shopperId: string;
  paymentMethod: string;
}

export interface CartCheckoutView {
  orderId: string;
  cartId: string;
  status: 'pending';
}

export class CartCheckout implements CartPayments {
  constructor(
    private readonly channel: Link,
    private readonly shardCount: number,
    /** The cart's record (committed), or its refusal. */
    private readonly committed: (cartId: string, shopperId: string) => Promise<Outcome<CartRecord>>,
  ) {}

  private freeze(record: CartRecord, line: CartLine, orderId: string, paymentMethod: string, order: NewOrder | null) {
    const { sku, reservationId } = line;
    return this.channel.request(shardOf(sku, this.shardCount), {
      type: 'cart_freeze', sku, cartId: record.cartId, reservationId, shopperId: record.shopperId, orderId, paymentMethod, order,
    });
  }

  async checkout(cartId: string, shopperId: string, idempotencyKey: string, paymentMethod: string): Promise<Outcome<CartCheckoutView>> {
    const committed = await this.committed(cartId, shopperId);
    if (!committed.ok) return committed;
    const record = committed.value;
    const priced = await this.price(record);
    if (!priced.ok) return priced;
    const [first, ...rest] = record.lines;
    const orderId = orderIdFor(cartId, first!.sku);
    const units = record.lines.reduce((sum, line) => sum + line.quantity, 0);
    const order: NewOrder = {
      orderId, reservationId: first!.reservationId, sku: first!.sku, shopperId, quantity: units,
      amountCents: priced.value.amountCents, currency: priced.value.currency, paymentMethod, idempotencyKey, cartId,
    };
    const frozen = await this.freeze(record, first!, orderId, paymentMethod, order);
    if (!frozen.ok) return frozen;
    // The order and its job are durable: the job freezes any line not frozen here.
    await Promise.all(rest.map((line) => this.freeze(record, line, orderId, paymentMethod, null)));
    return { ok: true, value: { orderId, cartId, status: 'pending' } };
  }

  /** Σ price × quantity over the lines, at their SKUs' current prices, in one currency. */
  private async price(record: CartRecord): Promise<Outcome<{ amountCents: number; currency: string }>> {
    const views = await Promise.all(record.lines.map(({ sku }) => this.channel.request(shardOf(sku, this.shardCount), { type: 'get_sku', sku })));
    let amountCents = 0;
    let currency: string | null = null;
    for (const [i, view] of views.entries()) {
      if (!view.ok) return view;
      if (currency !== null && view.value.currency !== currency) {
        return { ok: false, code: 'mixed_currencies', detail: `line ${i} is priced in ${view.value.currency}, the cart in ${currency}` };
      }
      currency = view.value.currency;
      amountCents += view.value.priceCents * record.lines[i]!.quantity;
    }
    return { ok: true, value: { amountCents, currency: currency! } };
  }

  private async record(order: CartOrder): Promise<CartRecord> {
    const record = await this.committed(order.cartId!, order.shopperId);
    if (!record.ok) throw new Error(`cart ${order.cartId} of order ${order.orderId}: ${record.code}: ${record.detail}`);
    return record.value;
  }

  async freezeOrder(order: CartOrder): Promise<boolean> {
    const record = await this.record(order);
    const replies = await Promise.all(record.lines.map((line) => this.freeze(record, line, order.orderId, order.paymentMethod, null)));
    for (const reply of replies) {
      if (!reply.ok && reply.code === 'unavailable') throw new Error(`a line of order ${order.orderId} could not be frozen: ${reply.detail}`);
    }
    return replies.every((reply) => reply.ok);
  }

  async settleOrder(order: CartOrder, outcome: 'committed' | 'payment_failed', failureReason: string | null): Promise<void> {
    const record = await this.record(order);
    const replies = await Promise.all(
      record.lines.map(({ sku, reservationId }) =>
        this.channel.request(shardOf(sku, this.shardCount), { type: 'settle', sku, reservationId, orderId: order.orderId, outcome, failureReason }),
      ),
    );
    for (const reply of replies) {
      // not_found: a line this order never froze (it expired first); nothing of it to settle.
      if (!reply.ok && reply.code !== 'not_found') throw new Error(`a line of order ${order.orderId} could not be settled: ${reply.code}: ${reply.detail}`);
    }
  }
}
