import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import type { Config } from '../config.js';
import { createLogger, type Logger } from '../log.js';
import { startFrontEnd } from '../services/front-end.js';
import { Router } from '../shard/router.js';
import type { MetricObjectWithValues, MetricValue } from 'prom-client';
import type uWS from 'uWebSockets.js';
import { Metrics } from '../metrics/metrics.js';
import { DropsClient, PaymentsClient } from './payments-client.js';
import { ClusterClient } from './cluster-client.js';
import { PortLink, type ShardPort } from '../road/port-link.js';
import { RoutingTable } from '../road/routes.js';
import { RequestsOnly, type Link } from '../road/link.js';

/**
 * One front-end thread: a uWebSockets.js app on the shared HOST:PORT (the
 * kernel spreads connections over the threads with SO_REUSEPORT) running all
 * of src/http and src/ws, with a Router whose channel is a MessagePort to the
 * shard host on the main thread. Everything it knows came in `workerData` as
 * plain data.
 */
export interface FrontEndThreadData {
  index: number;
  /** The process's configuration, `port` already resolved (PORT=0: the port the first thread got). */
  config: Config;
  adminToken: string;
  jwtSecret: string;
  webhookSecret: string | null;
  /** The port to the main thread (transferred): its named calls, and the shards it serves. */
  channelPort: MessagePort;
  /** Ports straight to the shard threads (transferred; empty: the main thread serves every shard). */
  shardPorts: ShardPort[];
  /**
   * Null: every shard of `shardPorts` is served straight by its thread (a
   * node alone). Else a cluster node's: the shards it serves now go straight,
   * every other through the main thread; `routes` commands bring changes.
   */
  servedShards: number[] | null;
  shardsReady: boolean;
  maxInFlight: number;
}

/** Main → thread. `halt`: the process exits on a fatal error, close every socket now. */
export type ThreadCommand =
  | { type: 'stop_listening' }
  | { type: 'stop' }
  | { type: 'halt' }
  | { type: 'collect_metrics'; id: number }
  | { type: 'routes'; served: number[] };
/** Thread → main. */
export type ThreadEvent =
  | { type: 'listening'; port: number }
  | { type: 'fatal'; error: string }
  | { type: 'stopped' }
  | { type: 'halted' }
  | {
      type: 'metrics';
      id: number;
      json: MetricObjectWithValues<MetricValue<string>>[];
      answers: ReturnType<Metrics['reservationAnswerTotals']>;
    };

async function run(): Promise<void> {
  const data = workerData as FrontEndThreadData;
  const control = parentPort!;
  const { config } = data;
  const log = createLogger(config.logLevel).child({ thread: data.index });
  const channel = new PortLink(data.channelPort, { maxInFlight: data.maxInFlight, shardsReady: data.shardsReady });
  const { routes, links, serve } = shardRoutes(channel, data);
  const router = new Router(routes, {
    shardCount: config.shardCount,
    shardsReady: () => channel.shardsReady,
    pool: null,
    legacySku: (reservationId) => channel.call<string | null>('legacySku', [reservationId]),
  });
  const post = (event: ThreadEvent) => control.postMessage(event);
  const metrics = threadMetrics();
  // A cluster node (CLUSTER_SECRET): the endpoint other nodes forward to and the admin views, on this thread's app too.
  const cluster = config.clusterSecret === null ? null : new ClusterClient(channel, config, log.child({ component: 'cluster' }));
  const frontEnd = await startFrontEnd({
    config,
    log,
    databaseAlive: () => channel.call<boolean>('databaseAlive', []),
    inventory: router,
    payments: new PaymentsClient(channel, data.webhookSecret),
    drops: new DropsClient(channel),
    metrics,
    adminToken: data.adminToken,
    jwtSecret: data.jwtSecret,
    sharedPort: true,
    ...(cluster === null ? {} : { attach: (app: uWS.TemplatedApp) => cluster.attach(app), cluster: () => cluster.snapshot() }),
    onFollow: follower(noticeSenders(channel, links, data), log),
    // process.exit here would end this thread only: the main thread decides.
    onFatal: (error) => post({ type: 'fatal', error: error instanceof Error ? (error.stack ?? error.message) : String(error) }),
  });
  // Readiness is the main thread's gauge (summed over threads it would count N + 1).
  metrics.provide({
    live: () => frontEnd.live!.stats,
    shardRequests: () => ({ main_thread: channel.requests, shard_thread: links.reduce((sum, link) => (link === channel ? sum : sum + link.requests), 0) }),
    ...(cluster === null ? {} : { frameRefusals: () => cluster.refusals() }),
  });
  control.on('message', (command: ThreadCommand) => {
    if (command.type === 'stop_listening') frontEnd.stopListening();
    else if (command.type === 'routes') serve(command.served);
    else if (command.type === 'collect_metrics') {
      void metrics.registry
        .getMetricsAsJSON()
        .then((json) => post({ type: 'metrics', id: command.id, json, answers: metrics.reservationAnswerTotals() }));
    } else if (command.type === 'stop') void stop();
  });
  const stop = async () => {
    frontEnd.stopListening();
    // The shard host has committed and answered (or refused) everything: wait
    // for those replies to reach their sockets before closing them.
    await Promise.all(links.map((link) => link.drained()));
    await router.close();
    cluster?.close();
    await frontEnd.stop();
    for (const link of links) await link.close();
    post({ type: 'stopped' });
  };
  haltFrontEnd = () => frontEnd.halt();
  post({ type: 'listening', port: frontEnd.port });
  if (config.faultThreadFailure && data.index === 0) {
    setImmediate(() => {
      throw new Error('FAULT_THREAD_FAILURE: front-end thread 0 fails');
    });
  }
}

