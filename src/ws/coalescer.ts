/**
 * Per-key coalescing, as a pure state machine (no clock, no timers): the shell
 * owns the timer and calls `windowEnded` `windowMs` after every publish.
 *
 * Rules, per key: the first change after a quiet window is published at once
 * (no added latency for a lone update); changes inside a window only mark the
 * key pending; when the window ends a pending key is published once more (with
 * whatever state is latest *then*) and a new window starts. So a key is
 * published at most once per window, and the last publish always follows the
 * last change: subscribers end on the latest state.
 *
 * Memory: a key has an entry only while its window is open, so the map holds
 * just the keys that changed in the last window.
 */
export type CoalesceAction = 'publish' | 'wait';

export class Coalescer {
  /** key → a change arrived during the open window. */
  private readonly pending = new Map<string, boolean>();

  /** A change of `key`. 'publish': publish now and end the window later; 'wait': the window's end will. */
  changed(key: string): CoalesceAction {
    if (!this.pending.has(key)) {
      this.pending.set(key, false);
      return 'publish';
    }
    this.pending.set(key, true);
    return 'wait';
  }

  /** The window opened by `key`'s last publish is over. 'publish': publish again, and a new window starts. */
  windowEnded(key: string): CoalesceAction | 'idle' {
    const pending = this.pending.get(key);
    if (pending === undefined) return 'idle';
    if (pending) {
      this.pending.set(key, false);
      return 'publish';
    }
    this.pending.delete(key);
    return 'idle';
  }

  /** Keys with an open window. */
  get size(): number {
    return this.pending.size;
  }
}

/**
 * The imperative half: a Coalescer, and the open windows in the order they
 * end. Every window lasts `windowMs`, so they end in the order they opened: a
 * queue of (key, end time) and one timer for its head replace a timer per open
 * window (with many SKUs changing, that was a timer per change).
 * `publish(key)` reads the latest state itself, so it always sends the newest.
 */
export class CoalescingPublisher {
  private readonly coalescer = new Coalescer();
  /** Open windows, oldest first from `head`: their keys and end times side by side (no object per window). */
  private keys: string[] = [];
  private endsAtMs: number[] = [];
  private head = 0;
  private timer: NodeJS.Timeout | null = null;
  /** Inside windowsEnded: it arms the timer once it is done, not for each window it reopens. */
  private ending = false;
  private closed = false;

  constructor(
    private readonly windowMs: number,
    private readonly publish: (key: string) => void,
    private readonly onError: (error: unknown) => void,
    private readonly nowMs: () => number = () => performance.now(),
  ) {}

  changed(key: string): void {
    if (this.closed) return;
    if (this.coalescer.changed(key) === 'publish') this.publishAndWait(key);
  }

  private publishAndWait(key: string): void {
    try {
      this.publish(key);
    } catch (error) {
      this.onError(error);
    }
    this.keys.push(key);
    this.endsAtMs.push(this.nowMs() + this.windowMs);
    if (this.timer === null && !this.ending) this.arm();
  }

  private arm(): void {
    // Whole milliseconds: Node keeps one timer list per distinct duration.
    this.timer = setTimeout(this.windowsEnded, Math.max(1, Math.ceil(this.endsAtMs[this.head]! - this.nowMs())));
  }

  /** Every window that has ended, in order; a trailing publish opens a new one at the back. */
  private readonly windowsEnded = (): void => {
    this.timer = null;
    if (this.closed) return;
    const now = this.nowMs();
    // Only the windows queued before this call: the ones it reopens end a whole window later.
    const queued = this.keys.length;
    this.ending = true;
    while (this.head < queued && this.endsAtMs[this.head]! <= now) {
      const key = this.keys[this.head]!;
      this.head += 1;
      if (this.coalescer.windowEnded(key) === 'publish') this.publishAndWait(key);
    }
    this.ending = false;
    if (this.head > 1024 && this.head * 2 > this.keys.length) {
      this.keys = this.keys.slice(this.head);
      this.endsAtMs = this.endsAtMs.slice(this.head);
      this.head = 0;
    }
    if (this.head < this.keys.length) this.arm();
  };

  get openWindows(): number {
    return this.coalescer.size;
  }

  close(): void {
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.keys = [];
    this.endsAtMs = [];
    this.head = 0;
  }
}
