/**
 * A fixed-window budget per key, in memory, on an injected clock: the first
 * point a key spends opens its window (`windowMs` long, `points` to spend);
 * past the budget a spend is refused with the milliseconds until the window
 * closes. The same rule as rate-limiter-flexible's memory store, without a
 * timer per key: closed windows are swept at most once per window length, so
 * memory is bounded by the keys active in the last two windows.
 */
export class WindowBudget {
  private readonly windows = new Map<string, { closesAtMs: number; spent: number }>();
  private nextSweepAtMs = -Infinity;

  constructor(
    private readonly points: number,
    private readonly windowMs: number,
    private readonly nowMs: () => number,
  ) {
    if (!(Number.isInteger(points) && points > 0)) throw new Error(`WindowBudget: points must be a positive integer, got ${points}`);
    if (!(windowMs > 0)) throw new Error(`WindowBudget: windowMs must be positive, got ${windowMs}`);
  }

  /** Spend one point of `key`'s budget: null when spent, else the milliseconds until its window closes (≥ 1). */
  spend(key: string): number | null {
    const now = this.nowMs();
    if (now >= this.nextSweepAtMs) this.sweep(now);
    let window = this.windows.get(key);
    if (window === undefined || now >= window.closesAtMs) {
      window = { closesAtMs: now + this.windowMs, spent: 0 };
      this.windows.set(key, window);
    }
    if (window.spent >= this.points) return Math.max(1, window.closesAtMs - now);
    window.spent++;
    return null;
  }

  /** Keys with an open window (tests, metrics). */
  get size(): number {
    return this.windows.size;
  }

  private sweep(now: number): void {
    for (const [key, window] of this.windows) if (now >= window.closesAtMs) this.windows.delete(key);
    this.nextSweepAtMs = now + this.windowMs;
  }
}
