import type PgBoss from 'pg-boss';
import type { Logger } from './log.js';
import type { Payments } from './payments/payments.js';

/**
 * The jobs' share of a graceful shutdown, so that payment workers cannot eat
 * the time the outbox needs to commit the open batch and answer in-flight
 * requests. Of SHUTDOWN_TIMEOUT_MS, the payment batches in hand get
 * SHUTDOWN_PAYMENTS_TIMEOUT_MS to finish, then pg-boss gets
 * SHUTDOWN_JOBS_TIMEOUT_MS to stop (it fails the jobs still running; they are
 * retried after a restart, and every payment step is idempotent); the rest,
 * at least COMMIT_TIMEOUT_MS (checked in config.ts), is the outbox's.
 */
export interface JobShutdownBudget {
  paymentsMs: number;
  jobsMs: number;
}

export async function stopJobsWithinBudget(payments: Payments, boss: PgBoss, budget: JobShutdownBudget, log: Logger): Promise<void> {
  const startedMs = Date.now();
  const drained = await payments.stop(budget.paymentsMs);
  if (!drained) {
    log.warn({ budgetMs: budget.paymentsMs }, 'shutdown: payment jobs still running past their budget; pg-boss fails them and they are retried');
  }
  await boss.stop({ graceful: true, wait: true, timeout: budget.jobsMs });
  log.info({ ms: Date.now() - startedMs, drained }, 'shutdown: payment workers and pg-boss stopped');
}
