import type { CheckReport } from './checker.js';
import type { LatencySummary } from './histogram.js';
import type { LoadResult } from './loadgen.js';
import type { MachineFacts } from './machine.js';
import type { PerOperation } from './cpu.js';
import type { Aim, LoadMode } from './types.js';

/** Turning runs into the Markdown table, the JSON record and the SVG chart. Pure functions. */

export type CheckOutcome =
  | { status: 'passed' | 'failed'; report: Omit<CheckReport, 'skus'>; skuCount: number }
  | { status: 'skipped'; reason: string };

export interface RunRecord {
  scenario: string;
  system: string;
  label: string;
  durable: boolean;
  mode: LoadMode;
  connections: number;
  threads: number;
  /** Open loop: requested arrival rate. */
  rate: number;
  durationSec: number;
  finite: boolean;
  result: Omit<LoadResult, 'ids'>;
  check: CheckOutcome;
  sellout?: { stock: number; unitsTaken: number; soldOut: boolean; timeToSellOutMs: number };
  checkout?: CheckoutFigures;
  /** Cores used during the run: generator, server, postgres, redis, other (the rest of the machine), machine (all busy). */
  cpu?: Record<string, number>;
  /** Durable systems: CPU seconds per 1,000 acknowledged reservations, server (every node process summed) and postgres. */
  cpuPer1000?: Record<string, number>;
  /** CPU µs and V8 heap bytes per operation over the measured window (durable reservation; hello: request). */
  perOp?: PerOperation;
  /** flashstock started by the bench: its node processes (1: no cluster) and HTTP_THREADS per process. */
  nodes?: number;
  httpThreads?: number;
  /** A cluster run under --to-owner or --to-others: where its requests went. */
  aim?: Aim;
  /**
   * flashstock: successful group commits during the run and the events they carried, every node summed (from /metrics);
   * on a cluster, the commands forwarded to owners and the frames they went out in.
   */
  commits?: { commits: number; events: number; forwarded?: number; forwardFrames?: number };
}

function cpuPer1000Cell(r: RunRecord): string {
  const c = r.cpuPer1000;
  if (c?.server === undefined) return '—';
  return `${c.server.toFixed(3)}${c.postgres !== undefined ? ` (+pg ${c.postgres.toFixed(3)})` : ''}`;
}

/** Server CPU µs per operation, then its store's (Postgres or Redis). */
function perOpCpuCell(r: RunRecord): string {
  const p = r.perOp;
  if (p === undefined || p.serverUs === null) return '—';
  const store = p.postgresUs !== null ? ` · pg ${fmtUs(p.postgresUs)}` : p.redisUs !== null ? ` · redis ${fmtUs(p.redisUs)}` : '';
  return `srv ${fmtUs(p.serverUs)}${store} /${p.unit === 'request' ? 'req' : 'res'}`;
}

function perOpBytesCell(r: RunRecord): string {
  const b = r.perOp?.allocatedBytes;
  return b === null || b === undefined ? '—' : fmtInt(b);
}

const fmtUs = (us: number): string => (us >= 100 ? us.toFixed(0) : us.toFixed(1));

/** Server + store CPU µs per operation: what one operation costs the machine. */
export function totalUs(r: RunRecord): number | null {
  const p = r.perOp;
  if (p === undefined || p.serverUs === null) return null;
  return p.serverUs + (p.postgresUs ?? 0) + (p.redisUs ?? 0);
}

function cpuCell(cpu: Record<string, number> | undefined): string {
  if (cpu === undefined || Object.keys(cpu).length === 0) return '—';
  const order = ['generator', 'server', 'postgres', 'redis', 'other'];
  const short: Record<string, string> = { generator: 'gen', server: 'srv', postgres: 'pg', redis: 'redis', other: 'other' };
  return order.filter((k) => cpu[k] !== undefined).map((k) => `${short[k]} ${cpu[k]!.toFixed(2)}`).join(' · ');
}

