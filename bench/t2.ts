import { startChild } from './lib/process.js';
import { runLoad } from './lib/loadgen.js';
const s = await startChild('/work/main/bench/baselines/hello.ts', { label: 'hello' });
const url = `http://127.0.0.1:${s.info.port}`;
const r = await runLoad({ url, scenario: process.argv[2] ?? 'hot-sku', params: { sku: 'x', shoppersPerThread: 1000, readShare: 0.9 }, finite: false, mode: 'closed', connections: 64, rate: 0, durationMs: 4000, timeoutMs: 10000, threads: 1, jwtSecret: 'sec', runId: 'r1' });
console.log(Math.round(r.throughput), r.latency.p50, r.latency.p99, r.statuses, r.generatorUtilization.toFixed(2));
await s.stop();
