/**
 * The one batcher of the road: `add` queues, and one flush per event-loop
 * turn (setImmediate: after the turn's I/O callbacks) hands the whole batch
 * on. A link sends at most one message per turn whatever the number of
 * requests, replies or notices in it.
 */
export class TurnBatch<T> {
  private items: T[] = [];
  private scheduled = false;

  constructor(private readonly flush: (items: T[]) => void) {}

  add(item: T): void {
    this.items.push(item);
    this.schedule();
  }

  /** A flush this turn even with nothing queued (a link that has news besides its items). */
  schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.run());
  }

  /** Hands the batch on now rather than at the turn's end (a thread about to end leaves nothing behind). */
  flushNow(): void {
    this.run();
  }

  private run(): void {
    // A batch flushed early: the turn's own callback finds nothing scheduled.
    if (!this.scheduled) return;
    this.scheduled = false;
    const items = this.items;
    this.items = [];
    this.flush(items);
  }

  /** Forgets what waits (a link that closed answers it otherwise). */
  clear(): void {
    this.items = [];
  }
}