/**
 * This thread's registry: its routes, rate limits and WebSocket. No default
 * (process) metrics: the main thread's are the process's, and they would add
 * up. The main thread's metrics listener serves the aggregate of every
 * thread's registry.
 */
function threadMetrics(): Metrics {
  const metrics = new Metrics({ defaultMetrics: false });
  // Counted on the main thread instead: reservations (`replayed` is answers
  // minus commits, and the commits are there) and the breaker (one per process).
  for (const name of ['flashstock_reservations_total', 'flashstock_payment_breaker_state', 'flashstock_ready']) {
    metrics.registry.removeSingleMetric(name);
  }
  return metrics;
}

/**
 * Who sends this thread notices sends a SKU's stock only while it follows it:
 * the main thread (a cluster node also tells the owners), and a node alone's
 * shard threads over their direct ports.
 */
function noticeSenders(main: PortLink, links: PortLink[], data: FrontEndThreadData): PortLink[] {
  // A node alone with shard threads: they send on their own ports, and the main thread relays none.
  return data.servedShards === null && links.length > 1 ? links.filter((link) => link !== main) : [main];
}

function follower(senders: PortLink[], log: Logger): (sku: string, following: boolean) => void {
  return (sku, following) => {
    for (const link of senders) {
      link.call('follow', [sku, following]).catch((err: unknown) => log.warn({ err, sku }, 'following not told to the thread that sends notices'));
    }
  };
}

/**
 * This thread's routing table: every shard to the main thread, but those of a
 * shard thread straight to that thread's port — on a cluster node only those
 * the node serves (`serve` follows them), and for requests only: the node's
 * channel on the main thread brings the notices it follows, the other nodes' too.
 * Readiness stays the main thread's word (it watches every shard thread).
 */
function shardRoutes(main: PortLink, data: FrontEndThreadData): { routes: RoutingTable; links: PortLink[]; serve(served: number[]): void } {
  const { shardCount } = data.config;
  const routes = new RoutingTable(shardCount, (shard) => `shard ${shard} has no route`);
  const direct: (Link | null)[] = new Array<Link | null>(shardCount).fill(null);
  const links = [main];
  for (const { port, shards } of data.shardPorts) {
    const link = new PortLink(port, { maxInFlight: data.maxInFlight, shardsReady: true });
    links.push(link);
    const route = data.servedShards === null ? link : new RequestsOnly(link);
    for (const shard of shards) direct[shard] = route;
  }
  const serve = (served: readonly number[] | null) => {
    const here = served === null ? null : new Set(served);
    for (let shard = 0; shard < shardCount; shard += 1) routes.set(shard, here === null || here.has(shard) ? (direct[shard] ?? main) : main);
  };
  serve(data.servedShards);
  return { routes, links, serve };
}

/**
 * A thread that fails must not end by itself: a worker thread that exits with
 * its uWS app open makes Node abort the whole process natively ("uv_loop_close()
 * while having open handles"), with no log line and no exit code worth the name.
 * So whatever fails here (an uncaught error or rejection, or starting) is
 * reported to the main thread as `fatal`, and this thread stays as it is until
 * the main thread ends the process: one fatal log line, exit code 70.
 */
function failed(error: unknown): void {
  parentPort!.postMessage({ type: 'fatal', error: error instanceof Error ? (error.stack ?? error.message) : String(error) } satisfies ThreadEvent);
}
process.on('uncaughtException', failed);
process.on('unhandledRejection', failed);

/** This thread's part of a fatal exit: its app closed (from the start, even before it listens). */
let haltFrontEnd: () => Promise<void> = async () => undefined;
parentPort!.on('message', (command: ThreadCommand) => {
  if (command.type !== 'halt') return;
  void haltFrontEnd().finally(() => parentPort!.postMessage({ type: 'halted' } satisfies ThreadEvent));
});

run().catch(failed);
