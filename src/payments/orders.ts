import type pg from 'pg';
import type PgBoss from 'pg-boss';
import type { NewOrder, OrderAttachment } from '../inventory/inventory.js';

/**
 * The orders table's SQL, all of it. Orders are created in the same
 * transaction as their checkout_started event and their pg-boss job, and
 * settled in the same transaction as the allocator's committed/payment_failed
 * event: the event log, the orders and the job queue never disagree.
 */

export interface Order extends Omit<NewOrder, 'idempotencyKey'> {
  status: 'pending' | 'paid' | 'failed';
  failureReason: string | null;
}

interface OrderRow {
  order_id: string;
  reservation_id: string;
  sku: string;
  shopper_id: string;
  quantity: number;
  amount_cents: string;
  currency: string;
  payment_method: string;
  status: Order['status'];
  failure_reason: string | null;
  cart_id: string | null;
}

function toOrder(row: OrderRow): Order {
  return {
    orderId: row.order_id,
    reservationId: row.reservation_id,
    sku: row.sku,
    shopperId: row.shopper_id,
    quantity: row.quantity,
    amountCents: Number(row.amount_cents),
    currency: row.currency,
    paymentMethod: row.payment_method,
    status: row.status,
    failureReason: row.failure_reason,
    cartId: row.cart_id,
  };
}

const orderColumns =
  'order_id, reservation_id, sku, shopper_id, quantity, amount_cents, currency, payment_method, status, failure_reason, cart_id';

export async function getOrder(db: pg.Pool | pg.PoolClient, orderId: string): Promise<Order | null> {
  const result = await db.query<OrderRow>({
    name: 'order-get',
    text: `SELECT ${orderColumns} FROM orders WHERE order_id = $1`,
    values: [orderId],
  });
  const row = result.rows[0];
  return row === undefined ? null : toOrder(row);
}

/** Several orders in one round trip (a worker's batch of jobs). */
export async function getOrders(db: pg.Pool | pg.PoolClient, orderIds: string[]): Promise<Map<string, Order>> {
  const result = await db.query<OrderRow>({
    name: 'orders-get-many',
    text: `SELECT ${orderColumns} FROM orders WHERE order_id = ANY($1::uuid[])`,
    values: [orderIds],
  });
  return new Map(result.rows.map((row) => [row.order_id, toOrder(row)]));
}

export async function listOrders(db: pg.Pool): Promise<Order[]> {
  const result = await db.query<OrderRow>(`SELECT ${orderColumns} FROM orders`);
  return result.rows.map(toOrder);
}

/**
 * The outbox's attachment writer: every order created or settled in a batch, as
 * two multi-row statements, plus one pg-boss insert for the batch's jobs (the
 * job id is the order id, so an order can never have two finalize jobs).
 */
export function createOrderWriter(boss: PgBoss, finalizeQueue: string) {
  return async (client: pg.PoolClient, attachments: OrderAttachment[]): Promise<void> => {
    const orders: NewOrder[] = [];
    const settled: Extract<OrderAttachment, { kind: 'order_settled' }>[] = [];
    for (const a of attachments) {
      if (a.kind === 'order_created') orders.push(a.order);
      else settled.push(a);
    }
    if (orders.length > 0) {
      await client.query({
        name: 'orders-insert',
        text: `INSERT INTO orders (order_id, reservation_id, sku, shopper_id, quantity, amount_cents, currency, payment_method, idempotency_key, cart_id)
               SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::int[], $6::bigint[], $7::text[], $8::text[], $9::text[], $10::uuid[])`,
        values: [
          orders.map((o) => o.orderId),
          orders.map((o) => o.reservationId),
          orders.map((o) => o.sku),
          orders.map((o) => o.shopperId),
          orders.map((o) => o.quantity),
          orders.map((o) => o.amountCents),
          orders.map((o) => o.currency),
          orders.map((o) => o.paymentMethod),
          orders.map((o) => o.idempotencyKey),
          orders.map((o) => o.cartId ?? null),
        ],
      });
      await boss.insert(
        orders.map((o) => ({ id: o.orderId, name: finalizeQueue, data: { orderId: o.orderId } })),
        { db: { executeSql: (text, values) => client.query(text, values) } },
      );
    }
    if (settled.length > 0) {
      const rows = settled;
      await client.query({
        name: 'orders-settle',
        text: `UPDATE orders o SET status = s.status, failure_reason = s.reason, settled_at = now()
               FROM unnest($1::uuid[], $2::text[], $3::text[]) AS s(order_id, status, reason)
               WHERE o.order_id = s.order_id AND o.status = 'pending'`,
        values: [rows.map((r) => r.orderId), rows.map((r) => r.status), rows.map((r) => r.failureReason)],
      });
    }
  };
}
