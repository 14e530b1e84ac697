import type pg from 'pg';
import type { Logger } from 'pino';
import { InvariantViolation, SkuAllocator } from '../allocator/allocator.js';
import type { AllocatorLimits, SkuConfig, StockEvent } from '../allocator/types.js';
import { CommitError, commitFailureDetail, type BatchFailure, type Outbox } from '../outbox/outbox.js';
import {
  holdView,
  reservationView,
  skuView,
  stockStateOf,
  type CheckoutView,
  type OrderAttachment,
  type Outcome,
  type ReservationView,
  type SkuView,
  type StockState,
} from '../inventory/inventory.js';
import type { ShardNotice, ShardRequests } from './messages.js';
import { newReservationId, reservationIdPrefix, skuHash } from './placement.js';
import { LogReader, type LoggedOrder } from './log-reader.js';
import { defaultCartDecisionTimeoutMs, ShardCarts } from '../carts/shard-carts.js';
import { queueView, type QueueView } from '../queue/view.js';
import { WaitlistCommands } from './waitlist-shell.js';
import { waitlistEntryFromLog } from './waitlist-log.js';
import type { WaitlistView } from '../inventory/waitlist-view.js';
import { LiveSnapshots } from '../snapshot/live.js';

/** Everything a shard borrows from its host: one outbox, pool and clock for all shards of a thread. */
export interface ShardContext {
  pool: pg.Pool;
  log: Logger;
  limits: AllocatorLimits;
  outbox: Outbox<OrderAttachment>;
  nowMs: () => number;
  notify: (notice: ShardNotice) => void;
  /** A SKU's state from the log (latest snapshot + the events after it); null when it has none. */
  loadSku: (sku: string) => Promise<SkuAllocator | null>;
  /** Many SKUs' states at once (recovery: a round trip per SKU would be most of it); a SKU with nothing logged has seq 0. */
  loadSkus: (skus: readonly string[]) => Promise<Map<string, SkuAllocator>>;
  /** Pause between attempts to rebuild a SKU while Postgres is unreachable. */
  rebuildRetryMs: number;
  /** How long a request's idempotency key is honoured. */
  idempotencyKeyTtlMs: number;
  /** Snapshot a SKU every this many events. */
  snapshotEveryEvents: number;
  /** An ended sale leaves memory once its state has not changed for this long. */
  passivateAfterMs: number;
  /** Counts the host exports (metrics). */
  stats: ShardStats;
  /** A broken invariant while rebuilding: one fatal path. */
  onFatal: (error: unknown) => void;
  /** A tentative cart line whose cart has not decided for this long is aborted (default 10 s). */
  cartDecisionTimeoutMs?: number;
}

export interface ShardStats {
  snapshotsWritten: number;
  snapshotsFailed: number;
  passivated: number;
}

/** What the shell keeps per SKU beside its allocator: snapshot and passivation bookkeeping. */
/** `reserve` / `checkout` after the shell found no reservation (order) for a remembered key in Postgres. */
const keyCheckedOptions = { keyChecked: true } as const;

interface SkuShell {
  /** The SKU's allocator in memory (the shell lives and goes with it). */
  allocator: SkuAllocator;
  /** Seq the latest snapshot covers (as far as this process knows). */
  snapshotSeq: number;
  /** The allocator's seq at the last sweep, and since when it has been so. */
  seenSeq: number;
  seenSinceMs: number;
  /** A snapshot (or passivation) is being written. */
  busy: boolean;
  /** After a failed snapshot, not before this time. */
  retryAtMs: number;
  /** The SKU's reservation-id prefix (its hash), computed once rather than per reservation. */
  idPrefix: string;
  /** Reservations and waiting-room tickets in memory when the last snapshot was taken (or the SKU loaded): about that snapshot's size. */
  snapshotReservations: number;
  /**
   * After a sweep: until when a sweep has nothing to do while the seq stays
   * `seenSeq` (`quietUntil`). Sweeps skip the SKU until either changes, so
   * their cost follows the SKUs with work, not the SKUs in memory.
   */
  quietUntilMs: number;
}

/** A failed snapshot is retried after this pause (the log is still the truth meanwhile). */
const snapshotRetryMs = 5_000;

type Unavailable = { ok: false; code: 'unavailable'; detail: string };

/** The 503 for a decision whose commit failed: "nothing was reserved", or "the outcome is unknown" when it is. */
function commitFailed(error: Error): Unavailable {
  const detail =
    error instanceof CommitError
      ? commitFailureDetail(error)
      : 'the decision could not be made durable; nothing was reserved, retry with the same Idempotency-Key';
  return { ok: false, code: 'unavailable', detail };
}

/**
 * One shard: the allocators of the SKUs that hash to it, fed commands with the
 * current time. It hands each decision to the outbox, applies it, and answers
 * only once it is durable. It rebuilds SKUs from the log (at start, after a
 * failed or fenced commit) and refuses their requests with 503 until that is
 * done; it never answers "does not exist" before it has recovered.
 *
 * It finds a reservation's allocator from the SKU hash inside the reservation
 * id, so it keeps no index of reservations of its own: memory is the
 * allocators' live work.
 */
