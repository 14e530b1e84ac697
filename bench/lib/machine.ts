import { execFileSync } from 'node:child_process';
import os from 'node:os';
import pg from 'pg';

/** Facts about the machine and software a result was measured on. */
export interface MachineFacts {
  cpuModel: string;
  cores: number;
  memoryGiB: number;
  os: string;
  node: string;
  postgres: string | null;
  redis: string | null;
  gitCommit: string | null;
  gitDirty: boolean | null;
  wrk: string | null;
  /** 1-minute load average when the bench started: other work on the machine skews every figure. */
  loadAverage1m: number;
}

function run(cmd: string, args: string[], cwd?: string): string | null {
  try {
    return execFileSync(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 }).toString().trim();
  } catch {
    return null;
  }
}

export async function postgresVersion(databaseUrl: string | undefined): Promise<string | null> {
  if (databaseUrl === undefined) return null;
  const client = new pg.Client({ connectionString: databaseUrl });
  try {
    await client.connect();
    const r = await client.query<{ server_version: string }>('SHOW server_version');
    return r.rows[0]?.server_version ?? null;
  } catch {
    return null;
  } finally {
    await client.end().catch(() => {});
  }
}

export function machineFacts(repoRoot: string, loadAverage1m = os.loadavg()[0] ?? 0): Omit<MachineFacts, 'postgres' | 'redis'> {
  const cpus = os.cpus();
  const status = run('git', ['status', '--porcelain'], repoRoot);
  return {
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    cores: os.availableParallelism(),
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    gitCommit: run('git', ['rev-parse', 'HEAD'], repoRoot),
    gitDirty: status === null ? null : status.length > 0,
    loadAverage1m: Math.round(loadAverage1m * 100) / 100,
    wrk: run('sh', ['-c', 'command -v wrk >/dev/null && (wrk --version 2>&1 || true) | head -1']) || null,
  };
}
