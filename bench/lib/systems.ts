import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { Redis } from 'ioredis';
import type { EventRow } from './checker.js';
import type { CpuRoots } from './cpu.js';
import { startChild } from './process.js';

/** The systems a run can measure: the service and the baselines, each behind the same HTTP contract. */

export type SystemName = 'flashstock' | 'rowlock' | 'redis-lua' | 'redis-durable' | 'hello';
export const allSystems: SystemName[] = ['flashstock', 'rowlock', 'redis-lua', 'redis-durable', 'hello'];

export const systemLabels: Record<SystemName, string> = {
  flashstock: 'flashstock (durable, group commit)',
  rowlock: 'rowlock (durable, SELECT … FOR UPDATE)',
  'redis-lua': 'redis-lua (NOT DURABLE)',
  'redis-durable': 'redis-durable (Lua, appendfsync always)',
  hello: 'hello (constant, HTTP ceiling)',
};

export interface RunningSystem {
  name: SystemName;
  label: string;
  durable: boolean;
  url: string;
  /** A cluster: every node's URL (url is the first); the load is spread round robin over them. */
  urls?: readonly string[];
  /** flashstock: every node's metrics listener (METRICS_PORT, never the public port), scraped at `${url}/metrics`. */
  metricsUrls?: readonly string[];
  adminToken: string;
  jwtSecret: string;
  /** Source of event rows for the post-run check; null = this system cannot be checked. */
  rows: ((skus: readonly string[]) => AsyncIterable<EventRow[]>) | null;
  /** Why rows is null, when it is. */
  uncheckedReason?: string;
  /** Processes whose CPU time the report attributes (Linux). */
  cpuRoots?: CpuRoots;
  /** Bytes the server process(es) allocated on their V8 heaps since start, every thread (bench/lib/alloc-probe.cjs); null: unknown. */
  allocated?: () => Promise<number | null>;
  /** flashstock started by the bench: its effective settings that figures depend on. */
  serviceConfig?: Record<string, unknown>;
  stop(): Promise<void>;
}

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..', '..');
const ext = import.meta.url.endsWith('.ts') ? '.ts' : '.js';

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

export function flashstockAvailable(): boolean {
  return existsSync(path.join(repoRoot, 'src', 'app.ts')) || existsSync(path.join(repoRoot, 'src', 'app.js'));
}

/** Pages through stock_events for the given SKUs in (sku, seq) order. */
export async function* stockEventRows(databaseUrl: string, skus: readonly string[], pageSize = 50_000): AsyncIterable<EventRow[]> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    let lastSku = '';
    let lastSeq = 0;
    for (;;) {
      const r = await client.query<{ sku: string; seq: string; kind: string; reservation_id: string | null; shopper_id: string | null; quantity: number | null; config: EventRow['config'] }>(
        `SELECT sku, seq, kind, reservation_id, shopper_id, quantity, config FROM stock_events
         WHERE sku = ANY($1) AND (sku, seq) > ($2, $3) ORDER BY sku, seq LIMIT $4`,
        [skus, lastSku, lastSeq, pageSize],
      );
      if (r.rows.length === 0) return;
      const rows: EventRow[] = r.rows.map((x) => ({
        sku: x.sku,
        seq: Number(x.seq),
        kind: x.kind,
        reservationId: x.reservation_id,
        shopperId: x.shopper_id,
        quantity: x.quantity,
        config: x.config,
      }));
      yield rows;
      const last = r.rows[r.rows.length - 1]!;
      lastSku = last.sku;
      lastSeq = Number(last.seq);
      if (r.rows.length < pageSize) return;
    }
  } finally {
    await client.end();
  }
}

/** The rowlock baseline's tables, as event rows: one `configured`, then its reservations in insert order. */
async function* rowlockRows(databaseUrl: string, skus: readonly string[], pageSize = 50_000): AsyncIterable<EventRow[]> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    for (const sku of skus) {
      const s = await client.query<{ stock: number; per_shopper_limit: number }>('SELECT stock, per_shopper_limit FROM bench_rowlock_skus WHERE sku = $1', [sku]);
      if (s.rows[0] === undefined) continue;
      yield [{ sku, seq: 1, kind: 'configured', reservationId: null, shopperId: null, quantity: null, config: { stock: s.rows[0].stock, perShopperLimit: s.rows[0].per_shopper_limit } }];
      let seq = 1;
      let after = '0';
      for (;;) {
        const r = await client.query<{ seq: string; reservation_id: string; shopper_id: string; quantity: number }>(
          'SELECT seq, reservation_id, shopper_id, quantity FROM bench_rowlock_reservations WHERE sku = $1 AND seq > $2 ORDER BY seq LIMIT $3',
          [sku, after, pageSize],
        );
        if (r.rows.length === 0) break;
        yield r.rows.map((x) => ({ sku, seq: ++seq, kind: 'reserved', reservationId: x.reservation_id, shopperId: x.shopper_id, quantity: x.quantity, config: null }));
        after = r.rows[r.rows.length - 1]!.seq;
      }
    }
  } finally {
    await client.end();
  }
}

