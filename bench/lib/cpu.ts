import { readdirSync, readFileSync } from 'node:fs';

/**
 * Where the cores went during a run (Linux /proc): CPU seconds of the load
 * generator (this process, all threads), the server process, and the Postgres
 * and Redis processes the bench started. Elsewhere it reports nothing.
 */

const ticksPerSecond = 100; // USER_HZ on Linux

interface Proc {
  ppid: number;
  comm: string;
  ticks: number;
}

function readProcs(): Map<number, Proc> {
  const procs = new Map<number, Proc>();
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return procs;
  }
  for (const name of entries) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'latin1');
      const close = stat.lastIndexOf(')');
      const comm = stat.slice(stat.indexOf('(') + 1, close);
      const fields = stat.slice(close + 2).split(' ');
      // fields[0] is state (field 3): ppid is field 4, utime 14, stime 15.
      procs.set(Number(name), { ppid: Number(fields[1]), comm, ticks: Number(fields[11]) + Number(fields[12]) });
    } catch {
      // gone already
    }
  }
  return procs;
}

function descendants(procs: Map<number, Proc>, root: number): number[] {
  const children = new Map<number, number[]>();
  for (const [pid, p] of procs) {
    const list = children.get(p.ppid) ?? [];
    list.push(pid);
    children.set(p.ppid, list);
  }
  const out: number[] = [];
  const stack = [...(children.get(root) ?? [])];
  while (stack.length > 0) {
    const pid = stack.pop()!;
    out.push(pid);
    stack.push(...(children.get(pid) ?? []));
  }
  return out;
}

export interface CpuRoots {
  /** The server under test: its process, or every node process of a cluster (summed). */
  server?: number | readonly number[];
  /** Processes whose descendants named "postgres" are the Postgres in use. */
  postgresUnder?: number;
  redis?: number;
}

export type CpuSample = Record<string, number>;

export function sampleCpu(roots: CpuRoots): CpuSample {
  const procs = readProcs();
  if (procs.size === 0) return {};
  const sample: CpuSample = {};
  const own = process.cpuUsage();
  sample.generator = (own.user + own.system) / 1e6;
  if (roots.server !== undefined) {
    const pids = typeof roots.server === 'number' ? [roots.server] : roots.server;
    sample.server = pids.reduce((ticks, pid) => ticks + (procs.get(pid)?.ticks ?? 0), 0) / ticksPerSecond;
  }
  if (roots.postgresUnder !== undefined) {
    let ticks = 0;
    for (const pid of descendants(procs, roots.postgresUnder)) {
      const p = procs.get(pid)!;
      if (p.comm.startsWith('postgres')) ticks += p.ticks;
    }
    sample.postgres = ticks / ticksPerSecond;
  }
  if (roots.redis !== undefined) sample.redis = (procs.get(roots.redis)?.ticks ?? 0) / ticksPerSecond;
  let total = 0;
  try {
    const line = readFileSync('/proc/stat', 'latin1').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal: busy = all but idle and iowait
    total = (line.reduce((a, b) => a + b, 0) - (line[3] ?? 0) - (line[4] ?? 0)) / ticksPerSecond;
  } catch {
    // no /proc/stat
  }
  sample.machine = total;
  return sample;
}

/** Cores used per group between two samples over `elapsedMs`; `other` = machine busy time not in any group. */
export function coresUsed(before: CpuSample, after: CpuSample, elapsedMs: number): Record<string, number> {
  const out: Record<string, number> = {};
  if (elapsedMs <= 0) return out;
  let accounted = 0;
  for (const key of Object.keys(after)) {
    if (before[key] === undefined) continue;
    const cores = (after[key]! - before[key]!) / (elapsedMs / 1000);
    out[key] = Math.round(cores * 100) / 100;
    if (key !== 'machine') accounted += cores;
  }
  if (out.machine !== undefined) out.other = Math.max(0, Math.round((out.machine - accounted) * 100) / 100);
  return out;
}

/**
 * CPU seconds per 1,000 of `count` (e.g. durable reservations) between two
 * samples, for the server and its Postgres: what a unit of work costs,
 * whatever the machine's other load did to the rate.
 */
export function coreSecondsPerThousand(before: CpuSample, after: CpuSample, count: number): Record<string, number> {
  const out: Record<string, number> = {};
  if (count <= 0) return out;
  for (const key of ['server', 'postgres']) {
    if (before[key] === undefined || after[key] === undefined) continue;
    out[key] = Number((((after[key]! - before[key]!) * 1000) / count).toPrecision(3));
  }
  return out;
}

/**
 * What one operation cost the system under test over the measured window:
 * CPU µs of its server process (all threads), of its store (Postgres: the
 * postmaster and every backend under it; Redis), and bytes the server
 * allocated on its V8 heaps (bench/lib/alloc-probe.cjs). `unit`: durable
 * reservations (201) for the real systems, requests for the constant handler.
 */
export interface PerOperation {
  unit: 'reservation' | 'request';
  count: number;
  serverUs: number | null;
  postgresUs: number | null;
  redisUs: number | null;
  allocatedBytes: number | null;
}

export function perOperation(
  unit: PerOperation['unit'],
  count: number,
  before: CpuSample,
  after: CpuSample,
  allocBefore: number | null,
  allocAfter: number | null,
): { perOp?: PerOperation } {
  if (count <= 0) return {};
  const us = (key: string): number | null =>
    before[key] === undefined || after[key] === undefined ? null : Number((((after[key]! - before[key]!) * 1e6) / count).toPrecision(3));
  const allocatedBytes = allocBefore === null || allocAfter === null ? null : Math.round((allocAfter - allocBefore) / count);
  return { perOp: { unit, count, serverUs: us('server'), postgresUs: us('postgres'), redisUs: us('redis'), allocatedBytes } };
}