export class Shard {
  private readonly allocators = new Map<string, SkuAllocator>();
  private readonly shells = new Map<string, SkuShell>();
  /** skuHash → allocators with that hash (a collision makes the list longer than one). */
  private readonly byHash = new Map<number, SkuAllocator[]>();
  /** SKUs being rebuilt from the log: their requests get 503 until done. */
  private readonly rebuilding = new Set<string>();
  /** Allocators with a durable change not yet published (publishSoon). */
  private readonly unpublished = new Set<SkuAllocator>();
  /** SKUs being loaded from the log on first use (a passivated sale coming back). */
  private readonly loading = new Map<string, Promise<SkuAllocator | null>>();
  private readonly reader: LogReader;
  /** Snapshots are taken from the allocators themselves (src/snapshot/live.ts), never by folding the log again. */
  private readonly snapshots: LiveSnapshots;
  private recovered = false;
  private closing = false;
  /** Carts' requests to this shard (src/carts). */
  readonly carts: ShardCarts;
  /** Waitlist joins, reads, leaves and offers (waitlist-shell.ts). */
  private readonly waitlists: WaitlistCommands;

  constructor(
    readonly id: number,
    private readonly ctx: ShardContext,
  ) {
    this.reader = new LogReader(ctx.pool);
    this.carts = new ShardCarts({
      refuse: (sku) => this.refuse(sku) ?? (sku === null ? null : this.full()),
      loadedForWrite: (sku) => this.loadedForWrite(sku),
      loaded: (sku) => (this.rebuilding.has(sku) ? null : (this.allocators.get(sku) ?? null)),
      commit: (allocator, event, value, attachment) => this.commit(allocator, event, value, attachment),
      notify: ctx.notify,
      afterDurable: (sku, value) => this.afterDurable(sku, value),
      expire: (allocator, nowMs) => this.expire(allocator, nowMs),
      nowMs: ctx.nowMs,
      pool: ctx.pool,
      reader: this.reader,
      log: ctx.log,
      cartDecisionTimeoutMs: ctx.cartDecisionTimeoutMs ?? defaultCartDecisionTimeoutMs,
    });
    this.waitlists = new WaitlistCommands({
      nowMs: () => this.ctx.nowMs(),
      notify: (notice) => this.ctx.notify(notice),
      refusal: (sku) => this.refuse(sku) ?? (sku === null ? null : this.full()),
      allocatorFor: (sku) => this.allocatorFor(sku),
      allocatorsOfId: (id) => this.byHash.get(Number.parseInt(id.slice(0, 8), 16)) ?? [],
      idPrefix: (sku) => this.shells.get(sku)?.idPrefix,
      commit: (allocator, event, value) => this.commit(allocator, event, value),
      applyAndAppend: (allocator, event, done) => {
        this.apply(allocator, event);
        this.ctx.outbox.append(event, done ?? (() => undefined));
      },
      afterDurable: (sku, value) => this.afterDurable(sku, value),
      publish: (allocator) => this.publish(allocator),
      fromLog: (waitlistId, shopperId) => waitlistEntryFromLog(this.ctx.pool, waitlistId, shopperId, this.ctx.nowMs()),
    });
    this.snapshots = new LiveSnapshots(ctx.pool, (sku) => new Promise((resolve) => ctx.outbox.barrier(sku, resolve)));
  }

  /** Every event this shard applies goes through here: an open snapshot keeps what the event changes. */
  private apply(allocator: SkuAllocator, event: StockEvent): void {
    this.snapshots.beforeApply(allocator, event);
    allocator.apply(event);
  }

  get isRecovered(): boolean {
    return this.recovered;
  }

  get allocatorCount(): number {
    return this.allocators.size;
  }

  *allAllocators(): IterableIterator<SkuAllocator> {
    yield* this.allocators.values();
  }

  // ------------------------------------------------------------ lifecycle

  /** Load `skus` from the log, expire holds that ran out while down, then serve. */
  async recover(skus: readonly string[]): Promise<number> {
    for (const allocator of (await this.ctx.loadSkus(skus)).values()) {
      if (allocator.config === null) continue;
      this.install(allocator);
      this.publish(allocator);
    }
    const expired = await this.expireOverdue();
    this.recovered = true;
    return expired;
  }

  close(): void {
    this.closing = true;
  }

  private install(allocator: SkuAllocator): void {
    this.remove(allocator.sku);
    this.allocators.set(allocator.sku, allocator);
    const now = this.ctx.nowMs();
    this.shells.set(allocator.sku, {
      allocator,
      snapshotSeq: allocator.seq,
      seenSeq: allocator.seq,
      seenSinceMs: now,
      busy: false,
      retryAtMs: 0,
      idPrefix: reservationIdPrefix(allocator.sku),
      snapshotReservations: allocator.reservations.size + allocator.queue.size,
      quietUntilMs: -Infinity,
    });
    const hash = skuHash(allocator.sku);
    const list = this.byHash.get(hash);
    if (list === undefined) this.byHash.set(hash, [allocator]);
    else list.push(allocator);
  }

