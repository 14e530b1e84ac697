import pg from 'pg';
import type { Logger } from 'pino';
import type { StockEvent } from '../allocator/types.js';
import { holdClient } from '../db/pool.js';
import {
  backendAliveQuery,
  backendIdentityQuery,
  fingerprintOfEvent,
  fingerprintOfRow,
  insertEventsQuery,
  loggedEventsQuery,
  releaseSavepointQuery,
  rollbackToSavepointQuery,
  savepointQuery,
  signalBackendQuery,
  type BackendIdentity,
  type LoggedEventRow,
} from './event-log.js';

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
 *
 * Unknown outcomes. A commit that timed out, or whose connection broke, may
 * still be running on the server and commit later. Before anyone is answered
 * "nothing was done" (and before the SKU is rebuilt from the log), the outbox
 * cancels that backend from another connection, terminates it if the cancel
 * did not end it, confirms it is gone, and reads the batch's rows back: all
 * there → it committed (a success); none → it did not (a failure). If Postgres
 * cannot tell within `commitTimeoutMs` more, the batch's waiters hear
 * `outcome: 'unknown'` and the outbox stays closed (`hasRoom()` false, nothing
 * committed, nothing rebuilt) until it learns the outcome, so a retry with the
 * same key finds the truth.
 *
 * One bad row never fails the others. A batch the server refused for a row's
 * content (an integrity or data exception, SQLSTATE class 23 or 22) that is not
 * a (sku, seq) collision is written again, once, in one transaction with a
 * savepoint per SKU: each SKU's decisions go in whole, or, if one of them is
 * refused, a binary search over savepoints finds it; the decisions before it
 * are written, it hears the refusal, and the ones its SKU decided after it
 * (on top of it, so they cannot be written without it) are undone with the
 * SKU, which is rebuilt from the log. Everything else in the batch commits.
 * Only a batch whose own (sku, seq) rows are found in the log, written by
 * someone else, is fencing. Costs nothing until a batch is refused.
 */

export interface OutboxOptions {
  /** Most events in one INSERT. */
  batchMaxEvents: number;
  /** Most events waiting for a commit; past it callers must refuse work (503). */
  maxPendingEvents: number;
  /**
   * A commit that takes longer is abandoned (its connection dropped) and its outcome learned from the
   * log; learning it has the same budget again before waiters are told the outcome is unknown.
   */
  commitTimeoutMs: number;
  /** Told about every commit (metrics); called synchronously, must not throw. */
  observer?: OutboxObserver;
  /**
   * Cluster fencing: turns the group-commit insert into one that proves, in the
   * same statement, that this node still holds its shards' current epoch
   * (src/cluster/sql.ts). It throws (a FencedError) once the lease is lost: the
   * batch then fails as fenced before anything is sent.
   */
  fenceInsert?: (insert: pg.QueryConfig, events: readonly StockEvent[]) => pg.QueryConfig;
}

/**
 * A batch refused because this writer no longer owns its shard: SQLSTATE FS001
 * from the ownership proof inside the insert (migrations/007), or the lease
 * already known lost before sending.
 */
function isFencingRefusal(cause: unknown): boolean {
  return (cause as { code?: string }).code === 'FS001' || (cause as { name?: string }).name === 'FencedError';
}

export interface OutboxObserver {
  committed(events: readonly StockEvent[], seconds: number): void;
  failed(error: CommitError): void;
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
  /** A settledSoFar() marker: hears only once the outcome before it is known, never "unknown" early. */
  marker?: true;
}

/** The SKU of settledSoFar() markers: no SKU is empty, so no failed batch ever drops one. */
const markerSku = '';

/** `not_committed`: certainly not in the log. `unknown`: Postgres could not tell in time; a retry will. */
export type CommitOutcome = 'not_committed' | 'unknown';

export class CommitError extends Error {
  override name = 'CommitError';
  constructor(
    message: string,
    override readonly cause: unknown,
    /** Another writer already holds one of these (sku, seq): we are fenced out. */
    readonly fenced: boolean,
    readonly outcome: CommitOutcome = 'not_committed',
    /** This decision's own row was refused by the database (the rest of its batch committed). */
    readonly refused = false,
  ) {
    super(message);
  }
}

