import PgBoss from 'pg-boss';
import type pg from 'pg';
import type { Logger } from 'pino';
import type { Inventory } from '../inventory/inventory.js';
import { BreakerOpenError, PaymentBreaker, type BreakerOptions } from './breaker.js';
import { createJobQueue } from '../db/job-queues.js';
import { bossSchema, deferActiveJobs } from './job-deferral.js';
import { getOrders, type Order } from './orders.js';
import { TransientPaymentError, type ChargeOutcome, type PaymentProvider } from './provider.js';
import type { CartPayments } from '../carts/checkout.js';

/**
 * Finalizes every payment exactly once, through pg-boss.
 *
 * A `payment-finalize` job (id = order id) is inserted in the same transaction
 * as the checkout. The worker charges with the order id as the provider's
 * idempotency key, then records the outcome through the allocator (the SKU's
 * single writer) together with the order's new status. Every step is safe to
 * repeat: a settled order is skipped, a repeated charge returns the first one,
 * a repeated settle changes nothing. So a job delivered twice, or re-run after
 * the process died anywhere in between, charges once and records once.
 *
 * Transient provider errors are retried by pg-boss with exponential backoff;
 * after the last retry the job lands in `payment-finalize-dead`, whose worker
 * compensates: the hold goes back on sale and the order fails with
 * `payment_unavailable` (unless the provider did charge after all, in which
 * case the sale is honoured).
 *
 * The charge goes through a circuit breaker (breaker.ts). While it is open the
 * provider is not called and the job is deferred (job-deferral.ts) until the
 * breaker lets a probe through, without spending one of its retries; a job
 * deferred for longer than `maxDeferSeconds` since it was created fails like a
 * transient error instead, so a provider that never comes back still ends in
 * the dead letter (one retry per breaker probe, then per deferral).
 */

export const finalizeQueue = 'payment-finalize';
export const deadLetterQueue = 'payment-finalize-dead';

export interface FinalizerOptions {
  retryLimit: number;
  retryDelaySeconds: number;
  /** An active job older than this is presumed dead (its process crashed) and retried. */
  jobExpireSeconds: number;
  batchSize: number;
  /** Concurrent fetch loops per queue. */
  workers: number;
  /** Fault injection for crash tests: SIGKILL this process at that point of a finalization. */
  crashPoint: 'before_charge' | 'after_charge' | 'after_settle' | null;
  breaker: BreakerOptions;
  /** A job older than this no longer waits for an open breaker: it fails and spends a retry. */
  maxDeferSeconds: number;
}

interface FinalizeJob {
  orderId: string;
}

export class PaymentFinalizer {
  private readonly workerIds: string[] = [];
  private wakeScheduled = false;
  /** Batches being handled, so that shutdown can wait for them (within its budget). */
  private readonly inFlight = new Set<Promise<unknown>>();
  readonly breaker: PaymentBreaker;
  readonly stats = { finalized: 0, paid: 0, declined: 0, transientFailures: 0, compensated: 0, deferred: 0 };

  constructor(
    private readonly boss: PgBoss,
    private readonly pool: pg.Pool,
    private readonly inventory: Inventory,
    private readonly provider: PaymentProvider,
    private readonly log: Logger,
    private readonly options: FinalizerOptions,
  ) {
    this.breaker = new PaymentBreaker(provider, options.breaker, log);
  }

  /** Queues with their retry policy; must exist before the first checkout inserts a job. */
  async createQueues(): Promise<void> {
    await createJobQueue(this.boss, deadLetterQueue, { name: deadLetterQueue, retryLimit: 10, retryDelay: 1, retryBackoff: true });
    const policy = {
      name: finalizeQueue,
      retryLimit: this.options.retryLimit,
      retryDelay: this.options.retryDelaySeconds,
      retryBackoff: true,
      expireInSeconds: this.options.jobExpireSeconds,
      deadLetter: deadLetterQueue,
    };
    await createJobQueue(this.boss, finalizeQueue, policy);
    // createQueue keeps an existing queue as it was: apply today's settings.
    await this.boss.updateQueue(finalizeQueue, policy);
  }

