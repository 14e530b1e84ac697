import type pg from 'pg';
import { beginCartQuery, cartQuery, decideCartQuery, type CartRow } from './sql.js';
import type { CartDecision, CartFailure, CartLine, CartRecord } from './types.js';

/** How often a statement that met a concurrent writer's row in flight is run again before giving up. */
const maxAttempts = 5;

/**
 * The cart tables, for the shard that is a cart's home (and for a shard
 * resolving a late line): begin, decide, read. Each is one statement.
 */
export class CartStore {
  constructor(private readonly pool: pg.Pool) {}

  /** The cart's row, written now if it is new. */
  begin(cartId: string, shopperId: string, idempotencyKey: string, requestHash: string, lines: CartLine[]): Promise<CartRecord> {
    return this.once(beginCartQuery(cartId, shopperId, idempotencyKey, requestHash, lines), cartId);
  }

  /** The cart's decision: `decision` if it is the first, else the one made before (the cart's row must exist). */
  decide(
    cartId: string,
    decision: CartDecision,
    expiresAtMs: number | null,
    failure: CartFailure | null,
    decidedBy: 'coordinator' | 'shard',
  ): Promise<CartRecord> {
    return this.once(decideCartQuery(cartId, decision, expiresAtMs, failure, decidedBy), cartId);
  }

  async get(cartId: string): Promise<CartRecord | null> {
    const { rows } = await this.pool.query<CartRow>(cartQuery(cartId));
    return rows.length === 0 ? null : recordOf(rows[0]!);
  }

  private async once(query: pg.QueryConfig, cartId: string): Promise<CartRecord> {
    for (let attempt = 1; ; attempt++) {
      const { rows } = await this.pool.query<CartRow>(query);
      if (rows.length > 0) return recordOf(rows[0]!);
      if (attempt >= maxAttempts) throw new Error(`cart ${cartId}: its row stayed invisible after ${maxAttempts} attempts`);
    }
  }
}

function recordOf(row: CartRow): CartRecord {
  return {
    cartId: row.cart_id,
    shopperId: row.shopper_id,
    requestHash: row.request_hash,
    lines: row.lines,
    decision: row.decision,
    expiresAtMs: row.expires_at_ms === null ? null : Number(row.expires_at_ms),
    failure: row.failure,
  };
}
