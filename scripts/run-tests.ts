/**
 * `npm test` runner: unless TEST_DATABASE_URL is set, starts one embedded
 * PostgreSQL for the whole run (in a fresh temp dir, removed afterwards), runs
 * `tap` with TEST_DATABASE_URL pointing at it (an admin URL; test/helpers/db.ts
 * creates one database per test file), then stops postgres and exits with tap's
 * exit code. Extra CLI args go to tap: `npm test -- test/db.test.ts --bail`.
 *
 * Temp dirs are `$TMPDIR/flashstock-test-*` with an owner.pid; dirs left behind
 * by a runner that died (e.g. SIGKILL) are cleaned, and their orphaned
 * postmaster stopped, at the start of the next run.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fsSync from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { recoverStalePostmaster, startEmbeddedPostgres, type EmbeddedPostgres } from '../src/db/embedded.js';
import type { Logger } from '../src/log.js';

const TEST_DIR_PREFIX = 'flashstock-test-';

function repoRoot(): string {
  for (let dir = path.dirname(fileURLToPath(import.meta.url)); ; dir = path.dirname(dir)) {
    if (fsSync.existsSync(path.join(dir, 'package.json'))) return dir;
    if (path.dirname(dir) === dir) throw new Error('package.json not found above scripts/run-tests');
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes temp dirs of earlier runs whose owner process is gone, stopping any postgres they left running. */
async function cleanStaleTestDirs(log: Logger): Promise<void> {
  const tmp = os.tmpdir();
  let entries: string[];
  try {
    entries = await fs.readdir(tmp);
  } catch {
    return;
  }
  for (const entry of entries) {
    if (!entry.startsWith(TEST_DIR_PREFIX)) continue;
    const dir = path.join(tmp, entry);
    try {
      const st = await fs.lstat(dir);
      if (!st.isDirectory() || st.uid !== process.getuid?.()) continue;
      const owner = Number.parseInt(await fs.readFile(path.join(dir, 'owner.pid'), 'utf8').catch(() => ''), 10);
      if (Number.isInteger(owner) ? alive(owner) : Date.now() - st.mtimeMs < 3_600_000) continue;
      await recoverStalePostmaster(path.join(dir, 'pg'), log);
      await fs.rm(dir, { recursive: true, force: true });
      log.info({ dir }, 'removed a stale test data dir');
    } catch (err) {
      log.warn({ err, dir }, 'could not clean a stale test data dir');
    }
  }
}

/** A temp dir reachable by the postgres OS user (mkdtemp makes 0700), marked with our pid. */
async function makeTestDir(kind: string): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), `${TEST_DIR_PREFIX}${kind}-`));
  await fs.chmod(dir, 0o755);
  await fs.writeFile(path.join(dir, 'owner.pid'), `${process.pid}\n`);
  return dir;
}

async function main(): Promise<number> {
  const root = repoRoot();
  const log: Logger = pino({ name: 'run-tests', level: process.env.TEST_LOG_LEVEL ?? 'warn' }, pino.destination(2));
  const env: NodeJS.ProcessEnv = { ...process.env };

  let tap: ChildProcess | null = null;
  let interrupted: NodeJS.Signals | null = null;
  let forceTimer: NodeJS.Timeout | undefined;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (interrupted) {
      tap?.kill('SIGKILL');
      return;
    }
    interrupted = signal;
    process.stderr.write(`\nrun-tests: ${signal}: stopping tests and the test database\n`);
    if (tap && tap.exitCode === null && tap.signalCode === null) {
      tap.kill(signal);
      forceTimer = setTimeout(() => tap?.kill('SIGKILL'), 20_000);
    }
  };
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, onSignal);

  let server: EmbeddedPostgres | null = null;
  let dir: string | null = null;
  try {
    if (env.TEST_DATABASE_URL) {
      log.info('using TEST_DATABASE_URL from the environment');
    } else {
      await cleanStaleTestDirs(log);
      dir = await makeTestDir('pg');
      const started = Date.now();
      server = await startEmbeddedPostgres({
        dataDir: dir,
        log,
        // a throwaway cluster: durability is not under test here, speed is
        settings: { fsync: 'off', full_page_writes: 'off', shared_buffers: '128MB', max_wal_size: '1GB' },
      });
      const adminUrl = new URL(server.url);
      adminUrl.pathname = '/postgres';
      env.TEST_DATABASE_URL = adminUrl.toString();
      process.stderr.write(`run-tests: embedded PostgreSQL ready in ${Date.now() - started} ms (${server.dataDir})\n`);
    }
    if (interrupted) return 130;

    const bin = path.join(root, 'node_modules', '.bin', 'tap');
    const child = spawn(bin, process.argv.slice(2), { cwd: root, env, stdio: 'inherit' });
    tap = child;
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (c, s) => resolve([c, s]));
    });
    clearTimeout(forceTimer);
    if (interrupted) return 128 + (os.constants.signals[interrupted] ?? 2);
    if (signal) return 128 + (os.constants.signals[signal] ?? 1);
    return code ?? 1;
  } catch (err) {
    log.error({ err }, 'test run failed');
    process.stderr.write(`run-tests: ${(err as Error).message}\n`);
    return 1;
  } finally {
    await server?.stop().catch((err: unknown) => log.error({ err }, 'stopping the test database failed'));
    if (dir) await fs.rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
}

process.exit(await main());