  private remove(sku: string): void {
    if (!this.allocators.delete(sku)) return;
    this.shells.delete(sku);
    const hash = skuHash(sku);
    const list = this.byHash.get(hash)?.filter((a) => a.sku !== sku) ?? [];
    if (list.length === 0) this.byHash.delete(hash);
    else this.byHash.set(hash, list);
  }

  /** The allocator holding reservation `id` in memory, from the SKU hash in the id. */
  private holderOf(reservationId: string): SkuAllocator | undefined {
    const hash = Number.parseInt(reservationId.slice(0, 8), 16);
    for (const allocator of this.byHash.get(hash) ?? []) {
      if (allocator.reservations.has(reservationId)) return allocator;
    }
    return undefined;
  }

  private async expireOverdue(): Promise<number> {
    const now = this.ctx.nowMs();
    const waits: Promise<void>[] = [];
    let count = 0;
    for (const allocator of this.allocators.values()) {
      for (;;) {
        const events = allocator.expireDue(now);
        if (events.length === 0) break;
        count += events.length;
        for (const event of events) waits.push(this.appendAndWait(allocator, event));
      }
      // Units that came back while down (or whose offer the crash cut off) go to the line before anyone reserves.
      waits.push(...this.waitlists.offer(allocator, now));
    }
    await Promise.all(waits);
    return count;
  }

  private appendAndWait(allocator: SkuAllocator, event: StockEvent): Promise<void> {
    this.apply(allocator, event);
    return new Promise((resolve, reject) => this.ctx.outbox.append(event, (error) => (error ? reject(error) : resolve())));
  }

  /**
   * Expire due holds of every SKU, resolve late cart lines, forget what has
   * been settled long enough, snapshot and passivate; the host calls it on a
   * timer, so stock comes back on its own. A SKU whose seq has not moved since
   * its last sweep and whose next due time has not come is skipped: 20,000
   * quiet SKUs cost an eighth of a core when each was looked at ten times a
   * second (bench/idle-skus.ts).
   */
  sweep(now: number): void {
    if (this.closing || !this.recovered) return;
    // By shell, not by allocator: a quiet SKU then costs two reads and no look-up.
    for (const shell of this.shells.values()) {
      const allocator = shell.allocator;
      if (shell.seenSeq === allocator.seq && now < shell.quietUntilMs) continue;
      if (this.rebuilding.has(allocator.sku)) continue;
      const next = allocator.nextExpiryMs();
      if (next !== null && next <= now) this.expire(allocator, now);
      this.carts.sweep(allocator, now);
      allocator.forgetSettled(now);
      // maintain() recorded the seq as seenSeq (nothing it starts changes the seq before it returns).
      this.maintain(allocator, shell, now);
      shell.quietUntilMs = this.quietUntil(allocator, shell);
    }
  }

  /** Until when a sweep of this SKU has nothing to do if its seq stays as it is (see `maintain`). */
  private quietUntil(allocator: SkuAllocator, shell: SkuShell): number {
    // A snapshot or passivation in flight ends without an event: look again every sweep until it has.
    if (shell.busy) return -Infinity;
    const snapshotDue = allocator.seq - shell.snapshotSeq >= Math.max(this.ctx.snapshotEveryEvents, shell.snapshotReservations);
    const passivateAtMs = Math.max(allocator.passivableFromMs(), shell.seenSinceMs + this.ctx.passivateAfterMs);
    return Math.min(allocator.nextDueMs(), snapshotDue ? shell.retryAtMs : Infinity, passivateAtMs);
  }

  /**
   * Snapshot a SKU that ran `snapshotEveryEvents` past its last snapshot, or as
   * many events as that snapshot held reservations if more: writing one costs
   * encoding the whole state (a hot SKU's 183,000 holds: ~0.3 s of this thread's
   * CPU in 1 ms slices, bench/snapshot-cost.ts), so spacing them by the state's
   * size keeps that cost per event flat, and the tail a restart replays stays
   * proportional to the state, i.e. to live work. Passivate an ended, quiet sale.
   */
  private maintain(allocator: SkuAllocator, shell: SkuShell, now: number): void {
    if (shell.seenSeq !== allocator.seq) {
      shell.seenSeq = allocator.seq;
      shell.seenSinceMs = now;
    }
    if (shell.busy || now < shell.retryAtMs) return;
    if (allocator.canPassivate(now) && now - shell.seenSinceMs >= this.ctx.passivateAfterMs) {
      this.passivate(allocator, shell);
    } else if (allocator.seq - shell.snapshotSeq >= Math.max(this.ctx.snapshotEveryEvents, shell.snapshotReservations)) {
      shell.busy = true;
      const reservations = allocator.reservations.size + allocator.queue.size;
      this.snapshots.write(allocator, false).then(
        (written) => {
          // Only a written snapshot spaces the next one (a failed one is retried at the usual distance).
          shell.snapshotReservations = reservations;
          this.snapshotDone(shell, written.seq, written.bytes);
        },
        (error: unknown) => this.snapshotFailed(allocator.sku, shell, error),
      );
    }
  }