/** The checkout scenario's figures, read from Postgres after every order settled (or the wait gave up). */
export interface CheckoutFigures {
  /** 202 checkouts and their rate over the load. */
  checkoutsAccepted: number;
  checkoutsPerSec: number;
  orders: number;
  paid: number;
  failed: number;
  pending: number;
  /** Paid orders ÷ the span of their settled_at (first to last): the payment pipeline's rate. */
  paymentsPerSec: number;
  /** Paid orders settled before the load ended ÷ (load end − first settled_at); null when none were. */
  paymentsPerSecDuringLoad: number | null;
  /** Paid orders per whole second of settled_at (partial first and last seconds dropped): best and median. */
  bestSecond: number;
  medianSecond: number;
  perSecond: number[];
  /** Queue lag per order: settled_at − created_at (checkout transaction → settle transaction), ms. */
  lag: LatencySummary;
  lagHistogram: string;
  /** From the load's last response until no order was pending (or the wait gave up), ms. */
  drainMs: number;
  drained: boolean;
  /** Cores used while draining, after the load. */
  drainCpu?: Record<string, number>;
  /** HTTP latency of the checkout requests (the reservation's is in the main table). */
  checkoutLatency?: LatencySummary;
  /** flashstock's effective settings for this run. */
  service?: Record<string, unknown>;
}

export interface TargetResult {
  name: string;
  target: string;
  measured: string;
  met: boolean;
  /** How far off, when missed (e.g. "-18%"). */
  gap: string | null;
}

export interface BenchReport {
  version: 1;
  startedAt: string;
  command: string;
  machine: MachineFacts;
  runs: RunRecord[];
  targets: TargetResult[];
  notes: string[];
}

export function stripIds(result: LoadResult): Omit<LoadResult, 'ids'> {
  const { ids: _ids, ...rest } = result;
  return rest;
}

const fmtInt = (n: number): string => Math.round(n).toLocaleString('en-US');
const fmtMs = (n: number): string => (n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2));
const fmtRatio = (n: number): string => (!Number.isFinite(n) ? '—' : n >= 10 ? `${n.toFixed(0)}×` : `${n.toFixed(2)}×`);

function statusSummary(r: Omit<LoadResult, 'ids'>): string {
  const parts = Object.entries(r.statuses)
    .sort((a, b) => b[1] - a[1])
    .map(([s, n]) => `${s}: ${fmtInt(n)}`);
  const codes = Object.entries(r.codes)
    .sort((a, b) => b[1] - a[1])
    .map(([c, n]) => `${c}: ${fmtInt(n)}`);
  const extra: string[] = [];
  if (r.unanswered > 0) extra.push(`unanswered: ${r.unanswered}`);
  if (r.timeouts > 0) extra.push(`timeouts: ${r.timeouts}`);
  if (r.unsent > 0) extra.push(`unsent: ${fmtInt(r.unsent)}`);
  return [parts.join(', '), codes.length > 0 ? `(${codes.join(', ')})` : '', extra.join(', ')].filter((s) => s !== '').join(' ');
}

function checkCell(c: CheckOutcome): string {
  if (c.status === 'skipped') return `skipped (${c.reason})`;
  return c.status === 'passed' ? 'passed' : `**FAILED**: ${c.report.checks.filter((x) => !x.ok).map((x) => x.name).join('; ')}`;
}

/** The primary rate of a run: durable reservations/s for reservation scenarios, responses/s otherwise. */
export function primaryRate(run: RunRecord): number {
  if (run.checkout !== undefined) return run.checkout.paymentsPerSec;
  return run.scenario === 'mixed' ? run.result.throughput : run.result.reservationsPerSec;
}

/** Runs grouped by scenario and load (a scenario may apply several loads, e.g. checkout: closed, then open loop). */
function groups(runs: readonly RunRecord[]): RunRecord[][] {
  const byKey = new Map<string, RunRecord[]>();
  for (const r of runs) {
    const key = `${r.scenario}|${r.mode}|${r.rate}`;
    const list = byKey.get(key) ?? [];
    list.push(r);
    byKey.set(key, list);
  }
  return [...byKey.values()];
}

