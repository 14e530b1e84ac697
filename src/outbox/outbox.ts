import type pg from 'pg';
import type { Logger } from 'pino';
import type { StockEvent } from '../allocator/types.js';
import { insertEventsQuery } from './event-log.js';

/**
 * Group commit. Decisions are appended here the moment the allocator makes
 * them; their callbacks run only after the batch holding them has committed.
 *
 * Policy: one commit in flight at a time. The first append schedules a flush
 * for the end of the current event-loop turn (setImmediate), so everything
 * decided in that turn shares one INSERT; while a commit is in flight, new
 * decisions queue and go together in the next one. Batches therefore grow with
 * load and with commit latency, and at low load nothing waits for a timer.
 * Serial commits also keep each SKU's log gap-free: a later batch can never
 * land while an earlier one might still fail.
 */

export interface OutboxOptions {
  /** Most events in one INSERT. */
  batchMaxEvents: number;
  /** Most events waiting for a commit; past it callers must refuse work (503). */
  maxPendingEvents: number;
  /** A commit that takes longer fails its batch (and its connection is dropped). */
  commitTimeoutMs: number;
}

export const defaultOutboxOptions: OutboxOptions = {
  batchMaxEvents: 4096,
  maxPendingEvents: 50_000,
  commitTimeoutMs: 5_000,
};

export type Durable = (error: Error | null) => void;

/**
 * Rows that must commit in the same transaction as their events (orders, their
 * pg-boss jobs). The outbox hands every attachment of a batch to one writer
 * call, so a batch of 500 checkouts is a few multi-row statements, not 500.
 */
export type AttachmentWriter<A> = (client: pg.PoolClient, attachments: A[]) => Promise<void>;

interface Entry<A> {
  /** null: a barrier, settled once everything appended before it is durable. */
  event: StockEvent | null;
  sku: string;
  durable: Durable;
  attachment: A | undefined;
}

export class CommitError extends Error {
  override name = 'CommitError';
  constructor(
    message: string,
    override readonly cause: unknown,
    /** Another writer already holds one of these (sku, seq): we are fenced out. */
    readonly fenced: boolean,
  ) {
    super(message);
  }
}

export interface BatchFailure {
  error: CommitError;
  /** SKUs whose in-memory state ran ahead of the log and must be rebuilt. */
  skus: Set<string>;
  /** First seq this process tried to write per SKU in the failed batch. */
  firstSeqs: Map<string, number>;
}

export interface OutboxStats {
  batches: number;
  events: number;
  failedBatches: number;
  lastBatchEvents: number;
  maxBatchEvents: number;
}

export class Outbox<A = never> {
  private queue: Entry<A>[] = [];
  private inFlight = false;
  private scheduled = false;
  private idleWaiters: (() => void)[] = [];
  readonly stats: OutboxStats = { batches: 0, events: 0, failedBatches: 0, lastBatchEvents: 0, maxBatchEvents: 0 };

  constructor(
    private readonly pool: pg.Pool,
    private readonly options: OutboxOptions,
    private readonly log: Logger,
    /** Called synchronously after a failed commit, before any other work can append. */
    private readonly onBatchFailed: (failure: BatchFailure) => void,
    private readonly writeAttachments: AttachmentWriter<A> | null = null,
  ) {}

  get pendingEvents(): number {
    return this.queue.length;
  }

  /** Whether `count` more events fit; check before deciding, since a decision cannot be taken back. */
  hasRoom(count = 1): boolean {
    return this.queue.length + count <= this.options.maxPendingEvents;
  }

  append(event: StockEvent, durable: Durable, attachment?: A): void {
    this.queue.push({ event, sku: event.sku, durable, attachment });
    this.schedule();
  }

  /** `durable` runs once everything appended for any SKU so far has committed (or failed, for `sku`). */
  barrier(sku: string, durable: Durable): void {
    if (this.queue.length === 0 && !this.inFlight) {
      durable(null);
      return;
    }
    this.queue.push({ event: null, sku, durable, attachment: undefined });
    this.schedule();
  }

