import pg from 'pg';

/**
 * Worker threads' own Postgres connections: one small pool per database URL per
 * thread, kept while the thread lives (piscina reuses threads), so a task does
 * not pay a connection set-up. Idle-client errors are reported on stderr and
 * the pool reconnects on the next query.
 */
const pools = new Map<string, pg.Pool>();

/** At most this many connections per worker thread. */
const connectionsPerThread = 2;

export function workerPool(databaseUrl: string): pg.Pool {
  let pool = pools.get(databaseUrl);
  if (pool === undefined) {
    pool = new pg.Pool({
      connectionString: databaseUrl,
      max: connectionsPerThread,
      idleTimeoutMillis: 10_000,
      connectionTimeoutMillis: 5_000,
      application_name: 'flashstock-worker',
    });
    pool.on('error', (err) => {
      process.stderr.write(`flashstock worker: idle postgres client error: ${err.message}\n`);
    });
    pools.set(databaseUrl, pool);
  }
  return pool;
}