function checkoutSection(runs: readonly RunRecord[]): string[] {
  const withFigures = runs.filter((r) => r.checkout !== undefined);
  if (withFigures.length === 0) return [];
  const out = ['', 'Payments (from Postgres: `orders.settled_at`, `created_at`), after waiting for every order to settle:', ''];
  out.push('| system | checkouts 202/s | paid / orders | finalized payments/s | during load | best / median 1-s | lag p50 ms | p90 ms | p99 ms | max ms | drained after load | cores while draining | checkout p99 ms |');
  out.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |');
  for (const r of withFigures) {
    const c = r.checkout!;
    out.push(
      `| ${[
        r.label,
        fmtInt(c.checkoutsPerSec),
        `${fmtInt(c.paid)} / ${fmtInt(c.orders)}${c.failed > 0 ? ` (${fmtInt(c.failed)} failed)` : ''}${c.pending > 0 ? ` (**${fmtInt(c.pending)} pending**)` : ''}`,
        fmtInt(c.paymentsPerSec),
        c.paymentsPerSecDuringLoad === null ? '—' : fmtInt(c.paymentsPerSecDuringLoad),
        `${fmtInt(c.bestSecond)} / ${fmtInt(c.medianSecond)}`,
        fmtMs(c.lag.p50),
        fmtMs(c.lag.p90),
        fmtMs(c.lag.p99),
        fmtMs(c.lag.max),
        `${c.drained ? '' : '**gave up** after '}${(c.drainMs / 1000).toFixed(1)} s`,
        cpuCell(c.drainCpu),
        c.checkoutLatency === undefined ? '—' : fmtMs(c.checkoutLatency.p99),
      ].join(' | ')} |`,
    );
  }
  const service = withFigures[0]!.checkout!.service;
  if (service !== undefined) out.push('', `flashstock settings: ${Object.entries(service).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(', ')}.`);
  for (const r of withFigures) {
    if (r.check.status === 'skipped') continue;
    out.push('', `${r.system} ${r.scenario} checks${r.check.status === 'failed' ? ' — **FAILED**' : ''}:`);
    for (const c of r.check.report.checks) out.push(`- ${c.ok ? 'ok' : '**FAILED**'} ${c.name}: ${c.detail}`);
  }
  return out;
}

function latencyOf(run: RunRecord): LatencySummary {
  return run.result.ops.reserve?.latency ?? run.result.latency;
}

/** The single-node flashstock run of the same scenario and load, same HTTP_THREADS when there is one. */
function singleNodeOf(run: RunRecord, runs: readonly RunRecord[]): RunRecord | undefined {
  const singles = runs.filter((r) => r.system === 'flashstock' && (r.nodes ?? 1) === 1 && r.scenario === run.scenario && r.mode === run.mode && r.rate === run.rate);
  return singles.find((r) => r.httpThreads === run.httpThreads) ?? singles[0];
}

/** What a cluster run cost beyond the single node of the same run. */
export interface ClusterFigures {
  nodes: number;
  forwardedFraction: number;
  local: LatencySummary;
  forwarded: LatencySummary;
  /** Cluster rate ÷ single-node rate; null without a single-node run. */
  ratio: number | null;
  /**
   * Extra server CPU per forwarded request, µs: a --to-others run against the --to-owner run on as
   * many nodes (measured), else (cluster − single) CPU per reservation ÷ forwarded fraction (estimated).
   */
  extraCpuPerForwardedUs: number | null;
  /** The figure compares a --to-others run with a --to-owner one (same nodes), not with a single node. */
  extraMeasured: boolean;
}

/** The --to-owner run that a --to-others run is measured against: same scenario, load, nodes and threads. */
function toOwnerRunOf(run: RunRecord, runs: readonly RunRecord[]): RunRecord | undefined {
  if (run.aim !== 'other') return undefined;
  return runs.find(
    (r) => r.system === 'flashstock' && r.aim === 'owner' && r.nodes === run.nodes && r.httpThreads === run.httpThreads && r.scenario === run.scenario && r.mode === run.mode && r.rate === run.rate,
  );
}

