import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import WebSocket from 'ws';
import { CLUSTER_PATH } from '../../src/cluster/transport.js';
import type { Child } from './child.js';
import { adminToken, jwtSecret, clientFor } from './service.js';

/**
 * Real cluster nodes (src/main.ts with CLUSTER_SECRET) for the cluster tests:
 * a spawner that keeps each node's warnings, and polls of the admin views.
 */

export const SHARDS = 8;

export const clusterEnv = {
  CLUSTER_SECRET: 'Zq3vN8xR2pL7tY5wK1mJ9cH4bF6gD0sAe8Wn5Lq2Vx7Rt4Yp',
  SHARD_COUNT: String(SHARDS),
  CLUSTER_HEARTBEAT_MS: '200',
  CLUSTER_LEASE_TIMEOUT_MS: '1000',
  AUDIT_CRON: '',
};

export interface ClusterView {
  self: string;
  nodes: { nodeId: string; url: string; shards: number[]; alive: boolean }[];
  shardCount: number;
}

/** Warnings and errors of every node, printed when the test fails (the nodes' stdout is otherwise drained). */
export const nodeLog: string[] = [];

/**
 * src/main.ts in its own process (as test/helpers/child.ts, keeping the node's warnings).
 * NODE_ID is `name` unless `env` sets it; `undefined` leaves a variable out.
 */
export async function startNode(databaseUrl: string, name: string, env: Record<string, string | undefined> = {}): Promise<Child> {
  const nodeEnv: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: databaseUrl, ADMIN_TOKEN: adminToken, JWT_SECRET: jwtSecret, PORT: '0', METRICS_PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info', NODE_ID: name, ...clusterEnv, ...env };
  for (const [key, value] of Object.entries(nodeEnv)) if (value === undefined) delete nodeEnv[key];
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    env: nodeEnv,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = once(child, 'exit').then(([code]) => {
    nodeLog.push(`${name} exited with ${String(code)}`);
    return code as number | null;
  });
  createInterface({ input: child.stderr! }).on('line', (line) => nodeLog.push(`${name} stderr: ${line}`));
  const lines = createInterface({ input: child.stdout! });
  return new Promise((resolve, reject) => {
    lines.on('line', (line) => {
      let entry: { level?: number; msg?: string; url?: string; metricsUrl?: string };
      try {
        entry = JSON.parse(line) as typeof entry;
      } catch {
        return;
      }
      if ((entry.level ?? 0) >= 40 && !line.includes('/readyz')) nodeLog.push(`${name}: ${line.slice(0, 600)}`);
      if (entry.msg === 'ready' && entry.url) resolve({ child, url: entry.url, metricsUrl: entry.metricsUrl ?? '', exited, isReady: () => true });
    });
    void exited.then(() => reject(new Error(`${name} exited before it was ready`)));
  });
}

/** At teardown: SIGKILL every node still running; when the test failed, print the nodes' warnings. */
export function reapNodes(t: { teardown(fn: () => unknown): void; passing(): boolean; comment(message: string): void }, nodes: Child[]): void {
  t.teardown(async () => {
    for (const node of nodes) if (node.child.exitCode === null) node.child.kill('SIGKILL');
    if (t.passing() === false) t.comment(`node warnings and errors:\n${nodeLog.slice(-60).join('\n')}`);
  });
}

/** The status a cluster upgrade (`/v1/cluster`) with these headers gets: 101 when let in. */
export function clusterUpgradeStatus(url: string, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url.replace('http', 'ws')}${CLUSTER_PATH}`, { headers });
    ws.once('open', () => {
      ws.close();
      resolve(101);
    });
    ws.once('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
    ws.once('error', reject);
  });
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function until<T>(what: string, fn: () => Promise<T | null>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = null;
  for (;;) {
    const value = await fn().catch((error: unknown) => {
      last = error;
      return null;
    });
    if (value !== null) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last error: ${String(last)})`);
    await sleep(100);
  }
}

export async function view(url: string): Promise<ClusterView> {
  const res = await clientFor(url).call('GET', '/v1/admin/cluster', { admin: true });
  if (res.status !== 200) throw new Error(`GET /v1/admin/cluster: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body as ClusterView;
}

/** Balanced: `n` live nodes, every shard owned once, counts ⌊S/n⌋ or ⌈S/n⌉. */
export async function balanced(url: string, n: number): Promise<ClusterView | null> {
  const v = await view(url);
  const alive = v.nodes.filter((node) => node.alive);
  const owned = alive.flatMap((node) => node.shards);
  if (alive.length !== n || owned.length !== SHARDS || new Set(owned).size !== SHARDS) return null;
  return alive.every((node) => node.shards.length === Math.floor(SHARDS / n) || node.shards.length === Math.ceil(SHARDS / n)) ? v : null;
}

export async function ownerUrl(url: string, sku: string): Promise<string | null> {
  const placement = (await clientFor(url).call('GET', `/v1/admin/skus/${sku}/placement`, { admin: true })).body as {
    owner: { url: string } | null;
  };
  return placement.owner?.url ?? null;
}
