import type pg from 'pg';
import type uWS from 'uWebSockets.js';
import { advertiseUrl, type Config } from '../config.js';
import type { Logger } from '../log.js';
import type { ClusterStats } from '../metrics/metrics.js';
import { shardHostSettings, type ShardsOptions } from '../services/shard-settings.js';
import { SnapshotWorkers } from '../snapshot/workers.js';
import { Router } from '../shard/router.js';
import type { ShardEndpoint, ShardNotice } from '../shard/messages.js';
import { newFrameRefusals, type Note } from '../shard/protocol.js';
import { UpgradeVerifier, type VerifyResult } from './auth.js';
import { ClusterRoutes, serveForwarded } from './routes.js';
import { ClusterShards } from './cluster-shards.js';
import type { NodeShards } from './owned-shards.js';
import { ClusterShardThreads } from './cluster-shard-threads.js';
import type { DirectShardRoutes } from '../road/routes.js';
import { SharedLease } from './shared-lease.js';
import { newShardThreads } from '../services/shards.js';
import { ClusterLive } from './live.js';
import { Membership, type ClusterSnapshot } from './membership.js';
import {
  addRefusals,
  attachClusterEndpoint,
  defaultTransportLimits,
  ForwardPool,
  type ClusterEndpoint,
  type ClusterEndpointOptions,
  type ForwardHandler,
  type TransportLimits,
} from './transport.js';

/**
 * The shards service of a cluster node (CLUSTER_SECRET set): the same Router
 * the front ends use alone, over a ClusterChannel instead of the in-process
 * one; the shards this node owns (NodeShards: on this thread, or on its
 * shard threads), taken and handed over by Membership; the cluster endpoint
 * other nodes forward to.
 *
 * Start order: create (before the front end), `attach(app)` (routes on the
 * front end's app, before it listens), `start(port)` (join once the port, and
 * so the advertised URL, is known), then `stop()`: a graceful leave that
 * drains and hands over every shard before the node goes.
 */
export interface ClusterNode {
  router: Router;
  shards: NodeShards;
  /** Snapshot and audit worker threads (piscina), as in single-process mode. */
  workers: SnapshotWorkers;
  /** The cluster endpoint on the front end's app (before it listens); the admin views are src/http/routes/cluster.ts. */
  attach(app: uWS.TemplatedApp): void;
  start(listeningPort: number): Promise<void>;
  snapshot(): ClusterSnapshot;
  /**
   * What front-end threads' requests are served through: the cluster channel
   * (this node's shards, or forwarded to the owner). Ready: joined (membership
   * started) and holding a lease, as the router's readiness.
   */
  endpoint: ShardEndpoint & { isReady(): boolean };
  /** Notices of this node's shards (front-end threads get them over their ports). */
  onNotice(listener: (notice: ShardNotice) => void): void;
  /** What a front-end thread's cluster endpoint and admin views ask the main thread. */
  threadCalls: ClusterThreadCalls;
  /** With shard threads: the routes front-end threads take straight to them (null: the shards are on the main thread). */
  directRoutes: DirectShardRoutes | null;
  /** Totals since start (metrics): commands forwarded to owners, live-stock notices to and from peers. */
  stats(): ClusterStats;
  stop(): Promise<void>;
}

/**
 * With front-end threads every thread's app carries the cluster endpoint and
 * the admin views; these run on the main thread for them (port calls, plain
 * arguments and results).
 */
export interface ClusterThreadCalls {
  snapshot(): ClusterSnapshot;
  /** A command another node forwarded to a thread: served only if this node owns the shard, never forwarded again. */
  serveForwarded: ForwardHandler;
  /** One verifier for the process: a token is accepted once, whichever thread it reaches. */
  verifyUpgrade(token: string): VerifyResult;
  /** What a peer pushed to a thread's endpoint (live.ts): notices, delivered to this node's listeners (every thread's included), and what it follows. */
  receivedNotes(peer: string, notes: Note[]): void;
  /** A front end's first socket follows a SKU, or its last one let it go (live.ts tells the owners). */
  follow(sku: string, following: boolean): void;
}

/** Seconds a cluster upgrade token is valid around its time (clock skew between nodes must be less). */
const AUTH_WINDOW_MS = 30_000;
/** Nonces remembered within the window: past it, more upgrades are refused until old ones age out. */
const AUTH_MAX_NONCES = 10_000;
/** SKUs whose live-stock epoch a node remembers (live.ts); as many as the Redis feed remembers of other nodes. */
const MAX_TRACKED_SKUS = 100_000;