/** µs of server CPU per reservation more in `run` than in `base`, per point of forwarded fraction more (a single node forwards none). */
function extraPerForwardedUs(run: RunRecord, base: RunRecord | undefined): number | null {
  const mine = run.cpuPer1000?.server;
  const theirs = base?.cpuPer1000?.server;
  const forwarded = (run.result.placement?.forwardedFraction ?? 0) - (base?.result.placement?.forwardedFraction ?? 0);
  return mine !== undefined && theirs !== undefined && forwarded > 0 ? ((mine - theirs) / 1000 / forwarded) * 1e6 : null;
}

export function clusterFigures(run: RunRecord, runs: readonly RunRecord[]): ClusterFigures | null {
  const p = run.result.placement;
  if ((run.nodes ?? 1) < 2 || p === undefined) return null;
  const single = singleNodeOf(run, runs);
  const ratio = single !== undefined && primaryRate(single) > 0 ? primaryRate(run) / primaryRate(single) : null;
  const owner = toOwnerRunOf(run, runs);
  const extra = extraPerForwardedUs(run, owner ?? single);
  return {
    nodes: run.nodes!, forwardedFraction: p.forwardedFraction, local: p.local.latency, forwarded: p.forwarded.latency, ratio,
    extraCpuPerForwardedUs: extra, extraMeasured: owner !== undefined,
  };
}

/** Forwarded commands per frame sent to owners during the run: how well forwarding batches. */
function framesCell(r: RunRecord): string {
  const c = r.commits;
  if (c?.forwarded === undefined || c.forwardFrames === undefined || c.forwardFrames <= 0) return '—';
  return `${fmtInt(c.forwarded)} in ${fmtInt(c.forwardFrames)} frames: ${(c.forwarded / c.forwardFrames).toFixed(1)} per frame`;
}

function commitsCell(r: RunRecord | undefined): string {
  const c = r?.commits;
  if (c === undefined || c.commits <= 0) return '—';
  return `${fmtInt(c.commits)} × ${(c.events / c.commits).toFixed(1)}`;
}

function clusterSection(runs: readonly RunRecord[]): string[] {
  const rows = runs.flatMap((r) => {
    const f = clusterFigures(r, runs);
    return f === null ? [] : [{ r, f }];
  });
  if (rows.length === 0) return [];
  const out = [
    '',
    'Cluster (`--nodes`; connections round robin over the nodes; forwarded = sent to a node that does not own the SKU\'s shard, which forwards it to the owner):',
    '',
    '| system | nodes | forwarded | rate ÷ single node | local p50 / p99 ms | forwarded p50 / p99 ms | forwarding adds p50 / p99 ms | extra server CPU per forwarded request | group commits × mean events: cluster / single node | forwarded commands per frame |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const { r, f } of rows) {
    out.push(
      `| ${[
        r.label,
        String(f.nodes),
        `${(f.forwardedFraction * 100).toFixed(1)}%`,
        f.ratio === null ? '— (no single-node run)' : fmtRatio(f.ratio),
        `${fmtMs(f.local.p50)} / ${fmtMs(f.local.p99)}`,
        f.forwarded.count === 0 ? '— (none)' : `${fmtMs(f.forwarded.p50)} / ${fmtMs(f.forwarded.p99)}`,
        f.forwarded.count === 0 ? '—' : `${fmtMs(f.forwarded.p50 - f.local.p50)} / ${fmtMs(f.forwarded.p99 - f.local.p99)}`,
        f.extraCpuPerForwardedUs === null ? '—' : `${Math.round(f.extraCpuPerForwardedUs)} µs ${f.extraMeasured ? '(against to owner)' : '(est.)'}`,
        `${commitsCell(r)} / ${commitsCell(singleNodeOf(r, runs))}`,
        framesCell(r),
      ].join(' | ')} |`,
    );
  }
  out.push(
    '',
    'Extra CPU per forwarded request: (cluster − single node) server core-seconds per reservation ÷ the forwarded fraction (est.: it includes each extra process\'s own overhead); ' +
      'for a `--to-others` run with a `--to-owner` run beside it, (to others − to owner) ÷ the difference in forwarded fraction, on as many nodes: the forwarding alone.',
  );
  return out;
}

