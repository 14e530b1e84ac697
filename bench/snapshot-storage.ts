/**
 * What writing and reading one hot SKU's snapshot costs Postgres, by how the
 * `state` column is stored: EXTENDED (the bytea default: pglz over the value),
 * EXTERNAL (out of line, uncompressed: migrations/013_snapshot_storage.sql)
 * and, where the server has it, lz4. The snapshot is the allocator's own
 * encoding of --holds live one-unit holds from distinct shoppers with random
 * reservation ids and idempotency keys (the hot-SKU bench's state). CPU is the
 * backend process's utime + stime from /proc, per statement, the best of
 * --repeat.
 *
 *   node --import tsx bench/snapshot-storage.ts [--holds 100000] [--repeat 3] [--database-url postgres://…]
 *
 * Without --database-url (or DATABASE_URL) it starts an embedded PostgreSQL.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import pino from 'pino';
import { SkuAllocator } from '../src/allocator/allocator.js';
import { encodeSnapshot } from '../src/snapshot/codec.js';
import { startEmbeddedPostgres } from '../src/db/embedded.js';
import { hotSkuHistory, hotSkuLimits } from './lib/hot-sku-history.js';
import { argValue, numberArg } from './lib/service.js';

const holds = numberArg('holds', 100_000);
const repeat = numberArg('repeat', 3);
const sku = 'bench-hot-sku';

function hotSkuSnapshot(): Buffer {
  return encodeSnapshot(SkuAllocator.replay(sku, hotSkuLimits, hotSkuHistory(sku, holds, 'random')));
}

/** Milliseconds of CPU the backend `pid` has used (utime + stime; /proc counts in 10 ms ticks). */
function backendCpuMs(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

async function measure(client: pg.Client, pid: number, storage: string, snapshot: Buffer): Promise<string> {
  await client.query('DROP TABLE IF EXISTS bench_snapshot_storage');
  await client.query('CREATE TABLE bench_snapshot_storage (sku text, seq bigint, state bytea NOT NULL, PRIMARY KEY (sku, seq))');
  const alter = storage === 'lz4' ? 'SET COMPRESSION lz4' : `SET STORAGE ${storage}`;
  try {
    await client.query(`ALTER TABLE bench_snapshot_storage ALTER COLUMN state ${alter}`);
  } catch (error) {
    return `| ${storage} | not in this server: ${(error as Error).message} | | |`;
  }
  let writeMs = Infinity;
  let readMs = Infinity;
  for (let seq = 0; seq < repeat; seq++) {
    const before = backendCpuMs(pid);
    await client.query('INSERT INTO bench_snapshot_storage VALUES ($1, $2, $3)', [sku, seq, snapshot]);
    const written = backendCpuMs(pid);
    await client.query('SELECT state FROM bench_snapshot_storage WHERE sku = $1 AND seq = $2', [sku, seq]);
    writeMs = Math.min(writeMs, written - before);
    readMs = Math.min(readMs, backendCpuMs(pid) - written);
  }
  const { rows } = await client.query<{ size: number }>('SELECT pg_column_size(state) AS size FROM bench_snapshot_storage LIMIT 1');
  await client.query('DROP TABLE bench_snapshot_storage');
  return `| ${storage} | ${rows[0]!.size.toLocaleString('en-US')} | ${writeMs} | ${readMs} |`;
}

const given = argValue('database-url') ?? process.env.DATABASE_URL ?? '';
const embedded = given === ''
  ? await startEmbeddedPostgres({ dataDir: fs.mkdtempSync(path.join(os.tmpdir(), 'flashstock-snapshot-storage-')), log: pino({ level: 'warn' }) })
  : null;
const client = new pg.Client({ connectionString: embedded?.url ?? given });
client.on('error', (error) => console.error('postgres client error', error));
await client.connect();
try {
  const snapshot = hotSkuSnapshot();
  const { rows } = await client.query<{ pid: number; version: string }>('SELECT pg_backend_pid() AS pid, version() AS version');
  console.log(`${holds.toLocaleString('en-US')} live holds: a ${snapshot.length.toLocaleString('en-US')}-byte snapshot; ${rows[0]!.version}`);
  console.log('| storage of `state` | bytes stored | write: backend CPU ms | read: backend CPU ms |');
  console.log('| --- | ---: | ---: | ---: |');
  for (const storage of ['EXTENDED', 'EXTERNAL', 'lz4']) console.log(await measure(client, rows[0]!.pid, storage, snapshot));
} finally {
  await client.end();
  await embedded?.stop();
  if (embedded !== null) fs.rmSync(embedded.dataDir, { recursive: true, force: true });
}