/** What a client should be told about a decision whose commit failed. */
export function commitFailureDetail(error: CommitError): string {
  if (error.refused) return 'the database refused to record this decision, so nothing was done';
  return error.outcome === 'unknown'
    ? 'the database did not confirm the decision in time, so the outcome is unknown; retry with the same Idempotency-Key to learn it'
    : 'the decision could not be made durable; nothing was reserved, retry with the same Idempotency-Key';
}

/**
 * The server refused a statement for a row's content: an integrity constraint (class 23: unique,
 * check, not null, foreign key) or a data exception (class 22: a value out of range, a bad byte).
 */
function isRowRefusal(error: unknown): error is pg.DatabaseError {
  return error instanceof pg.DatabaseError && typeof error.code === 'string' && /^2[23]/.test(error.code);
}

/** A (sku, seq) already taken: another writer's row, or our own late commit; never one row's fault. */
function isLogCollision(error: unknown): boolean {
  return error instanceof pg.DatabaseError && error.code === '23505' && error.table === 'stock_events' && error.constraint === 'stock_events_pkey';
}

export interface BatchFailure {
  /** Always `outcome: 'not_committed'`: a batch of unknown outcome is reported only once it is known. */
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
  /** Commits whose outcome had to be learned from the log (timeouts, broken connections). */
  outcomeChecks: number;
  /** ...of which had committed after all. */
  committedAfterAll: number;
  /** Batches whose waiters were told the outcome is unknown. */
  unknownOutcomes: number;
  /** Exceptions thrown by durable callbacks (contained; each is logged). */
  callbackErrors: number;
  /** Batches refused for a row's content and written again without the refused rows. */
  isolatedBatches: number;
  /** Decisions refused alone by the database, and decisions undone with them (their SKU's later ones). */
  refusedEvents: number;
  undoneEvents: number;
}

/** A refused batch written again (see the class comment): what went in, what was refused. */
interface Isolation<A> {
  /** Each SKU's event entries, in append order. */
  groups: Entry<A>[][];
  /** Events written so far in the transaction: what the log holds if it commits. */
  written: StockEvent[];
  /** Per SKU, the entry the database refused and its error. */
  refused: Map<string, { entry: Entry<A>; cause: pg.DatabaseError }>;
}

type Attempt =
  | { kind: 'committed' }
  | { kind: 'failed'; cause: unknown }
  | { kind: 'unknown'; cause: unknown; backend: BackendIdentity };

type Learned = 'committed' | 'not_committed' | 'foreign';

/** Failed attempts remembered so a later collision with our own late commit is not taken for another writer. */
const rememberedFailedEvents = 100_000;
/** How long a cancelled backend gets to end before it is terminated. */
const cancelGraceMs = 1_000;
const pollIntervalMs = 25;
/** Pause between attempts to learn an unknown outcome while Postgres is unreachable (doubles, capped). */
const relearnDelayMs = { first: 100, max: 2_000 };

const noop: Durable = () => undefined;

/** A batch's event entries by SKU, each in append order (barriers and markers left out). */
function groupBySku<A>(batch: Entry<A>[]): Entry<A>[][] {
  const groups = new Map<string, Entry<A>[]>();
  for (const entry of batch) {
    if (entry.event === null) continue;
    const group = groups.get(entry.sku);
    if (group === undefined) groups.set(entry.sku, [entry]);
    else group.push(entry);
  }
  return [...groups.values()];
}

