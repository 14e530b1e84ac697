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
 * The imperative half: a Coalescer plus one timer per open window.
 * `publish(key)` reads the latest state itself, so it always sends the newest.
 */
export class CoalescingPublisher {
  private readonly coalescer = new Coalescer();
  private readonly timers = new Set<NodeJS.Timeout>();
  private closed = false;

  constructor(
    private readonly windowMs: number,
    private readonly publish: (key: string) => void,
    private readonly onError: (error: unknown) => void,
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
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      if (!this.closed && this.coalescer.windowEnded(key) === 'publish') this.publishAndWait(key);
    }, this.windowMs);
    this.timers.add(timer);
  }

  get openWindows(): number {
    return this.coalescer.size;
  }

  close(): void {
    this.closed = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
  }
}
