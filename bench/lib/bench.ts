import { commitTotals, startScraper, type CommitTotals } from './scraper.js';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createSkus, readViews, waitReady } from './admin.js';
import { InvariantChecker, type Check, type Observations } from './checker.js';
import type { BenchOptions } from './cli.js';
import { IdList, IdSet } from './ids.js';
import { defaultThreads, runLoad, type LoadOptions, type LoadResult } from './loadgen.js';
import { machineFacts, postgresVersion } from './machine.js';
import { evaluateTargets, markdownReport, stripIds, svgChart, type BenchReport, type CheckOutcome, type RunRecord } from './report.js';
import {
  flashstockAvailable,
  repoRoot,
  startFlashstock,
  startHello,
  startRedisLua,
  startRedisServer,
  startRowlock,
  stockEventRows,
  systemLabels,
  type RunningSystem,
  type SystemName,
} from './systems.js';
import { coreSecondsPerThousand, coresUsed, perOperation, sampleCpu, type CpuSample } from './cpu.js';
import { readPlacement, startFlashstockCluster } from './cluster.js';
import type { Aim, Placement } from './types.js';
import { runWrk } from './wrk.js';
import { scenarios } from '../scenarios/index.js';
import type { ScenarioPlan, SkuSpec } from '../scenarios/common.js';

/** One bench invocation: start what is needed, run every scenario on every system, check, report, stop. */

export interface BenchOutcome {
  report: BenchReport;
  markdown: string;
  ok: boolean;
  files: string[];
}

type Log = (line: string) => void;

const short: Record<SystemName, string> = { flashstock: 'f', rowlock: 'r', 'redis-lua': 'l', 'redis-durable': 'd', hello: 'h' };

interface Phase {
  plan: ScenarioPlan;
  result: LoadResult;
}

async function runPhase(
  system: RunningSystem,
  scenarioName: string,
  plan: ScenarioPlan,
  aim: Aim | null,
  options: BenchOptions,
  runId: string,
  shape: { connections: number; durationMs: number; mode: 'open' | 'closed'; rate: number },
  placement?: Placement,
  window?: LoadOptions['window'],
): Promise<LoadResult> {
  return runLoad({
    ...(window !== undefined ? { window } : {}),
    url: system.url,
    ...(system.urls !== undefined ? { urls: system.urls } : {}),
    ...(placement !== undefined ? { placement } : {}),
    ...(placement !== undefined && aim !== null ? { aim } : {}),
    scenario: scenarioName,
    params: plan.params,
    finite: plan.finite,
    mode: shape.mode,
    connections: shape.connections,
    rate: shape.rate,
    durationMs: shape.durationMs,
    timeoutMs: options.timeoutMs,
    threads: options.threads ?? defaultThreads(),
    jwtSecret: system.jwtSecret,
    runId,
  });
}

async function check(system: RunningSystem, phases: Phase[]): Promise<CheckOutcome> {
  if (system.rows === null) return { status: 'skipped', reason: system.uncheckedReason ?? 'no database to check against' };
  const skus: SkuSpec[] = phases.flatMap((p) => p.plan.skus);
  const ids = new IdList(Math.max(16, phases.reduce((n, p) => n + p.result.ids.count, 0)));
  for (const p of phases) ids.pushBytes(p.result.ids.bytes, p.result.ids.count);
  const sum = (f: (r: LoadResult) => number): number => phases.reduce((n, p) => n + f(p.result), 0);
  const observations: Observations = {
    skus: skus.map((s) => s.sku),
    acknowledged: new IdSet(ids),
    acknowledgedCount: sum((r) => r.acknowledged),
    acknowledgedQuantity: sum((r) => r.acknowledgedQuantity),
    badBodies: sum((r) => r.badBodies),
    // A 503 saying the outcome is unknown (a forwarded command's reply lost) may have reserved, as an unanswered request may.
    unanswered: sum((r) => r.unanswered + r.unknownOutcomes),
    views: await readViews(system.url, skus.map((s) => s.sku)),
    configuredStock: Object.fromEntries(skus.map((s) => [s.sku, s.stock])),
  };
  const checker = new InvariantChecker(observations);
  for await (const batch of system.rows(observations.skus)) for (const row of batch) checker.add(row);
  const { skus: perSku, ...report } = checker.finish();
  return { status: report.ok ? 'passed' : 'failed', report, skuCount: Object.keys(perSku).length };
}

