import type pg from 'pg';
import type { Config } from '../config.js';
import type { Inventory } from '../inventory/inventory.js';
import type { Logger } from '../log.js';
import { createBoss } from '../payments/finalizer.js';
import { Payments, type LedgerSource } from '../payments/payments.js';
import { SimulatedPaymentProvider } from '../payments/simulated-provider.js';
import type PgBoss from 'pg-boss';
import { stopJobsWithinBudget } from '../shutdown-budget.js';

/** pg-boss and the payment finalizer, webhooks and audit on top of it. */
export interface PaymentsService {
  boss: PgBoss;
  payments: Payments;
  /** After the shards recovered: work jobs, schedule the audit. */
  start(): Promise<void>;
  /** Let in-flight jobs finish (they settle through the shards), then stop pg-boss. */
  stop(): Promise<void>;
}

export interface PaymentsDependencies {
  config: Config;
  log: Logger;
  pool: pg.Pool;
  /** Started by `startBoss`: the shards need it first, to enqueue jobs with their checkouts. */
  boss: PgBoss;
  inventory: Inventory;
  /** What the audit compares the log with, and the threads it runs on. */
  ledger: LedgerSource;
  webhookSecret: string | null;
}

/** pg-boss keeps its own schema; it starts before the shards so their checkouts can insert jobs. */
export async function startBoss(config: Config, databaseUrl: string, log: Logger): Promise<PgBoss> {
  const boss = createBoss(databaseUrl, log, config.pgBossMaintenanceIntervalSeconds);
  await boss.start();
  return boss;
}

/** Queues exist before the shards recover, so the first checkout after recovery can insert its job. */
export async function preparePayments(deps: PaymentsDependencies): Promise<PaymentsService> {
  const { config, log, pool, boss } = deps;
  const stopBoss = () => boss.stop({ graceful: true, wait: true, timeout: config.shutdownJobsTimeoutMs });
  try {
    const provider = new SimulatedPaymentProvider(pool, config.simulatedPaymentLatencyMs);
    const payments = new Payments(boss, pool, deps.inventory, deps.ledger, provider, log, deps.webhookSecret, {
      retryLimit: config.paymentRetryLimit,
      retryDelaySeconds: config.paymentRetryDelaySeconds,
      jobExpireSeconds: config.paymentJobExpireSeconds,
      batchSize: config.paymentWorkerBatchSize,
      workers: config.paymentWorkers,
      crashPoint: config.faultCrashPoint,
      breaker: {
        volumeThreshold: config.paymentBreakerVolumeThreshold,
        errorPercent: config.paymentBreakerErrorPercent,
        windowSeconds: config.paymentBreakerWindowSeconds,
        resetSeconds: config.paymentBreakerResetSeconds,
        timeoutMs: config.paymentProviderTimeoutMs,
      },
      maxDeferSeconds: config.paymentBreakerMaxDeferSeconds,
    }, config.auditCron);
    await payments.prepare();
    let stopped: Promise<void> | null = null;
    return {
      boss,
      payments,
      start: () => payments.start(),
      stop: () => {
        // Within budgets: the rest of the shutdown time is the outbox's (src/shutdown-budget.ts).
        stopped ??= stopJobsWithinBudget(payments, boss, { paymentsMs: config.shutdownPaymentsTimeoutMs, jobsMs: config.shutdownJobsTimeoutMs }, log);
        return stopped;
      },
    };
  } catch (error) {
    await stopBoss();
    throw error;
  }
}