export function markdownReport(report: BenchReport): string {
  const out: string[] = [];
  const m = report.machine;
  out.push(`### flashstock bench — ${report.startedAt}`);
  out.push('');
  out.push(
    `Machine: ${m.cpuModel}, ${m.cores} cores, ${m.memoryGiB} GiB; Node ${m.node}; Postgres ${m.postgres ?? 'n/a'}; Redis ${m.redis ?? 'n/a'}; commit ${m.gitCommit?.slice(0, 12) ?? 'n/a'}${m.gitDirty ? ' (dirty)' : ''}; load average at start ${m.loadAverage1m}. Generator on the same machine.`,
  );
  out.push('');
  out.push(`Command: \`${report.command}\``);
  for (const runs of groups(report.runs)) {
    const first = runs[0]!;
    const scenario = first.scenario;
    out.push('');
    const load =
      first.mode === 'open'
        ? `open loop at ${fmtInt(first.rate)} ${first.checkout !== undefined ? 'checkouts/s (each a reservation, then its checkout)' : 'req/s'} over ${first.connections} connections`
        : `closed loop, ${first.connections} connections`;
    out.push(`#### ${scenario} — ${load}, ${first.finite ? 'until done' : `${first.durationSec} s`}, ${first.threads} generator thread(s)`);
    out.push('');
    const sell = scenario === 'sellout';
    const head = ['system', 'durable', 'req/s', '201/s'];
    if (sell) head.push('sold / stock', 'time to sell out');
    head.push('p50 ms', 'p90 ms', 'p99 ms', 'p99.9 ms', 'max ms', 'gen. load', 'cores used', 'srv core-s / 1k res.', 'CPU µs / op', 'heap B / op', 'responses', 'check');
    out.push(`| ${head.join(' | ')} |`);
    out.push(`|${head.map((h) => (h === 'system' || h === 'responses' || h === 'check' || h === 'cores used' ? ' --- ' : ' ---: ')).join('|')}|`);
    for (const r of runs) {
      const l = latencyOf(r);
      const cells = [r.label, r.durable ? 'yes' : '**no**', fmtInt(r.result.throughput), fmtInt(r.result.reservationsPerSec)];
      if (sell) {
        cells.push(r.sellout ? `${fmtInt(r.sellout.unitsTaken)} / ${fmtInt(r.sellout.stock)}` : '—');
        cells.push(r.sellout ? `${r.sellout.soldOut ? '' : 'not sold out; last 201 at '}${fmtInt(r.sellout.timeToSellOutMs)} ms` : '—');
      }
      cells.push(fmtMs(l.p50), fmtMs(l.p90), fmtMs(l.p99), fmtMs(l.p999), fmtMs(l.max), `${Math.round(r.result.generatorUtilization * 100)}%`, cpuCell(r.cpu), cpuPer1000Cell(r), perOpCpuCell(r), perOpBytesCell(r), statusSummary(r.result), checkCell(r.check));
      out.push(`| ${cells.join(' | ')} |`);
    }
    const fs = runs.find((r) => r.system === 'flashstock');
    const baselines = runs.filter((r) => r.system !== 'flashstock');
    if (fs !== undefined && baselines.length > 0) {
      out.push('');
      const rateName = scenario === 'mixed' ? 'req/s' : 'reservations/s';
      out.push(
        `flashstock vs baselines (${rateName} ratio: flashstock ÷ baseline; p99 ratio: baseline ÷ flashstock, > 1 = flashstock faster; CPU/op ratio: flashstock's server + store CPU µs per reservation ÷ the baseline's per reservation (hello: per request), > 1 = flashstock costs more):`,
      );
      out.push('');
      out.push(`| baseline | ${rateName} ratio | p99 ratio | CPU/op ratio${sell ? ' | sell-out time ratio' : ''} |`);
      out.push(`| --- | ---: | ---: | ---:${sell ? ' | ---:' : ''} |`);
      for (const b of baselines) {
        const mine = totalUs(fs);
        const theirs = totalUs(b);
        const cpuRatio = mine !== null && theirs !== null && theirs > 0 ? fmtRatio(mine / theirs) : '—';
        const cells = [b.label, fmtRatio(primaryRate(fs) / primaryRate(b)), fmtRatio(latencyOf(b).p99 / latencyOf(fs).p99), cpuRatio];
        if (sell) cells.push(fs.sellout && b.sellout ? fmtRatio(b.sellout.timeToSellOutMs / fs.sellout.timeToSellOutMs) : '—');
        out.push(`| ${cells.join(' | ')} |`);
      }
    }
    out.push(...clusterSection(runs));
    out.push(...checkoutSection(runs));
    for (const r of runs) {
      if (r.check.status === 'skipped' || r.checkout !== undefined) continue;
      const failed = r.check.report.checks.filter((c) => !c.ok);
      if (failed.length === 0) continue;
      out.push('');
      out.push(`**${r.system} ${scenario}: check failed**`);
      for (const c of failed) out.push(`- ${c.name}: ${c.detail}`);
    }
  }
  if (report.targets.length > 0) {
    out.push('');
    out.push('#### Targets');
    out.push('');
    out.push('| target | wanted | measured | met |');
    out.push('| --- | --- | --- | --- |');
    for (const t of report.targets) out.push(`| ${t.name} | ${t.target} | ${t.measured} | ${t.met ? 'yes' : `**no** (${t.gap})`} |`);
  }
  if (report.notes.length > 0) {
    out.push('');
    for (const n of report.notes) out.push(`- ${n}`);
  }
  return out.join('\n');
}

