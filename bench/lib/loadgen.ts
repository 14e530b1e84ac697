import os from 'node:os';
import { Piscina } from 'piscina';
import { encodeHistogram, mergeEncoded, summarize, type LatencySummary } from './histogram.js';
import { IdList } from './ids.js';
import type { Aim, LoadMode, Op, Placement, Target, WorkerResult, WorkerTask } from './types.js';

/** Main-thread side of the load generator: fans a run out to piscina threads and merges what they saw. */

export interface LoadOptions {
  url: string;
  /** A cluster: every node's URL; connections go round robin over them (as a load balancer would). Default [url]. */
  urls?: readonly string[];
  /** A cluster's shard owners (indexes into urls), to split latencies by local vs forwarded. */
  placement?: Placement;
  /** With `placement`: each connection sends only requests its node owns (`--to-owner`), or only ones it does not (`--to-others`). */
  aim?: Aim;
  scenario: string;
  params: unknown;
  /** Finite scenarios ignore durationMs and run until their work is done. */
  finite: boolean;
  mode: LoadMode;
  connections: number;
  /** Open loop: total arrival rate, requests/s. */
  rate: number;
  durationMs: number;
  timeoutMs: number;
  threads: number;
  jwtSecret: string;
  runId: string;
  /**
   * Called once every thread has connected and minted its tokens, right before
   * the clocks start (`start`), and once every thread has returned (`end`): the
   * measured window, for CPU and allocation samples of the server.
   */
  window?: { start(): Promise<void> | void; end(): Promise<void> | void };
}

export interface OpResult {
  count: number;
  latency: LatencySummary;
  statuses: Record<string, number>;
  codes: Record<string, number>;
  /** Merged encoded histogram (base64), for the JSON report. */
  histogram: string;
}

/** A cluster run's requests by whether the node that received them owned their SKU's shard. */
export interface PlacementResult {
  local: { count: number; latency: LatencySummary };
  forwarded: { count: number; latency: LatencySummary };
  /** forwarded ÷ (local + forwarded). */
  forwardedFraction: number;
}

export interface LoadResult {
  mode: LoadMode;
  connections: number;
  threads: number;
  rate: number;
  /** Epoch ms when the threads' clocks started. */
  startedAt?: number;
  elapsedMs: number;
  requests: number;
  /** Responses per second (all operations). */
  throughput: number;
  /** 201 reservations per second. */
  reservationsPerSec: number;
  acknowledged: number;
  acknowledgedQuantity: number;
  /** Time from the start to the last 201 (sellout: time to sell out). */
  lastAcknowledgedMs: number;
  latency: LatencySummary;
  ops: Partial<Record<Op, OpResult>>;
  statuses: Record<string, number>;
  codes: Record<string, number>;
  badBodies: number;
  unanswered: number;
  /** 503s whose outcome is unknown (a forwarded command's reply lost): they may have run. */
  unknownOutcomes: number;
  connectionErrors: number;
  timeouts: number;
  unsent: number;
  /** Set when the load went to a cluster with a known placement. */
  placement?: PlacementResult;
  /** Mean event-loop utilization of the generator threads (near 1 = the generator is saturated). */
  generatorUtilization: number;
  metrics: Record<string, number>;
  errorSamples: string[];
  ids: IdList;
  /** Each thread's Workload.transfer() (not in the JSON report). */
  transfers?: Array<Record<string, ArrayBuffer>>;
}

export function defaultThreads(): number {
  const cores = os.availableParallelism();
  return Math.max(1, Math.min(8, Math.floor(cores / 2)));
}

function addInto(target: Record<string, number>, source: Record<string, number>): void {
  for (const [k, v] of Object.entries(source)) target[k] = (target[k] ?? 0) + v;
}

function mergePlacement(results: readonly WorkerResult[]): PlacementResult | null {
  const parts = results.flatMap((r) => (r.placement !== undefined ? [r.placement] : []));
  if (parts.length === 0) return null;
  const side = (pick: (p: (typeof parts)[number]) => { histogram: string; count: number }) => ({
    count: parts.reduce((n, p) => n + pick(p).count, 0),
    latency: summarize(mergeEncoded(parts.map((p) => pick(p).histogram))),
  });
  const local = side((p) => p.local);
  const forwarded = side((p) => p.forwarded);
  const total = local.count + forwarded.count;
  return { local, forwarded, forwardedFraction: total === 0 ? 0 : forwarded.count / total };
}

