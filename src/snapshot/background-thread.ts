import { readlinkSync } from 'node:fs';
import { setPriority } from 'node:os';
import { isMainThread } from 'node:worker_threads';

/**
 * Background work (snapshots, the audit) runs on worker threads so that it
 * never blocks the allocators' event loop; on a machine with few cores it would
 * still take CPU time from that loop, Postgres and the front ends. Each worker
 * thread therefore lowers its own scheduling priority: it uses the CPU that
 * nothing else wants, and only falls behind (a snapshot written later, a
 * longer tail at the next restart) while the machine is saturated.
 */

/** Nice value of background threads (0 normal … 19 lowest). */
export const backgroundThreadNice = 10;

let lowered = false;

/** Lower this worker thread's priority (Linux: a thread's own id from /proc/thread-self). Never the main thread; best effort. */
export function lowerThisThreadsPriority(): void {
  if (lowered || isMainThread) return;
  lowered = true;
  try {
    // "<pid>/task/<tid>": setpriority() with a thread id applies to that thread only.
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
    if (Number.isInteger(tid) && tid > 0) setPriority(tid, backgroundThreadNice);
  } catch {
    // Not Linux, or not permitted: the thread keeps the process's priority.
  }
}
