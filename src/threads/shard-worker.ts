import type { QueueTicketCounts } from '../queue/view.js';
import type { WaitlistTotals } from '../metrics/waitlist-metrics.js';
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import type { Config } from '../config.js';
import { createPool } from '../db/pool.js';
import { createLogger } from '../log.js';
import { CommitTallier, type CommitTally } from '../metrics/metrics.js';
import type { OutboxStats } from '../outbox/outbox.js';
import { createBoss, finalizeQueue } from '../payments/finalizer.js';
import { createOrderWriter } from '../payments/orders.js';
import { shardHostSettings } from '../services/shard-settings.js';
import type { ShardNotice } from '../shard/messages.js';
import { addRecoveries, ShardHost, type RecoverySummary } from '../shard/shard-host.js';
import { ClusterShards } from '../cluster/cluster-shards.js';
import { SharedLease } from '../cluster/shared-lease.js';
import type pg from 'pg';
import type { Logger } from '../log.js';
import type { ShardStats } from '../shard/shard.js';
import { SnapshotWorkers } from '../snapshot/workers.js';
import { PortServer, type PortCalls } from '../road/port-link.js';
import { NoticeRelay } from './notice-relay.js';
import { readSharedClock } from './shared-clock.js';

/**
 * One shard thread: a ShardHost of the shards s with s mod SHARD_THREADS ==
 * index, with its own pool, outbox, expiry sweeper, recovery and snapshot
 * worker, served over a MessagePort (PortServer) to the main thread, whose
 * router sends it its shards' requests. On a cluster node it hosts only the
 * shards of its share the node's lease holds, opened and drained as the
 * main thread says (clusterHost below). Everything it knows came in
 * `workerData` as plain data; what it builds (pool, order writer, clock) it
 * builds here.
 */
export interface ShardThreadData {
  index: number;
  config: Config;
  databaseUrl: string;
  shards: number[];
  /** This thread's pool bound (connections). */
  poolMax: number;
  /** A test clock's shared memory (src/threads/shared-clock.ts); null: Date.now. */
  clock: SharedArrayBuffer | null;
  /** Write orders and their pg-boss jobs with the checkout events (always, in the service). */
  writeOrders: boolean;
  /** Counts go to the main thread at least this often (metrics gauges, `shards` getters). */
  reportIntervalMs: number;
  /** The shard channel's port (transferred). */
  channelPort: MessagePort;
  /**
   * A cluster node's thread: its lease's epochs, shared (src/cluster/shared-lease.ts). It then starts
   * with no shard (`shards` is empty) and takes and drops them as the main thread tells it.
   */
  clusterEpochs: SharedArrayBuffer | null;
}

/** What a shard thread counts, as the main thread shows it (summed over threads). */
export interface ShardThreadStats {
  pendingEvents: number;
  allocatorCount: number;
  liveHolds: number;
  queueTickets?: QueueTicketCounts;
  reservationsInMemory: number;
  waitlist?: WaitlistTotals;
  stats: ShardStats;
  outboxStats: OutboxStats;
}

export interface ShardThreadReport {
  stats: ShardThreadStats;
  tally: CommitTally;
}

/** Thread → main, on the worker's own port (the shard port carries requests, replies and notices). */
export type ShardThreadEvent = { type: 'fatal'; error: string } | { type: 'report'; report: ShardThreadReport };

/**
 * Main → thread, on the worker's own port: serve a front-end thread's port
 * too — its requests, and every notice unless `notices` is false (a cluster
 * node's front-end threads hear them through the node's channel).
 */
export type ShardThreadCommand = { type: 'serve_port'; port: MessagePort; notices: boolean };

/**
 * Named calls the main thread makes over the shard port (plain arguments and results). A cluster node's
 * thread also takes calls from its membership: `clusterOpen(shard, epoch, nodeId)`,
 * `clusterDrain(shard)`, `clusterDropAll(reason)` (ClusterShards' open, drain and dropAll).
 */