/** Merges per-thread results (pure; exported for tests). */
export function mergeResults(results: readonly WorkerResult[], options: Pick<LoadOptions, 'mode' | 'connections' | 'threads' | 'rate'>): LoadResult {
  const ops: Partial<Record<Op, OpResult>> = {};
  const opNames = new Set<Op>();
  for (const r of results) for (const op of Object.keys(r.ops) as Op[]) opNames.add(op);
  const allEncoded: string[] = [];
  const statuses: Record<string, number> = {};
  const codes: Record<string, number> = {};
  let requests = 0;
  for (const op of opNames) {
    const encoded: string[] = [];
    const opStatuses: Record<string, number> = {};
    const opCodes: Record<string, number> = {};
    let count = 0;
    for (const r of results) {
      const s = r.ops[op];
      if (s === undefined) continue;
      encoded.push(s.histogram);
      count += s.count;
      addInto(opStatuses, s.statuses);
      addInto(opCodes, s.codes);
    }
    if (count === 0 && op !== 'reserve') continue;
    const merged = mergeEncoded(encoded);
    ops[op] = {
      count,
      latency: summarize(merged),
      statuses: opStatuses,
      codes: opCodes,
      histogram: encoded.length === 1 ? encoded[0]! : encodeHistogram(merged),
    };
    allEncoded.push(...encoded);
    requests += count;
    addInto(statuses, opStatuses);
    addInto(codes, opCodes);
  }
  const startedAt = Math.min(...results.map((r) => r.startedAt));
  const lastResponseAt = Math.max(...results.map((r) => r.lastResponseAt));
  const lastAcknowledgedAt = Math.max(...results.map((r) => r.lastAcknowledgedAt));
  const elapsedMs = lastResponseAt > startedAt ? lastResponseAt - startedAt : 0;
  const ids = new IdList(Math.max(16, results.reduce((n, r) => n + r.reservationIds.byteLength / 16, 0)));
  for (const r of results) ids.pushBytes(new Uint8Array(r.reservationIds), r.reservationIds.byteLength / 16);
  const metrics: Record<string, number> = {};
  for (const r of results) addInto(metrics, r.metrics);
  const sum = (f: (r: WorkerResult) => number): number => results.reduce((n, r) => n + f(r), 0);
  const acknowledged = sum((r) => r.acknowledged);
  const placement = mergePlacement(results);
  return {
    mode: options.mode,
    connections: options.connections,
    threads: options.threads,
    rate: options.rate,
    startedAt,
    elapsedMs,
    requests,
    throughput: elapsedMs > 0 ? (requests * 1000) / elapsedMs : 0,
    reservationsPerSec: elapsedMs > 0 ? (acknowledged * 1000) / elapsedMs : 0,
    acknowledged,
    acknowledgedQuantity: sum((r) => r.acknowledgedQuantity),
    lastAcknowledgedMs: lastAcknowledgedAt > startedAt ? lastAcknowledgedAt - startedAt : 0,
    latency: summarize(mergeEncoded(allEncoded)),
    ops,
    statuses,
    codes,
    badBodies: sum((r) => r.badBodies),
    unanswered: sum((r) => r.unanswered),
    unknownOutcomes: sum((r) => r.unknownOutcomes),
    connectionErrors: sum((r) => r.connectionErrors),
    timeouts: sum((r) => r.timeouts),
    unsent: sum((r) => r.unsent),
    ...(placement !== null ? { placement } : {}),
    generatorUtilization: results.length === 0 ? 0 : sum((r) => r.utilization) / results.length,
    metrics,
    errorSamples: results.flatMap((r) => r.errorSamples).slice(0, 10),
    ids,
    transfers: results.flatMap((r) => (r.transfer !== undefined ? [r.transfer] : [])),
  };
}


const workerFile = new URL(`./worker${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url).href;

function targetOf(url: string): Target {
  const u = new URL(url);
  return { host: u.hostname === 'localhost' ? '127.0.0.1' : u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || (u.protocol === 'https:' ? 443 : 80)) };
}

export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const targets = (options.urls ?? [options.url]).map(targetOf);
  const threads = Math.max(1, Math.min(options.threads, options.connections));
  const pool = new Piscina({ filename: workerFile, minThreads: threads, maxThreads: threads, idleTimeout: 60_000 });
  const sync = new SharedArrayBuffer(8);
  const flags = new Int32Array(sync);
  try {
    const tasks: Promise<WorkerResult>[] = [];
    let firstConnection = 0;
    for (let i = 0; i < threads; i++) {
      const connections = Math.floor(options.connections / threads) + (i < options.connections % threads ? 1 : 0);
      const task: WorkerTask = {
        targets,
        firstConnection,
        // One Host header for every node: the service does not route on it.
        hostHeader: new URL(options.url).host,
        ...(options.placement !== undefined ? { placement: options.placement } : {}),
        ...(options.aim !== undefined ? { aim: options.aim } : {}),
        connections,
        mode: options.mode,
        rate: (options.rate * connections) / options.connections,
        durationMs: options.finite ? 0 : options.durationMs,
        timeoutMs: options.timeoutMs,
        scenario: options.scenario,
        params: options.params,
        workerIndex: i,
        workerCount: threads,
        jwtSecret: options.jwtSecret,
        runId: options.runId,
        sync,
      };
      tasks.push(pool.run(task) as Promise<WorkerResult>);
      firstConnection += connections;
    }
    // Start every thread's clock together, once all have connected and minted their tokens.
    const failed = Promise.race(tasks.map((t) => t.then(() => undefined, (e: unknown) => e)));
    let failure: unknown;
    void failed.then((e) => {
      failure = e;
    });
    while (Atomics.load(flags, 0) < threads) {
      if (failure !== undefined) throw failure;
      await new Promise((r) => setTimeout(r, 5));
    }
    await options.window?.start();
    Atomics.store(flags, 1, 1);
    Atomics.notify(flags, 1);
    const results = await Promise.all(tasks);
    await options.window?.end();
    return mergeResults(results, { mode: options.mode, connections: options.connections, threads, rate: options.rate });
  } finally {
    await pool.destroy();
  }
}