  async start(): Promise<void> {
    for (let i = 0; i < this.options.workers; i++) {
      this.workerIds.push(await this.work(finalizeQueue, (order) => this.finalize(order)));
    }
    await this.work(deadLetterQueue, (order) => this.compensate(order));
  }

  /** A checkout just committed: fetch now instead of at the next poll. */
  wake(): void {
    if (this.wakeScheduled) return;
    this.wakeScheduled = true;
    setImmediate(() => {
      this.wakeScheduled = false;
      for (const id of this.workerIds) this.boss.notifyWorker(id);
    });
  }

  private async work(queue: string, handle: (order: Order) => Promise<void>): Promise<string> {
    const batchSize = this.options.batchSize;
    let workerId = '';
    const options = { batchSize, pollingIntervalSeconds: 0.5, includeMetadata: true as const };
    workerId = await this.boss.work<FinalizeJob>(queue, options, (jobs) => {
      // A full batch means more are waiting: skip the poll delay.
      if (jobs.length === batchSize) this.boss.notifyWorker(workerId);
      const batch = this.handleBatch(queue, jobs, handle);
      this.inFlight.add(batch);
      void batch.finally(() => this.inFlight.delete(batch)).catch(() => undefined);
      return batch;
    });
    return workerId;
  }

  /**
   * Resolving completes every job of the batch that is still active; so each job
   * that did not succeed is first moved out of `active` (failed, or deferred).
   * If that move fails, throwing makes pg-boss fail the batch's active jobs
   * rather than complete them (a retry of a settled order changes nothing).
   */
  private async handleBatch(queue: string, jobs: PgBoss.JobWithMetadata<FinalizeJob>[], handle: (order: Order) => Promise<void>): Promise<number> {
    const failed: string[] = [];
    const deferred: string[] = [];
    let unmarked = 0;
    let retryAfterMs = 0;
    const orders = await getOrders(this.pool, jobs.map((job) => job.data.orderId));
    await Promise.all(
      jobs.map(async (job) => {
        try {
          const order = orders.get(job.data.orderId);
          if (order === undefined) {
            this.log.error({ orderId: job.data.orderId, queue }, 'job for an order that does not exist');
            return;
          }
          await handle(order);
        } catch (error) {
          if (error instanceof BreakerOpenError && Date.now() - job.createdOn.getTime() < this.options.maxDeferSeconds * 1000) {
            deferred.push(job.id);
            retryAfterMs = Math.max(retryAfterMs, error.retryAfterMs);
            return;
          }
          if (error instanceof TransientPaymentError || error instanceof BreakerOpenError) this.stats.transientFailures += 1;
          this.log.warn({ err: error, orderId: job.data.orderId, queue }, 'payment job failed; pg-boss will retry');
          failed.push(job.id);
          await this.boss.fail(queue, job.id, { message: (error as Error).message }).catch((err: unknown) => {
            unmarked += 1;
            this.log.error({ err, jobId: job.id }, 'could not mark the job failed');
          });
        }
      }),
    );
    if (deferred.length > 0) {
      // Spread the returns over 10% of the wait so that they do not all land on the probe at once.
      const delayMs = retryAfterMs + Math.floor(Math.random() * retryAfterMs * 0.1);
      await deferActiveJobs(this.pool, queue, deferred, delayMs).then(
        () => {
          this.stats.deferred += deferred.length;
          this.log.info({ queue, jobs: deferred.length, delayMs }, 'payment breaker open: jobs deferred without spending a retry');
        },
        (err: unknown) => {
          unmarked += deferred.length;
          this.log.error({ err, jobs: deferred.length }, 'could not defer jobs');
        },
      );
    }
    if (unmarked > 0) throw new Error(`${unmarked} job(s) could not be marked failed or deferred; failing the batch so none completes`);
    return failed.length;
  }

  /** Wait for the batches being handled, at most `timeoutMs`; true when none is left. */
  async drain(timeoutMs: number): Promise<boolean> {
    if (this.inFlight.size === 0) return true;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    const done = Promise.allSettled([...this.inFlight]).then(() => true);
    try {
      return await Promise.race([done, timedOut]);
    } finally {
      clearTimeout(timer);
    }
  }

  private crash(point: FinalizerOptions['crashPoint']): void {
    if (this.options.crashPoint === point) {
      this.log.fatal({ point }, 'fault injection: SIGKILL');
      process.kill(process.pid, 'SIGKILL');
    }
  }

