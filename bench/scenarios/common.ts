import type { Check } from '../lib/checker.js';
import type { CpuRoots } from '../lib/cpu.js';
import { mintShopperToken } from '../lib/jwt.js';
import type { LoadResult } from '../lib/loadgen.js';
import type { RunRecord } from '../lib/report.js';
import type { LoadMode, RequestSpec, Workload, WorkloadContext } from '../lib/types.js';

/** Building blocks shared by the scenario modules. */

/** How a scenario's SKUs are configured through the admin API. */
export interface SkuSpec {
  sku: string;
  stock: number;
  perShopperLimit: number;
  holdSeconds: number;
  priceCents: number;
  currency: string;
}

export interface PlanOptions {
  runId: string;
  /** Override of the scenario's default shape, from the CLI (e.g. --skus). */
  skus?: number;
  stock?: number;
  shoppers?: number;
}

export interface ScenarioPlan<P = unknown> {
  skus: SkuSpec[];
  /** Handed to every worker's createWorkload. */
  params: P;
  /** Finite scenarios run until their work is done instead of for --duration. */
  finite: boolean;
}

/** One load applied to a scenario: closed loop, or open loop at `rate`. */
export interface LoadShape {
  mode: LoadMode;
  rate: number;
}

/** What a scenario's afterRun gets (main thread, after the load, before the log check). */
export interface AfterRunContext<P = unknown> {
  plan: ScenarioPlan<P>;
  result: LoadResult;
  shape: LoadShape;
  url: string;
  adminToken: string;
  /** null: no database to read (e.g. --url without --database-url). */
  databaseUrl: string | null;
  cpuRoots?: CpuRoots;
  serviceConfig?: Record<string, unknown>;
  log(line: string): void;
}

export interface AfterRunOutcome {
  /** Added to the run's post-run check: a failed one fails the run. */
  checks: Check[];
  /** Scenario figures merged into the run's record (e.g. `checkout`). */
  record?: Partial<RunRecord>;
  notes?: string[];
}

export interface Scenario<P = any> {
  name: string;
  description: string;
  /** Defaults the CLI applies unless told otherwise. */
  defaults: { connections?: number; durationSec?: number };
  /** Systems that implement what the scenario needs (default: all). */
  systems?: readonly string[];
  /** flashstock config overrides the scenario needs (startFlashstock's overrides). */
  serviceOverrides?: Record<string, unknown>;
  /** The loads to apply, given --rate (null = not given). Default: closed loop, or open loop at --rate. */
  shapes?(rate: number | null): LoadShape[];
  plan(options: PlanOptions): ScenarioPlan<P>;
  /** Runs inside a load-generator thread. */
  createWorkload(context: WorkloadContext<P>): Workload;
  /** After the load: wait for the system to finish the work, measure, check. */
  afterRun?(context: AfterRunContext<P>): Promise<AfterRunOutcome>;
}

/** Small, fast, seedable PRNG (mulberry32): the same seed gives the same load. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Zipf(s) over n items: index 0 is the most popular. */
export function zipfSampler(n: number, s: number, random: () => number): () => number {
  const cdf = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    sum += 1 / Math.pow(i + 1, s);
    cdf[i] = sum;
  }
  for (let i = 0; i < n; i++) cdf[i]! /= sum;
  return () => {
    const u = random();
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (cdf[mid]! < u) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
}

export function skuName(runId: string, scenario: string, index: number): string {
  return `b-${runId}-${scenario}-${index}`.slice(0, 64);
}

export function reservationBody(quantity: number): string {
  return `{"quantity":${quantity}}`;
}

/** The serialized reservation request (strings are written as latin1; everything here is ASCII). */
export function reservationRequest(host: string, sku: string, token: string, idempotencyKey: string, quantity: number): string {
  const body = reservationBody(quantity);
  return (
    `POST /v1/skus/${sku}/reservations HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${token}\r\n` +
    `Idempotency-Key: ${idempotencyKey}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`
  );
}

export function getSkuRequest(host: string, sku: string): Buffer {
  return Buffer.from(`GET /v1/skus/${sku} HTTP/1.1\r\nHost: ${host}\r\n\r\n`, 'latin1');
}

/**
 * A pool of shoppers whose tokens are minted before the clock starts, so the
 * generator spends no HMAC time during the run. Shopper ids are unique to the
 * run and the thread.
 */
export class ShopperPool {
  readonly ids: string[] = [];
  readonly tokens: string[] = [];

  constructor(context: WorkloadContext<unknown>, size: number, prefix = 's') {
    const now = Math.floor(Date.now() / 1000);
    for (let i = 0; i < size; i++) {
      const id = `${prefix}-${context.runId}-${context.workerIndex}-${i}`;
      this.ids.push(id);
      this.tokens.push(mintShopperToken(context.jwtSecret, id, now, 3600));
    }
  }
}

/** Unique Idempotency-Key per request: run, thread, counter. */
export function keyMaker(context: WorkloadContext<unknown>): () => string {
  let n = 0;
  const prefix = `${context.runId}-${context.workerIndex}-`;
  return () => prefix + (n++).toString(36);
}

/** An endless reservation workload over a pool of shoppers, SKUs picked by `pick`. */
export function endlessReservations(
  context: WorkloadContext<unknown>,
  skus: readonly string[],
  pick: () => number,
  poolSize: number,
): Workload {
  const pool = new ShopperPool(context, poolSize);
  const key = keyMaker(context);
  let shopper = 0;
  // Pre-serialize everything but the key: the head of each request per (sku, shopper) is built on the fly.
  return {
    next(): RequestSpec {
      const s = shopper;
      shopper = shopper + 1 === poolSize ? 0 : shopper + 1;
      const sku = skus[pick()]!;
      return { op: 'reserve', data: reservationRequest(context.hostHeader, sku, pool.tokens[s]!, key(), 1), quantity: 1, tag: s };
    },
    finished: () => false,
  };
}
