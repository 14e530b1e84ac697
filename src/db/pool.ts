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

/**
 * pg-pool listens for `error` only on idle clients and removes that listener on
 * checkout; an error on a held client's socket (Postgres crashing mid-query)
 * with no listener is an unhandled 'error' event that exits the process. Every
 * holder therefore listens while it holds: the query in flight fails on its own,
 * so the listener only logs. Returns the function that stops listening (call it
 * just before release).
 */
export function holdClient(client: pg.PoolClient | pg.Client, log: Logger, holder: string): () => void {
  const onError = (err: Error) => log.warn({ err, holder }, 'postgres connection error while held');
  client.on('error', onError);
  return () => client.removeListener('error', onError);
}
