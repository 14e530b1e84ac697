import type pg from 'pg';
import type { CartDecision, CartFailure, CartLine } from './types.js';

/**
 * The cart tables' SQL (migrations/009_carts.sql). Rows are written once and
 * never changed: an insert that finds its row there already does nothing, and
 * the statement returns the row as it is, whoever wrote it. A conflicting
 * insert still in flight elsewhere is not visible to this statement's snapshot
 * yet: then nothing comes back, and the caller runs it again.
 */

const cartColumns = `c.cart_id, c.shopper_id, c.request_hash, c.lines, d.decision, d.expires_at_ms, d.failure`;

export interface CartRow {
  cart_id: string;
  shopper_id: string;
  request_hash: string;
  lines: CartLine[];
  decision: CartDecision | null;
  expires_at_ms: string | null;
  failure: CartFailure | null;
}

/** The cart's row (inserted if new) with its decision, if any. */
export function beginCartQuery(cartId: string, shopperId: string, idempotencyKey: string, requestHash: string, lines: CartLine[]): pg.QueryConfig {
  return {
    name: 'carts-begin',
    text: `WITH inserted AS (
             INSERT INTO carts (cart_id, shopper_id, idempotency_key, request_hash, lines)
             VALUES ($1::uuid, $2::text, $3::text, $4::text, $5::jsonb) ON CONFLICT (cart_id) DO NOTHING RETURNING cart_id)
           SELECT $1::uuid AS cart_id, $2::text AS shopper_id, $4::text AS request_hash, $5::jsonb AS lines,
                  NULL::text AS decision, NULL::bigint AS expires_at_ms, NULL::jsonb AS failure
             FROM inserted
           UNION ALL
           SELECT ${cartColumns} FROM carts c LEFT JOIN cart_decisions d USING (cart_id) WHERE c.cart_id = $1`,
    values: [cartId, shopperId, idempotencyKey, requestHash, JSON.stringify(lines)],
  };
}

/** The cart's decision: this one if it is the first, else the one already there (first writer wins). */
export function decideCartQuery(
  cartId: string,
  decision: CartDecision,
  expiresAtMs: number | null,
  failure: CartFailure | null,
  decidedBy: 'coordinator' | 'shard',
): pg.QueryConfig {
  return {
    name: 'carts-decide',
    text: `WITH inserted AS (
             INSERT INTO cart_decisions (cart_id, decision, expires_at_ms, failure, decided_by)
             SELECT $1::uuid, $2::text, $3::bigint, $4::jsonb, $5::text WHERE EXISTS (SELECT 1 FROM carts WHERE cart_id = $1::uuid)
             ON CONFLICT (cart_id) DO NOTHING RETURNING cart_id, decision, expires_at_ms, failure)
           SELECT ${cartColumns.replace(/d\./g, 'i.')} FROM inserted i JOIN carts c USING (cart_id)
           UNION ALL
           SELECT ${cartColumns} FROM carts c JOIN cart_decisions d USING (cart_id) WHERE c.cart_id = $1`,
    values: [cartId, decision, expiresAtMs, failure === null ? null : JSON.stringify(failure), decidedBy],
  };
}

export function cartQuery(cartId: string): pg.QueryConfig {
  return {
    name: 'carts-get',
    text: `SELECT ${cartColumns} FROM carts c LEFT JOIN cart_decisions d USING (cart_id) WHERE c.cart_id = $1`,
    values: [cartId],
  };
}