  /**
   * The sale is over and nothing is live: once everything decided is durable,
   * the passivated snapshot is written from the allocator, and the allocator
   * leaves memory if nothing happened meanwhile. GET still answers (the SKU is loaded again).
   */
  private passivate(allocator: SkuAllocator, shell: SkuShell): void {
    shell.busy = true;
    const seq = allocator.seq;
    this.ctx.outbox.barrier(allocator.sku, (error) => {
      if (error !== null) {
        shell.busy = false;
        return;
      }
      // Changed meanwhile (or rebuilt): it is not quiet after all; the sweeper looks again.
      if (this.allocators.get(allocator.sku) !== allocator || allocator.seq !== seq || this.closing) {
        shell.busy = false;
        return;
      }
      this.snapshots.write(allocator, true).then(
        (written) => {
          this.snapshotDone(shell, written.seq, written.bytes);
          const unchanged = this.allocators.get(allocator.sku) === allocator && allocator.seq === written.seq;
          if (!unchanged || this.closing || !allocator.canPassivate(this.ctx.nowMs())) return;
          this.remove(allocator.sku);
          this.ctx.stats.passivated += 1;
          this.ctx.notify({ type: 'passivated', sku: allocator.sku });
          this.ctx.log.info({ sku: allocator.sku, seq }, 'sale over: SKU passivated (left memory)');
        },
        (failure: unknown) => this.snapshotFailed(allocator.sku, shell, failure),
      );
    });
  }

  private snapshotDone(shell: SkuShell, seq: number, bytes: number): void {
    shell.busy = false;
    shell.snapshotSeq = Math.max(shell.snapshotSeq, seq);
    if (bytes > 0) this.ctx.stats.snapshotsWritten += 1;
  }

  private snapshotFailed(sku: string, shell: SkuShell, error: unknown): void {
    shell.busy = false;
    shell.retryAtMs = this.ctx.nowMs() + snapshotRetryMs;
    this.ctx.stats.snapshotsFailed += 1;
    this.ctx.log.warn({ err: error, sku }, 'snapshot failed; the log still holds everything, retrying later');
  }

  private expire(allocator: SkuAllocator, now: number): void {
    const events = allocator.expireDue(now);
    if (events.length === 0) return;
    const last = events[events.length - 1];
    for (const event of events) {
      this.apply(allocator, event);
      this.ctx.outbox.append(event, (error) => {
        if (error === null && event === last) this.publish(allocator);
      });
    }
    this.waitlists.offer(allocator, now);
  }

  private publish(allocator: SkuAllocator): void {
    this.ctx.notify({ type: 'stock', state: stockStateOf(allocator) });
  }

  /**
   * Publish once the group commit's callbacks have run: a batch of a hot SKU
   * then sends one stock notice instead of one per event. Readers want the
   * latest counts (a state is read live, so the last one of a batch already
   * held what the earlier ones would have told).
   */
  private publishSoon(allocator: SkuAllocator): void {
    if (this.unpublished.size === 0) queueMicrotask(this.publishUnpublished);
    this.unpublished.add(allocator);
  }

  private readonly publishUnpublished = (): void => {
    for (const allocator of this.unpublished) {
      try {
        this.publish(allocator);
      } catch (error) {
        // As in a commit callback: contained and logged, never an uncaught exception.
        this.ctx.log.error({ err: error, sku: allocator.sku }, 'publishing a stock notice failed');
      }
    }
    this.unpublished.clear();
  };

  // ------------------------------------------------------------ failures

  /**
   * A batch holding these SKUs' decisions failed (or another writer's rows
   * were found where ours should go): memory ran ahead of the log. Refuse them
   * until each is rebuilt from the log, then serve again; the rebuilt state is
   * exactly what Postgres holds, whoever wrote it.
   */
  onBatchFailed(skus: readonly string[], failure: BatchFailure): void {
    for (const sku of skus) this.rebuilding.add(sku);
    if (failure.error.fenced) {
      this.ctx.log.error({ skus, shard: this.id }, 'rows of another writer found in the log: rebuilding from it');
    }
    this.rebuild(skus).catch(this.ctx.onFatal);
  }

  private async rebuild(skus: readonly string[]): Promise<void> {
    for (const sku of skus) {
      for (;;) {
        try {
          const rebuilt = await this.ctx.loadSku(sku);
          if (rebuilt?.config == null) this.remove(sku);
          else this.install(rebuilt);
          this.rebuilding.delete(sku);
          if (rebuilt?.config != null) this.waitlists.offer(rebuilt, this.ctx.nowMs());
          this.ctx.log.info({ sku, seq: rebuilt?.seq ?? 0 }, 'SKU rebuilt from the event log');
          if (rebuilt?.config != null) this.publish(rebuilt);
          break;
        } catch (error) {
          if (error instanceof InvariantViolation) throw error;
          if (this.closing) return;
          this.ctx.log.warn({ err: error, sku }, 'rebuild from the log failed; retrying');
          await new Promise((resolve) => setTimeout(resolve, this.ctx.rebuildRetryMs));
        }
      }
    }
  }

  // ------------------------------------------------------------ commands

