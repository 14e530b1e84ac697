import { TurnBatch } from './turn-batch.js';

/** What every envelope a link sends carries: the requester's id, unique per link, handed out in order. */
export interface Identified {
  id: number;
}

/** A request waiting for its reply. Insertion order is deadline order (one timeout for all). */
export interface Pending<W extends Identified, A> {
  envelope: W;
  resolve: (answer: A) => void;
  /** Handed to the transport: from now on it may have run (a failure then is an unknown outcome). */
  sent: boolean;
  deadlineMs: number;
}

export interface RequesterOptions<W extends Identified, A> {
  /** Requests queued or awaiting a reply; past it `refusal()` says so and the caller answers at once. */
  maxInFlight: number;
  /** A reply later than this fails its request; null: no deadline (a port to a thread of this process). */
  timeoutMs: number | null;
  /** What a request answers when the road fails (`sent`: it may have run). Never throws. */
  failed: (envelope: W, detail: string, sent: boolean) => A;
  /** The transport: the envelopes of one event-loop turn (it marks each one it hands on with `markSent`). */
  flush: (envelopes: W[]) => void;
}

/**
 * The one request side of every link (MessagePort, cluster socket): ids, the
 * id → pending map, the in-flight bound, the per-turn batch, timeouts, and
 * failing what waits when the road breaks — nothing hangs. Generic over the
 * envelope a transport sends and the answer its callers get; it never looks
 * inside either.
 */
export class Requester<W extends Identified, A> {
  private readonly pending = new Map<number, Pending<W, A>>();
  private readonly batch: TurnBatch<W>;
  private readonly sweepTimer: NodeJS.Timeout | null = null;
  private readonly drainWaiters: (() => void)[] = [];
  private lastId = 0;
  private closedReason: string | null = null;
  readonly stats = { sent: 0, timedOut: 0 };

  constructor(private readonly options: RequesterOptions<W, A>) {
    this.batch = new TurnBatch((envelopes) => {
      if (this.closedReason === null && envelopes.length > 0) options.flush(envelopes);
    });
    if (options.timeoutMs !== null) {
      this.sweepTimer = setInterval(() => this.sweep(), Math.max(10, Math.floor(options.timeoutMs / 4)));
      this.sweepTimer.unref();
    }
  }

  /** Requests sent or queued and not yet answered. */
  get inFlight(): number {
    return this.pending.size;
  }

  /** Why a new request cannot be taken now (closed, or the bound reached); null: it can. */
  refusal(): string | null {
    if (this.closedReason !== null) return this.closedReason;
    return this.pending.size >= this.options.maxInFlight ? 'too many requests in flight' : null;
  }

  /** The id for the next envelope. */
  nextId(): number {
    this.lastId += 1;
    return this.lastId;
  }

  /** Whether `id` was handed out (a reply to an id above it answers a request never sent). */
  issued(id: number): boolean {
    return id <= this.lastId;
  }

  /** Queues `envelope` (its id from nextId, after `refusal()` said null) for this turn's flush. */
  send(envelope: W): Promise<A> {
    const deadlineMs = this.options.timeoutMs === null ? 0 : Date.now() + this.options.timeoutMs;
    return new Promise<A>((resolve) => {
      this.pending.set(envelope.id, { envelope, resolve, sent: false, deadlineMs });
      this.batch.add(envelope);
    });
  }

  /** The transport hands `id` on now; false when it is no longer waited for (timed out while queued). */
  markSent(id: number): boolean {
    const entry = this.pending.get(id);
    if (entry === undefined) return false;
    entry.sent = true;
    this.stats.sent += 1;
    return true;
  }

  /** The waiting request of a reply, taken out of the map (the transport decodes the reply against it). */
  take(id: number): Pending<W, A> | undefined {
    const entry = this.pending.get(id);
    if (entry === undefined) return undefined;
    this.pending.delete(id);
    return entry;
  }

  /** Answers a taken request (every taken one is answered: a reply, or why it was refused). */
  answer(entry: Pending<W, A>, answer: A): void {
    entry.resolve(answer);
    this.checkDrained();
  }

  /** Every request handed to the transport fails (the connection dropped): their outcome is unknown. */
  failSent(detail: string): void {
    for (const [id, entry] of this.pending) {
      if (!entry.sent) continue;
      this.pending.delete(id);
      entry.resolve(this.options.failed(entry.envelope, detail, true));
    }
    this.checkDrained();
  }

  /** Every request waiting fails: unsent ones certainly did not run, sent ones may have. */
  failAll(detail: string): void {
    this.batch.clear();
    for (const [id, entry] of this.pending) {
      this.pending.delete(id);
      entry.resolve(this.options.failed(entry.envelope, detail, entry.sent));
    }
    this.checkDrained();
  }

  /** No new request from now on; every waiting one fails with `reason`. */
  close(reason: string): void {
    this.closedReason ??= reason;
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer);
    this.failAll(reason);
  }

  get closed(): boolean {
    return this.closedReason !== null;
  }

  /** Resolves once no request waits (shutdown: answer before closing sockets). */
  drained(): Promise<void> {
    if (this.pending.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  private checkDrained(): void {
    if (this.pending.size > 0 || this.drainWaiters.length === 0) return;
    for (const waiter of this.drainWaiters.splice(0)) waiter();
  }

  private sweep(): void {
    const nowMs = Date.now();
    for (const [id, entry] of this.pending) {
      if (entry.deadlineMs > nowMs) break;
      this.pending.delete(id);
      this.stats.timedOut += 1;
      entry.resolve(this.options.failed(entry.envelope, entry.sent ? 'the owner did not reply in time' : 'not sent in time', entry.sent));
    }
    this.checkDrained();
  }
}