export type ShardThreadCall = 'recover' | 'settled' | 'report' | 'close';
export type ClusterThreadCall = 'clusterOpen' | 'clusterDrain' | 'clusterDropAll';

/** What a thread's shards are: every shard of its share (a node alone), or what its node's lease holds (a cluster node). */
type ThreadHost = ShardHost | ClusterShards;

function statsOf(host: ThreadHost): ShardThreadStats {
  return {
    pendingEvents: host.pendingEvents,
    allocatorCount: host.allocatorCount,
    liveHolds: host.liveHolds,
    queueTickets: host.queueTickets,
    reservationsInMemory: host.reservationsInMemory,
    waitlist: host.waitlist,
    stats: { ...host.stats },
    outboxStats: { ...host.outboxStats },
  };
}

function run(): void {
  const data = workerData as ShardThreadData;
  const control = parentPort!;
  const { config } = data;
  const log = createLogger(config.logLevel).child({ shardThread: data.index });
  const post = (event: ShardThreadEvent) => control.postMessage(event);
  // process.exit here would end this thread only: the main thread decides.
  const onFatal = (error: unknown) => post({ type: 'fatal', error: error instanceof Error ? (error.stack ?? error.message) : String(error) });
  const pool = createPool(data.databaseUrl, data.poolMax, log);
  // Snapshots off this thread's loop, as on the main thread: this thread's own piscina (no thread until the first snapshot).
  const workers = new SnapshotWorkers({ threads: 1 });
  workers.start();
  const tallier = new CommitTallier();
  // pg-boss is never started here: its insert only needs its SQL and defaults, and runs on the outbox's client.
  const writeOrders = data.writeOrders
    ? createOrderWriter(createBoss(data.databaseUrl, log, config.pgBossMaintenanceIntervalSeconds), finalizeQueue)
    : null;
  const settings = shardHostSettings(config, pool, workers, {
    databaseUrl: data.databaseUrl,
    onFatal,
    nowMs: data.clock === null ? Date.now : readSharedClock(data.clock),
    writeOrders,
    outboxObserver: tallier,
  });
  /** The main thread's port first, then one per front-end thread. */
  const servers: PortServer[] = [];
  /** The main thread's port (every notice), then the front-end threads' that carry notices (a node alone). */
  const hearing: PortServer[] = [];
  // A SKU's stock to the front-end threads that follow it (`follow` calls on their ports); the main thread hears all.
  const relay = new NoticeRelay((sku) => host.stockState(sku));
  const notify = (notice: ShardNotice) => {
    for (let i = 0; i < hearing.length; i++) if (i === 0 || relay.relays(i, notice)) hearing[i]!.notify(notice);
  };
  const { host, ready, calls: hostCalls } =
    data.clusterEpochs === null
      ? localHost(data, pool, log, settings, notify)
      : clusterHost(data.clusterEpochs, config.shardCount, pool, log, settings, notify);
  const report = (): ShardThreadReport => ({ stats: statsOf(host), tally: tallier.take() });
  const timer = setInterval(() => post({ type: 'report', report: report() }), data.reportIntervalMs);
  const calls: PortCalls & Record<ShardThreadCall, unknown> = {
    ...hostCalls,
    settled: () => host.settled(),
    report: async () => report(),
    // The last report travels as the answer: nothing counted is lost when the thread ends.
    close: async () => {
      clearInterval(timer);
      await host.close();
      // The front-end threads' replies leave before this call's own answer:
      // the main thread terminates this thread as soon as it hears it.
      // (servers[0] serves this very call; its replies share its batch and go first.)
      // Bounded: a request still waiting on something else past a commit's budget is not worth a hung stop.
      await untilOrAfter(Promise.all(servers.slice(1).map((server) => server.answerAll())), config.commitTimeoutMs);
      await workers.stop();
      await pool.end();
      return report();
    },
  };
  servers.push(new PortServer(data.channelPort, host, calls, ready));
  hearing.push(servers[0]!);
  control.on('message', (command: ShardThreadCommand) => {
    if (command.type !== 'serve_port') return;
    const server = servePort(command, host, ready, relay, hearing.length);
    servers.push(server);
    if (command.notices) hearing.push(server);
  });
}