/** The cluster endpoint (other nodes forward to it) on a front end's app: the main thread's, or each front-end thread's. */
export function attachNodeEndpoint(
  app: uWS.TemplatedApp,
  config: Config,
  calls: Pick<ClusterEndpointOptions, 'verify' | 'handle' | 'onNotes'>,
  log: Logger,
): ClusterEndpoint {
  return attachClusterEndpoint(app, { ...calls, shardCount: config.shardCount, limits: transportLimits(config), log });
}

export function transportLimits(config: Config): TransportLimits {
  return { ...defaultTransportLimits, maxInFlight: config.clusterMaxInFlight, requestTimeoutMs: config.clusterForwardTimeoutMs };
}

/** What a node learns after it is built: its address once listening, its membership once joined, its channel and endpoint. */
interface NodeState {
  selfUrl: string;
  nodeId: string;
  membership: Membership | null;
  routes: ClusterRoutes | null;
  endpoint: ClusterEndpoint | null;
  started: boolean;
  /** The node's router (its shard threads' latest counts, for the audit). */
  router: Router | null;
  /** With shard threads: the lease's epochs as the threads read them (shared-lease.ts); null: shards on this thread. */
  sharedEpochs: Int32Array | null;
  /** Told each time the shards served here change (front-end threads' direct routes). */
  servingListeners: (() => void)[];
}

/**
 * The shards this node owns: in one ClusterShards on this thread
 * (SHARD_THREADS=1), or on its shard threads, each told by membership which
 * shards to open and drain, and proving its commits against the lease's
 * shared epochs.
 */
function nodeShards(config: Config, pool: pg.Pool, log: Logger, options: ShardsOptions, state: NodeState, workers: SnapshotWorkers): NodeShards {
  const lease = () => state.membership?.currentLease() ?? null;
  const notify = (notice: ShardNotice) => state.routes?.notify(notice);
  const onServing = () => {
    state.routes?.refresh();
    for (const listener of state.servingListeners) listener();
  };
  if (config.shardThreads === 1) {
    return new ClusterShards(pool, log, { shardCount: config.shardCount, hostOptions: shardHostSettings(config, pool, workers, options), lease, notify, onServing });
  }
  const buffer = SharedLease.buffer(config.shardCount);
  state.sharedEpochs = new Int32Array(buffer);
  const threads = newShardThreads(config, log, options, (sku) => state.router?.stockState(sku) ?? null, buffer);
  return new ClusterShardThreads(threads, log, { shardCount: config.shardCount, lease, nodeId: () => state.nodeId, notify, onServing });
}

/** With shard threads, front-end threads reach the shards this node serves on their threads, not through this one. */
function directRoutesOf(shards: NodeShards, state: NodeState): DirectShardRoutes | null {
  if (!(shards instanceof ClusterShardThreads)) return null;
  return {
    ports: () => shards.openPorts(),
    served: () => shards.shards(),
    onServed: (listener) => state.servingListeners.push(() => listener(shards.shards())),
  };
}

export function startClusterNode(config: Config, pool: pg.Pool, log: Logger, options: ShardsOptions): ClusterNode {
  const databaseUrl = options.databaseUrl;
  const secret = config.clusterSecret;
  if (secret === null) throw new Error('startClusterNode needs CLUSTER_SECRET');
  const clusterLog = log.child({ component: 'cluster' });
  const selfUrl = config.nodeAdvertiseUrl ?? advertiseUrl(config, config.port);
  const state: NodeState = {
    selfUrl,
    nodeId: config.nodeId ?? new URL(selfUrl).host,
    membership: null,
    routes: null,
    endpoint: null,
    started: false,
    router: null,
    sharedEpochs: null,
    servingListeners: [],
  };
  const snapshot = (): ClusterSnapshot => state.membership?.snapshot ?? emptySnapshot(state, config);

  const workers = new SnapshotWorkers({ threads: 1, warm: true });
  workers.start();
  const shards = nodeShards(config, pool, clusterLog, options, state, workers);
  const { forwarder, live } = peerLinks(config, secret, state, snapshot, clusterLog);
  const routes = new ClusterRoutes(shards, snapshot, forwarder, live);
  state.routes = routes;
  const channel = routes.table;
  const isReady = () => state.started && state.membership?.currentLease() != null;
  const router = new Router(channel, { shardCount: config.shardCount, shardsReady: isReady, pool });
  state.router = router;
  const verifier = new UpgradeVerifier(secret, () => state.selfUrl, AUTH_WINDOW_MS, AUTH_MAX_NONCES);
  const threadCalls: ClusterThreadCalls = {
    snapshot,
    serveForwarded: serveForwarded(shards, routes),
    verifyUpgrade: (token) => verifier.verify(token, Date.now()),
    receivedNotes: (peer, notes) => live.received(peer, notes),
    follow: (sku, following) => live.follow(sku, following),
  };

  return {
    router,
    shards,
    workers,
    attach: (app) => {
      state.endpoint = attachNodeEndpoint(
        app,
        config,
        { verify: threadCalls.verifyUpgrade, handle: threadCalls.serveForwarded, onNotes: threadCalls.receivedNotes },
        clusterLog,
      );
    },
    start: (listeningPort) => joinCluster(listeningPort, state, config, pool, shards, live, databaseUrl, clusterLog),
    snapshot: threadCalls.snapshot,
    endpoint: { handle: (shard, request) => channel.request(shard, request), isReady },
    onNotice: (listener) => channel.onNotice(listener),
    threadCalls,
    directRoutes: directRoutesOf(shards, state),
    stats: () => clusterStats(forwarder, live, state.endpoint),
    stop: async () => {
      await router.close();
      // Graceful leave: every owned shard is drained and handed over before the node goes.
      if (state.membership !== null) await state.membership.leave();
      live.close();
      await shards.close();
      await channel.close();
      forwarder.close();
      state.endpoint?.close();
      await workers.stop();
    },
  };
}

