import type pg from 'pg';
import type uWS from 'uWebSockets.js';
import { advertiseUrl, type Config } from '../config.js';
import type { Logger } from '../log.js';
import type { ClusterStats } from '../metrics/metrics.js';
import { shardHostSettings, type ShardsOptions } from '../services/shard-settings.js';
import { SnapshotWorkers } from '../snapshot/workers.js';
import { Router } from '../shard/router.js';
import type { ShardEndpoint, ShardNotice } from '../shard/messages.js';
import { newFrameRefusals, type PeerNotice } from '../shard/protocol.js';
import { UpgradeVerifier, type VerifyResult } from './auth.js';
import { ClusterChannel, serveForwarded } from './channel.js';
import { ClusterShards } from './cluster-shards.js';
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
 * one; the shards this node owns (ClusterShards), taken and handed over by
 * Membership; the cluster endpoint other nodes forward to.
 *
 * Start order: create (before the front end), `attach(app)` (routes on the
 * front end's app, before it listens), `start(port)` (join once the port, and
 * so the advertised URL, is known), then `stop()`: a graceful leave that
 * drains and hands over every shard before the node goes.
 */
export interface ClusterNode {
  router: Router;
  shards: ClusterShards;
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
  /** Stock notices a peer pushed to a thread's endpoint (live.ts): delivered to this node's listeners, every thread's included. */
  receivedNotices(peer: string, notices: PeerNotice[]): void;
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
  calls: Pick<ClusterEndpointOptions, 'verify' | 'handle' | 'onNotices'>,
  log: Logger,
): ClusterEndpoint {
  return attachClusterEndpoint(app, { ...calls, shardCount: config.shardCount, limits: transportLimits(config), log });
}

export function transportLimits(config: Config): TransportLimits {
  return { ...defaultTransportLimits, maxInFlight: config.clusterMaxInFlight, requestTimeoutMs: config.clusterForwardTimeoutMs };
}

export function startClusterNode(config: Config, pool: pg.Pool, log: Logger, options: ShardsOptions): ClusterNode {
  const databaseUrl = options.databaseUrl;
  const secret = config.clusterSecret;
  if (secret === null) throw new Error('startClusterNode needs CLUSTER_SECRET');
  const clusterLog = log.child({ component: 'cluster' });
  let membership: Membership | null = null;
  let selfUrl = config.nodeAdvertiseUrl ?? advertiseUrl(config, config.port);
  let nodeId = config.nodeId ?? new URL(selfUrl).host;
  const emptySnapshot = (): ClusterSnapshot => ({ self: nodeId, shardCount: config.shardCount, nodes: [], owners: [], epochs: [] });

  const workers = new SnapshotWorkers({ threads: 1, warm: true });
  workers.start();
  let channel: ClusterChannel | null = null;
  const shards = new ClusterShards(pool, clusterLog, {
    shardCount: config.shardCount,
    hostOptions: shardHostSettings(config, pool, workers, options),
    lease: () => membership?.currentLease() ?? null,
    notify: (notice) => channel?.notify(notice),
  });
  const forwarder = new ForwardPool({
    secret,
    selfNodeId: nodeId,
    limits: transportLimits(config),
    log: clusterLog,
    // A connection opened (the peer joined, restarted, or the link came back): it gets our latest stock again.
    onOpen: (peerUrl) => live.resync(peerUrl),
  });
  const live = new ClusterLive({
    push: config.redisUrl === null, // with Redis, src/ws/fanout.ts carries stock between nodes
    shardCount: config.shardCount,
    snapshot: () => membership?.snapshot ?? emptySnapshot(),
    pool: forwarder,
    epochOf: (shard) => membership?.currentLease()?.epochOf(shard),
    deliver: (notice) => channel?.deliver(notice),
    peerSyncMs: config.clusterHeartbeatMs,
    maxTrackedSkus: MAX_TRACKED_SKUS,
    log: clusterLog,
  });
  channel = new ClusterChannel(shards, () => membership?.snapshot ?? emptySnapshot(), forwarder, live);
  let started = false;
  const isReady = () => started && membership?.currentLease() != null;
  const router = new Router(channel, { shardCount: config.shardCount, shardsReady: isReady, pool });
  const verifier = new UpgradeVerifier(secret, () => selfUrl, AUTH_WINDOW_MS, AUTH_MAX_NONCES);
  const threadCalls: ClusterThreadCalls = {
    snapshot: () => membership?.snapshot ?? emptySnapshot(),
    serveForwarded: serveForwarded(shards),
    verifyUpgrade: (token) => verifier.verify(token, Date.now()),
    receivedNotices: (_peer, notices) => live.received(notices),
  };
  let endpoint: ClusterEndpoint | null = null;

  return {
    router,
    shards,
    workers,
    attach: (app) => {
      endpoint = attachNodeEndpoint(
        app,
        config,
        { verify: threadCalls.verifyUpgrade, handle: threadCalls.serveForwarded, onNotices: threadCalls.receivedNotices },
        clusterLog,
      );
    },
    start: async (listeningPort) => {
      selfUrl = advertiseUrl(config, listeningPort);
      nodeId = config.nodeId ?? new URL(selfUrl).host;
      membership = new Membership(pool, shards, {
        databaseUrl,
        nodeId,
        url: selfUrl,
        shardCount: config.shardCount,
        lockNamespace: config.clusterLockNamespace,
        heartbeatMs: config.clusterHeartbeatMs,
        leaseTimeoutMs: config.clusterLeaseTimeoutMs,
        maxMovesPerRound: config.clusterMaxMovesPerRound,
        statementTimeoutMs: Math.max(1_000, config.clusterHeartbeatMs * 2),
        log: clusterLog,
      });
      await membership.start();
      live.start();
      started = true;
      clusterLog.info({ nodeId, url: selfUrl, shards: shards.shards().length }, 'joined the cluster');
    },
    snapshot: threadCalls.snapshot,
    endpoint: { handle: (shard, request) => channel!.request(shard, request), isReady },
    onNotice: (listener) => channel!.onNotice(listener),
    threadCalls,
    stats: () => {
      const { forwarded, notices, refusals } = forwarder.totals();
      const { sent, coalesced, dropped } = notices;
      const fromEndpoint = (endpoint as ClusterEndpoint | null)?.refusals ?? newFrameRefusals();
      addRefusals(refusals, fromEndpoint);
      return { forwarded, notices: { sent, coalesced, dropped, ...live.stats }, refusals };
    },
    stop: async () => {
      await router.close();
      // Graceful leave: every owned shard is drained and handed over before the node goes.
      if (membership !== null) await membership.leave();
      live.close();
      await shards.close();
      await channel!.close();
      forwarder.close();
      (endpoint as ClusterEndpoint | null)?.close();
      await workers.stop();
    },
  };
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