  private refuse(sku: string | null): Unavailable | null {
    if (this.closing) return { ok: false, code: 'unavailable', detail: 'the service is shutting down' };
    if (!this.recovered) return { ok: false, code: 'unavailable', detail: 'the service is still recovering' };
    if (sku !== null && this.rebuilding.has(sku)) {
      return { ok: false, code: 'unavailable', detail: `SKU ${sku} is being rebuilt from the log` };
    }
    return null;
  }

  private full(): Unavailable | null {
    if (this.ctx.outbox.hasRoom()) return null;
    return { ok: false, code: 'unavailable', detail: 'too many decisions are waiting for the database; retry shortly' };
  }

  /** Answer once `event` is durable; if its batch failed, the decision was undone: 503. */
  private commit<T>(allocator: SkuAllocator, event: StockEvent, value: () => T, attachment?: OrderAttachment): Promise<Outcome<T>> {
    this.apply(allocator, event);
    return new Promise((resolve, reject) => {
      this.ctx.outbox.append(
        event,
        (error) => {
          if (error !== null) {
            resolve(commitFailed(error));
            return;
          }
          this.publishSoon(allocator);
          // A reply that cannot be built is a bug: the request gets a 500, never silence.
          try {
            resolve({ ok: true, value: value() });
          } catch (thrown) {
            reject(thrown);
          }
        },
        attachment,
      );
      // Units this event gave back (a release, a payment that failed, more stock) go to the waitlist first.
      if (allocator.waitlist.waitingCount !== 0) this.waitlists.offer(allocator, this.ctx.nowMs());
    });
  }

  /**
   * The SKU's allocator for a decision, loading it when needed; refused while this shard
   * cannot write (before the load, and again after it: a load waits), not_found for no SKU.
   */
  private async loadedForWrite(sku: string): Promise<Outcome<SkuAllocator>> {
    const refused = this.refuse(sku) ?? this.full();
    if (refused) return refused;
    const allocator = await this.allocatorFor(sku);
    const again = this.refuse(sku) ?? this.full();
    if (again) return again;
    if (allocator === null) return { ok: false, code: 'not_found', detail: `SKU ${sku} does not exist` };
    return { ok: true, value: allocator };
  }

  /** Answer once everything decided so far for `sku` is durable (replays, repeated releases). */
  private afterDurable<T>(sku: string, value: T): Promise<Outcome<T>> {
    return new Promise((resolve) => {
      this.ctx.outbox.barrier(sku, (error) => resolve(error === null ? { ok: true, value } : commitFailed(error)));
    });
  }

  /** The SKU's allocator: in memory, or loaded from the log (a passivated sale); null if it never existed. */
  private allocatorFor(sku: string): SkuAllocator | null | Promise<SkuAllocator | null> {
    const inMemory = this.allocators.get(sku);
    if (inMemory !== undefined) return inMemory;
    let loading = this.loading.get(sku);
    if (loading === undefined) {
      loading = this.ctx.loadSku(sku).then(
        (loaded) => {
          this.loading.delete(sku);
          const raced = this.allocators.get(sku);
          if (raced !== undefined) return raced;
          if (loaded?.config != null) this.install(loaded);
          return loaded?.config != null ? loaded : null;
        },
        (error: unknown) => {
          this.loading.delete(sku);
          throw error;
        },
      );
      this.loading.set(sku, loading);
    }
    return loading;
  }

  async configure(request: ShardRequests['configure']): Promise<Outcome<{ created: boolean; view: SkuView }>> {
    const { sku, config } = request;
    const refused = this.refuse(sku) ?? this.full();
    if (refused) return refused;
    let allocator = await this.allocatorFor(sku);
    const again = this.refuse(sku) ?? this.full();
    if (again) return again;
    if (allocator === null) {
      allocator = new SkuAllocator(sku, this.ctx.limits);
      this.install(allocator);
    }
    return this.configureLoaded(allocator, config);
  }

  private configureLoaded(allocator: SkuAllocator, config: SkuConfig): Promise<Outcome<{ created: boolean; view: SkuView }>> {
    const decision = allocator.configure(config, this.ctx.nowMs());
    if (!decision.ok) return Promise.resolve(decision);
    const created = decision.created;
    return this.commit(allocator, decision.event, () => ({ created, view: skuView(allocator, this.ctx.nowMs()) }));
  }

  async getSku(request: ShardRequests['get_sku']): Promise<Outcome<SkuView>> {
    const refused = this.refuse(request.sku);
    if (refused) return refused;
    const allocator = await this.allocatorFor(request.sku);
    if (allocator?.config == null) return { ok: false, code: 'not_found', detail: `SKU ${request.sku} does not exist` };
    return { ok: true, value: skuView(allocator, this.ctx.nowMs()) };
  }

  /** The counts as the live feed shows them (a passivated sale is loaded, like getSku). */
  async getStock(request: ShardRequests['get_stock']): Promise<Outcome<StockState>> {
    const refused = this.refuse(request.sku);
    if (refused) return refused;
    const allocator = await this.allocatorFor(request.sku);
    if (allocator?.config == null) return { ok: false, code: 'not_found', detail: `SKU ${request.sku} does not exist` };
    return { ok: true, value: stockStateOf(allocator) };
  }

