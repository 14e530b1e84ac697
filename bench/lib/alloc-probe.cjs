/**
 * Bytes a server process allocates on its V8 heaps, every thread counted
 * (bench only; preloaded with `node --require` into each server process the
 * bench starts, and so into each of its worker threads).
 *
 * Node 20 has no allocation counter, so each thread keeps one from the
 * garbage collector's own accounting (v8.GCProfiler: the heap's used size
 * before and after every collection):
 *
 *   allocated = used now − used at start + Σ (used before GC − used after GC)
 *
 * Everything allocated is either still on the heap or was freed by a
 * collection, so this is exact up to V8's own size bookkeeping. It counts the
 * JS heap (objects, strings, closures, promises, typed-array headers), not the
 * off-heap backing stores of Buffers/ArrayBuffers.
 *
 * On SIGUSR2 the main thread asks every thread over a BroadcastChannel, waits
 * briefly for their answers, and writes the sum to BENCH_ALLOC_FILE as one
 * JSON object { seq, bytes, threads }. A thread that has exited keeps its
 * last answer in the sum.
 */
'use strict';
const v8 = require('node:v8');
const fs = require('node:fs');
const { BroadcastChannel, isMainThread, threadId } = require('node:worker_threads');

const file = process.env.BENCH_ALLOC_FILE;
if (file) {
  const profiler = new v8.GCProfiler();
  const usedAtStart = v8.getHeapStatistics().used_heap_size;
  let freed = 0;
  profiler.start();
  const allocated = () => {
    const stats = profiler.stop();
    profiler.start();
    for (const s of stats.statistics) freed += s.beforeGC.heapStatistics.usedHeapSize - s.afterGC.heapStatistics.usedHeapSize;
    return v8.getHeapStatistics().used_heap_size - usedAtStart + freed;
  };
  const channel = new BroadcastChannel('flashstock-bench-alloc');
  channel.unref();
  if (isMainThread) {
    const answers = new Map();
    const answerWaitMs = 150;
    channel.onmessage = (event) => {
      const m = event.data;
      if (m !== null && typeof m === 'object' && m.answer === true) answers.set(m.threadId, m.bytes);
    };
    process.on('SIGUSR2', () => {
      const seq = Date.now();
      channel.postMessage({ ask: seq });
      setTimeout(() => {
        let bytes = allocated();
        for (const b of answers.values()) bytes += b;
        fs.writeFileSync(file, JSON.stringify({ seq, bytes, threads: answers.size + 1 }));
      }, answerWaitMs);
    });
  } else {
    channel.onmessage = (event) => {
      const m = event.data;
      if (m !== null && typeof m === 'object' && typeof m.ask === 'number') channel.postMessage({ answer: true, threadId, bytes: allocated() });
    };
  }
}