/**
 * A front-end thread's port: its requests, and (a node alone) the notices it
 * follows, `index` among the ports that hear notices; its `follow` call says
 * which SKUs, and answers with the SKU's counts at once.
 */
function servePort(command: ShardThreadCommand, host: ThreadHost, ready: () => boolean, relay: NoticeRelay, index: number): PortServer {
  if (!command.notices) return new PortServer(command.port, host, {}, ready);
  const follow = async (sku: string, following: boolean) => {
    const now = relay.follow(index, sku, following);
    if (now !== null) server.notify(now);
  };
  const server = new PortServer(command.port, host, { follow }, ready);
  return server;
}

/** `promise`, or nothing after `ms`, whichever comes first (the timer does not hold the thread open). */
async function untilOrAfter(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms);
    timer.unref();
  });
  await Promise.race([promise, late]);
  clearTimeout(timer);
}

type HostSettings = ReturnType<typeof shardHostSettings>;

interface ThreadShards {
  host: ThreadHost;
  ready: () => boolean;
  calls: PortCalls & { recover: () => Promise<RecoverySummary> };
}

/** A node alone: this thread's share of every shard, loaded by `recover`. */
function localHost(data: ShardThreadData, pool: pg.Pool, log: Logger, settings: HostSettings, notify: (notice: ShardNotice) => void): ThreadShards {
  const host = new ShardHost(pool, log, { shards: data.shards, shardCount: data.config.shardCount, ...settings }, notify);
  return { host, ready: () => host.isReady(), calls: { recover: () => host.recover() } };
}

/**
 * A cluster node: the shards its membership gives this thread, each opened
 * at the epoch the node's lease took it with and proven by every commit
 * against the lease's shared view (ClusterShards over a SharedLease, the
 * same fencing as on a node's main thread). Ready is the node's business.
 */
function clusterHost(
  epochs: SharedArrayBuffer,
  shardCount: number,
  pool: pg.Pool,
  log: Logger,
  settings: HostSettings,
  notify: (notice: ShardNotice) => void,
): ThreadShards {
  let lease: SharedLease | null = null;
  const host = new ClusterShards(pool, log, { shardCount, hostOptions: settings, lease: () => lease, notify });
  const calls: ThreadShards['calls'] & Record<ClusterThreadCall, unknown> = {
    // Shards are recovered one by one as the node takes them (clusterOpen).
    recover: async () => addRecoveries([]),
    clusterOpen: async (shard: unknown, epoch: unknown, nodeId: unknown) => {
      assertShard(shard, shardCount);
      if (!Number.isSafeInteger(epoch) || (epoch as number) <= 0) throw new Error(`clusterOpen: bad epoch ${String(epoch)}`);
      if (typeof nodeId !== 'string' || nodeId.length === 0) throw new Error('clusterOpen: bad node id');
      // One node, one lease: its id is known once it listens and never changes after.
      if (lease !== null && lease.nodeId !== nodeId) throw new Error(`clusterOpen: node ${nodeId}, but this thread proves for ${lease.nodeId}`);
      lease ??= new SharedLease(epochs, nodeId);
      await host.open(shard, epoch as number);
    },
    clusterDrain: async (shard: unknown) => {
      assertShard(shard, shardCount);
      await host.drain(shard);
    },
    clusterDropAll: async (reason: unknown) => host.dropAll(new Error(String(reason))),
  };
  return { host, ready: () => true, calls };
}

function assertShard(shard: unknown, shardCount: number): asserts shard is number {
  if (!Number.isInteger(shard) || (shard as number) < 0 || (shard as number) >= shardCount) throw new Error(`not a shard: ${String(shard)}`);
}

run();
