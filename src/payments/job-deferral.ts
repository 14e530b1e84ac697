import type pg from 'pg';

/**
 * Putting payment jobs back in the queue without spending a retry (the
 * circuit breaker is open: the provider was never called).
 *
 * pg-boss 10 has no public call for this: `fail` spends a retry, `cancel` +
 * `send` would need a second job id (the job id is the order id: an order has
 * exactly one finalize job) and two statements. So one statement on pg-boss's
 * own table (schema pinned by `bossSchema`, pg-boss ^10): the active job goes
 * back to `retry` with a later `start_after` and `started_on` cleared. pg-boss's
 * fetch increments `retry_count` only for a job whose `started_on` is set, so
 * the next fetch does not count this one. It stays the same single job, so
 * exactly-once holds as before: if this process dies before the statement, the
 * job is still active, expires and is retried like any crashed job.
 */

/** pg-boss's schema, given to PgBoss explicitly so that this SQL and pg-boss agree. */
export const bossSchema = 'pgboss';

function deferActiveJobsSql(): string {
  return `UPDATE ${bossSchema}.job
             SET state = 'retry', started_on = NULL, start_after = now() + $3::int * interval '1 millisecond'
           WHERE name = $1 AND id = ANY($2::uuid[]) AND state = 'active'`;
}

/** Re-queue active jobs of `queue` to start in `delayMs`; returns how many were still active. */
export async function deferActiveJobs(pool: pg.Pool, queue: string, jobIds: string[], delayMs: number): Promise<number> {
  const result = await pool.query({ name: 'payment-jobs-defer', text: deferActiveJobsSql(), values: [queue, jobIds, Math.ceil(delayMs)] });
  return result.rowCount ?? 0;
}