/** One way of running flashstock: its node count, front-end threads and the cluster diagnostic's aim (--nodes × --http-threads × --to-owner/--to-others). */
interface Variant {
  nodes: number;
  httpThreads: number | null;
  /** Where a cluster's requests go (null: round robin; a single node has none). */
  aim: Aim | null;
  /** Part of the run ids (so SKU names differ); '' when there is one variant. */
  tag: string;
}

function variantsOf(options: BenchOptions): Variant[] {
  const aims = options.aims.length === 0 ? [null] : options.aims;
  const list = options.nodes.flatMap((nodes) =>
    options.httpThreads.flatMap((httpThreads) => (nodes > 1 ? aims : [null]).map((aim) => ({ nodes, httpThreads, aim }))),
  );
  return list.map((v) => ({ ...v, tag: list.length === 1 ? '' : `n${v.nodes}t${v.httpThreads ?? 'd'}${v.aim === null ? '' : v.aim[0]}` }));
}

/** flashstock as one process or a local cluster, on its embedded Postgres unless --database-url / DATABASE_URL. */
async function startFlashstockVariant(
  options: BenchOptions,
  variant: Variant,
  base: { verbose: boolean; adminToken: string; jwtSecret: string },
  notes: string[],
  log: Log,
): Promise<RunningSystem & { databaseUrl: string }> {
  log(`starting flashstock${variant.nodes > 1 ? ` as ${variant.nodes} cluster nodes` : ''} (embedded Postgres unless --database-url)…`);
  const nodeArgs = options.cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(options.outDir, 'prof')}`] : [];
  const overrides = Object.assign({}, ...options.scenarios.map((n) => scenarios[n]!.serviceOverrides ?? {})) as Record<string, unknown>;
  const note = (text: string): void => {
    if (!notes.includes(text)) notes.push(text);
  };
  if (Object.keys(overrides).length > 0) note(`flashstock started with ${JSON.stringify(overrides)} (for ${options.scenarios.filter((n) => scenarios[n]!.serviceOverrides).join(', ')})${process.env.BENCH_OVERRIDES ? `, then BENCH_OVERRIDES=${process.env.BENCH_OVERRIDES}` : ''}`);
  if (variant.httpThreads !== null) {
    overrides.httpThreads = variant.httpThreads;
    note(`flashstock started with HTTP_THREADS=${variant.httpThreads} (--http-threads)`);
  }
  // Each variant on the user's database or a fresh embedded one: the previous variant's is gone with it.
  const databaseUrl = options.databaseUrl ?? process.env.DATABASE_URL ?? undefined;
  const start = { ...base, ...(databaseUrl !== undefined ? { databaseUrl } : {}), nodeArgs, overrides };
  const f = variant.nodes > 1 ? await startFlashstockCluster({ ...start, nodes: variant.nodes, log }) : await startFlashstock(start);
  if (variant.nodes > 1) note('--nodes: the generator spreads its connections round robin over the node URLs (no load balancer process; see bench/README.md)');
  if (variant.aim === 'owner') note('--to-owner: each connection sent only requests for SKUs its node owns (nothing forwarded): a diagnostic, not what a load balancer does');
  if (variant.aim === 'other') note('--to-others: each connection sent only requests for SKUs another node owns (all forwarded): a diagnostic, not what a load balancer does');
  const labels = [f.label];
  if (variant.nodes === 1 && options.nodes.some((n) => n > 1)) labels.push('1 node');
  if (variant.httpThreads !== null) labels.push(`HTTP_THREADS=${variant.httpThreads}`);
  if (variant.aim !== null) labels.push(variant.aim === 'owner' ? 'to owner' : 'to others');
  return { ...f, label: labels.join(', ') };
}

/** Adds a scenario's own checks to the log check (a skipped log check stays skipped). */
function withChecks(outcome: CheckOutcome, extra: Check[]): CheckOutcome {
  if (outcome.status === 'skipped' || extra.length === 0) return outcome;
  const checks = [...outcome.report.checks, ...extra];
  const ok = checks.every((c) => c.ok);
  return { ...outcome, status: ok ? 'passed' : 'failed', report: { ...outcome.report, ok, checks } };
}

function commitsDuring(before: CommitTotals | null, after: CommitTotals | null): CommitTotals | null {
  if (before === null || after === null) return null;
  return {
    commits: after.commits - before.commits,
    events: after.events - before.events,
    forwarded: after.forwarded - before.forwarded,
    forwardFrames: after.forwardFrames - before.forwardFrames,
  };
}

async function samePlacement(system: RunningSystem, before: Placement): Promise<boolean> {
  try {
    return JSON.stringify(await readPlacement(system.urls!, system.adminToken)) === JSON.stringify(before);
  } catch {
    return false;
  }
}

export async function runBench(options: BenchOptions, log: Log = (l) => process.stderr.write(`${l}\n`)): Promise<BenchOutcome> {
  const started: Array<{ name: string; stop(): Promise<void> }> = [];
  const notes: string[] = [];
  const loadAtStart = os.loadavg()[0] ?? 0;
  if (loadAtStart > 0.5 * os.availableParallelism()) {
    const text = `the machine was busy when the bench started (1-minute load average ${loadAtStart.toFixed(2)} on ${os.availableParallelism()} cores): figures are skewed by other work`;
    log(`\x1b[33mWARNING: ${text}\x1b[0m`);
    notes.push(text);
  }
  const runs: RunRecord[] = [];
  const baseRunId = Date.now().toString(36);
  const adminToken = options.adminToken ?? randomBytes(32).toString('base64url');
  const jwtSecret = options.jwtSecret ?? randomBytes(32).toString('base64url');
  const base = { verbose: options.verbose, adminToken, jwtSecret };
  let databaseUrl: string | undefined = options.databaseUrl ?? process.env.DATABASE_URL ?? undefined;
  let redisVersion: string | null = null;
  let pgVersion: string | null = null;
  let embeddedPostgresUnder: number | undefined;

  const stopAll = async (): Promise<void> => {
    while (started.length > 0) {
      const s = started.pop()!;
      try {
        await s.stop();
      } catch (error) {
        log(`stopping ${s.name}: ${(error as Error).message}`);
      }
    }
  };
  const onSignal = (): void => {
    log('interrupted: stopping everything the bench started');
    void stopAll().then(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);

  try {
    const variants = variantsOf(options);
    type Entry = { name: SystemName; variant: Variant | null };
    const entries = options.systems.flatMap((name): Entry[] => (name === 'flashstock' ? variants.map((variant) => ({ name, variant })) : [{ name, variant: null }]));
    for (const [entryIndex, { name, variant }] of entries.entries()) {
      if (options.scenarios.every((n) => scenarios[n]!.systems?.includes(name) === false)) {
        const text = `${name}: SKIPPED — ${options.scenarios.join(', ')} run(s) on ${[...new Set(options.scenarios.flatMap((n) => scenarios[n]!.systems ?? []))].join(', ')} only: no baseline comparison`;
        log(text);
        notes.push(text);
        continue;
      }
      let system: RunningSystem | null = null;
      let stopAfter = true;
      if (name === 'flashstock') {
        if (options.url !== null) {
          if (options.adminToken === null || options.jwtSecret === null) throw new Error('--url needs --admin-token and --jwt-secret (to create SKUs and mint shopper tokens)');
          const rowsUrl = options.databaseUrl;
          system = {
            name,
            label: `${systemLabels.flashstock} at ${options.url}`,
            durable: true,
            url: options.url.replace(/\/$/, ''),
            adminToken: options.adminToken,
            jwtSecret: options.jwtSecret,
            rows: rowsUrl === null ? null : (skus) => stockEventRows(rowsUrl, skus),
            uncheckedReason: 'no --database-url given',
            stop: async () => {},
          };
          if (rowsUrl === null) log('\x1b[33mWARNING: no --database-url: the post-run checks against Postgres are SKIPPED\x1b[0m');
        } else if (!flashstockAvailable()) {
          const text = 'flashstock: src/app.ts does not exist yet — SKIPPED';
          log(`\x1b[33mWARNING: ${text}\x1b[0m`);
          notes.push(text);
          continue;
        } else {
          const f = await startFlashstockVariant(options, variant!, base, notes, log);
          databaseUrl = f.databaseUrl;
          embeddedPostgresUnder = f.cpuRoots?.postgresUnder;
          system = f;
          // The last variant's Postgres serves rowlock too: stopped at the end.
          if (!entries.slice(entryIndex + 1).some((e) => e.name === 'flashstock')) {
            started.push({ name, stop: f.stop });
            stopAfter = false;
          }
        }
      } else if (name === 'rowlock') {
        if (databaseUrl === undefined) {
          const text = 'rowlock: no Postgres (start flashstock in the same run, or give --database-url / DATABASE_URL) — SKIPPED';
          log(`\x1b[33mWARNING: ${text}\x1b[0m`);
          notes.push(text);
          continue;
        }
        system = await startRowlock({ ...base, databaseUrl, ...(embeddedPostgresUnder !== undefined ? { postgresUnder: embeddedPostgresUnder } : {}) });
      } else if (name === 'redis-lua' || name === 'redis-durable') {
        // redis-durable always runs on its own redis-server: its persistence settings are the point.
        const durable = name === 'redis-durable';
        let redisUrl = durable ? undefined : (options.redisUrl ?? process.env.REDIS_URL ?? undefined);
        let redisPid: number | undefined;
        if (redisUrl === undefined) {
          const redis = await startRedisServer(options.verbose, durable);
          if (redis === null) {
            const text = `${name}: ${durable ? '' : 'no REDIS_URL and '}no redis-server on PATH — SKIPPED`;
            log(`\x1b[33mWARNING: ${text}\x1b[0m`);
            notes.push(text);
            continue;
          }
          started.push({ name: durable ? 'redis-server (appendfsync always)' : 'redis-server', stop: redis.stop });
          redisUrl = redis.url;
          redisPid = redis.pid;
        }
        system = await startRedisLua({ ...base, redisUrl, durable, ...(redisPid !== undefined ? { redisPid } : {}) });
        try {
          const { Redis } = await import('ioredis');
          const r = new Redis(redisUrl);
          redisVersion = /redis_version:(\S+)/.exec(await r.info('server'))?.[1] ?? null;
          r.disconnect();
        } catch {
          // version is only a fact for the report
        }
      } else {
        system = await startHello(base);
      }
      if (stopAfter) started.push({ name, stop: system.stop });
      await waitReady(system.url);

      for (const [index, scenarioName] of options.scenarios.entries()) {
        const scenario = scenarios[scenarioName]!;
        if (scenario.systems !== undefined && !scenario.systems.includes(name)) {
          const text = `${scenarioName}: not run on ${name} (only ${scenario.systems.join(', ')} implement it; no baseline comparison for this scenario)`;
          log(text);
          notes.push(text);
          continue;
        }
        const shapes = scenario.shapes?.(options.rate) ?? [options.rate !== null ? { mode: 'open' as const, rate: options.rate } : { mode: 'closed' as const, rate: 0 }];
        for (const [shapeIndex, shape] of shapes.entries()) {
          // Unique per system, scenario and load: SKU names, shopper ids and Idempotency-Keys derive from it.
          const runId = `${baseRunId}${short[name]}${variant?.tag ?? ''}${index}${shapeIndex > 0 ? `s${shapeIndex}` : ''}`;
          const connections = options.connections ?? scenario.defaults.connections ?? 256;
          const durationSec = options.durationSec ?? scenario.defaults.durationSec ?? 10;
          const { mode, rate } = shape;
          const plan = scenario.plan({
            runId,
            ...(options.skus !== null ? { skus: options.skus } : {}),
            ...(options.stock !== null ? { stock: options.stock } : {}),
            ...(options.shoppers !== null ? { shoppers: options.shoppers } : {}),
          });
          const phases: Phase[] = [];
          if (options.warmupSec > 0) {
            const warm = scenarios['hot-sku']!.plan({ runId: `${runId}w`, shoppers: 5_000 });
            log(`${name} ${scenarioName}: warm-up ${options.warmupSec} s on its own SKU`);
            await createSkus(system.url, system.adminToken, warm.skus);
            const result = await runPhase(system, 'hot-sku', warm, variant?.aim ?? null, options, `${runId}w`, { connections: Math.min(connections, 256), durationMs: options.warmupSec * 1000, mode: 'closed', rate: 0 });
            phases.push({ plan: warm, result });
          }
          log(`${name} ${scenarioName}: ${mode === 'open' ? `open loop ${rate}/s` : 'closed loop'}, ${connections} connections, ${plan.finite ? 'until done' : `${durationSec} s`}`);
          await createSkus(system.url, system.adminToken, plan.skus);
          const placement = system.urls === undefined ? undefined : await readPlacement(system.urls, system.adminToken);
          const commitsBefore = name === 'flashstock' ? await commitTotals(system.metricsUrls ?? []) : null;
          // The measured window: from the moment every generator thread is ready to the moment all are done.
          let cpuBefore: CpuSample = {};
          let cpuAfter: CpuSample = {};
          let allocBefore: number | null = null;
          let allocAfter: number | null = null;
          let wallStart = 0;
          let wallMs = 0;
          const window = {
            start: async () => {
              allocBefore = (await system.allocated?.()) ?? null;
              cpuBefore = sampleCpu(system.cpuRoots ?? {});
              wallStart = Date.now();
            },
            end: async () => {
              cpuAfter = sampleCpu(system.cpuRoots ?? {});
              wallMs = Date.now() - wallStart;
              allocAfter = (await system.allocated?.()) ?? null;
            },
          };
          const scraper = options.scrapeMetrics && name === 'flashstock' ? startScraper(system.metricsUrls![0]!) : null;
          const result = await runPhase(system, scenarioName, plan, variant?.aim ?? null, options, runId, { connections, durationMs: durationSec * 1000, mode, rate }, placement, window);
          const commits = commitsDuring(commitsBefore, name === 'flashstock' ? await commitTotals(system.metricsUrls ?? []) : null);
          if (placement !== undefined && !(await samePlacement(system, placement))) {
            notes.push(`${system.label} ${scenarioName}: shards moved during the run: its local/forwarded split is approximate`);
          }
          const scraped = scraper?.stop();
          if (scraped !== undefined) {
            const text = `${name} ${scenarioName}: /metrics scraped every 1 s during the run: ${scraped.scrapes} scrapes (${scraped.failures} failed), mean ${scraped.meanMs} ms, ${scraped.bytes} bytes`;
            log(text);
            notes.push(text);
          }
          const cpu = coresUsed(cpuBefore, cpuAfter, wallMs);
          phases.push({ plan, result });
          log(`${name} ${scenarioName}: ${Math.round(result.throughput)} req/s, ${Math.round(result.reservationsPerSec)} reservations/s, p99 ${result.latency.p99} ms; checking…`);
          const after =
            scenario.afterRun === undefined
              ? null
              : await scenario.afterRun({
                  plan,
                  result,
                  shape,
                  url: system.url,
                  adminToken: system.adminToken,
                  databaseUrl: system.rows === null ? null : (databaseUrl ?? null),
                  ...(system.cpuRoots !== undefined ? { cpuRoots: system.cpuRoots } : {}),
                  ...(system.serviceConfig !== undefined ? { serviceConfig: system.serviceConfig } : {}),
                  log,
                });
          if (after !== null) notes.push(...(after.notes ?? []));
          const outcome = withChecks(await check(system, phases), after?.checks ?? []);
          if (outcome.status === 'failed') log(`\x1b[31m${name} ${scenarioName}: CHECK FAILED\x1b[0m`);
          const record: RunRecord = {
            scenario: scenarioName,
            system: name,
            label: system.label,
            durable: system.durable,
            mode,
            connections,
            threads: result.threads,
            rate,
            durationSec: plan.finite ? Math.round(result.elapsedMs) / 1000 : durationSec,
            finite: plan.finite,
            result: stripIds(result),
            check: outcome,
            cpu,
            ...(system.durable && result.acknowledged > 0 ? { cpuPer1000: coreSecondsPerThousand(cpuBefore, cpuAfter, result.acknowledged) } : {}),
            ...perOperation(name === 'hello' ? 'request' : 'reservation', name === 'hello' ? result.requests : result.acknowledged, cpuBefore, cpuAfter, allocBefore, allocAfter),
            ...(variant !== null ? { nodes: variant.nodes } : {}),
            ...(variant?.aim != null ? { aim: variant.aim } : {}),
            ...(commits !== null ? { commits } : {}),
            ...(typeof system.serviceConfig?.httpThreads === 'number' ? { httpThreads: system.serviceConfig.httpThreads } : {}),
          };
          if (scenarioName === 'sellout') {
            const stock = plan.skus[0]!.stock;
            const taken = result.acknowledgedQuantity;
            record.sellout = { stock, unitsTaken: taken, soldOut: taken >= stock, timeToSellOutMs: Math.round(result.lastAcknowledgedMs * 10) / 10 };
          }
          if (after?.record !== undefined) Object.assign(record, after.record);
          runs.push(record);
        }
      }
      if (name === 'hello' && options.wrk) {
        const connections = options.connections ?? 256;
        const seconds = Math.max(1, Math.round(options.durationSec ?? 5));
        const rate = await runWrk(system.url, connections, seconds, options.threads ?? defaultThreads());
        const ours = runs.find((r) => r.system === 'hello' && r.mode === 'closed');
        if (rate === null) notes.push('wrk: not installed or failed; no external cross-check of the generator');
        else
          notes.push(
            `generator ceiling: wrk (C, ${options.threads ?? defaultThreads()} thread(s), ${connections} connections, ${seconds} s) got ${Math.round(rate).toLocaleString('en-US')} req/s from hello` +
              (ours ? `; this harness got ${Math.round(ours.result.throughput).toLocaleString('en-US')} req/s (${((ours.result.throughput / rate) * 100).toFixed(0)}% of wrk) at ${Math.round(ours.result.generatorUtilization * 100)}% generator event-loop load` : ''),
          );
      }
      if (stopAfter) {
        started.splice(started.findIndex((s) => s.name === name), 1);
        await system.stop();
      }
    }
  } finally {
    process.removeListener('SIGINT', onSignal);
    pgVersion = await postgresVersion(databaseUrl);
    await stopAll();
  }

  const helloRun = runs.filter((r) => r.system === 'hello').sort((a, b) => b.result.throughput - a.result.throughput)[0];
  if (helloRun !== undefined) {
    notes.push(
      `generator check: against hello the generator reached ${Math.round(helloRun.result.throughput).toLocaleString('en-US')} req/s at ${Math.round(helloRun.result.generatorUtilization * 100)}% event-loop load; a system measured below that rate with generator load under ~95% was not limited by the generator`,
    );
  }
  const report: BenchReport = {
    version: 1,
    startedAt: new Date(Number.parseInt(baseRunId, 36)).toISOString(),
    command: `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim(),
    machine: { ...machineFacts(repoRoot, loadAtStart), postgres: pgVersion, redis: redisVersion },
    runs,
    targets: evaluateTargets(runs),
    notes,
  };
  const markdown = markdownReport(report);
  const outDir = path.resolve(options.outDir);
  mkdirSync(outDir, { recursive: true });
  const stamp = report.startedAt.replace(/[:.]/g, '-');
  const stem = `${stamp}-${options.scenarios.join('+')}`;
  const files = [path.join(outDir, `${stem}.json`), path.join(outDir, `${stem}.svg`), path.join(outDir, `${stem}.md`)];
  writeFileSync(files[0]!, `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(files[1]!, svgChart(report));
  writeFileSync(files[2]!, `${markdown}\n`);
  for (const [from, to] of [
    [files[0]!, 'latest.json'],
    [files[1]!, 'latest.svg'],
    [files[2]!, 'latest.md'],
  ] as const) {
    copyFileSync(from, path.join(outDir, to));
  }
  const ok = runs.every((r) => r.check.status !== 'failed') && runs.length > 0;
  return { report, markdown, ok, files };
}
