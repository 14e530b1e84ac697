import v8 from 'node:v8';

/**
 * Bytes allocated on this thread's V8 heap since the call, for the
 * micro-benchmarks that run in one process (a server the bench starts is
 * counted by bench/lib/alloc-probe.cjs the same way). Node 20 has no
 * allocation counter: the garbage collector's own accounting stands in,
 * used now − used at start + everything collections freed since.
 */
export function allocationCounter(): () => number {
  const profiler = new v8.GCProfiler();
  const usedAtStart = v8.getHeapStatistics().used_heap_size;
  let freed = 0;
  profiler.start();
  return () => {
    const stats = profiler.stop();
    profiler.start();
    for (const s of stats.statistics) freed += s.beforeGC.heapStatistics.usedHeapSize - s.afterGC.heapStatistics.usedHeapSize;
    return v8.getHeapStatistics().used_heap_size - usedAtStart + freed;
  };
}