/** How far a missed target is: "-47%" below a floor, "2.1× the limit" above a ceiling. */
/** A cluster of N nodes on one machine against one node, many SKUs: the share of the single node's rate it must keep. */
const CLUSTER_RATIO_GOAL = 0.9;

const gap = (measured: number, wanted: number, higherIsBetter: boolean): string => {
  if (!higherIsBetter) return `${(measured / wanted).toFixed(measured / wanted >= 10 ? 0 : 1)}× the limit`;
  const pct = (measured / wanted - 1) * 100;
  return `${pct >= 0 ? '+' : ''}${pct.toFixed(0)}%`;
};

/** The issue's targets, evaluated on whatever runs are present. */
export function evaluateTargets(runs: readonly RunRecord[]): TargetResult[] {
  const targets: TargetResult[] = [];
  const find = (scenario: string, system: string, mode?: LoadMode): RunRecord | undefined =>
    runs.find((r) => r.scenario === scenario && r.system === system && (mode === undefined || r.mode === mode));
  const hot = find('hot-sku', 'flashstock', 'closed');
  if (hot !== undefined) {
    const rate = hot.result.reservationsPerSec;
    targets.push({ name: 'hot-sku durable reservations/s', target: '≥ 60,000/s', measured: `${fmtInt(rate)}/s`, met: rate >= 60_000, gap: rate >= 60_000 ? null : gap(rate, 60_000, true) });
    const rowlock = find('hot-sku', 'rowlock', 'closed');
    if (rowlock !== undefined && rowlock.result.reservationsPerSec > 0) {
      const ratio = rate / rowlock.result.reservationsPerSec;
      targets.push({ name: 'hot-sku vs rowlock', target: '≥ 30×', measured: fmtRatio(ratio), met: ratio >= 30, gap: ratio >= 30 ? null : gap(ratio, 30, true) });
    }
    const hello = find('hot-sku', 'hello', 'closed');
    if (hello !== undefined && hello.result.reservationsPerSec > 0) {
      const ratio = rate / hello.result.reservationsPerSec;
      targets.push({ name: 'hot-sku vs hello', target: '≥ 0.5×', measured: fmtRatio(ratio), met: ratio >= 0.5, gap: ratio >= 0.5 ? null : gap(ratio, 0.5, true) });
    }
  }
  for (const r of runs.filter((x) => x.scenario === 'many-skus' && x.system === 'flashstock' && (x.nodes ?? 1) > 1)) {
    const f = clusterFigures(r, runs);
    if (f !== null && f.extraMeasured && f.extraCpuPerForwardedUs !== null) {
      const us = f.extraCpuPerForwardedUs;
      targets.push({ name: `extra CPU per forwarded request, ${f.nodes} nodes (to others − to owner)`, target: '≤ 20 µs', measured: `${fmtInt(us)} µs`, met: us <= 20, gap: us <= 20 ? null : gap(us, 20, false) });
    }
    // --to-owner / --to-others are diagnostics: the cluster's ratio is the round-robin run's.
    if (f === null || f.ratio === null || r.aim !== undefined) continue;
    targets.push({
      name: `many-skus over ${f.nodes} nodes (${(f.forwardedFraction * 100).toFixed(0)}% forwarded) vs single node`,
      target: `≥ ${CLUSTER_RATIO_GOAL}×`,
      measured: fmtRatio(f.ratio),
      met: f.ratio >= CLUSTER_RATIO_GOAL,
      gap: f.ratio >= CLUSTER_RATIO_GOAL ? null : gap(f.ratio, CLUSTER_RATIO_GOAL, true),
    });
  }
  const sell = find('sellout', 'flashstock');
  if (sell?.sellout !== undefined) {
    const ms = sell.sellout.timeToSellOutMs;
    const ok = sell.sellout.soldOut && ms < 500;
    targets.push({
      name: `sellout: ${fmtInt(sell.sellout.stock)} units`,
      target: '< 0.5 s',
      measured: sell.sellout.soldOut ? `${fmtInt(ms)} ms` : `not sold out (${fmtInt(sell.sellout.unitsTaken)} taken)`,
      met: ok,
      gap: ok ? null : sell.sellout.soldOut ? gap(ms, 500, false) : 'not sold out',
    });
    const checked = sell.check.status === 'passed';
    targets.push({ name: 'sellout: 0 oversold, 0 acknowledged missing', target: 'check passes', measured: sell.check.status, met: checked, gap: checked ? null : sell.check.status });
  }
  const pay = runs.find((r) => r.scenario === 'checkout' && r.system === 'flashstock' && r.mode === 'closed' && r.checkout !== undefined);
  if (pay !== undefined) {
    const c = pay.checkout!;
    const ok = c.paymentsPerSec >= 2_000 && c.drained && c.pending === 0;
    targets.push({
      name: 'checkout: finalized payments/s (closed loop)',
      target: '≥ 2,000/s',
      measured: `${fmtInt(c.paymentsPerSec)}/s${c.drained ? '' : ` (${fmtInt(c.pending)} orders never settled)`}`,
      met: ok,
      gap: ok ? null : gap(c.paymentsPerSec, 2_000, true),
    });
  }
  const lag = runs.find((r) => r.scenario === 'checkout' && r.system === 'flashstock' && r.mode === 'open' && r.rate >= 1_000 && r.checkout !== undefined);
  if (lag !== undefined) {
    const c = lag.checkout!;
    const reached = lag.result.unsent === 0;
    const ok = c.lag.p99 <= 1_000 && c.drained && reached;
    const extras = [`${fmtInt(c.checkoutsPerSec)} checkouts/s accepted`];
    if (!reached) extras.push(`${fmtInt(lag.result.unsent)} arrivals never sent`);
    if (!c.drained) extras.push(`${fmtInt(c.pending)} orders never settled`);
    targets.push({
      name: `checkout: queue lag p99 at ${fmtInt(lag.rate)} checkouts/s`,
      target: '≤ 1 s',
      measured: `${fmtMs(c.lag.p99)} ms (${extras.join(', ')})`,
      met: ok,
      gap: ok ? null : gap(c.lag.p99, 1_000, false),
    });
  }
  const open = runs.find((r) => r.scenario === 'hot-sku' && r.system === 'flashstock' && r.mode === 'open' && r.rate >= 30_000);
  if (open !== undefined) {
    const p99 = latencyOf(open).p99;
    const reached = open.result.unsent === 0;
    const ok = p99 <= 5 && reached;
    targets.push({
      name: `open loop at ${fmtInt(open.rate)}/s: p99`,
      target: '≤ 5 ms',
      measured: `${fmtMs(p99)} ms${reached ? '' : ` (${fmtInt(open.result.unsent)} arrivals never sent)`}`,
      met: ok,
      gap: ok ? null : gap(p99, 5, false),
    });
  }
  return targets;
}

