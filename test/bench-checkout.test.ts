import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runBench } from '../bench/lib/bench.js';
import { parseCli } from '../bench/lib/cli.js';
import { evaluateTargets, markdownReport, svgChart, type BenchReport, type CheckoutFigures, type RunRecord } from '../bench/lib/report.js';
import { flashstockAvailable } from '../bench/lib/systems.js';
import { checkout } from '../bench/scenarios/checkout.js';

/**
 * The checkout scenario: its report section and targets from fixed figures, the
 * loads it applies, that baselines are skipped, and a tiny run on the real
 * service (reserve → checkout → paid, every check from Postgres). No timing
 * assertions.
 */

const latency = (p99: number) => ({ count: 1000, mean: p99 / 4, p50: p99 / 5, p90: p99 / 2, p99, p999: p99 * 1.5, max: p99 * 2 });

function figures(paymentsPerSec: number, lagP99: number, extra: Partial<CheckoutFigures> = {}): CheckoutFigures {
  return {
    checkoutsAccepted: 20_000,
    checkoutsPerSec: 2_000,
    orders: 20_000,
    paid: 20_000,
    failed: 0,
    pending: 0,
    paymentsPerSec,
    paymentsPerSecDuringLoad: paymentsPerSec * 0.9,
    bestSecond: paymentsPerSec * 1.2,
    medianSecond: paymentsPerSec,
    perSecond: [paymentsPerSec],
    lag: latency(lagP99),
    lagHistogram: '',
    drainMs: 1500,
    drained: true,
    drainCpu: { generator: 0.01, server: 0.3, postgres: 1.2 },
    checkoutLatency: latency(20),
    service: { paymentWorkerBatchSize: 50, paymentWorkers: 2 },
    ...extra,
  };
}

function run(mode: 'closed' | 'open', rate: number, checkoutFigures: CheckoutFigures, extra: Partial<RunRecord> = {}): RunRecord {
  const l = latency(30);
  return {
    scenario: 'checkout',
    system: 'flashstock',
    label: 'flashstock (durable, group commit)',
    durable: true,
    mode,
    connections: 256,
    threads: 1,
    rate,
    durationSec: 10,
    finite: false,
    result: {
      mode,
      connections: 256,
      threads: 1,
      rate,
      elapsedMs: 10_000,
      requests: 40_000,
      throughput: 4_000,
      reservationsPerSec: 2_000,
      acknowledged: 20_000,
      acknowledgedQuantity: 20_000,
      lastAcknowledgedMs: 9_999,
      latency: l,
      ops: { reserve: { count: 20_000, latency: l, statuses: { '201': 20_000 }, codes: {}, histogram: '' }, checkout: { count: 20_000, latency: latency(20), statuses: { '202': 20_000 }, codes: {}, histogram: '' } },
      statuses: { '201': 20_000, '202': 20_000 },
      codes: {},
      badBodies: 0,
      unanswered: 0,
      unknownOutcomes: 0,
      connectionErrors: 0,
      timeouts: 0,
      unsent: 0,
      generatorUtilization: 0.1,
      metrics: {},
      errorSamples: [],
    },
    check: { status: 'passed', report: { ok: true, checks: [{ name: 'every order paid (pm_ok)', ok: true, detail: '20000 paid' }], loggedReservations: 20_000, loggedQuantity: 20_000 }, skuCount: 1 },
    checkout: checkoutFigures,
    ...extra,
  };
}

function report(runs: RunRecord[]): BenchReport {
  return {
    version: 1,
    startedAt: '2026-01-01T00:00:00.000Z',
    command: 'npm run bench -- --scenario checkout',
    machine: { cpuModel: 'Test CPU', cores: 2, memoryGiB: 8, os: 'Linux', node: 'v20.0.0', postgres: '17.0', redis: null, gitCommit: 'abcdef1234567890', gitDirty: false, wrk: null, loadAverage1m: 0.1 },
    runs,
    targets: evaluateTargets(runs),
    notes: [],
  };
}

t.test('loads: closed loop then open loop at 1,000/s by default; --rate: only the open loop', async (t) => {
  t.same(checkout.shapes!(null), [
    { mode: 'closed', rate: 0 },
    { mode: 'open', rate: 1_000 },
  ]);
  t.same(checkout.shapes!(2_500), [{ mode: 'open', rate: 2_500 }]);
  t.same(checkout.systems, ['flashstock']);
  t.match(checkout.serviceOverrides, { simulatedPaymentLatencyMs: 0, auditCron: null });
});