/** The redis-lua baseline's keys, as event rows (what Redis holds in memory right now). */
async function* redisRows(redisUrl: string, skus: readonly string[]): AsyncIterable<EventRow[]> {
  const redis = new Redis(redisUrl);
  try {
    for (const sku of skus) {
      const h = await redis.hgetall(`bench:sku:{${sku}}`);
      if (h.stock === undefined) continue;
      yield [{ sku, seq: 1, kind: 'configured', reservationId: null, shopperId: null, quantity: null, config: { stock: Number(h.stock), perShopperLimit: Number(h.perShopperLimit) } }];
      let seq = 1;
      let cursor = '0';
      do {
        const [next, flat] = await redis.hscan(`bench:reservations:{${sku}}`, cursor, 'COUNT', 10_000);
        cursor = next;
        const rows: EventRow[] = [];
        for (let i = 0; i + 1 < flat.length; i += 2) {
          const [shopper, q] = flat[i + 1]!.split(' ');
          rows.push({ sku, seq: ++seq, kind: 'reserved', reservationId: flat[i]!, shopperId: shopper ?? null, quantity: Number(q), config: null });
        }
        if (rows.length > 0) yield rows;
      } while (cursor !== '0');
    }
  } finally {
    redis.disconnect();
  }
}

export interface StartOptions {
  verbose: boolean;
  /** Postgres for flashstock (unset: its embedded one) and for rowlock. */
  databaseUrl?: string;
  redisUrl?: string;
  adminToken: string;
  jwtSecret: string;
  /** Extra node flags for the flashstock process (e.g. --cpu-prof). */
  nodeArgs?: string[];
  keepData?: boolean;
  /** flashstock config overrides the scenarios need (BENCH_OVERRIDES from the environment still wins). */
  overrides?: Record<string, unknown>;
  /** Extra environment of the flashstock process (a cluster node's CLUSTER_SECRET, NODE_ID). */
  env?: Record<string, string>;
  /** Names the process in errors and --verbose output (default flashstock). */
  processLabel?: string;
}

