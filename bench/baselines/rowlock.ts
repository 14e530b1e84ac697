import { randomUUID } from 'node:crypto';
import pg from 'pg';
import uWS from 'uWebSockets.js';
import { adminSkuRoute, env, problem, reply, reservationRoute, serve, type Answer } from './common.js';

/**
 * The seeds' database design: per reservation one transaction that locks the
 * SKU row (SELECT ... FOR UPDATE), checks stock and the shopper's limit,
 * UPDATEs the stock and INSERTs the reservation, then COMMITs. Durable, and
 * every buyer of one SKU waits in line for that row lock. Its tables live
 * beside the service's in the same Postgres.
 */

const pool = new pg.Pool({ connectionString: env('DATABASE_URL'), max: Number(process.env.ROWLOCK_POOL_MAX ?? 8) });
const jwtSecret = env('JWT_SECRET');

await pool.query(`
  CREATE TABLE IF NOT EXISTS bench_rowlock_skus (
    sku text PRIMARY KEY, stock integer NOT NULL, available integer NOT NULL CHECK (available >= 0),
    per_shopper_limit integer NOT NULL, hold_seconds integer NOT NULL, price_cents integer NOT NULL, currency text NOT NULL);
  CREATE TABLE IF NOT EXISTS bench_rowlock_reservations (
    reservation_id uuid PRIMARY KEY, sku text NOT NULL REFERENCES bench_rowlock_skus, shopper_id text NOT NULL,
    quantity integer NOT NULL, idempotency_key text NOT NULL, expires_at_ms bigint NOT NULL,
    seq bigserial, UNIQUE (shopper_id, idempotency_key));
  CREATE INDEX IF NOT EXISTS bench_rowlock_reservations_sku_shopper ON bench_rowlock_reservations (sku, shopper_id);
`);

interface SkuRow {
  sku: string;
  stock: number;
  available: number;
  per_shopper_limit: number;
  hold_seconds: number;
  price_cents: number;
  currency: string;
}

function view(row: SkuRow): unknown {
  return {
    sku: row.sku,
    stock: row.stock,
    available: row.available,
    held: row.stock - row.available,
    sold: 0,
    perShopperLimit: row.per_shopper_limit,
    holdSeconds: row.hold_seconds,
    priceCents: row.price_cents,
    currency: row.currency,
    startsAt: null,
    endsAt: null,
  };
}

async function reserve(sku: string, shopperId: string, key: string, quantity: number): Promise<Answer> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const locked = await client.query<SkuRow>('SELECT * FROM bench_rowlock_skus WHERE sku = $1 FOR UPDATE', [sku]);
    const row = locked.rows[0];
    if (row === undefined) {
      await client.query('ROLLBACK');
      return problem(404, 'not_found', `no SKU ${sku}`);
    }
    const mine = await client.query<{ total: string }>(
      'SELECT coalesce(sum(quantity), 0) AS total FROM bench_rowlock_reservations WHERE sku = $1 AND shopper_id = $2',
      [sku, shopperId],
    );
    if (Number(mine.rows[0]!.total) + quantity > row.per_shopper_limit) {
      await client.query('ROLLBACK');
      return problem(409, 'limit_exceeded', 'over the per-shopper limit');
    }
    if (row.available < quantity) {
      await client.query('ROLLBACK');
      return problem(409, 'sold_out', `${row.available} left`);
    }
    await client.query('UPDATE bench_rowlock_skus SET available = available - $2 WHERE sku = $1', [sku, quantity]);
    const id = randomUUID();
    const expiresAtMs = Date.now() + row.hold_seconds * 1000;
    await client.query(
      'INSERT INTO bench_rowlock_reservations (reservation_id, sku, shopper_id, quantity, idempotency_key, expires_at_ms) VALUES ($1, $2, $3, $4, $5, $6)',
      [id, sku, shopperId, quantity, key, expiresAtMs],
    );
    await client.query('COMMIT');
    return { status: 201, body: { reservationId: id, sku, quantity, status: 'held', expiresAt: new Date(expiresAtMs).toISOString() } };
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {});
    if ((error as { code?: string }).code === '23505') return problem(422, 'idempotency_key_reused', 'key already used');
    return problem(503, 'unavailable', (error as Error).message);
  } finally {
    client.release();
  }
}

const app = uWS
  .App()
  .post('/v1/skus/:sku/reservations', reservationRoute(jwtSecret, (r) => reserve(r.sku, r.shopperId, r.idempotencyKey, r.quantity)))
  .get('/v1/skus/:sku', (res, req) => {
    const sku = req.getParameter(0) ?? '';
    res.onAborted(() => {
      (res as { aborted?: boolean }).aborted = true;
    });
    pool.query<SkuRow>('SELECT * FROM bench_rowlock_skus WHERE sku = $1', [sku]).then(
      (r) => reply(res, r.rows[0] === undefined ? problem(404, 'not_found', `no SKU ${sku}`) : { status: 200, body: view(r.rows[0]) }),
      (error: Error) => reply(res, problem(503, 'unavailable', error.message)),
    );
  })
  .put(
    '/v1/admin/skus/:sku',
    adminSkuRoute(env('ADMIN_TOKEN'), async (sku, input): Promise<Answer> => {
      const r = await pool.query<SkuRow & { inserted: boolean }>(
        `INSERT INTO bench_rowlock_skus (sku, stock, available, per_shopper_limit, hold_seconds, price_cents, currency)
         VALUES ($1, $2, $2, $3, $4, $5, $6)
         ON CONFLICT (sku) DO UPDATE SET available = EXCLUDED.stock - (bench_rowlock_skus.stock - bench_rowlock_skus.available),
           stock = EXCLUDED.stock, per_shopper_limit = EXCLUDED.per_shopper_limit, hold_seconds = EXCLUDED.hold_seconds,
           price_cents = EXCLUDED.price_cents, currency = EXCLUDED.currency
         RETURNING *, (xmax = 0) AS inserted`,
        [sku, input.stock, input.perShopperLimit, input.holdSeconds, input.priceCents, input.currency],
      );
      const row = r.rows[0]!;
      return { status: row.inserted ? 201 : 200, body: view(row) };
    }),
  )
  .get('/healthz', (res) => reply(res, { status: 200, body: { ok: true } }));

serve(app, () => pool.end());
