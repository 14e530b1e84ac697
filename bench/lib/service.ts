import { readFileSync } from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { freePort } from './systems.js';

/**
 * The service as the issue-8 scripts (bench/memory.ts, bench/loop-delay.ts)
 * need it: its own process (bench/lib/flashstock-child.ts with BENCH_PROBE=1,
 * node --expose-gc) on a fixed port of a database made for the run, timed from
 * spawn to the first `/readyz` 200, its log lines kept.
 */

const here = path.dirname(fileURLToPath(import.meta.url));
const ext = import.meta.url.endsWith('.ts') ? '.ts' : '.js';

export interface ProbedService {
  child: ChildProcess;
  url: string;
  probePort: number;
  /** Spawn → first `/readyz` 200. */
  readyMs: number;
  /** pino lines (parsed) the service wrote so far. */
  logs: Array<Record<string, unknown>>;
  stop(): Promise<void>;
}

export const secrets = { adminToken: randomBytes(36).toString('base64url'), jwtSecret: randomBytes(36).toString('base64url') };

export function argValue(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? undefined : process.argv[i + 1];
}

export function numberArg(name: string, fallback: number): number {
  const v = argValue(name);
  return v === undefined ? fallback : Number(v);
}

/** A fresh database on the server of `--database-url` / DATABASE_URL (default the local one); dropped by `drop`. */
export async function freshDatabase(label: string): Promise<{ url: string; drop(): Promise<void> }> {
  const serverUrl = argValue('database-url') ?? process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const name = `bench_${label}_${Date.now().toString(36)}_${process.pid}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      const c = new pg.Client({ connectionString: serverUrl });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}

export async function startProbedService(
  databaseUrl: string,
  overrides: Record<string, unknown>,
  nodeArgs: string[] = [],
  readyTimeoutMs = 300_000,
): Promise<ProbedService> {
  const port = await freePort();
  const logs: Array<Record<string, unknown>> = [];
  const started = performance.now();
  // Compiled (npm run build; node dist/bench/…) the child runs plain JavaScript, as `npm start` does: no tsx,
  // whose on-the-fly compilation would otherwise dominate a restart.
  const loader = ext === '.ts' ? ['--import', 'tsx'] : [];
  const child = spawn(process.execPath, ['--expose-gc', ...nodeArgs, ...loader, path.join(here, `flashstock-child${ext}`)], {
    env: {
      ...process.env,
      BENCH_PROBE: '1',
      DATABASE_URL: databaseUrl,
      ADMIN_TOKEN: secrets.adminToken,
      JWT_SECRET: secrets.jwtSecret,
      LOG_LEVEL: 'info',
      AUDIT_CRON: '',
      BENCH_OVERRIDES: JSON.stringify({ port, auditCron: null, ...overrides }),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const tail: string[] = [];
  let info: { probePort?: number } | null = null;
  createInterface({ input: child.stdout! }).on('line', (line) => {
    try {
      const parsed = JSON.parse(line) as Record<string, unknown>;
      if (parsed.ready === true) info = parsed;
      else logs.push(parsed);
    } catch {
      tail.push(line);
    }
  });
  createInterface({ input: child.stderr! }).on('line', (line) => {
    tail.push(line);
    if (tail.length > 40) tail.shift();
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const url = `http://127.0.0.1:${port}`;
  let readyMs = -1;
  const deadline = started + readyTimeoutMs;
  while (readyMs < 0 || info === null) {
    if (child.exitCode !== null) throw new Error(`service exited with ${child.exitCode}\n${tail.join('\n')}`);
    if (performance.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`service not ready within ${readyTimeoutMs} ms\n${tail.join('\n')}`);
    }
    if (readyMs < 0) {
      try {
        const r = await fetch(`${url}/readyz`);
        await r.arrayBuffer();
        if (r.status === 200) readyMs = performance.now() - started;
      } catch {
        // not listening yet
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  const probePort = (info as { probePort?: number }).probePort;
  if (probePort === undefined) throw new Error('flashstock-child printed no probePort (BENCH_PROBE ignored?)');
  return {
    child,
    url,
    probePort,
    readyMs,
    logs,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

export function loadAverage(): string {
  return os.loadavg().map((x) => x.toFixed(2)).join(' ');
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** CPU milliseconds a process has used (all its threads), from /proc: unlike the wall clock, not stretched by a busy machine. */
export function cpuMsOf(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return Math.round(((Number(fields[11]) + Number(fields[12])) * 1000) / 100); // utime + stime, in USER_HZ (100)
  } catch {
    return null;
  }
}
