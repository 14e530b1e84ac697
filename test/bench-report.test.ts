import t from 'tap';
import { evaluateTargets, markdownReport, svgChart, type BenchReport, type RunRecord } from '../bench/lib/report.js';

/** Report generation: the Markdown table, the ratios, the targets and the SVG, from fixed runs. */

function run(system: string, scenario: string, reservationsPerSec: number, p99: number, extra: Partial<RunRecord> = {}): RunRecord {
  const latency = { count: 1000, mean: p99 / 4, p50: p99 / 5, p90: p99 / 2, p99, p999: p99 * 1.5, max: p99 * 2 };
  return {
    scenario,
    system,
    label: system === 'redis-lua' ? 'redis-lua (NOT DURABLE)' : `${system} <&>`,
    durable: system !== 'redis-lua' && system !== 'hello',
    mode: 'closed',
    connections: 256,
    threads: 1,
    rate: 0,
    durationSec: 10,
    finite: false,
    result: {
      mode: 'closed',
      connections: 256,
      threads: 1,
      rate: 0,
      elapsedMs: 10_000,
      requests: reservationsPerSec * 10,
      throughput: reservationsPerSec,
      reservationsPerSec,
      acknowledged: reservationsPerSec * 10,
      acknowledgedQuantity: reservationsPerSec * 10,
      lastAcknowledgedMs: 9_999,
      latency,
      ops: { reserve: { count: 1000, latency, statuses: { '201': 1000 }, codes: {}, histogram: '' } },
      statuses: { '201': 990, '409': 10 },
      codes: { sold_out: 10 },
      badBodies: 0,
      unanswered: 0,
      unknownOutcomes: 0,
      connectionErrors: 0,
      timeouts: 0,
      unsent: 0,
      generatorUtilization: 0.42,
      metrics: {},
      errorSamples: [],
    },
    check: { status: 'passed', report: { ok: true, checks: [], loggedReservations: 1, loggedQuantity: 1 }, skuCount: 1 },
    ...extra,
  };
}

function report(runs: RunRecord[]): BenchReport {
  return {
    version: 1,
    startedAt: '2026-01-01T00:00:00.000Z',
    command: 'npm run bench -- --compare',
    machine: { cpuModel: 'Test CPU', cores: 2, memoryGiB: 8, os: 'Linux', node: 'v20.0.0', postgres: '17.0', redis: '7.0', gitCommit: 'abcdef1234567890', gitDirty: false, wrk: null, loadAverage1m: 0.1 },
    runs,
    targets: evaluateTargets(runs),
    notes: ['a note'],
  };
}