const palette: Record<string, string> = { flashstock: '#2b6cb0', rowlock: '#c05621', 'redis-lua': '#b7791f', 'redis-durable': '#2f855a', hello: '#718096' };
const percentileShades = ['#90cdf4', '#4299e1', '#2b6cb0', '#1a365d'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** A hand-written SVG: per scenario, throughput bars and latency percentiles (log scale) per system. */
export function svgChart(report: BenchReport): string {
  const width = 1000;
  const left = 280;
  const panel = (width - left - 60) / 2;
  const rowH = 46;
  const parts: string[] = [];
  let y = 40;
  parts.push(`<text x="20" y="26" font-size="16" font-weight="bold">flashstock bench — ${esc(report.machine.cpuModel)}, ${report.machine.cores} cores, Node ${esc(report.machine.node)}</text>`);
  const legendX = left + panel + 40;
  percentileShades.forEach((c, i) => {
    parts.push(`<rect x="${legendX + i * 80}" y="${y - 8}" width="10" height="10" fill="${c}"/><text x="${legendX + i * 80 + 14}" y="${y + 1}" font-size="11">${['p50', 'p90', 'p99', 'p99.9'][i]}</text>`);
  });
  y += 16;
  for (const runs of groups(report.runs)) {
    const first = runs[0]!;
    const scenario = first.scenario;
    const payments = runs.some((r) => r.checkout !== undefined);
    const rateName = payments ? 'finalized payments/s' : scenario === 'mixed' ? 'responses/s' : '201 reservations/s';
    parts.push(`<text x="20" y="${y + 14}" font-size="14" font-weight="bold">${esc(scenario)} (${first.mode === 'open' ? `open loop ${fmtInt(first.rate)}/s` : `${first.connections} connections`})</text>`);
    parts.push(`<text x="${left}" y="${y + 14}" font-size="11" fill="#4a5568">${rateName}</text>`);
    parts.push(`<text x="${left + panel + 40}" y="${y + 14}" font-size="11" fill="#4a5568">${payments ? 'queue lag checkout → paid' : 'latency'}, ms (log scale)</text>`);
    y += 24;
    const maxRate = Math.max(1, ...runs.map(primaryRate));
    const lat = runs.map((r) => r.checkout?.lag ?? latencyOf(r));
    const maxLat = Math.max(1, ...lat.map((l) => l.p999));
    const minLat = Math.max(0.01, Math.min(...lat.map((l) => (l.p50 > 0 ? l.p50 : 1)))) / 2;
    const logX = (ms: number): number => {
      const v = Math.max(ms, minLat);
      return (Math.log10(v / minLat) / Math.log10(maxLat / minLat)) * panel;
    };
    runs.forEach((r, i) => {
      const ry = y + i * rowH;
      const colour = palette[r.system] ?? '#4a5568';
      parts.push(`<text x="20" y="${ry + 18}" font-size="11">${esc(r.label)}</text>`);
      if (r.check.status === 'failed') parts.push(`<text x="20" y="${ry + 32}" font-size="11" fill="#c53030">check FAILED</text>`);
      const w = (primaryRate(r) / maxRate) * panel;
      parts.push(`<rect x="${left}" y="${ry + 6}" width="${w.toFixed(1)}" height="18" fill="${colour}"/>`);
      parts.push(`<text x="${left + w + 4}" y="${ry + 20}" font-size="11">${fmtInt(primaryRate(r))}</text>`);
      const l = r.checkout?.lag ?? latencyOf(r);
      [l.p50, l.p90, l.p99, l.p999].forEach((v, k) => {
        const bw = logX(v);
        parts.push(`<rect x="${left + panel + 40}" y="${ry + 2 + k * 9}" width="${bw.toFixed(1)}" height="8" fill="${percentileShades[k]}"/>`);
        if (k === 2 || k === 0) parts.push(`<text x="${left + panel + 44 + bw}" y="${ry + 9 + k * 9}" font-size="9">${fmtMs(v)}</text>`);
      });
    });
    y += runs.length * rowH + 14;
  }
  const height = y + 10;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif">\n<rect width="100%" height="100%" fill="#fff"/>\n${parts.join('\n')}\n</svg>\n`;
}