  // Not `async` on the hot path: the commit's own promise is returned as is.
  reserve(request: ShardRequests['reserve']): Promise<Outcome<ReservationView>> {
    const refused = this.refuse(request.sku) ?? this.full();
    if (refused) return Promise.resolve(refused);
    const allocator = this.allocatorFor(request.sku);
    if (allocator instanceof SkuAllocator) return this.reserveIn(allocator, request, false);
    return Promise.resolve(allocator).then((loaded) => {
      if (loaded === null) return { ok: false, code: 'not_found', detail: `SKU ${request.sku} does not exist` };
      return this.refuse(request.sku) ?? this.full() ?? this.reserveIn(loaded, request, false);
    });
  }

  private reserveIn(allocator: SkuAllocator, request: ShardRequests['reserve'], keyChecked: boolean): Promise<Outcome<ReservationView>> {
    if (request.admitted !== true && allocator.config?.waitingRoom) return Promise.resolve(admissionRequired(allocator.sku));
    const now = this.ctx.nowMs();
    // Built field by field: a spread of the request costs more on this path.
    const command = {
      reservationId: newReservationId(request.sku, this.shells.get(allocator.sku)?.idPrefix, now),
      shopperId: request.shopperId,
      quantity: request.quantity,
      idempotencyKey: request.idempotencyKey,
    };
    let decision = allocator.reserve(command, now, keyChecked ? keyCheckedOptions : undefined);
    if (!decision.ok && decision.code === 'sold_out') {
      // Holds that ran out but were not swept yet are stock: free them first.
      const next = allocator.nextExpiryMs();
      if (next !== null && next <= now) {
        this.expire(allocator, now);
        decision = allocator.reserve(command, now, keyChecked ? keyCheckedOptions : undefined);
      }
    }
    if (!decision.ok) return Promise.resolve(decision);
    if (decision.kind === 'key_remembered') return this.replayFromLog(allocator, request, now);
    if (decision.kind === 'replay') {
      // The original answer, even if the hold has changed since: same key, same response.
      return this.afterDurable(request.sku, reservationView(request.sku, decision.reservation, 'held'));
    }
    const view = holdView(decision.event, 'held');
    return this.commit(allocator, decision.event, () => view);
  }

  /** The key's reservation left memory: the log has the original answer (or the hash matched another key). */
  private async replayFromLog(allocator: SkuAllocator, request: ShardRequests['reserve'], now: number): Promise<Outcome<ReservationView>> {
    const original = await this.reader.reservedByKey(request.sku, request.shopperId, request.idempotencyKey, now - this.ctx.idempotencyKeyTtlMs);
    const refused = this.refuse(request.sku) ?? this.full();
    if (refused) return refused;
    if (original === null) return this.reserveIn(allocator, request, true);
    if (original.quantity !== request.quantity) {
      return { ok: false, code: 'idempotency_key_reused', detail: 'this Idempotency-Key was already used for a different request' };
    }
    return { ok: true, value: { ...original.view, status: 'held' } };
  }

  async getReservation(request: ShardRequests['get_reservation']): Promise<Outcome<ReservationView>> {
    const refused = this.refuse(null);
    if (refused) return refused;
    const { reservationId, shopperId } = request;
    const holder = this.holderOf(reservationId);
    const reservation = holder?.reservations.get(reservationId);
    if (holder !== undefined && reservation !== undefined) {
      if (reservation.shopperId !== shopperId) return notFound(reservationId);
      // A hold past its time is expired even if the sweeper has not recorded it yet.
      const expired = reservation.status === 'held' && this.ctx.nowMs() >= reservation.expiresAtMs;
      return { ok: true, value: reservationView(holder.sku, reservation, expired ? 'expired' : reservation.status) };
    }
    const logged = await this.reader.reservation(reservationId, this.ctx.nowMs());
    if (logged === null || logged.shopperId !== shopperId) return notFound(reservationId);
    return { ok: true, value: logged.view };
  }

  async release(request: ShardRequests['release']): Promise<Outcome<ReservationView>> {
    const { reservationId, shopperId } = request;
    const allocator = this.holderOf(reservationId);
    if (allocator === undefined) return this.settledFromLog(reservationId, shopperId, 'release');
    const refused = this.refuse(allocator.sku) ?? this.full();
    if (refused) return refused;
    const decision = allocator.release(reservationId, shopperId, this.ctx.nowMs());
    if (!decision.ok) return decision;
    const reservation = decision.reservation;
    if (decision.event === null) return this.afterDurable(allocator.sku, reservationView(allocator.sku, reservation));
    return this.commit(allocator, decision.event, () => reservationView(allocator.sku, reservation));
  }

