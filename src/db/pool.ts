import pg from 'pg';
import type { Logger } from '../log.js';

/**
 * A bounded pool. int8 (bigint, OID 20) and numeric stay strings, as pg returns
 * them by default; callers convert. Errors on idle clients (e.g. the server
 * restarting) are logged, not thrown: the pool drops that client and the next
 * checkout reconnects.
 */
export function createPool(url: string, max: number, log: Logger): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max,
    idleTimeoutMillis: 30_000,
    connectionTimeoutMillis: 5_000,
    application_name: 'flashstock',
    keepAlive: true,
  });
  pool.on('error', (err) => {
    log.error({ err }, 'postgres pool: idle client error');
  });
  return pool;
}