export async function startFlashstock(options: StartOptions): Promise<RunningSystem & { databaseUrl: string }> {
  const dataDir = options.databaseUrl === undefined ? mkdtempSync(path.join(os.tmpdir(), 'flashstock-bench-')) : undefined;
  // The embedded server runs as OS user "postgres" when we are root: it must be able to enter the directory.
  if (dataDir !== undefined) chmodSync(dataDir, 0o755);
  const env: Record<string, string | undefined> = { ...options.env, BENCH_DATA_DIR: dataDir, ADMIN_TOKEN: options.adminToken, JWT_SECRET: options.jwtSecret };
  if (options.databaseUrl !== undefined) env.DATABASE_URL = options.databaseUrl;
  if (options.overrides !== undefined && Object.keys(options.overrides).length > 0) env.BENCH_SCENARIO_OVERRIDES = JSON.stringify(options.overrides);
  const child = await startChild(path.join(here, `flashstock-child${ext}`), {
    label: options.processLabel ?? 'flashstock',
    env,
    verbose: options.verbose,
    timeoutMs: 180_000,
    nodeArgs: options.nodeArgs ?? [],
  });
  const info = child.info as { url: string; metricsUrl: string; databaseUrl: string; adminToken: string; jwtSecret: string; port: number; config?: Record<string, unknown> };
  const databaseUrl = info.databaseUrl;
  return {
    name: 'flashstock',
    label: systemLabels.flashstock,
    durable: true,
    url: info.url.replace('0.0.0.0', '127.0.0.1').replace('localhost', '127.0.0.1'),
    metricsUrls: [info.metricsUrl],
    adminToken: info.adminToken,
    jwtSecret: info.jwtSecret,
    databaseUrl,
    rows: (skus) => stockEventRows(databaseUrl, skus),
    cpuRoots: { server: child.child.pid, ...(dataDir !== undefined ? { postgresUnder: child.child.pid } : {}) },
    allocated: child.allocated,
    ...(info.config !== undefined ? { serviceConfig: info.config } : {}),
    async stop() {
      await child.stop();
      if (dataDir !== undefined && !options.keepData) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

async function startBaselineProcess(
  name: 'hello' | 'rowlock' | 'redis-lua',
  options: StartOptions,
  env: Record<string, string>,
): Promise<{ url: string; pid: number | undefined; allocated(): Promise<number | null>; stop(): Promise<void> }> {
  const child = await startChild(path.join(here, '..', 'baselines', `${name}${ext}`), {
    label: name,
    env: { ADMIN_TOKEN: options.adminToken, JWT_SECRET: options.jwtSecret, ...env },
    verbose: options.verbose,
  });
  return { url: `http://127.0.0.1:${String(child.info.port)}`, pid: child.child.pid, allocated: child.allocated, stop: () => child.stop() };
}

export async function startHello(options: StartOptions): Promise<RunningSystem> {
  const p = await startBaselineProcess('hello', options, {});
  return { name: 'hello', label: systemLabels.hello, durable: false, url: p.url, adminToken: options.adminToken, jwtSecret: options.jwtSecret, rows: null, uncheckedReason: 'answers constants', cpuRoots: { server: p.pid }, allocated: p.allocated, stop: p.stop };
}

export async function startRowlock(options: StartOptions & { databaseUrl: string; postgresUnder?: number }): Promise<RunningSystem> {
  const databaseUrl = options.databaseUrl;
  const p = await startBaselineProcess('rowlock', options, { DATABASE_URL: databaseUrl });
  return {
    name: 'rowlock',
    label: systemLabels.rowlock,
    durable: true,
    url: p.url,
    adminToken: options.adminToken,
    jwtSecret: options.jwtSecret,
    rows: (skus) => rowlockRows(databaseUrl, skus),
    cpuRoots: { server: p.pid, ...(options.postgresUnder !== undefined ? { postgresUnder: options.postgresUnder } : {}) },
    allocated: p.allocated,
    stop: p.stop,
  };
}

/**
 * Starts redis-server on a free port; null when it is not on PATH. Not durable
 * (the default): persistence off. Durable: an append-only file fsynced before
 * every reply (`appendfsync always`), in a fresh temporary directory: what a
 * user would pick for "durable and fast".
 */
export async function startRedisServer(verbose: boolean, durable = false): Promise<{ url: string; pid: number | undefined; stop(): Promise<void> } | null> {
  const port = await freePort();
  const dir = durable ? mkdtempSync(path.join(os.tmpdir(), 'flashstock-bench-redis-')) : null;
  const persistence = dir === null ? ['--save', '', '--appendonly', 'no'] : ['--save', '', '--appendonly', 'yes', '--appendfsync', 'always', '--dir', dir];
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', ...persistence], {
    stdio: ['ignore', verbose ? 'inherit' : 'ignore', verbose ? 'inherit' : 'ignore'],
  });
  const ok = await new Promise<boolean>((resolve) => {
    child.once('error', () => resolve(false));
    const url = `redis://127.0.0.1:${port}`;
    const deadline = Date.now() + 10_000;
    const probe = (): void => {
      const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      r.on('error', () => {});
      r.connect()
        .then(() => r.ping())
        .then(() => {
          r.disconnect();
          resolve(true);
        })
        .catch(() => {
          r.disconnect();
          if (Date.now() > deadline || child.exitCode !== null) resolve(false);
          else setTimeout(probe, 50);
        });
    };
    probe();
  });
  const removeDir = (): void => {
    if (dir !== null) rmSync(dir, { recursive: true, force: true });
  };
  if (!ok) {
    child.kill('SIGKILL');
    removeDir();
    return null;
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    pid: child.pid,
    stop: async () => {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      removeDir();
    },
  };
}

/** The redis-lua baseline process; `durable`: on a Redis that fsyncs its append-only file before each reply (system redis-durable). */
export async function startRedisLua(options: StartOptions & { redisUrl: string; redisPid?: number; durable?: boolean }): Promise<RunningSystem> {
  const redisUrl = options.redisUrl;
  const p = await startBaselineProcess('redis-lua', options, { REDIS_URL: redisUrl });
  const name = options.durable === true ? 'redis-durable' : 'redis-lua';
  return {
    name,
    label: systemLabels[name],
    durable: options.durable === true,
    url: p.url,
    adminToken: options.adminToken,
    jwtSecret: options.jwtSecret,
    rows: (skus) => redisRows(redisUrl, skus),
    cpuRoots: { server: p.pid, ...(options.redisPid !== undefined ? { redis: options.redisPid } : {}) },
    allocated: p.allocated,
    stop: p.stop,
  };
}
