/**
 * A fresh, uniquely named database per caller on the server named by
 * TEST_DATABASE_URL (set by `npm test`, i.e. scripts/run-tests.ts, which starts
 * one embedded PostgreSQL for the run; or set it yourself to use another server
 * where that user may CREATE DATABASE).
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import pino from 'pino';
import { migrate } from '../../src/db/migrate.js';
import { createPool } from '../../src/db/pool.js';
import type { Logger } from '../../src/log.js';

export interface TestDatabase {
  /** URL of the new database (same server and credentials as TEST_DATABASE_URL). */
  url: string;
  pool: pg.Pool;
  /** Ends the pool and drops the database (terminating other sessions). Idempotent. */
  drop(): Promise<void>;
}

export interface TestDatabaseOptions {
  /** Run migrate() on the new database (default true). */
  migrate?: boolean;
  /** Pool size (default 5). */
  poolMax?: number;
}

interface Teardown {
  teardown(fn: () => unknown): void;
}

/** Silent unless TEST_LOG_LEVEL is set; then JSON logs on stderr (stdout is the TAP stream). */
export const testLog: Logger = pino({ name: 'test', level: process.env.TEST_LOG_LEVEL ?? 'silent' }, pino.destination(2));

export function testServerUrl(): string {
  const url = process.env.TEST_DATABASE_URL;
  if (!url) {
    throw new Error(
      'TEST_DATABASE_URL is not set. Run the tests with `npm test` (it starts an embedded PostgreSQL and sets it), ' +
        'or set TEST_DATABASE_URL=postgres://user:password@host:port/db for a server where that user may CREATE DATABASE.',
    );
  }
  return url;
}

function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${encodeURIComponent(database)}`;
  return u.toString();
}

async function admin<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: testServerUrl(), application_name: 'flashstock-test-admin' });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

export async function createTestDatabase(t?: Teardown, options: TestDatabaseOptions = {}): Promise<TestDatabase> {
  const serverUrl = testServerUrl();
  const name = `flashstock_test_${process.pid}_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
  await admin((c) => c.query(`CREATE DATABASE ${c.escapeIdentifier(name)} TEMPLATE template0 ENCODING 'UTF8'`));
  const url = withDatabase(serverUrl, name);
  const pool = createPool(url, options.poolMax ?? 5, testLog);

  let dropped: Promise<void> | null = null;
  const drop = (): Promise<void> => {
    dropped ??= (async () => {
      await pool.end().catch(() => undefined);
      await admin((c) => c.query(`DROP DATABASE IF EXISTS ${c.escapeIdentifier(name)} WITH (FORCE)`));
    })();
    return dropped;
  };
  t?.teardown(drop);

  if (options.migrate !== false) {
    try {
      await migrate(pool, testLog);
    } catch (err) {
      if (!t) await drop().catch(() => undefined);
      throw err;
    }
  }
  return { url, pool, drop };
}