  /** Resolves when nothing is queued or in flight (graceful shutdown). */
  drained(): Promise<void> {
    if (this.queue.length === 0 && !this.inFlight) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private schedule(): void {
    if (this.scheduled || this.inFlight) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      void this.flush();
    });
  }

  private async flush(): Promise<void> {
    if (this.inFlight) return;
    if (this.queue.length === 0) {
      this.notifyIdle();
      return;
    }
    this.inFlight = true;
    const batch = this.takeBatch();
    const events: StockEvent[] = [];
    const attachments: A[] = [];
    for (const entry of batch) {
      if (entry.event !== null) events.push(entry.event);
      if (entry.attachment !== undefined) attachments.push(entry.attachment);
    }

    let failure: CommitError | null = null;
    if (events.length > 0) {
      try {
        await this.commit(events, attachments);
        this.stats.batches += 1;
        this.stats.events += events.length;
        this.stats.lastBatchEvents = events.length;
        if (events.length > this.stats.maxBatchEvents) this.stats.maxBatchEvents = events.length;
      } catch (error) {
        const fenced = (error as { code?: string }).code === '23505';
        failure = new CommitError(`group commit of ${events.length} events failed`, error, fenced);
      }
    }

    if (failure === null) {
      for (const entry of batch) entry.durable(null);
    } else {
      this.failBatch(batch, events, failure);
    }
    this.inFlight = false;
    if (this.queue.length > 0) this.schedule();
    else this.notifyIdle();
  }

  private takeBatch(): Entry<A>[] {
    // Barriers ride along for free; only events count toward the batch size.
    let taken = 0;
    let events = 0;
    while (taken < this.queue.length && events < this.options.batchMaxEvents) {
      if (this.queue[taken]!.event !== null) events += 1;
      taken += 1;
    }
    if (taken === this.queue.length) {
      const batch = this.queue;
      this.queue = [];
      return batch;
    }
    return this.queue.splice(0, taken);
  }

  private async commit(events: StockEvent[], attachments: A[]): Promise<void> {
    const client = await this.pool.connect();
    let broken: Error | undefined;
    try {
      const insert = { ...insertEventsQuery(events), query_timeout: this.options.commitTimeoutMs };
      if (attachments.length === 0 || this.writeAttachments === null) {
        // A single statement is its own transaction: one round trip, one fsync.
        await client.query(insert);
        return;
      }
      await client.query('BEGIN');
      try {
        await client.query(insert);
        await this.writeAttachments(client, attachments);
        await client.query('COMMIT');
      } catch (error) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw error;
      }
    } catch (error) {
      // A timed-out or broken connection may still be mid-statement: never reuse it.
      if ((error as { code?: string }).code === undefined) broken = error as Error;
      throw error;
    } finally {
      client.release(broken);
    }
  }

  private failBatch(batch: Entry<A>[], events: StockEvent[], error: CommitError): void {
    this.stats.failedBatches += 1;
    const skus = new Set<string>();
    const firstSeqs = new Map<string, number>();
    for (const event of events) {
      skus.add(event.sku);
      if (!firstSeqs.has(event.sku)) firstSeqs.set(event.sku, event.seq);
    }
    // Decisions queued after the failed ones were made on top of them: undo those too.
    const kept: Entry<A>[] = [];
    const dropped: Entry<A>[] = [];
    for (const entry of this.queue) (skus.has(entry.sku) ? dropped : kept).push(entry);
    this.queue = kept;
    this.log.error(
      { err: error.cause, skus: [...skus], events: events.length, fenced: error.fenced },
      'group commit failed; rebuilding the affected SKUs from the log',
    );
    this.onBatchFailed({ error, skus, firstSeqs });
    for (const entry of batch) entry.durable(entry.event === null && !skus.has(entry.sku) ? null : error);
    for (const entry of dropped) entry.durable(error);
  }

  private notifyIdle(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const resolve of waiters) resolve();
  }
}