t.test('markdown: one table per scenario, each system, ratios against flashstock, failed checks spelled out', async (t) => {
  const failedCheck: RunRecord['check'] = {
    status: 'failed',
    report: { ok: false, checks: [{ name: 'no SKU oversold', ok: false, detail: '1 violation(s), e.g. A#3: 3 taken of 2' }], loggedReservations: 3, loggedQuantity: 3 },
    skuCount: 1,
  };
  const runs = [
    run('flashstock', 'hot-sku', 60_000, 4),
    run('rowlock', 'hot-sku', 1_500, 200),
    run('redis-lua', 'hot-sku', 30_000, 8, { check: failedCheck }),
    run('hello', 'hot-sku', 100_000, 2, { check: { status: 'skipped', reason: 'answers constants' } }),
    run('flashstock', 'mixed', 5_000, 3),
  ];
  const md = markdownReport(report(runs));
  t.match(md, /#### hot-sku — closed loop, 256 connections, 10 s/);
  t.match(md, /#### mixed/);
  t.match(md, /\| flashstock <&> \| yes \| 60,000 \| 60,000 \|/);
  t.match(md, /\| redis-lua \(NOT DURABLE\) \| \*\*no\*\* \|/);
  t.match(md, /\| rowlock <&> \| 40× \| 50× \|/);
  t.match(md, /\| hello <&> \| 0\.60× \| 0\.50× \|/);
  t.match(md, /skipped \(answers constants\)/);
  t.match(md, /\*\*FAILED\*\*: no SKU oversold/);
  t.match(md, /- no SKU oversold: 1 violation\(s\), e\.g\. A#3: 3 taken of 2/);
  t.match(md, /201: 990, 409: 10 \(sold_out: 10\)/);
  t.match(md, /Test CPU, 2 cores, 8 GiB; Node v20\.0\.0; Postgres 17\.0/);
  t.match(md, /- a note/);
});

t.test('targets: met, and missed by how much', async (t) => {
  const good = evaluateTargets([run('flashstock', 'hot-sku', 66_000, 4), run('rowlock', 'hot-sku', 2_000, 100), run('hello', 'hot-sku', 120_000, 1)]);
  t.same(
    good.map((x) => [x.name, x.met]),
    [
      ['hot-sku durable reservations/s', true],
      ['hot-sku vs rowlock', true],
      ['hot-sku vs hello', true],
    ],
  );
  const bad = evaluateTargets([
    run('flashstock', 'hot-sku', 30_000, 4),
    run('flashstock', 'sellout', 10_000, 50, { finite: true, sellout: { stock: 10_000, unitsTaken: 10_000, soldOut: true, timeToSellOutMs: 1000 } }),
    run('flashstock', 'hot-sku', 30_000, 10, { mode: 'open', rate: 30_000 }),
  ]);
  const byName = Object.fromEntries(bad.map((x) => [x.name, x]));
  t.equal(byName['hot-sku durable reservations/s']!.gap, '-50%');
  t.equal(byName['sellout: 10,000 units']!.met, false);
  t.equal(byName['sellout: 10,000 units']!.gap, '2.0× the limit');
  t.equal(byName['open loop at 30,000/s: p99']!.gap, '2.0× the limit');
  t.equal(byName['sellout: 0 oversold, 0 acknowledged missing']!.met, true);
  t.equal(byName['open loop at 30,000/s: p99']!.met, false);
  t.equal(byName['open loop at 30,000/s: p99']!.measured, '10.0 ms');
  const md = markdownReport(report([run('flashstock', 'hot-sku', 30_000, 4)]));
  t.match(md, /\| hot-sku durable reservations\/s \| ≥ 60,000\/s \| 30,000\/s \| \*\*no\*\* \(-50%\) \|/);
});

t.test('svg: one well-formed document with every system, labels escaped', async (t) => {
  const svg = svgChart(report([run('flashstock', 'hot-sku', 60_000, 4), run('rowlock', 'hot-sku', 1_500, 200), run('hello', 'sellout', 100_000, 2)]));
  t.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  t.ok(svg.trimEnd().endsWith('</svg>'));
  t.match(svg, /flashstock &lt;&amp;&gt;/);
  t.notMatch(svg, /<&>/);
  t.match(svg, /rowlock &lt;&amp;&gt;/);
  t.match(svg, />hot-sku \(256 connections\)</);
  t.match(svg, />sellout \(256 connections\)</);
  t.notMatch(svg, /NaN|Infinity|undefined/);
  const opens = (svg.match(/<(rect|text)\b/g) ?? []).length;
  const closes = (svg.match(/<\/text>|\/>/g) ?? []).length;
  t.equal(opens, closes, 'every element closed');
});

t.test('cluster: node count, forwarded fraction, ratio to the single node of the same run, CPU per 1,000 reservations', async (t) => {
  const side = (count: number, p50: number, p99: number) => ({ count, latency: { count, mean: p50, p50, p90: p99, p99, p999: p99, max: p99 } });
  const single = run('flashstock', 'many-skus', 20_000, 10, { nodes: 1, httpThreads: 1, cpuPer1000: { server: 0.04, postgres: 0.01 }, commits: { commits: 1_000, events: 200_000 } });
  const cluster = run('flashstock', 'many-skus', 17_000, 12, {
    nodes: 3,
    httpThreads: 1,
    cpuPer1000: { server: 0.06, postgres: 0.01 },
    commits: { commits: 20_000, events: 170_000, forwarded: 113_000, forwardFrames: 9_000 },
  });
  cluster.label = 'flashstock, 3 nodes';
  cluster.result.placement = { local: side(1_000, 2, 10), forwarded: side(2_000, 3, 14), forwardedFraction: 2 / 3 };
  const md = markdownReport(report([single, cluster]));
  t.match(md, /\| flashstock, 3 nodes \| 3 \| 66\.7% \| 0\.85× \| 2\.00 \/ 10\.0 \| 3\.00 \/ 14\.0 \| 1\.00 \/ 4\.00 \| 30 µs \(est\.\) \| 20,000 × 8\.5 \/ 1,000 × 200\.0 \| 113,000 in 9,000 frames: 12\.6 per frame \|/);
  t.match(md, /\| 0\.040 \(\+pg 0\.010\) \|/, 'CPU per 1,000 reservations in the main table');
  const target = evaluateTargets([single, cluster]).find((x) => x.name.startsWith('many-skus over 3 nodes'));
  t.match(target, { target: '≥ 0.9×', measured: '0.85×', met: false, gap: '-6%' }, '0.85× falls short of 0.9×');
  t.equal(target?.name, 'many-skus over 3 nodes (67% forwarded) vs single node');
  const faster = run('flashstock', 'many-skus', 18_000, 12, { nodes: 3, httpThreads: 1, cpuPer1000: { server: 0.06, postgres: 0.01 }, commits: { commits: 20_000, events: 180_000 } });
  faster.result.placement = cluster.result.placement;
  t.match(evaluateTargets([single, faster]).find((x) => x.name.startsWith('many-skus over 3 nodes')), { measured: '0.90×', met: true, gap: null }, '0.9× meets it');
  const alone = markdownReport(report([cluster]));
  t.match(alone, /— \(no single-node run\)/);
  t.notOk(evaluateTargets([cluster]).some((x) => x.name.startsWith('many-skus over')));
});

t.test('cluster diagnostics: a --to-others run measured against the --to-owner run on as many nodes', async (t) => {
  const side = (count: number, p50: number, p99: number) => ({ count, latency: { count, mean: p50, p50, p90: p99, p99, p999: p99, max: p99 } });
  const single = run('flashstock', 'many-skus', 20_000, 10, { nodes: 1, httpThreads: 1, cpuPer1000: { server: 0.04, postgres: 0.01 } });
  const owner = run('flashstock', 'many-skus', 15_000, 10, { nodes: 2, httpThreads: 1, aim: 'owner', cpuPer1000: { server: 0.08, postgres: 0.01 } });
  owner.label = 'flashstock, 2 nodes, to owner';
  owner.result.placement = { local: side(1_000, 2, 10), forwarded: side(0, 0, 0), forwardedFraction: 0 };
  const others = run('flashstock', 'many-skus', 12_000, 10, { nodes: 2, httpThreads: 1, aim: 'other', cpuPer1000: { server: 0.105, postgres: 0.01 } });
  others.label = 'flashstock, 2 nodes, to others';
  others.result.placement = { local: side(0, 0, 0), forwarded: side(1_000, 3, 14), forwardedFraction: 1 };
  const md = markdownReport(report([single, owner, others]));
  // (0.105 − 0.080) ms per reservation ÷ (1 − 0) forwarded: 25 µs, not (0.105 − 0.04) against the single node.
  t.match(md, /\| flashstock, 2 nodes, to others \| 2 \| 100\.0% \| .* \| 25 µs \(against to owner\) \|/);
  t.match(md, /\| flashstock, 2 nodes, to owner \| 2 \| 0\.0% \| .* \| — \|/, 'the to-owner run forwards nothing: no figure of its own');
  const targets = evaluateTargets([single, owner, others]);
  const forwarded = targets.find((x) => x.name.startsWith('extra CPU per forwarded request'));
  t.equal(forwarded?.measured, '25 µs');
  t.equal(forwarded?.met, false, 'over the 20 µs the target allows');
  t.notOk(targets.some((x) => x.name.startsWith('many-skus over')), 'diagnostic runs are not the cluster ratio');
  const cheaper = run('flashstock', 'many-skus', 12_000, 10, { nodes: 2, httpThreads: 1, aim: 'other', cpuPer1000: { server: 0.095, postgres: 0.01 } });
  cheaper.result.placement = others.result.placement;
  t.equal(evaluateTargets([owner, cheaper]).find((x) => x.name.startsWith('extra CPU'))?.met, true, '15 µs is within it');
});

t.test('per operation: server and store CPU µs, heap bytes, and the CPU/op ratio against each baseline', async (t) => {
  const { perOperation } = await import('../bench/lib/cpu.js');
  const fs = perOperation('reservation', 100_000, { server: 10, postgres: 5 }, { server: 18.8, postgres: 7.9 }, 1_000, 1_000_001_000);
  t.same(fs.perOp, { unit: 'reservation', count: 100_000, serverUs: 88, postgresUs: 29, redisUs: null, allocatedBytes: 10_000 });
  t.same(perOperation('request', 0, {}, {}, null, null), {}, 'nothing measured, nothing reported');
  const hello = perOperation('request', 200_000, { server: 1 }, { server: 3 }, null, null).perOp!;
  t.equal(hello.serverUs, 10);
  t.equal(hello.allocatedBytes, null);
  const durable = perOperation('reservation', 50_000, { server: 0, redis: 0 }, { server: 3.5, redis: 1.5 }, 0, 0).perOp!;
  const md = markdownReport(
    report([
      run('flashstock', 'hot-sku', 10_000, 10, { perOp: fs.perOp! }),
      run('redis-durable', 'hot-sku', 5_000, 10, { perOp: durable }),
      run('hello', 'hot-sku', 80_000, 2, { perOp: hello }),
    ]),
  );
  t.match(md, /\| srv 88\.0 · pg 29\.0 \/res \| 10,000 \|/);
  t.match(md, /\| srv 10\.0 \/req \| — \|/);
  t.match(md, /\| srv 70\.0 · redis 30\.0 \/res \| 0 \|/);
  // (88 + 29) ÷ 100 and ÷ 10
  t.match(md, /\| redis-durable <&> \| 2\.00× \| 1\.00× \| 1\.17× \|/);
  t.match(md, /\| hello <&> \| 0\.13× \| 0\.20× \| 12× \|/);
});
