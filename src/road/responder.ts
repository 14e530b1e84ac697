import { TurnBatch } from './turn-batch.js';

/**
 * The one serving side of every link: the bound on requests being served for
 * one caller, and the replies (and whatever else the transport sends back,
 * notices) of one event-loop turn flushed together.
 */
export class Responder<T> {
  private serving = 0;
  private readonly batch: TurnBatch<T>;
  private closed = false;
  private idleWaiters: (() => void)[] = [];

  constructor(
    private readonly maxInFlight: number,
    flush: (items: T[]) => void,
  ) {
    this.batch = new TurnBatch((items) => {
      if (!this.closed) flush(items);
    });
  }

  /** Takes one request to serve; false past the bound (the caller is answered `unavailable`). */
  admit(): boolean {
    if (this.serving >= this.maxInFlight) return false;
    this.serving += 1;
    return true;
  }

  /** The reply of an admitted request. */
  done(item: T): void {
    this.serving -= 1;
    this.add(item);
    if (this.serving === 0 && this.idleWaiters.length > 0) for (const resolve of this.idleWaiters.splice(0)) resolve();
  }

  /** Resolves once every admitted request has its reply queued (a thread about to end). */
  idle(): Promise<void> {
    if (this.serving === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Sends what this turn queued now, not at the turn's end. */
  flushNow(): void {
    if (!this.closed) this.batch.flushNow();
  }

  /** Something to send back with this turn's replies (a refusal, a notice). */
  add(item: T): void {
    if (!this.closed) this.batch.add(item);
  }

  /** A flush this turn even with nothing to send (news the transport adds itself). */
  schedule(): void {
    if (!this.closed) this.batch.schedule();
  }

  close(): void {
    this.closed = true;
    this.batch.clear();
  }
}