function emptySnapshot(state: NodeState, config: Config): ClusterSnapshot {
  return { self: state.nodeId, shardCount: config.shardCount, nodes: [], owners: [], epochs: [] };
}

/** Connections to the other nodes (forwarding) and the live-stock notices sent over them. */
function peerLinks(
  config: Config,
  secret: string,
  state: NodeState,
  snapshot: () => ClusterSnapshot,
  clusterLog: Logger,
): { forwarder: ForwardPool; live: ClusterLive } {
  const forwarder = new ForwardPool({
    secret,
    selfNodeId: state.nodeId,
    limits: transportLimits(config),
    log: clusterLog,
    // A connection opened (the peer joined, restarted, or the link came back): it gets our latest stock again.
    onOpen: (peerUrl) => live.resync(peerUrl),
  });
  const live = new ClusterLive({
    push: config.redisUrl === null, // with Redis, src/ws/fanout.ts carries stock between nodes
    shardCount: config.shardCount,
    snapshot,
    pool: forwarder,
    epochOf: (shard) => state.membership?.currentLease()?.epochOf(shard),
    deliver: (notice) => state.routes?.deliver(notice),
    peerSyncMs: config.clusterHeartbeatMs,
    maxTrackedSkus: MAX_TRACKED_SKUS,
    log: clusterLog,
  });
  return { forwarder, live };
}

/** Join once the port, and so the advertised URL, is known: membership takes this node's share of the shards. */
async function joinCluster(
  listeningPort: number,
  state: NodeState,
  config: Config,
  pool: pg.Pool,
  shards: NodeShards,
  live: ClusterLive,
  databaseUrl: string,
  clusterLog: Logger,
): Promise<void> {
  state.selfUrl = advertiseUrl(config, listeningPort);
  state.nodeId = config.nodeId ?? new URL(state.selfUrl).host;
  const membership = new Membership(pool, shards, {
    databaseUrl,
    nodeId: state.nodeId,
    url: state.selfUrl,
    shardCount: config.shardCount,
    lockNamespace: config.clusterLockNamespace,
    heartbeatMs: config.clusterHeartbeatMs,
    leaseTimeoutMs: config.clusterLeaseTimeoutMs,
    maxMovesPerRound: config.clusterMaxMovesPerRound,
    statementTimeoutMs: Math.max(1_000, config.clusterHeartbeatMs * 2),
    log: clusterLog,
    onSnapshot: () => state.routes?.refresh(),
    ...(state.sharedEpochs === null ? {} : { sharedEpochs: state.sharedEpochs }),
  });
  state.membership = membership;
  await membership.start();
  live.start();
  state.started = true;
  clusterLog.info({ nodeId: state.nodeId, url: state.selfUrl, shards: shards.shards().length }, 'joined the cluster');
}

function clusterStats(forwarder: ForwardPool, live: ClusterLive, endpoint: ClusterEndpoint | null): ClusterStats {
  const { forwarded, forwardFrames, notices, refusals } = forwarder.totals();
  const { sent, coalesced, dropped } = notices;
  const fromEndpoint = endpoint?.refusals ?? newFrameRefusals();
  addRefusals(refusals, fromEndpoint);
  return { forwarded, forwardFrames, notices: { sent, coalesced, dropped, ...live.stats }, refusals };
}

/** The node in the shape of the single-process shards service (src/services/shards.ts) that startFlashstock uses. */
export function clusterShardsService(node: ClusterNode) {
  return {
    router: node.router,
    host: node.shards,
    workers: node.workers,
    // Each shard is recovered (snapshot + tail) by membership when it is taken, in start().
    recover: async (): Promise<null> => null,
    stop: () => node.stop(),
  };
}