/** Fails every query pending on this connection at once (pg has no public call for it). */
function destroySocket(client: pg.PoolClient): void {
  (client as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
}

/**
 * Whether the server said the transaction did not commit: an error it sent,
 * except the SQLSTATEs after which the statement may still have committed —
 * connection exceptions (08), operator intervention such as a shutdown or
 * crash (57P), system errors such as a failed fsync (58). Socket errors
 * (ECONNRESET, EPIPE: a `code`, but not the server's) and timeouts say nothing.
 */
function outcomeKnown(error: unknown): boolean {
  return error instanceof pg.DatabaseError && typeof error.code === 'string' && !/^(08|57P|58)/.test(error.code);
}

export class Outbox<A = never> {
  private queue: Entry<A>[] = [];
  private inFlight = false;
  private scheduled = false;
  /** A commit's outcome is being learned: nothing new may be decided on top of it. */
  private blocked = false;
  /** ...and its waiters were already told it is unknown: answer newcomers the same at once. */
  private unknownAnswered: CommitError | null = null;
  private idleWaiters: (() => void)[] = [];
  private readonly backends = new WeakMap<pg.PoolClient, BackendIdentity>();
  /** Fingerprints of events whose commit failed (bounded, oldest dropped first). */
  private failedFingerprints = new Set<string>();
  readonly stats: OutboxStats = {
    batches: 0,
    events: 0,
    failedBatches: 0,
    lastBatchEvents: 0,
    maxBatchEvents: 0,
    outcomeChecks: 0,
    committedAfterAll: 0,
    unknownOutcomes: 0,
    callbackErrors: 0,
    isolatedBatches: 0,
    refusedEvents: 0,
    undoneEvents: 0,
  };

  constructor(
    private readonly pool: pg.Pool,
    private readonly options: OutboxOptions,
    private readonly log: Logger,
    /** Called synchronously after a failed commit, before any other work can append. */
    private readonly onBatchFailed: (failure: BatchFailure) => void,
    private readonly writeAttachments: AttachmentWriter<A> | null = null,
    /** A bug in the outbox or its callbacks' invariants (default: logged; the batch's other waiters still hear). */
    private readonly onFatal: (error: unknown) => void = (error) => log.fatal({ err: error }, 'outbox: unexpected error'),
  ) {}

  get pendingEvents(): number {
    return this.queue.length;
  }

  /** Whether `count` more events fit; check before deciding, since a decision cannot be taken back. */
  hasRoom(count = 1): boolean {
    return !this.blocked && this.queue.length + count <= this.options.maxPendingEvents;
  }

  append(event: StockEvent, durable: Durable, attachment?: A): void {
    const entry: Entry<A> = { event, sku: event.sku, durable, attachment };
    this.queue.push(entry);
    if (this.unknownAnswered !== null) this.answer(entry, this.unknownAnswered);
    this.schedule();
  }

  /** `durable` runs once everything appended for any SKU so far has committed (or failed, for `sku`). */
  barrier(sku: string, durable: Durable): void {
    if (this.queue.length === 0 && !this.inFlight) {
      this.call(durable, null, sku);
      return;
    }
    if (this.unknownAnswered !== null) {
      this.call(durable, this.unknownAnswered, sku);
      return;
    }
    this.queue.push({ event: null, sku, durable, attachment: undefined });
    this.schedule();
  }

  /**
   * Resolves once everything appended before this call has committed or
   * failed, with its outcome known (even while an unknown outcome is being
   * learned): a shard handed over leaves nothing behind that could still land.
   * Unlike drained(), later appends do not hold it up.
   */
  settledSoFar(): Promise<void> {
    if (this.queue.length === 0 && !this.inFlight) return Promise.resolve();
    return new Promise((resolve) => {
      this.queue.push({ event: null, sku: markerSku, durable: () => resolve(), attachment: undefined, marker: true });
      this.schedule();
    });
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
      this.flush().catch((error: unknown) => this.onFatal(error));
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

    const failure = events.length === 0 ? null : await this.commitBatch(batch, events, attachments);
    if (failure === null) {
      for (const entry of batch) this.answer(entry, null);
    } else if (failure instanceof CommitError) {
      this.failBatch(batch, events, failure);
    } else {
      this.settleIsolated(batch, failure);
    }
    this.inFlight = false;
    if (this.queue.length > 0) this.schedule();
    else this.notifyIdle();
  }

  /**
   * null when the batch is in the log (at once, or learned after a timeout); an Isolation when it
   * is, but for rows the database refused.
   */
  private async commitBatch(batch: Entry<A>[], events: StockEvent[], attachments: A[]): Promise<CommitError | Isolation<A> | null> {
    const startedMs = performance.now();
    const attempt = await this.commit(events, attachments, null);
    if (attempt.kind === 'committed') {
      this.recordCommit(events, startedMs);
      return null;
    }
    const message = `group commit of ${events.length} events failed`;
    if (attempt.kind === 'failed') {
      if (isRowRefusal(attempt.cause) && !isLogCollision(attempt.cause)) return this.isolate(batch, events, message);
      return this.failedAttempt(message, attempt.cause, events);
    }
    const learned = await this.learnOutcome(attempt, batch, events);
    if (learned === 'committed') {
      this.recordCommit(events, startedMs);
      this.stats.committedAfterAll += 1;
      this.log.warn({ err: attempt.cause, events: events.length }, 'group commit timed out or lost its connection, but it had committed');
      return null;
    }
    return new CommitError(message, attempt.cause, learned === 'foreign');
  }

  private recordCommit(events: StockEvent[], startedMs: number): void {
    this.options.observer?.committed(events, (performance.now() - startedMs) / 1000);
    this.stats.batches += 1;
    this.stats.events += events.length;
    this.stats.lastBatchEvents = events.length;
    if (events.length > this.stats.maxBatchEvents) this.stats.maxBatchEvents = events.length;
  }

  /** Fenced only when the ownership proof failed, or rows of another writer hold this batch's (sku, seq). */
  private async failedAttempt(message: string, cause: unknown, events: StockEvent[]): Promise<CommitError> {
    const fenced = isFencingRefusal(cause) || (isLogCollision(cause) && (await this.collidedWithAnotherWriter(events)));
    return new CommitError(message, cause, fenced);
  }

  /**
   * The batch was refused for a row's content: write it again, each SKU under its own savepoint,
   * leaving out the refused rows and what their SKUs decided after them. The whole batch fails only
   * if that attempt does (fencing, a lost connection, an error that is not about one row).
   */
  private async isolate(batch: Entry<A>[], events: StockEvent[], message: string): Promise<CommitError | Isolation<A>> {
    const startedMs = performance.now();
    this.stats.isolatedBatches += 1;
    const isolation: Isolation<A> = { groups: groupBySku(batch), written: [], refused: new Map() };
    const attempt = await this.commit(events, [], isolation);
    if (attempt.kind === 'committed') {
      this.recordCommit(isolation.written, startedMs);
      return isolation;
    }
    if (attempt.kind === 'failed') return this.failedAttempt(message, attempt.cause, events);
    const learned = await this.learnOutcome(attempt, batch, isolation.written);
    if (learned === 'committed' && isolation.written.length > 0) {
      this.recordCommit(isolation.written, startedMs);
      this.stats.committedAfterAll += 1;
      return isolation;
    }
    return new CommitError(message, attempt.cause, learned === 'foreign');
  }

  /**
   * Inside the isolating transaction: each SKU's entries in one go, or, if the database refuses
   * one, the longest prefix it takes (binary search, a savepoint per try), and that prefix's end
   * is the refused entry. Throws what is not a row refusal (the transaction then fails whole).
   */
  private async writeIsolated(client: pg.PoolClient, isolation: Isolation<A>): Promise<void> {
    for (const group of isolation.groups) {
      const whole = await this.writePart(client, group);
      if (whole === null) {
        for (const entry of group) isolation.written.push(entry.event!);
        continue;
      }
      let cause = whole;
      let lo = 0; // group[0, lo) is written
      let hi = group.length; // group[lo, hi) is refused
      while (hi - lo > 1) {
        const mid = (lo + hi) >>> 1;
        const refusal = await this.writePart(client, group.slice(lo, mid));
        if (refusal === null) {
          for (let i = lo; i < mid; i++) isolation.written.push(group[i]!.event!);
          lo = mid;
        } else {
          hi = mid;
          cause = refusal;
        }
      }
      isolation.refused.set(group[lo]!.sku, { entry: group[lo]!, cause });
    }
  }

  /** Entries' events and attachments under a savepoint: null when written, the refusal when rolled back. */
  private async writePart(client: pg.PoolClient, entries: Entry<A>[]): Promise<pg.DatabaseError | null> {
    const events: StockEvent[] = [];
    const attachments: A[] = [];
    for (const entry of entries) {
      events.push(entry.event!);
      if (entry.attachment !== undefined) attachments.push(entry.attachment);
    }
    let insert = insertEventsQuery(events);
    if (this.options.fenceInsert !== undefined) insert = this.options.fenceInsert(insert, events);
    await client.query(savepointQuery());
    try {
      await client.query(insert);
      if (attachments.length > 0 && this.writeAttachments !== null) await this.writeAttachments(client, attachments);
      await client.query(releaseSavepointQuery());
      return null;
    } catch (error) {
      if (!isRowRefusal(error) || isLogCollision(error)) throw error;
      await client.query(rollbackToSavepointQuery());
      return error;
    }
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

  /**
   * One attempt; never throws. `unknown` only once something may have reached the server. With an
   * isolation, its SKUs are written under savepoints instead (`events` only proves ownership first).
   */
  private async commit(events: StockEvent[], attachments: A[], isolation: Isolation<A> | null): Promise<Attempt> {
    let insert: pg.QueryConfig;
    let client: pg.PoolClient;
    try {
      insert = insertEventsQuery(events);
      if (this.options.fenceInsert !== undefined) insert = this.options.fenceInsert(insert, events);
      client = await this.pool.connect();
    } catch (cause) {
      return { kind: 'failed', cause };
    }
    const release = holdClient(client, this.log, 'group commit');
    const timeoutMs = this.options.commitTimeoutMs;
    let backend = this.backends.get(client);
    let broken: Error | undefined;
    // One deadline for the whole attempt (BEGIN, insert, attachments, COMMIT): past it the socket is
    // destroyed, which fails whatever is pending here; the server may still be running the statement.
    let timedOut = false;
    const deadline = setTimeout(() => {
      timedOut = true;
      destroySocket(client);
    }, timeoutMs);
    try {
      backend ??= await this.identify(client);
      if (isolation === null && (attachments.length === 0 || this.writeAttachments === null)) {
        // A single statement is its own transaction: one round trip, one fsync.
        await client.query(insert);
        return { kind: 'committed' };
      }
      await client.query('BEGIN');
      try {
        if (isolation !== null) {
          await this.writeIsolated(client, isolation);
        } else {
          await client.query(insert);
          await this.writeAttachments!(client, attachments);
        }
        await client.query('COMMIT');
      } catch (error) {
        // Only a connection that answered can roll back; a busy one would queue ROLLBACK behind its statement.
        if (!timedOut && (outcomeKnown(error) || isFencingRefusal(error))) await client.query('ROLLBACK').catch(() => undefined);
        throw error;
      }
      return { kind: 'committed' };
    } catch (error) {
      const cause = timedOut ? new Error(`group commit took longer than ${timeoutMs} ms`, { cause: error }) : error;
      // A lease found lost while isolating is known before COMMIT: nothing was written.
      const known = !timedOut && (outcomeKnown(error) || isFencingRefusal(error));
      // A timed-out or broken connection may still be mid-statement: never reuse it.
      if (!known) broken = cause instanceof Error ? cause : new Error(String(cause));
      if (backend === undefined || known) return { kind: 'failed', cause };
      return { kind: 'unknown', cause, backend };
    } finally {
      clearTimeout(deadline);
      release();
      client.release(broken);
    }
  }

  /** Once per connection: which backend serves it, so a stuck statement can be cancelled from elsewhere. */
  private async identify(client: pg.PoolClient): Promise<BackendIdentity> {
    const result = await client.query<{ pid: number; started: string }>(backendIdentityQuery());
    const row = result.rows[0];
    if (row === undefined) throw new Error('pg_stat_activity does not show this connection');
    const backend = { pid: row.pid, started: row.started };
    this.backends.set(client, backend);
    return backend;
  }

  /**
   * Learn whether a batch of unknown outcome committed. Within one more commit timeout, or its waiters
   * are told the outcome is unknown and the outbox stays blocked until Postgres can tell.
   */
  private async learnOutcome(attempt: Extract<Attempt, { kind: 'unknown' }>, batch: Entry<A>[], events: StockEvent[]): Promise<Learned> {
    this.blocked = true;
    this.stats.outcomeChecks += 1;
    try {
      const budgetMs = this.options.commitTimeoutMs;
      const first = await this.tryToLearn(attempt.backend, events, budgetMs);
      if (first !== null) return first;
      this.stats.unknownOutcomes += 1;
      const unknown = new CommitError(`group commit of ${events.length} events: outcome unknown`, attempt.cause, false, 'unknown');
      this.log.error(
        { err: attempt.cause, events: events.length, skus: [...new Set(events.map((e) => e.sku))] },
        'group commit outcome unknown (Postgres unreachable); its requests are told so, and nothing is decided until it is known',
      );
      this.unknownAnswered = unknown;
      for (const entry of batch) if (entry.marker !== true) this.answer(entry, unknown);
      for (const entry of this.queue) if (entry.marker !== true) this.answer(entry, unknown);
      for (let delayMs = relearnDelayMs.first; ; delayMs = Math.min(delayMs * 2, relearnDelayMs.max)) {
        await new Promise((resolve) => setTimeout(resolve, delayMs));
        const learned = await this.tryToLearn(attempt.backend, events, budgetMs);
        if (learned !== null) {
          this.log.warn({ learned, events: events.length }, 'group commit outcome learned');
          return learned;
        }
      }
    } finally {
      this.blocked = false;
      this.unknownAnswered = null;
    }
  }

  /** One try over a fresh connection (the pool may be full of stuck ones); null if Postgres could not tell in time. */
  private async tryToLearn(backend: BackendIdentity, events: StockEvent[], budgetMs: number): Promise<Learned | null> {
    const deadline = Date.now() + budgetMs;
    const left = () => Math.max(1, deadline - Date.now());
    const client = new pg.Client({ ...this.pool.options, connectionTimeoutMillis: budgetMs, application_name: 'flashstock-outcome' });
    const onError = (err: Error) => this.log.warn({ err }, 'outcome check connection error');
    client.on('error', onError);
    try {
      await client.connect();
      if (!(await this.ended(client, backend, false, Math.min(cancelGraceMs, left()), left))) {
        this.log.warn({ pid: backend.pid }, 'cancelled commit still running: terminating its backend');
        if (!(await this.ended(client, backend, true, left(), left))) return null;
      }
      const result = await client.query<LoggedEventRow>(loggedEventsQuery(events, left()));
      return this.classify(events, result.rows);
    } catch (err) {
      this.log.warn({ err }, 'could not learn the outcome of a group commit yet');
      return null;
    } finally {
      // Not awaited: closing a connection to a frozen server must not hold up the next try.
      client.end().then(
        () => client.removeListener('error', onError),
        () => undefined,
      );
    }
  }

  /** Signal the backend, then poll until it is gone (true) or `waitMs` passes (false). */
  private async ended(client: pg.Client, backend: BackendIdentity, terminate: boolean, waitMs: number, left: () => number): Promise<boolean> {
    await client.query(signalBackendQuery(backend, terminate, left()));
    const until = Date.now() + waitMs;
    for (;;) {
      const alive = await client.query(backendAliveQuery(backend, left()));
      if (alive.rows.length === 0) return true;
      if (Date.now() >= until) return false;
      await new Promise((resolve) => setTimeout(resolve, pollIntervalMs));
    }
  }

  private classify(events: StockEvent[], rows: LoggedEventRow[]): Learned {
    if (rows.length === 0) return 'not_committed';
    const ours = new Set(events.map(fingerprintOfEvent));
    if (rows.length === events.length && rows.every((row) => ours.has(fingerprintOfRow(row)))) return 'committed';
    this.log.error({ expected: events.length, found: rows.length }, 'the log holds other rows at this batch\'s (sku, seq): another writer');
    return 'foreign';
  }

  /**
   * A (sku, seq) collision is another writer only if rows are found at this batch's (sku, seq) and
   * some are not ones this process tried to write before (an attempt it was told had failed, which
   * committed late). Nothing found, or nothing readable, proves no other writer: not fenced.
   */
  private async collidedWithAnotherWriter(events: StockEvent[]): Promise<boolean> {
    try {
      const result = await this.pool.query<LoggedEventRow>(loggedEventsQuery(events, this.options.commitTimeoutMs));
      const foreign = result.rows.filter((row) => !this.failedFingerprints.has(fingerprintOfRow(row)));
      if (foreign.length > 0) return true;
      if (result.rows.length > 0) this.log.warn({ rows: result.rows.length }, 'collided with an earlier attempt of our own that committed late: not fenced');
      return false;
    } catch (err) {
      this.log.warn({ err }, 'could not read the colliding rows: not reported as fencing');
      return false;
    }
  }

  private rememberFailed(events: StockEvent[]): void {
    if (this.failedFingerprints.size + events.length > rememberedFailedEvents) this.failedFingerprints = new Set();
    for (const event of events) this.failedFingerprints.add(fingerprintOfEvent(event));
  }

  private failBatch(batch: Entry<A>[], events: StockEvent[], error: CommitError): void {
    this.stats.failedBatches += 1;
    this.rememberFailed(events);
    this.options.observer?.failed(error);
    const skus = new Set<string>();
    const firstSeqs = new Map<string, number>();
    for (const event of events) {
      skus.add(event.sku);
      if (!firstSeqs.has(event.sku)) firstSeqs.set(event.sku, event.seq);
    }
    const dropped = this.dropQueued(skus);
    this.log.error(
      { err: error.cause, skus: [...skus], events: events.length, fenced: error.fenced },
      'group commit failed; rebuilding the affected SKUs from the log',
    );
    try {
      this.onBatchFailed({ error, skus, firstSeqs });
    } catch (fatal) {
      this.onFatal(fatal);
    }
    for (const entry of batch) this.answer(entry, entry.event === null && !skus.has(entry.sku) ? null : error);
    for (const entry of dropped) this.answer(entry, error);
  }

  /** Decisions queued after failed ones of these SKUs were made on top of them: undo those too. */
  private dropQueued(skus: Set<string>): Entry<A>[] {
    const kept: Entry<A>[] = [];
    const dropped: Entry<A>[] = [];
    for (const entry of this.queue) (skus.has(entry.sku) ? dropped : kept).push(entry);
    this.queue = kept;
    return dropped;
  }

  /**
   * A batch committed without its refused rows: each refused decision hears its refusal, its
   * SKU's later decisions (in the batch, and queued) that they were undone, the rest success;
   * the refused SKUs are rebuilt from the log, which holds what they committed before it.
   */
  private settleIsolated(batch: Entry<A>[], isolation: Isolation<A>): void {
    const refusedSeq = new Map<string, number>();
    const details = [];
    for (const [sku, { entry, cause }] of isolation.refused) {
      refusedSeq.set(sku, entry.event!.seq);
      details.push({ sku, seq: entry.event!.seq, kind: entry.event!.kind, code: cause.code, constraint: cause.constraint, detail: cause.detail ?? cause.message });
    }
    const first = isolation.refused.values().next().value!.cause;
    const undone = new CommitError('undone: an earlier decision of its SKU in the same group commit was refused', first, false);
    const skus = new Set(refusedSeq.keys());
    const dropped = this.dropQueued(skus);
    this.log.error({ refused: details, written: isolation.written.length }, 'the database refused rows of a group commit: the rest committed; rebuilding their SKUs from the log');
    try {
      this.onBatchFailed({ error: undone, skus, firstSeqs: refusedSeq });
    } catch (fatal) {
      this.onFatal(fatal);
    }
    const broken = new Set<string>();
    // Told they failed, like a failed batch's: a later collision with one of them is not another writer.
    const notWritten: StockEvent[] = [];
    for (const entry of batch) {
      const from = refusedSeq.get(entry.sku);
      if (entry.event === null) {
        this.answer(entry, broken.has(entry.sku) ? undone : null);
      } else if (from === undefined || entry.event.seq < from) {
        this.answer(entry, null);
      } else if (entry.event.seq === from) {
        broken.add(entry.sku);
        notWritten.push(entry.event);
        const cause = isolation.refused.get(entry.sku)!.cause;
        this.answer(entry, new CommitError('the database refused this decision', cause, false, 'not_committed', true));
      } else {
        notWritten.push(entry.event);
        this.answer(entry, undone);
      }
    }
    for (const entry of dropped) this.answer(entry, undone);
    this.rememberFailed(notWritten);
    this.stats.refusedEvents += isolation.refused.size;
    this.stats.undoneEvents += notWritten.length - isolation.refused.size + dropped.length;
  }

  /** Each waiter hears exactly once, and one that throws cannot keep the others from hearing. */
  private answer(entry: Entry<A>, error: CommitError | null): void {
    const durable = entry.durable;
    entry.durable = noop;
    this.call(durable, error, entry.sku);
  }

  private call(durable: Durable, error: CommitError | null, sku: string): void {
    try {
      durable(error);
    } catch (thrown) {
      this.stats.callbackErrors += 1;
      this.log.error({ err: thrown, sku }, 'a commit callback threw (contained; its request may go unanswered)');
      if (thrown instanceof Error && thrown.name === 'InvariantViolation') this.onFatal(thrown);
    }
  }

  private notifyIdle(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const resolve of waiters) resolve();
  }
}
