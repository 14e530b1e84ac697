import fs from 'node:fs/promises';
import fsSync from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../../src/db/embedded.js';
import { testLog } from './db.js';
import { freePort } from './net.js';

/**
 * A throwaway PostgreSQL cluster of the test's own (the embedded one, as
 * root run as OS user `postgres`), so a fault test can freeze it (SIGSTOP),
 * crash it (SIGQUIT to the postmaster: what `pg_ctl stop -m immediate` does)
 * and restart it on the same port without disturbing any other test. The data
 * dir uses the runner's prefix and owner file, so a run that dies leaves
 * nothing npm test will not clean up.
 */
export interface OwnPostgres {
  /** Superuser URL of its `flashstock` database. */
  url: string;
  /** SIGSTOP the postmaster and every backend (a stalled server: connections hang, nothing answers). */
  freeze(): void;
  /** SIGCONT everything frozen. */
  thaw(): void;
  /** Immediate shutdown (no checkpoint; crash recovery at the next start); resolves once the postmaster is gone. */
  crash(): Promise<void>;
  /** SIGKILL of the postmaster and every backend at once (a machine or OOM kill: no shutdown of any kind); resolves once all are gone. */
  kill(): Promise<void>;
  /** Start again on the same port and data. */
  restart(): Promise<void>;
}

interface Teardown {
  teardown(fn: () => unknown): void;
}

const settings = { fsync: 'off', full_page_writes: 'off', shared_buffers: '32MB', max_connections: 60 };


function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Alive and not a zombie (an orphaned backend waits as one until init reaps it). */
function running(pid: number): boolean {
  try {
    const stat = fsSync.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** The postmaster and its children, from /proc. */
function postgresProcesses(clusterDir: string): number[] {
  const pidFile = path.join(clusterDir, 'postmaster.pid');
  if (!fsSync.existsSync(pidFile)) return [];
  const postmaster = Number.parseInt(fsSync.readFileSync(pidFile, 'utf8').split('\n')[0]!, 10);
  const pids = [postmaster];
  for (const entry of fsSync.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fsSync.readFileSync(`/proc/${entry}/stat`, 'utf8');
      // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
      const ppid = Number.parseInt(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]!, 10);
      if (ppid === postmaster) pids.push(Number(entry));
    } catch {
      /* gone meanwhile */
    }
  }
  return pids;
}

export async function startOwnPostgres(t: Teardown): Promise<OwnPostgres> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'flashstock-test-faults-'));
  await fs.chmod(dir, 0o755);
  await fs.writeFile(path.join(dir, 'owner.pid'), `${process.pid}\n`);
  const port = await freePort();
  const start = () => startEmbeddedPostgres({ dataDir: dir, log: testLog, port, settings });
  let server: EmbeddedPostgres = await start();
  const clusterDir = path.join(server.dataDir, 'pg');
  let frozen: number[] = [];
  t.teardown(async () => {
    for (const pid of frozen) process.kill(pid, 'SIGCONT');
    await server.stop().catch(() => undefined);
    await fs.rm(dir, { recursive: true, force: true }).catch(() => undefined);
  });
  return {
    url: server.url,
    freeze() {
      frozen = postgresProcesses(clusterDir);
      for (const pid of frozen) process.kill(pid, 'SIGSTOP');
    },
    thaw() {
      for (const pid of frozen) process.kill(pid, 'SIGCONT');
      frozen = [];
    },
    async crash() {
      const [postmaster] = postgresProcesses(clusterDir);
      if (postmaster === undefined) throw new Error('no postmaster to crash');
      process.kill(postmaster, 'SIGQUIT');
      for (let i = 0; i < 400 && alive(postmaster); i++) await new Promise((resolve) => setTimeout(resolve, 25));
      if (alive(postmaster)) throw new Error('postmaster did not exit after SIGQUIT');
    },
    async kill() {
      const pids = postgresProcesses(clusterDir);
      if (pids.length === 0) throw new Error('no postgres to kill');
      for (const pid of pids) process.kill(pid, 'SIGKILL');
      for (let i = 0; i < 400 && pids.some(running); i++) await new Promise((resolve) => setTimeout(resolve, 25));
      if (pids.some(running)) throw new Error('postgres processes survived SIGKILL');
    },
    async restart() {
      server = await start();
    },
  };
}
