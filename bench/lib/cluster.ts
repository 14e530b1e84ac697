import { randomBytes } from 'node:crypto';
import { balancedOver, placementOf, type AdminClusterView } from './placement.js';
import { startFlashstock, systemLabels, type RunningSystem, type StartOptions } from './systems.js';
import type { Placement } from './types.js';

/**
 * `--nodes N`: flashstock as a local cluster, as `npm run cluster` runs it
 * (scripts/cluster.ts) but through the harness's own child (flashstock-child:
 * the same overrides, --cpu-prof, a ready line with the effective settings).
 * Node 1 starts first on the run's database (its embedded Postgres unless
 * --database-url) and runs the migrations; the others join it with the same
 * CLUSTER_SECRET and the default SHARD_COUNT, each on a free port. The bench
 * measures only once every node sees the same balanced placement, so no shard
 * moves during the run.
 */

/** Joining nodes take shards a few per heartbeat (CLUSTER_MAX_MOVES_PER_ROUND): allow a slow, shared machine. */
const BALANCE_TIMEOUT_MS = 180_000;
const BALANCE_POLL_MS = 250;

export async function clusterView(url: string, adminToken: string): Promise<AdminClusterView> {
  const r = await fetch(`${url}/v1/admin/cluster`, { headers: { authorization: `Bearer ${adminToken}` } });
  const text = await r.text();
  if (r.status !== 200) throw new Error(`GET ${url}/v1/admin/cluster answered ${r.status}: ${text.slice(0, 300)}`);
  return JSON.parse(text) as AdminClusterView;
}

/** The shard owners as every node sees them; throws when the nodes disagree (a shard is moving). */
export async function readPlacement(urls: readonly string[], adminToken: string): Promise<Placement> {
  const placements = await Promise.all(urls.map(async (url) => placementOf(await clusterView(url, adminToken), urls)));
  const first = JSON.stringify(placements[0]);
  if (placements.some((p) => JSON.stringify(p) !== first)) throw new Error('the nodes disagree on the shard owners (a shard is moving)');
  return placements[0]!;
}

async function waitBalanced(urls: readonly string[], adminToken: string): Promise<void> {
  const deadline = Date.now() + BALANCE_TIMEOUT_MS;
  let last = 'no view yet';
  for (;;) {
    try {
      const views = await Promise.all(urls.map((url) => clusterView(url, adminToken)));
      const unbalanced = views.filter((v) => !balancedOver(v, urls.length));
      if (unbalanced.length === 0) {
        await readPlacement(urls, adminToken);
        return;
      }
      last = `${unbalanced[0]!.self} sees ${unbalanced[0]!.nodes.map((n) => `${n.nodeId}${n.alive ? '' : ' (dead)'}: ${n.shards.length}`).join(', ')}`;
    } catch (error) {
      last = (error as Error).message;
    }
    if (Date.now() > deadline) throw new Error(`the ${urls.length} nodes did not balance their shards within ${BALANCE_TIMEOUT_MS} ms (${last})`);
    await new Promise((resolve) => setTimeout(resolve, BALANCE_POLL_MS));
  }
}

type Started = Awaited<ReturnType<typeof startFlashstock>>;

/** N flashstock node processes on one database, balanced; `stop` lets the others leave before node 1 (which may hold the embedded Postgres). */
export async function startFlashstockCluster(options: StartOptions & { nodes: number; log(line: string): void }): Promise<RunningSystem & { databaseUrl: string }> {
  const clusterSecret = randomBytes(48).toString('base64url');
  const node = (i: number, databaseUrl?: string): Promise<Started> =>
    startFlashstock({
      ...options,
      ...(databaseUrl !== undefined ? { databaseUrl } : {}),
      env: { ...options.env, CLUSTER_SECRET: clusterSecret, NODE_ID: `node${i + 1}` },
      processLabel: `flashstock node${i + 1}`,
    });
  const first = await node(0);
  const others: Started[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(others.map((n) => n.stop()));
    await first.stop();
  };
  try {
    const joined = await Promise.allSettled(Array.from({ length: options.nodes - 1 }, (_, i) => node(i + 1, first.databaseUrl)));
    for (const j of joined) if (j.status === 'fulfilled') others.push(j.value);
    const failed = joined.find((j) => j.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
    const urls = [first.url, ...others.map((n) => n.url)];
    options.log(`flashstock: ${options.nodes} nodes up (${urls.join(', ')}); waiting until they balance their shards…`);
    await waitBalanced(urls, first.adminToken);
    const pids = [first, ...others].map((n) => n.cpuRoots!.server as number);
    return {
      ...first,
      label: `${systemLabels.flashstock}, ${options.nodes} nodes`,
      urls,
      metricsUrls: [first, ...others].flatMap((n) => n.metricsUrls ?? []),
      cpuRoots: { ...first.cpuRoots, server: pids },
      allocated: async () => {
        const each = await Promise.all([first, ...others].map((n) => n.allocated?.() ?? Promise.resolve(null)));
        return each.some((b) => b === null) ? null : each.reduce((a: number, b) => a + b!, 0);
      },
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}
