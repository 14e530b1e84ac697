import type pg from 'pg';
import type { Logger } from 'pino';
import { workerFile, type SnapshotWorkers } from '../snapshot/workers.js';
import type { AuditTask, AuditWorkerResult, Violation } from './audit-worker.js';
import type { PaymentProvider } from './provider.js';

/**
 * The ledger audit: the event log, the orders and the provider's own records
 * must tell one story. The heavy part runs in a worker thread (audit-worker.ts)
 * with its own Postgres connection: every SKU rebuilt from its latest snapshot
 * plus the log after it by the same pure allocator (which asserts stock =
 * available + held + sold on every event), and orders matched with charges and
 * with their reservations' last events in SQL. This thread only compares the
 * rebuilt totals with the live ones, so the allocators keep answering.
 */

export interface AuditReport {
  ok: boolean;
  checkedAt: string;
  skus: number;
  orders: number;
  successfulCharges: number;
  violations: Violation[];
}

/** A SKU's live totals, as the shell publishes them. */
export interface LiveStockState {
  sku: string;
  available: number;
  held: number;
  sold: number;
  seq: number;
}

export interface AuditDeps {
  pool: pg.Pool;
  /** The database the worker connects to on its own. */
  databaseUrl: string;
  /** Live totals of a SKU (null when not in memory: not compared). */
  stockState: (sku: string) => LiveStockState | null;
  /** Resolves once decisions already made have reached the log. */
  settled: () => Promise<void>;
  provider: PaymentProvider;
  log: Logger;
  workers: SnapshotWorkers;
}

const auditWorkerFile = workerFile(import.meta.url, 'audit-worker');

export async function runLedgerAudit(deps: AuditDeps): Promise<AuditReport> {
  const { stockState, provider, log, workers } = deps;
  // Let decisions already made reach the log, so live and logged state line up.
  await deps.settled();
  const charges = await provider.successfulCharges();
  const task: AuditTask = { databaseUrl: deps.databaseUrl, chargeKeys: charges.map((c) => c.idempotencyKey) };
  const result = await workers.run<AuditWorkerResult>(auditWorkerFile, task);
  const violations = [...result.violations];
  for (const logged of result.skus) {
    const live = stockState(logged.sku);
    if (live === null || live.seq !== logged.seq) continue; // moved on since the worker read the log
    if (live.available !== logged.available || live.held !== logged.held || live.sold !== logged.sold) {
      const { sku: _sku, seq: _seq, ...totals } = logged;
      violations.push({
        kind: 'live_state_mismatch',
        sku: logged.sku,
        detail: `live ${JSON.stringify(live)} but the log says ${JSON.stringify(totals)}`,
      });
    }
  }
  for (const violation of violations) log.error({ violation }, 'ledger audit violation');
  return {
    ok: violations.length === 0,
    checkedAt: new Date().toISOString(),
    skus: result.skus.length,
    orders: result.orders,
    successfulCharges: charges.length,
    violations,
  };
}