t.test('targets: payments/s from the closed loop, lag p99 from the open loop at ≥ 1,000/s', async (t) => {
  const met = evaluateTargets([run('closed', 0, figures(2_400, 300)), run('open', 1_000, figures(1_000, 40))]);
  t.same(
    met.map((x) => [x.name, x.met, x.measured]),
    [
      ['checkout: finalized payments/s (closed loop)', true, '2,400/s'],
      ['checkout: queue lag p99 at 1,000 checkouts/s', true, '40.0 ms (2,000 checkouts/s accepted)'],
    ],
  );
  const missed = Object.fromEntries(
    evaluateTargets([run('closed', 0, figures(1_700, 10_000)), run('open', 1_000, figures(990, 1_500), { result: { ...run('open', 1_000, figures(1, 1)).result, unsent: 12 } })]).map((x) => [x.name, x]),
  );
  t.equal(missed['checkout: finalized payments/s (closed loop)']!.gap, '-15%');
  t.equal(missed['checkout: queue lag p99 at 1,000 checkouts/s']!.gap, '1.5× the limit');
  t.match(missed['checkout: queue lag p99 at 1,000 checkouts/s']!.measured, /12 arrivals never sent/);
  // Orders left pending fail the target whatever the rate.
  const stuck = evaluateTargets([run('closed', 0, figures(2_500, 100, { drained: false, pending: 7 }))]);
  t.equal(stuck[0]!.met, false);
  t.match(stuck[0]!.measured, /7 orders never settled/);
  // An open loop below 1,000/s is not the lag target.
  t.same(evaluateTargets([run('open', 500, figures(500, 40))]), []);
});

t.test('markdown and svg: one section per load, the payments table, the checks, lag in the chart', async (t) => {
  const r = report([run('closed', 0, figures(1_700, 10_000)), run('open', 1_000, figures(1_000, 40))]);
  const md = markdownReport(r);
  t.match(md, /#### checkout — closed loop, 256 connections, 10 s/);
  t.match(md, /#### checkout — open loop at 1,000 checkouts\/s \(each a reservation, then its checkout\) over 256 connections/);
  t.match(md, /\| flashstock \(durable, group commit\) \| 2,000 \| 20,000 \/ 20,000 \| 1,700 \| 1,530 \| 2,040 \/ 1,700 \| 2000 \| 5000 \| 10000 \| 20000 \| 1\.5 s \| gen 0\.01 · srv 0\.30 · pg 1\.20 \| 20\.0 \|/);
  t.match(md, /flashstock settings: paymentWorkerBatchSize=50, paymentWorkers=2\./);
  t.match(md, /- ok every order paid \(pm_ok\): 20000 paid/);
  t.match(md, /\| checkout: finalized payments\/s \(closed loop\) \| ≥ 2,000\/s \| 1,700\/s \| \*\*no\*\* \(-15%\) \|/);
  const svg = svgChart(r);
  t.match(svg, /finalized payments\/s/);
  t.match(svg, /queue lag checkout → paid, ms/);
  t.match(svg, />checkout \(open loop 1,000\/s\)</);
  t.notMatch(svg, /NaN|Infinity|undefined/);
});

const outDir = mkdtempSync(path.join(os.tmpdir(), 'bench-checkout-'));
t.teardown(() => rmSync(outDir, { recursive: true, force: true }));

t.test('baselines do not implement checkout: skipped, and said so', async (t) => {
  const logs: string[] = [];
  const outcome = await runBench(parseCli(['--scenario', 'checkout', '--systems', 'hello', '--warmup', '0', '--out', outDir]), (l) => logs.push(l));
  t.equal(outcome.report.runs.length, 0);
  t.equal(outcome.ok, false, 'nothing ran');
  t.match(outcome.report.notes.join('\n'), /hello: SKIPPED — checkout run\(s\) on flashstock only/);
});

t.test('a tiny checkout run on the real service: every order paid once, checked from Postgres', { skip: flashstockAvailable() ? false : 'src/app.ts does not exist yet' }, async (t) => {
  const args = ['--scenario', 'checkout', '--duration', '0.5', '--warmup', '0', '--connections', '16', '--shoppers', '2000', '--out', outDir];
  if (process.env.TEST_DATABASE_URL) {
    const { createTestDatabase } = await import('./helpers/db.js');
    const db = await createTestDatabase(t);
    args.push('--database-url', db.url);
  }
  const logs: string[] = [];
  const outcome = await runBench(parseCli(args), (l) => logs.push(l));
  t.ok(outcome.ok, logs.join('\n'));
  t.same(
    outcome.report.runs.map((r) => [r.mode, r.rate]),
    [
      ['closed', 0],
      ['open', 1_000],
    ],
  );
  for (const r of outcome.report.runs) {
    const c = r.checkout;
    t.ok(c, `${r.mode}: checkout figures`);
    if (c === undefined) continue;
    t.equal(r.check.status, 'passed', JSON.stringify(r.check));
    t.ok(c.checkoutsAccepted > 0, `${r.mode}: ${c.checkoutsAccepted} checkouts`);
    t.equal(c.orders, c.checkoutsAccepted, `${r.mode}: one order per 202`);
    t.equal(c.paid, c.orders, `${r.mode}: every order paid`);
    t.ok(c.drained);
    t.equal(r.result.statuses['202'], r.result.statuses['201'], `${r.mode}: every reservation checked out on its connection`);
    t.ok(c.lag.count === c.paid && c.lag.max > 0, `${r.mode}: a lag per order`);
    if (r.check.status !== 'skipped') {
      const names = r.check.report.checks.map((x) => x.name);
      for (const name of ['every 202 checkout has its order', 'every order paid (pm_ok)', 'exactly one succeeded charge per paid order', 'no succeeded charge without a paid order', 'sold units in the log = paid orders', 'ledger audit (GET /v1/admin/audit) ok', 'no SKU oversold']) {
        t.ok(names.includes(name), name);
      }
    }
  }
  t.match(outcome.markdown, /checkout: queue lag p99 at 1,000 checkouts\/s/);
});
