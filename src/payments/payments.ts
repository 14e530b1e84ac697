import type pg from 'pg';
import type PgBoss from 'pg-boss';
import type { Logger } from 'pino';
import { createJobQueue } from '../db/job-queues.js';
import type { Inventory, StockState } from '../inventory/inventory.js';
import type { SnapshotWorkers } from '../snapshot/workers.js';
import { runLedgerAudit, type AuditReport } from './audit.js';
import type { PaymentBreaker } from './breaker.js';
import { PaymentFinalizer, finalizeQueue, type FinalizerOptions } from './finalizer.js';
import { getOrder, type Order } from './orders.js';
import type { PaymentProvider, ProviderCharge } from './provider.js';
import { handleWebhook, verifyWebhookSignature, type WebhookDelivery, type WebhookResult } from './webhook.js';

export interface OrderView {
  orderId: string;
  reservationId: string;
  sku: string;
  quantity: number;
  amountCents: number;
  currency: string;
  status: Order['status'];
  failureReason?: string;
}

export function orderView(order: Order): OrderView {
  const view: OrderView = {
    orderId: order.orderId,
    reservationId: order.reservationId,
    sku: order.sku,
    quantity: order.quantity,
    amountCents: order.amountCents,
    currency: order.currency,
    status: order.status,
  };
  if (order.failureReason !== null) view.failureReason = order.failureReason;
  return view;
}

export const auditQueue = 'ledger-audit';

/** The live side the audit compares with the log, and the background threads it runs on. */
export interface LedgerSource {
  stockState(sku: string): StockState | null;
  /** Resolves once everything decided so far is durable. */
  settled(): Promise<void>;
  databaseUrl: string;
  workers: SnapshotWorkers;
}

/** What the HTTP layer may ask about payments: orders, the provider's records, webhooks, audits. */
export class Payments {
  readonly finalizer: PaymentFinalizer;
  constructor(
    private readonly boss: PgBoss,
    private readonly pool: pg.Pool,
    inventory: Inventory,
    /** What the audit compares the log with, and where its worker runs (the shards' background threads). */
    private readonly ledger: LedgerSource,
    readonly provider: PaymentProvider,
    private readonly log: Logger,
    private readonly webhookSecret: string | null,
    finalizerOptions: FinalizerOptions,
    private readonly auditCron: string | null,
  ) {
    this.finalizer = new PaymentFinalizer(boss, pool, inventory, provider, log, finalizerOptions);
  }

  /** The provider's circuit breaker: `state`, `onStateChange` (for metrics). */
  get breaker(): PaymentBreaker {
    return this.finalizer.breaker;
  }

  get queue(): string {
    return finalizeQueue;
  }

  /** Before recovery: queues must exist before a checkout can insert a job. */
  async prepare(): Promise<void> {
    await this.finalizer.createQueues();
    await createJobQueue(this.boss, auditQueue, { name: auditQueue, retryLimit: 0 });
  }

  /** After recovery: start working jobs, and schedule the audit. */
  async start(): Promise<void> {
    await this.finalizer.start();
    await this.boss.work(auditQueue, async () => {
      const report = await this.audit();
      this.log.info({ ok: report.ok, violations: report.violations.length, orders: report.orders }, 'scheduled ledger audit');
    });
    if (this.auditCron !== null) await this.boss.schedule(auditQueue, this.auditCron);
  }

  async order(orderId: string, shopperId: string | null): Promise<OrderView | null> {
    const order = await getOrder(this.pool, orderId);
    if (order === null || (shopperId !== null && order.shopperId !== shopperId)) return null;
    return orderView(order);
  }

  async adminOrder(orderId: string): Promise<(OrderView & { shopperId: string; paymentMethod: string; charges: ProviderCharge[] }) | null> {
    const order = await getOrder(this.pool, orderId);
    if (order === null) return null;
    const charges = await this.provider.chargesFor(orderId);
    return { ...orderView(order), shopperId: order.shopperId, paymentMethod: order.paymentMethod, charges };
  }

  verifyWebhook(rawBody: Buffer, signature: string): boolean {
    return this.webhookSecret !== null && signature !== '' && verifyWebhookSignature(this.webhookSecret, rawBody, signature);
  }

  webhook(delivery: WebhookDelivery): Promise<WebhookResult> {
    return handleWebhook({ pool: this.pool, finalizer: this.finalizer, provider: this.provider, log: this.log }, delivery);
  }

  audit(): Promise<AuditReport> {
    return runLedgerAudit({
      pool: this.pool,
      databaseUrl: this.ledger.databaseUrl,
      stockState: (sku) => this.ledger.stockState(sku),
      settled: () => this.ledger.settled(),
      provider: this.provider,
      log: this.log,
      workers: this.ledger.workers,
    });
  }

  /**
   * Stop fetching jobs, then wait at most `drainTimeoutMs` for the batches in
   * hand. True when they all finished; false when some are still running (pg-boss
   * fails them when it stops, and they are retried: every step is idempotent).
   */
  async stop(drainTimeoutMs = 0): Promise<boolean> {
    await this.finalizer.stop();
    await this.boss.offWork(auditQueue).catch(() => undefined);
    const drained = await this.finalizer.drain(drainTimeoutMs);
    this.finalizer.breaker.shutdown();
    return drained;
  }
}