  /** The cart side of the inventory (a Router has it): a cart's order has lines on many shards. */
  private get carts(): CartPayments | undefined {
    return (this.inventory as { carts?: { payments: CartPayments } }).carts?.payments;
  }

  async finalize(order: Order): Promise<void> {
    if (order.cartId != null) return this.finalizeCart(order, this.carts!);
    if (order.status !== 'pending') return;
    const charge = await this.charge(order);
    await this.record(order, charge.status === 'succeeded' ? 'committed' : 'payment_failed', charge.status === 'declined' ? charge.reason : null);
    this.crash('after_settle');
    this.counted(charge);
  }

  /** The one charge of an order (its id is the provider's idempotency key), between the crash points tests use. */
  private async charge(order: Order): Promise<ChargeOutcome> {
    this.crash('before_charge');
    const charge = await this.breaker.charge({
      idempotencyKey: order.orderId,
      amountCents: order.amountCents,
      currency: order.currency,
      paymentMethod: order.paymentMethod,
    });
    this.crash('after_charge');
    return charge;
  }

  private counted(charge: ChargeOutcome): void {
    this.stats.finalized += 1;
    if (charge.status === 'succeeded') this.stats.paid += 1;
    else this.stats.declined += 1;
  }

  /**
   * A cart's order: every line frozen first (a line that cannot be fails the order uncharged), then
   * one charge for all, then every line settled. A retried job of a settled order settles every
   * line again as the order says (a crash between lines leaves none frozen).
   */
  private async finalizeCart(order: Order, carts: CartPayments): Promise<void> {
    if (order.status !== 'pending') return carts.settleOrder(order, order.status === 'paid' ? 'committed' : 'payment_failed', order.failureReason);
    if (!(await carts.freezeOrder(order))) return carts.settleOrder(order, 'payment_failed', 'cart_expired');
    const charge = await this.charge(order);
    await carts.settleOrder(order, charge.status === 'succeeded' ? 'committed' : 'payment_failed', charge.status === 'declined' ? charge.reason : null);
    this.counted(charge);
  }

  /** Dead letter: the provider never answered. Give the stock back, unless it did charge. */
  async compensate(order: Order): Promise<void> {
    if (order.status !== 'pending' && order.cartId == null) return;
    const charges = await this.provider.chargesFor(order.orderId);
    const charged = charges.some((c) => c.status === 'succeeded');
    if (order.cartId != null) {
      const outcome = order.status === 'pending' ? (charged ? 'committed' : 'payment_failed') : order.status === 'paid' ? 'committed' : 'payment_failed';
      await this.carts!.settleOrder(order, outcome, outcome === 'committed' ? null : 'payment_unavailable');
      this.stats.compensated += 1;
      return;
    }
    await this.record(order, charged ? 'committed' : 'payment_failed', charged ? null : 'payment_unavailable');
    this.stats.compensated += 1;
    this.log.warn({ orderId: order.orderId, charged }, 'payment dead-lettered: compensated');
  }

  async record(order: Pick<Order, 'sku' | 'reservationId' | 'orderId'>, outcome: 'committed' | 'payment_failed', failureReason: string | null): Promise<void> {
    const settled = await this.inventory.settle({ sku: order.sku, reservationId: order.reservationId, orderId: order.orderId, outcome, failureReason });
    if (!settled.ok) throw new Error(`could not record the payment outcome: ${settled.code}: ${settled.detail}`);
  }

  /** Stop fetching; batches already fetched go on (see drain). */
  async stop(): Promise<void> {
    await this.boss.offWork(finalizeQueue).catch(() => undefined);
    await this.boss.offWork(deadLetterQueue).catch(() => undefined);
  }
}

export function createBoss(databaseUrl: string, log: Logger, maintenanceIntervalSeconds: number): PgBoss {
  const boss = new PgBoss({
    connectionString: databaseUrl,
    max: 4,
    application_name: 'flashstock-jobs',
    schema: bossSchema,
    maintenanceIntervalSeconds,
  });
  boss.on('error', (err) => log.error({ err }, 'pg-boss error'));
  return boss;
}
