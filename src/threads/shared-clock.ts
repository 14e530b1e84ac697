/**
 * A clock tests set by hand that shard threads can read too. A thread cannot
 * call a closure of another thread, so an injected `nowMs` is refused with
 * SHARD_THREADS > 1 unless it is `Date.now` or one of these: its time lives in
 * a SharedArrayBuffer that every thread reads (the only memory shared across
 * threads, and only under a test clock).
 */
const buffers = new WeakMap<() => number, SharedArrayBuffer>();

export class SharedClock {
  readonly buffer: SharedArrayBuffer;
  private readonly view: Float64Array;
  readonly nowMs: () => number;

  constructor(startMs: number) {
    this.buffer = new SharedArrayBuffer(Float64Array.BYTES_PER_ELEMENT);
    this.view = new Float64Array(this.buffer);
    this.view[0] = startMs;
    this.nowMs = readSharedClock(this.buffer);
    buffers.set(this.nowMs, this.buffer);
  }

  advance(ms: number): number {
    this.view[0] = this.view[0]! + ms;
    return this.view[0];
  }
}

/** The reader of a clock shared by another thread. */
export function readSharedClock(buffer: SharedArrayBuffer): () => number {
  const view = new Float64Array(buffer);
  return () => view[0]!;
}

/** The buffer behind `nowMs` when it is a SharedClock's (undefined for any other function). */
export function sharedClockBuffer(nowMs: () => number): SharedArrayBuffer | undefined {
  return buffers.get(nowMs);
}