  /**
   * Release or checkout of a reservation not in memory: it settled long ago
   * (or never existed). Released and expired ones release idempotently; every
   * other status cannot be released or checked out any more.
   */
  private async settledFromLog(reservationId: string, shopperId: string, what: 'release' | 'checkout'): Promise<Outcome<never> | Outcome<ReservationView>> {
    const refused = this.refuse(null);
    if (refused) return refused;
    const logged = await this.reader.reservation(reservationId, this.ctx.nowMs());
    if (logged === null || logged.shopperId !== shopperId) return notFound(reservationId);
    const status = logged.view.status;
    if (what === 'release' && (status === 'released' || status === 'expired')) return { ok: true, value: logged.view };
    if (status === 'held') {
      return { ok: false, code: 'unavailable', detail: `the SKU of reservation ${reservationId} is not loaded; retry shortly` };
    }
    const action = what === 'release' ? 'released' : 'checked out';
    return { ok: false, code: 'reservation_not_held', detail: `reservation is ${status}; it can no longer be ${action}` };
  }

  checkout(request: ShardRequests['checkout']): Promise<Outcome<CheckoutView>> {
    return this.checkoutIn(request, false);
  }

  private async checkoutIn(request: ShardRequests['checkout'], keyChecked: boolean): Promise<Outcome<CheckoutView>> {
    const allocator = this.holderOf(request.reservationId);
    if (allocator?.config == null) return this.checkoutFromLog(request);
    const refused = this.refuse(allocator.sku) ?? this.full();
    if (refused) return refused;
    const now = this.ctx.nowMs();
    const orderId = newReservationId(allocator.sku, undefined, now);
    const decision = allocator.checkout({ ...request, orderId }, now, keyChecked ? keyCheckedOptions : undefined);
    if (!decision.ok) return decision;
    if (decision.kind === 'key_remembered') return this.checkoutKeyFromLog(allocator.sku, request);
    if (decision.kind === 'replay') {
      return this.afterDurable(allocator.sku, { orderId: decision.orderId, reservationId: request.reservationId, status: 'pending' as const });
    }
    const reservation = allocator.reservations.get(request.reservationId)!;
    const config = allocator.config;
    const order = {
      orderId,
      reservationId: request.reservationId,
      sku: allocator.sku,
      shopperId: request.shopperId,
      quantity: reservation.quantity,
      amountCents: reservation.quantity * config.priceCents,
      currency: config.currency,
      paymentMethod: request.paymentMethod,
      idempotencyKey: request.idempotencyKey,
    };
    const view: CheckoutView = { orderId, reservationId: request.reservationId, status: 'pending' };
    const outcome = await this.commit(allocator, decision.event, () => view, { kind: 'order_created', order });
    if (outcome.ok) this.ctx.notify({ type: 'checkout_durable', orderId });
    return outcome;
  }

  /** A checkout of a reservation that left memory: a repeat of the original is answered from its order. */
  private async checkoutFromLog(request: ShardRequests['checkout']): Promise<Outcome<CheckoutView>> {
    const refused = this.refuse(null);
    if (refused) return refused;
    const now = this.ctx.nowMs();
    const logged = await this.reader.reservation(request.reservationId, now);
    if (logged !== null && logged.shopperId === request.shopperId) {
      const sinceMs = now - this.ctx.idempotencyKeyTtlMs;
      const order = await this.reader.orderByCheckoutKey(logged.view.sku, request.shopperId, request.idempotencyKey, sinceMs);
      if (order !== null) return checkoutReplay(order, request);
    }
    return this.settledFromLog(request.reservationId, request.shopperId, 'checkout') as Promise<Outcome<CheckoutView>>;
  }

  /**
   * The checkout key's hash is remembered from a checkout that left memory: its order, if started
   * within the TTL, makes this a reuse (or a repeat); otherwise the key is decided as new. Decided
   * here, before anything is written, so a reused key is refused alone and never reaches a group commit.
   */
  private async checkoutKeyFromLog(sku: string, request: ShardRequests['checkout']): Promise<Outcome<CheckoutView>> {
    const sinceMs = this.ctx.nowMs() - this.ctx.idempotencyKeyTtlMs;
    const order = await this.reader.orderByCheckoutKey(sku, request.shopperId, request.idempotencyKey, sinceMs);
    if (order !== null) return checkoutReplay(order, request);
    // Memory may have changed while Postgres answered (a rebuild): decide again from what is there now.
    return this.checkoutIn(request, true);
  }

  async settle(request: ShardRequests['settle']): Promise<Outcome<{ changed: boolean }>> {
    const loaded = await this.loadedForWrite(request.sku);
    if (!loaded.ok) return loaded;
    const allocator = loaded.value;
    const reservation = allocator.reservations.get(request.reservationId);
    if (reservation === undefined || reservation.checkout?.orderId !== request.orderId) {
      // Settled long ago and left memory: a repeated job or webhook changes nothing.
      const logged = await this.reader.reservation(request.reservationId, this.ctx.nowMs());
      const settled = logged !== null && (logged.view.status === 'paid' || logged.view.status === 'payment_failed');
      if (settled) return { ok: true, value: { changed: false } };
      return { ok: false, code: 'not_found', detail: `order ${request.orderId} holds no reservation here` };
    }
    const event = allocator.settlePayment(request.reservationId, request.outcome, this.ctx.nowMs());
    // Already settled (a repeated job or webhook): answer once that is durable.
    if (event === null) return this.afterDurable(request.sku, { changed: false });
    return this.commit(allocator, event, () => ({ changed: true }), {
      kind: 'order_settled',
      orderId: request.orderId,
      status: request.outcome === 'committed' ? 'paid' : 'failed',
      failureReason: request.outcome === 'committed' ? null : request.failureReason,
    });
  }

