/**
 * Schema migrations: migrations/NNN_name.sql, applied in numeric order, each in
 * its own transaction, recorded in `schema_migrations`. Serialized across
 * processes by a session advisory lock held on one dedicated client for the whole
 * run. A migration that was applied and has since been edited is refused.
 *
 * Files must not contain transaction control (BEGIN/COMMIT) or statements that
 * cannot run inside a transaction (e.g. CREATE INDEX CONCURRENTLY).
 * pg-boss manages its own schema and is not touched here.
 */
import { createHash } from 'node:crypto';
import fsSync from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import type { Logger } from '../log.js';
import { holdClient } from './pool.js';

/** Fixed advisory lock key for migrations (pg_advisory_lock(bigint) space). */
export const MIGRATION_LOCK_KEY = '7306960916530018337';

const FILE_PATTERN = /^(\d+)_([A-Za-z0-9][A-Za-z0-9_-]*)\.sql$/;

/** The repository root: the nearest ancestor of this module holding package.json (src/db → repo, dist/src/db → repo). */
function findRepoRoot(): string {
  const start = path.dirname(fileURLToPath(import.meta.url));
  for (let dir = start; ; dir = path.dirname(dir)) {
    if (fsSync.existsSync(path.join(dir, 'package.json'))) return dir;
    if (path.dirname(dir) === dir) return path.resolve(start, '..', '..');
  }
}

/** Absolute path of <repo>/migrations. */
export const migrationsDir: string = path.join(findRepoRoot(), 'migrations');

export class MigrationError extends Error {
  override name = 'MigrationError';
}

interface MigrationFile {
  version: string;
  number: bigint;
  name: string;
  file: string;
  sql: string;
  checksum: string;
}

async function readMigrations(dir: string): Promise<MigrationFile[]> {
  let entries: string[];
  try {
    entries = await fs.readdir(dir);
  } catch (err) {
    throw new MigrationError(`cannot read migrations directory ${dir}: ${(err as Error).message}`, { cause: err });
  }
  const files: MigrationFile[] = [];
  for (const entry of entries) {
    if (!entry.endsWith('.sql')) continue;
    const m = FILE_PATTERN.exec(entry);
    if (!m) throw new MigrationError(`migration file name must look like 001_name.sql: ${path.join(dir, entry)}`);
    const raw = await fs.readFile(path.join(dir, entry));
    files.push({
      version: m[1]!,
      number: BigInt(m[1]!),
      name: m[2]!,
      file: entry,
      sql: raw.toString('utf8'),
      checksum: createHash('sha256').update(raw).digest('hex'),
    });
  }
  files.sort((a, b) => (a.number < b.number ? -1 : a.number > b.number ? 1 : 0));
  for (let i = 1; i < files.length; i++) {
    if (files[i]!.number === files[i - 1]!.number) {
      throw new MigrationError(`two migrations share version ${files[i]!.number}: ${files[i - 1]!.file} and ${files[i]!.file}`);
    }
  }
  return files;
}

/**
 * Applies pending migrations from `dir` (default: <repo>/migrations) and returns
 * the versions applied by this call (e.g. ['001']); [] when already up to date.
 */
export async function migrate(pool: pg.Pool, log: Logger, dir: string = migrationsDir): Promise<string[]> {
  const files = await readMigrations(dir);
  const client = await pool.connect();
  const stopListening = holdClient(client, log, 'migrate');
  let broken: Error | undefined;
  let locked = false;
  try {
    await takeMigrationLock(client, log);
    locked = true;

    const rows = await readAppliedMigrations(client);
    const applied = new Map(rows.map((r) => [BigInt(r.version), r]));
    checkAppliedMigrations(files, applied, rows, log);
    const newest = rows.reduce((max, r) => (BigInt(r.version) > max ? BigInt(r.version) : max), -1n);

    const done: string[] = [];
    for (const f of files) {
      if (applied.has(f.number)) continue;
      if (f.number < newest) log.warn({ migration: f.file }, 'applying a migration older than the newest applied one');
      await applyMigration(client, f, log, (rollbackErr) => {
        broken = rollbackErr;
      });
      done.push(f.version);
    }
    return done;
  } catch (err) {
    if (!(err instanceof MigrationError)) broken ??= err as Error;
    throw err;
  } finally {
    if (locked && !broken) {
      await client.query('SELECT pg_advisory_unlock($1::bigint)', [MIGRATION_LOCK_KEY]).catch((err: Error) => {
        broken = err;
      });
    }
    // A broken connection is destroyed (which also frees the session lock).
    stopListening();
    client.release(broken);
  }
}

/** One migrating process at a time: the others wait for the session lock. */
async function takeMigrationLock(client: pg.PoolClient, log: Logger): Promise<void> {
  const got = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1::bigint) AS ok', [MIGRATION_LOCK_KEY]);
  if (got.rows[0]?.ok !== true) {
    log.info('waiting for another process to finish migrating');
    await client.query('SELECT pg_advisory_lock($1::bigint)', [MIGRATION_LOCK_KEY]);
  }
}

type AppliedMigration = { version: string; name: string; checksum: string };

async function readAppliedMigrations(client: pg.PoolClient): Promise<AppliedMigration[]> {
  await client.query(`
      CREATE TABLE IF NOT EXISTS schema_migrations (
        version    text        PRIMARY KEY,
        name       text        NOT NULL,
        checksum   text        NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
      )`);
  const { rows } = await client.query<AppliedMigration>('SELECT version, name, checksum FROM schema_migrations');
  return rows;
}

/** Validate everything before applying anything. */
function checkAppliedMigrations(
  files: MigrationFile[],
  applied: Map<bigint, AppliedMigration>,
  rows: AppliedMigration[],
  log: Logger,
): void {
  for (const f of files) {
    const row = applied.get(f.number);
    if (row && row.checksum !== f.checksum) {
      throw new MigrationError(
        `migration ${f.file} was changed after it was applied (checksum ${row.checksum.slice(0, 12)}… recorded, ` +
          `${f.checksum.slice(0, 12)}… on disk): add a new migration instead of editing an applied one`,
      );
    }
  }
  const known = new Set(files.map((f) => f.number));
  const unknown = rows.filter((r) => !known.has(BigInt(r.version)));
  if (unknown.length > 0) {
    log.warn({ versions: unknown.map((r) => `${r.version}_${r.name}`) }, 'database has migrations that are not on disk (newer code ran here?)');
  }
}

/** One migration in its own transaction, recorded with its checksum; a failed ROLLBACK is passed to `onBroken`. */
async function applyMigration(client: pg.PoolClient, f: MigrationFile, log: Logger, onBroken: (err: Error) => void): Promise<void> {
  const started = Date.now();
  await client.query('BEGIN');
  try {
    await client.query('SET LOCAL statement_timeout = 0');
    await client.query(f.sql);
    await client.query('INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)', [
      f.version,
      f.name,
      f.checksum,
    ]);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(onBroken);
    throw new MigrationError(`migration ${f.file} failed and was rolled back: ${(err as Error).message}`, { cause: err });
  }
  log.info({ migration: f.file, ms: Date.now() - started }, 'applied migration');
}
