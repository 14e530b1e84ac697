import t from 'tap';
import { decodeHistogram, encodeHistogram, mergeEncoded, newHistogram, recordMs, summarize } from '../bench/lib/histogram.js';
import { IdList, IdSet } from '../bench/lib/ids.js';
import { mergeResults } from '../bench/lib/loadgen.js';
import { problemCode } from '../bench/lib/worker.js';
import { ResponseParser } from '../bench/lib/http1.js';
import type { WorkerResult } from '../bench/lib/types.js';

/** The load generator's bookkeeping: histograms crossing threads, id sets, response parsing. */

t.test('histograms merged from encoded per-thread copies equal one histogram of all values', async (t) => {
  const all = newHistogram();
  const parts = [newHistogram(), newHistogram(), newHistogram()];
  let seed = 7;
  const next = (): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  for (let i = 0; i < 30_000; i++) {
    const ms = next() < 0.99 ? next() * 5 : 50 + next() * 500;
    recordMs(all, ms);
    recordMs(parts[i % 3]!, ms);
  }
  const merged = mergeEncoded(parts.map(encodeHistogram));
  t.equal(merged.totalCount, 30_000);
  const m = summarize(merged);
  const a = summarize(all);
  // Percentiles are identical; the max survives encoding only to the histogram's precision (3 digits).
  t.same({ ...m, max: 0 }, { ...a, max: 0 });
  t.ok(Math.abs(m.max - a.max) / a.max < 0.001, `max ${m.max} vs ${a.max}`);
  t.equal(decodeHistogram(encodeHistogram(all)).totalCount, all.totalCount);
});

t.test('summaries are in milliseconds and an empty histogram summarizes to zeros', async (t) => {
  const h = newHistogram();
  for (const ms of [1, 2, 3, 4, 100]) recordMs(h, ms);
  const s = summarize(h);
  t.equal(s.count, 5);
  t.ok(Math.abs(s.p50 - 3) < 0.01, `p50 ${s.p50}`);
  t.ok(Math.abs(s.max - 100) < 0.1, `max ${s.max}`);
  t.same(summarize(newHistogram()), { count: 0, mean: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0 });
  t.equal(mergeEncoded(['']).totalCount, 0);
});

function workerResult(index: number, latenciesMs: number[], ids: string[], extra: Partial<WorkerResult> = {}): WorkerResult {
  const h = newHistogram();
  for (const ms of latenciesMs) recordMs(h, ms);
  const list = new IdList();
  for (const id of ids) list.pushUuid(id);
  return {
    workerIndex: index,
    ops: { reserve: { histogram: encodeHistogram(h), count: latenciesMs.length, statuses: { '201': ids.length, '409': latenciesMs.length - ids.length }, codes: latenciesMs.length > ids.length ? { sold_out: latenciesMs.length - ids.length } : {} } },
    reservationIds: list.toArrayBuffer(),
    acknowledged: ids.length,
    acknowledgedQuantity: ids.length,
    badBodies: 0,
    unanswered: 0,
    unknownOutcomes: 0,
    connectionErrors: 0,
    timeouts: 0,
    unsent: 0,
    startedAt: 1000,
    lastResponseAt: 3000,
    lastAcknowledgedAt: 2000,
    utilization: 0.5,
    metrics: { shoppers: 2 },
    errorSamples: [],
    ...extra,
  };
}

t.test('mergeResults adds counts, statuses, codes and ids across threads', async (t) => {
  const a = workerResult(0, [1, 2, 3], ['00000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-000000000002']);
  const b = workerResult(1, [4, 5], ['00000000-0000-4000-8000-000000000003'], { startedAt: 999, lastResponseAt: 3001, utilization: 0.7 });
  const r = mergeResults([a, b], { mode: 'closed', connections: 8, threads: 2, rate: 0 });
  t.equal(r.requests, 5);
  t.equal(r.acknowledged, 3);
  t.same(r.statuses, { '201': 3, '409': 2 });
  t.same(r.codes, { sold_out: 2 });
  t.equal(r.elapsedMs, 2002);
  t.equal(r.latency.count, 5);
  t.equal(r.ops.reserve!.count, 5);
  t.equal(r.ids.count, 3);
  t.equal(r.ids.get(2), '00000000-0000-4000-8000-000000000003');
  t.same(r.metrics, { shoppers: 4 });
  t.ok(Math.abs(r.generatorUtilization - 0.6) < 1e-9);
  t.ok(Math.abs(r.throughput - 5000 / 2002) < 1e-9);
});

t.test('IdSet finds, marks and reports ids; duplicates are counted once', async (t) => {
  const list = new IdList(1);
  const ids = Array.from({ length: 1000 }, (_, i) => `0190c0de-0000-7000-8000-${i.toString(16).padStart(12, '0')}`);
  for (const id of ids) t.ok(list.pushUuid(id));
  list.pushUuid(ids[5]!);
  t.notOk(list.pushUuid('not-a-uuid'));
  const set = new IdSet(list);
  t.equal(set.size, 1000);
  t.equal(set.duplicates, 1);
  t.ok(set.has(ids[999]!.toUpperCase()));
  t.notOk(set.has('0190c0de-0000-7000-8000-ffffffffffff'));
  for (const id of ids.slice(0, 998)) t.ok(set.mark(id));
  t.notOk(set.mark('0190c0de-0000-7000-8000-ffffffffffff'));
  const missing = set.unmarked();
  t.equal(missing.count, 2);
  t.same(missing.sample.sort(), ids.slice(998).sort());
  set.resetMarks();
  t.equal(set.unmarked().count, 1000);
});

t.test('the response parser handles split chunks, bodies and problem codes', async (t) => {
  const p = new ResponseParser();
  const body = '{"type":"about:blank","status":409,"code":"sold_out"}';
  const raw = Buffer.from(`HTTP/1.1 409 Conflict\r\nContent-Type: application/problem+json\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
  t.equal(p.feed(raw.subarray(0, 10)), null);
  t.equal(p.feed(raw.subarray(10, 60)), null);
  const r = p.feed(raw.subarray(60));
  t.same(r, { status: 409, body });
  t.equal(problemCode(r!.body), 'sold_out');
  t.equal(problemCode('{"code": "limit_exceeded"}'), 'limit_exceeded');
  t.equal(problemCode(''), null);
  t.same(p.feed(Buffer.from('HTTP/1.1 204 No Content\r\n\r\n')), { status: 204, body: '' });
  t.throws(() => new ResponseParser().feed(Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n')));
  t.throws(() => new ResponseParser().feed(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nextra')));
});
