/**
 * Per-key request budgets in fixed windows (a shopper, a client address): a
 * key's window opens at its first request, admits `points` requests, and ends
 * `windowMs` later; the next request opens a new one. These are the semantics
 * of the rate-limiter-flexible memory store the service used before (and of
 * the Redis windows, redis-windows.ts, that share budgets across nodes), at a
 * fraction of its cost:
 * no timer per key, no promise and no object per check. Time is passed in.
 *
 * Each key holds one number in a Map: (window start − generation base +
 * windowMs) × (points + 1) + requests admitted, an integer small enough to be
 * a V8 Smi for ordinary limits (an update then allocates nothing).
 *
 * Memory is bounded without timers by two generations of keys: a key is
 * written to the current Map; a key found only in the previous one moves over
 * on use; on each rotation the previous Map is dropped. A generation lasts at
 * least `windowMs`, so a key dropped was idle for a whole window: its window
 * had ended, and forgetting it changes nothing. A generation also ends early
 * when it holds `maxKeys` keys; then keys idle for less than a window may be
 * forgotten (their next request opens a fresh window): at most 2 × maxKeys
 * keys are held, and under a flood of distinct keys the table errs on the side
 * of admitting a request rather than refusing another.
 */

export interface WindowSettings {
  /** Requests admitted per window. */
  points: number;
  windowMs: number;
  /** Keys one generation may hold before it rotates early (the memory bound: at most twice this many). */
  maxKeys: number;
}

export class RateWindows {
  private current = new Map<string, number>();
  private previous = new Map<string, number>();
  /** Start of the current generation (whole ms): window starts in `current` count from here. */
  private baseMs: number;
  /** Add to a window start decoded from `previous` to count it from `baseMs`. */
  private previousShiftMs = 0;
  private readonly stride: number;
  private readonly points: number;
  private readonly windowMs: number;
  private readonly maxKeys: number;

  constructor(settings: WindowSettings, nowMs: number) {
    for (const name of ['points', 'windowMs', 'maxKeys'] as const) {
      const v = settings[name];
      if (!(Number.isInteger(v) && v >= 1)) throw new RangeError(`${name} must be a positive integer, got ${v}`);
    }
    this.points = settings.points;
    this.stride = settings.points + 1;
    this.windowMs = settings.windowMs;
    this.maxKeys = settings.maxKeys;
    this.baseMs = Math.floor(nowMs);
  }

  /** Keys held (both generations; a key may be in both). */
  get size(): number {
    return this.current.size + this.previous.size;
  }

  /**
   * Spends one request of `key`'s window at `nowMs`: 0 when admitted, else the
   * milliseconds until its window ends (the request is refused and not counted).
   */
  take(key: string, nowMs: number): number {
    const now = Math.floor(nowMs);
    if (now - this.baseMs >= this.windowMs || this.current.size >= this.maxKeys) this.rotate(now);
    // Window starts relative to the base; a clock that stepped back before the base counts as the base.
    const at = Math.max(0, now - this.baseMs);
    let start = at;
    let used = 0;
    let held = this.current.get(key);
    let shift = 0;
    if (held === undefined) {
      held = this.previous.get(key);
      shift = this.previousShiftMs;
    }
    if (held !== undefined) {
      used = held % this.stride;
      start = (held - used) / this.stride - this.windowMs + shift;
      if (at >= start + this.windowMs) {
        // Ended: a fresh window. (A clock that stepped back keeps counting in the open one.)
        start = at;
        used = 0;
      }
    }
    if (used >= this.points) return start + this.windowMs - at;
    this.current.set(key, (start + this.windowMs) * this.stride + used + 1);
    return 0;
  }

  private rotate(now: number): void {
    this.previousShiftMs = this.baseMs - now;
    this.baseMs = now;
    this.previous = this.current;
    this.current = new Map();
  }
}
