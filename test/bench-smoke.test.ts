import t from 'tap';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runBench } from '../bench/lib/bench.js';
import { parseCli } from '../bench/lib/cli.js';
import { flashstockAvailable } from '../bench/lib/systems.js';

/**
 * A tiny end-to-end run of the harness (a few hundred requests), so it cannot
 * rot: against the hello baseline always, against the real service once
 * src/app.ts exists. Nothing here asserts on timing.
 */

const outDir = mkdtempSync(path.join(os.tmpdir(), 'bench-smoke-'));
t.teardown(() => rmSync(outDir, { recursive: true, force: true }));
const logs: string[] = [];
const log = (line: string): void => {
  logs.push(line);
};

t.test('hello: a finite sellout of 300 shoppers, then a short timed closed and open loop', async (t) => {
  const finite = await runBench(parseCli(['--scenario', 'sellout', '--systems', 'hello', '--shoppers', '300', '--stock', '200', '--connections', '16', '--warmup', '0', '--threads', '2', '--out', outDir]), log);
  t.ok(finite.ok, logs.join('\n'));
  const r = finite.report.runs[0]!;
  t.equal(r.system, 'hello');
  t.equal(r.result.requests, 300, 'every shopper answered once (hello says 201 to all)');
  t.same(r.result.statuses, { '201': 300 });
  t.equal(r.result.unanswered, 0);
  t.equal(r.result.threads, 2);
  t.equal(r.check.status, 'skipped');
  t.equal(r.result.latency.count, 300);
  for (const f of finite.files) t.ok(existsSync(f), f);
  const json = JSON.parse(readFileSync(path.join(outDir, 'latest.json'), 'utf8')) as { machine: { cores: number }; runs: unknown[] };
  t.ok(json.machine.cores >= 1);
  t.equal(json.runs.length, 1);
  t.match(finite.markdown, /hello \(constant, HTTP ceiling\)/);

  for (const args of [
    ['--duration', '0.3'],
    ['--duration', '0.3', '--rate', '500'],
  ]) {
    const timed = await runBench(parseCli(['--scenario', 'mixed', '--systems', 'hello', '--connections', '8', '--warmup', '0', '--out', outDir, ...args]), log);
    const run = timed.report.runs[0]!;
    t.ok(timed.ok);
    t.equal(run.mode, args.includes('--rate') ? 'open' : 'closed');
    t.ok(run.result.requests > 0, `${run.result.requests} requests`);
    t.equal(run.result.connectionErrors, 0);
    t.equal((run.result.statuses['200'] ?? 0) + (run.result.statuses['201'] ?? 0), run.result.requests);
  }
});

t.test('flashstock: a small sellout on the real service, checked against its event log', { skip: flashstockAvailable() ? false : 'src/app.ts does not exist yet' }, async (t) => {
  const args = ['--scenario', 'sellout', '--systems', 'flashstock', '--shoppers', '150', '--stock', '200', '--connections', '16', '--warmup', '0', '--out', outDir];
  if (process.env.TEST_DATABASE_URL) {
    const { createTestDatabase } = await import('./helpers/db.js');
    const db = await createTestDatabase(t);
    args.push('--database-url', db.url);
  }
  const outcome = await runBench(parseCli(args), log);
  const r = outcome.report.runs[0];
  t.ok(r, logs.join('\n'));
  if (r === undefined) return;
  t.equal(r.check.status, 'passed', JSON.stringify(r.check));
  t.ok(outcome.ok);
  t.equal(r.result.unanswered, 0);
  t.equal(r.result.statuses['201']! + (r.result.statuses['409'] ?? 0), r.result.requests);
  // 150 shoppers wanting 1-3 (seeded) ask for more than 200 units; those told sold_out ask for less.
  t.ok(r.sellout!.soldOut, `sold ${r.sellout!.unitsTaken} of 200`);
  t.equal(r.sellout!.unitsTaken, 200);
  if (r.check.status !== 'skipped') t.equal(r.check.report.loggedQuantity, 200);
});

t.test('flashstock --nodes 2: a short many-skus run over a 2-node cluster, forwarded and local, checked', { skip: flashstockAvailable() ? false : 'src/app.ts does not exist yet' }, async (t) => {
  const args = ['--scenario', 'many-skus', '--systems', 'flashstock', '--nodes', '2', '--skus', '40', '--shoppers', '400', '--duration', '1', '--connections', '8', '--warmup', '0', '--out', outDir];
  if (process.env.TEST_DATABASE_URL) {
    const { createTestDatabase } = await import('./helpers/db.js');
    const db = await createTestDatabase(t);
    args.push('--database-url', db.url);
  }
  // Faster heartbeats, so the joining node takes its shards in a second or two (SHARD_COUNT stays the default).
  const previous = process.env.BENCH_OVERRIDES;
  process.env.BENCH_OVERRIDES = JSON.stringify({ clusterHeartbeatMs: 200, clusterLeaseTimeoutMs: 1000, auditCron: null });
  t.teardown(() => {
    if (previous === undefined) delete process.env.BENCH_OVERRIDES;
    else process.env.BENCH_OVERRIDES = previous;
  });
  const outcome = await runBench(parseCli(args), log);
  const r = outcome.report.runs[0];
  t.ok(r, logs.join('\n'));
  if (r === undefined) return;
  t.equal(r.nodes, 2);
  t.equal(r.check.status, 'passed', JSON.stringify(r.check));
  if (r.check.status !== 'skipped') t.ok(r.check.report.checks.find((c) => c.name === 'no SKU oversold')?.ok, 'nothing oversold');
  const p = r.result.placement!;
  t.ok(p.local.count > 0 && p.forwarded.count > 0, `${p.local.count} local, ${p.forwarded.count} forwarded`);
  t.equal(p.local.count + p.forwarded.count, r.result.requests, 'every request classified');
  if (existsSync('/proc/stat')) t.ok((r.cpuPer1000?.server ?? 0) > 0, `CPU per 1,000 reservations, summed over the nodes: ${JSON.stringify(r.cpuPer1000)}`);
  t.ok((r.commits?.commits ?? 0) > 0, `group commits read from both nodes' /metrics: ${JSON.stringify(r.commits)}`);
  t.match(outcome.markdown, /, 2 nodes \| yes \|/);
  t.match(outcome.markdown, new RegExp(`\\| 2 \\| ${(p.forwardedFraction * 100).toFixed(1)}% \\|`));
  const json = JSON.parse(readFileSync(path.join(outDir, 'latest.json'), 'utf8')) as { runs: { nodes: number; result: { placement: { forwardedFraction: number } } }[] };
  t.equal(json.runs[0]!.nodes, 2);
  t.equal(json.runs[0]!.result.placement.forwardedFraction, p.forwardedFraction);
});