  /**
   * End a sale for good: live holds are released, pending payments still
   * settle, reservations are refused with sale_not_open; the sweeper then
   * passivates it. Archiving an archived SKU answers its view again.
   */
  async archive(request: ShardRequests['archive']): Promise<Outcome<SkuView>> {
    const loaded = await this.loadedForWrite(request.sku);
    if (!loaded.ok) return loaded;
    const allocator = loaded.value;
    const decision = allocator.archive(this.ctx.nowMs());
    if (!Array.isArray(decision)) return decision;
    if (decision.length === 0) return this.afterDurable(request.sku, skuView(allocator, this.ctx.nowMs()));
    if (!this.ctx.outbox.hasRoom(decision.length)) {
      return { ok: false, code: 'unavailable', detail: 'too many decisions are waiting for the database; retry shortly' };
    }
    const last = decision[decision.length - 1]!;
    for (const event of decision.slice(0, -1)) {
      this.apply(allocator, event);
      this.ctx.outbox.append(event, () => undefined);
    }
    // One batch is serial and in order: when the last is durable, all are (a failure fails it too).
    return this.commit(allocator, last, () => skuView(allocator, this.ctx.nowMs()));
  }

  /** A ticket in the SKU's waiting room: the shopper's existing one (once durable) or a new, logged one. */
  async queueJoin(request: ShardRequests['queue_join']): Promise<Outcome<QueueView>> {
    const loaded = await this.loadedForWrite(request.sku);
    if (!loaded.ok) return loaded;
    const allocator = loaded.value;
    const now = this.ctx.nowMs();
    const ticketId = newReservationId(request.sku, this.shells.get(allocator.sku)?.idPrefix);
    const decision = allocator.joinQueue(request.shopperId, ticketId, now);
    if (!decision.ok) return decision;
    if (decision.kind === 'existing') {
      return this.afterDurable(request.sku, queueView(allocator, allocator.queue.indexOfTicket(decision.ticketId)!, now));
    }
    return this.commit(allocator, decision.event, () => queueView(allocator, allocator.queue.indexOfTicket(ticketId)!, this.ctx.nowMs()));
  }

  /** Where a ticket stands, from memory: no I/O, O(log n), one reply object. Another shopper's ticket is not_found. */
  queuePoll(request: ShardRequests['queue_poll']): Promise<Outcome<QueueView>> {
    const refused = this.refuse(null);
    if (refused) return Promise.resolve(refused);
    const hash = Number.parseInt(request.ticket.slice(0, 8), 16);
    for (const allocator of this.byHash.get(hash) ?? []) {
      const index = allocator.queue.indexOfTicket(request.ticket);
      if (index === undefined) continue;
      if (this.rebuilding.has(allocator.sku)) return Promise.resolve(this.refuse(allocator.sku)!);
      if (allocator.queue.shopperOf(index) !== request.shopperId) break;
      return Promise.resolve({ ok: true, value: queueView(allocator, index, this.ctx.nowMs()) });
    }
    return Promise.resolve({ ok: false, code: 'not_found', detail: `ticket ${request.ticket} does not exist` });
  }

  joinWaitlist(request: ShardRequests['join_waitlist']): Promise<Outcome<WaitlistView>> {
    return this.waitlists.join(request);
  }

  async getWaitlist(request: ShardRequests['get_waitlist']): Promise<Outcome<WaitlistView>> {
    return this.waitlists.get(request);
  }

  leaveWaitlist(request: ShardRequests['leave_waitlist']): Promise<Outcome<WaitlistView>> {
    return this.waitlists.leave(request);
  }

  /** Counts of a SKU in memory, synchronously (audit); null when not in memory. */
  stockState(sku: string): StockState | null {
    const allocator = this.allocators.get(sku);
    if (allocator?.config == null || this.rebuilding.has(sku)) return null;
    return stockStateOf(allocator);
  }
}

/** A checkout key found in an order: the same checkout repeated gets its order, anything else is a reuse. */
function checkoutReplay(order: LoggedOrder, request: ShardRequests['checkout']): Outcome<CheckoutView> {
  if (order.reservationId !== request.reservationId || order.paymentMethod !== request.paymentMethod) {
    return { ok: false, code: 'idempotency_key_reused', detail: 'this Idempotency-Key was already used for a different checkout' };
  }
  return { ok: true, value: { orderId: order.orderId, reservationId: request.reservationId, status: 'pending' } };
}

function admissionRequired(sku: string): Outcome<never> {
  return { ok: false, code: 'admission_required', detail: `SKU ${sku} has a waiting room: send the Admission-Token of your admitted ticket` };
}

function notFound(reservationId: string): Outcome<never> {
  return { ok: false, code: 'not_found', detail: `reservation ${reservationId} does not exist` };
}
