import { MessageChannel, Worker } from 'node:worker_threads';
import { AggregatorRegistry, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import type { Metrics } from '../metrics/metrics.js';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { DropsApi } from '../http/dependencies.js';
import type { Payments } from '../payments/payments.js';
import type { FrontEnd } from '../services/front-end.js';
import type { ShardEndpoint, ShardNotice, ShardRequest } from '../shard/messages.js';
import type { Note } from '../shard/protocol.js';
import type { ClusterThreadCalls } from '../cluster/node.js';
import type { FrontEndThreadData, ThreadCommand, ThreadEvent } from './front-end-worker.js';
import { PortServer, portMaxInFlightDefault, type PortCalls, type ShardPort } from '../road/port-link.js';
import type { DirectShardRoutes } from '../road/routes.js';
import { threadEntry } from './thread-entry.js';
import { NoticeRelay } from './notice-relay.js';
import type { StockState } from '../inventory/inventory.js';

/** A scrape waits this long for each thread's registry. */
const metricsCollectTimeoutMs = 1000;
/**
 * How often the main thread compares the shards' readiness with what it last
 * told the threads, and tells them of a change (readiness otherwise rides on
 * replies, and an idle thread would keep a stale one: a cluster node loses
 * and regains its lease on its own).
 */
const readinessWatchIntervalMs = 100;
/** A fatal exit waits this long for every thread to close its sockets (a thread stuck in a loop cannot). */
const haltTimeoutMs = 2_000;
/**
 * Each front-end thread's young generation (V8's nursery), in MB. A request's
 * garbage dies young, so a small nursery costs little more collecting; V8's
 * default grows it to 48 MB per isolate under load, and with two threads that
 * was ~45 MiB of the process's RSS after a warm-up (bench/memory.ts: 245–257
 * MiB with the default, 209–211 MiB with 4–8 MB; docs/performance.md).
 */
const frontEndYoungGenerationMb = 8;

const frontEndWorkerEntry = threadEntry(import.meta.url, 'front-end-worker');

export interface FrontEndThreadsDependencies {
  config: Config;
  log: Logger;
  /** Where shard requests go: the shard host (every shard of this process), or a cluster node's channel (its shards, or forwarded). */
  host: ShardEndpoint & { isReady(): boolean };
  /** A cluster node: what each thread's cluster endpoint and admin views ask the main thread (absent: a node alone). */
  cluster?: ClusterThreadCalls;
  /** Subscribes to every notice of the shards (relayed to the threads, unless they hear them on `shardPorts`). */
  onNotice: (listener: (notice: ShardNotice) => void) => void;
  /** The main thread's latest counts of a SKU (what a thread that starts following it is sent). */
  stockState: (sku: string) => StockState | null;
  /** Shard threads: ports straight to each, for one front-end thread (its shard requests and notices skip this thread). */
  shardPorts?: () => ShardPort[];
  /** A cluster node's shard threads: the shards it serves go straight to their thread (notices still come through here). */
  direct?: DirectShardRoutes;
  payments: Payments;
  drops: DropsApi;
  /** The main thread's registry (commits, inventory, payments, the process); /metrics adds every thread's. */
  metrics: Metrics;
  databaseAlive: () => Promise<boolean>;
  legacySku: (reservationId: string) => Promise<string | null>;
  adminToken: string;
  jwtSecret: string;
  webhookSecret: string | null;
  onFatal: (error: unknown) => void;
}

interface Thread {
  index: number;
  worker: Worker;
  endpoint: PortServer;
  stopped: Promise<void>;
  /** Resolves once the thread closed its sockets for a fatal exit (or exited). */
  halted: Promise<void>;
}

/** A fatal exit's first step: every thread closes its sockets (once; at most haltTimeoutMs). */
function halter(started: Set<Thread>): () => Promise<void> {
  let halting: Promise<void> | null = null;
  return () => {
    halting ??= new Promise<void>((resolve) => {
      for (const thread of started) thread.worker.postMessage({ type: 'halt' } satisfies ThreadCommand);
      const timer = setTimeout(resolve, haltTimeoutMs);
      void Promise.all([...started].map((thread) => thread.halted)).then(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    return halting;
  };
}

/**
 * `HTTP_THREADS` front-end threads on one port, served from the main thread:
 * each gets a PortServer over the shard endpoint (the ShardHost alone; on a
 * cluster node the cluster channel, which forwards what other nodes own), the
 * named calls below (payments, drops, readiness, old-id lookups; on a
 * cluster node the membership view, forwarded commands and upgrade tokens),
 * and the shard notices it follows (a SKU's stock while a socket there follows it). The first thread picks the port (PORT=0); the others
 * listen on that one.
 */
export async function startFrontEndThreads(deps: FrontEndThreadsDependencies): Promise<FrontEnd> {
  const { config } = deps;
  const calls = portCalls(deps);
  const threads: (Thread | null)[] = Array.from({ length: config.httpThreads }, () => null);
  /** Every thread started, listening or not (a fatal exit halts them all). */
  const started = new Set<Thread>();
  const halt = halter(started);
  const group: ThreadGroup = {
    threads,
    started,
    stopping: false,
    // A thread that fails: every thread's sockets closed, then the process's fatal path (one log line, exit 70).
    fatal: (error: Error) => void halt().then(() => deps.onFatal(error)),
    metrics: new ThreadMetrics(threads, deps.metrics),
  };
  // The main registry's text is the aggregate: the process's one metrics listener (src/metrics/listener.ts) serves it.
  deps.metrics.serveTextFrom(() => group.metrics.collect());

  // A node alone with shard threads: every front-end thread hears their notices on its own ports.
  // Otherwise (no shard threads, or a cluster node, whose direct ports carry requests only) they come from
  // here: a SKU's stock to the threads that follow it.
  const relay = new NoticeRelay(deps.stockState);
  if (deps.shardPorts === undefined) {
    deps.onNotice((notice) => {
      for (const thread of threads) if (thread !== null && relay.relays(thread.index, notice)) thread.endpoint.notify(notice);
    });
  }
  const follow = (index: number, sku: string, following: boolean) => {
    const now = relay.follow(index, sku, following);
    if (now !== null && deps.shardPorts === undefined) threads[index]?.endpoint.notify(now);
    // A cluster node: the owners push to the nodes that follow (the node counts its threads).
    deps.cluster?.follow(sku, following);
  };

  const callsOf = (index: number): PortCalls => ({ ...calls, follow: async (sku: string, following: boolean) => follow(index, sku, following) });
  const port = await startThread(0, config.port, deps, callsOf(0), group);
  await Promise.all(threads.map((_, index) => (index === 0 ? null : startThread(index, port, deps, callsOf(index), group))));
  const readinessWatch = watchReadiness(deps.host, threads);
  const host = config.host === '0.0.0.0' ? '127.0.0.1' : config.host;
  const command = (message: ThreadCommand) => {
    for (const thread of threads) thread?.worker.postMessage(message);
  };
  deps.direct?.onServed((served) => command({ type: 'routes', served }));
  return {
    url: `http://${host}:${port}`,
    port,
    live: null,
    ready: async () => deps.host.isReady() && (await deps.databaseAlive()),
    stopListening: () => {
      group.stopping = true;
      command({ type: 'stop_listening' });
    },
    shardsRecovered: () => {
      for (const thread of threads) thread?.endpoint.pushReadiness();
    },
    halt,
    stop: async () => {
      group.stopping = true;
      clearInterval(readinessWatch);
      const running = threads.filter((thread): thread is Thread => thread !== null);
      command({ type: 'stop' });
      await Promise.all(running.map((thread) => thread.stopped));
    },
  };
}

/** The named calls a thread's PortServer serves on the main thread (the cluster's only on a cluster node). */
function portCalls(deps: FrontEndThreadsDependencies): PortCalls {
  const { payments } = deps;
  const calls: PortCalls = {
    order: (orderId: string, shopperId: string | null) => payments.order(orderId, shopperId),
    adminOrder: (orderId: string) => payments.adminOrder(orderId),
    audit: () => payments.audit(),
    webhook: (delivery: Parameters<Payments['webhook']>[0]) => payments.webhook(delivery),
    dropPut: (name: string, definition: Parameters<DropsApi['put']>[1]) => deps.drops.put(name, definition),
    dropRemove: (name: string) => deps.drops.remove(name),
    dropView: (name: string) => deps.drops.view(name),
    databaseAlive: () => deps.databaseAlive(),
    legacySku: (reservationId: string) => deps.legacySku(reservationId),
  };
  const cluster = deps.cluster;
  if (cluster !== undefined) {
    calls.clusterSnapshot = async () => cluster.snapshot();
    calls.clusterForwarded = (shard: number, request: ShardRequest) => cluster.serveForwarded(shard, request);
    calls.clusterVerifyUpgrade = async (token: string) => cluster.verifyUpgrade(token);
    calls.clusterNotes = async (peer: string, notes: Note[]) => cluster.receivedNotes(peer, notes);
  }
  return calls;
}

/** The threads of one front end, as each thread's handlers see them. */
interface ThreadGroup {
  /** By index: null until the thread listens, and again once it exited. */
  threads: (Thread | null)[];
  started: Set<Thread>;
  stopping: boolean;
  fatal: (error: Error) => void;
  metrics: ThreadMetrics;
}

type MetricsJson = MetricObjectWithValues<MetricValue<string>>[];
type AnswerTotals = { successes: number; refusals: Record<string, number> };

/** One scrape: the main thread's registry and every thread's, summed. */
class ThreadMetrics {
  private readonly waiters = new Map<number, (json: MetricsJson) => void>();
  /** Each thread's reservation answers already added to the main registry (threads report totals). */
  private readonly answersReported = new Map<number, AnswerTotals>();
  private nextMetricsId = 1;

  constructor(
    private readonly threads: (Thread | null)[],
    private readonly metrics: Metrics,
  ) {}

  /** A thread's answer to `collect_metrics`. */
  received(index: number, event: Extract<ThreadEvent, { type: 'metrics' }>): void {
    const waiter = this.waiters.get(event.id);
    this.waiters.delete(event.id);
    this.addAnswers(index, event.answers);
    waiter?.(event.json);
  }

  private addAnswers(index: number, totals: AnswerTotals): void {
    const last = this.answersReported.get(index) ?? { successes: 0, refusals: {} };
    const refusals: Record<string, number> = {};
    for (const [code, count] of Object.entries(totals.refusals)) refusals[code] = count - (last.refusals[code] ?? 0);
    this.metrics.addReservationAnswers(totals.successes - last.successes, refusals);
    this.answersReported.set(index, totals);
  }

  // A thread that does not answer within the bound is left out rather than hanging the scrape.
  async collect(): Promise<string> {
    const fromThreads = this.threads.map((thread) =>
      thread === null
        ? Promise.resolve<MetricsJson>([])
        : new Promise<MetricsJson>((resolve) => {
            const id = this.nextMetricsId++;
            const timer = setTimeout(() => {
              this.waiters.delete(id);
              resolve([]);
            }, metricsCollectTimeoutMs);
            this.waiters.set(id, (json) => {
              clearTimeout(timer);
              resolve(json);
            });
            thread.worker.postMessage({ type: 'collect_metrics', id } satisfies ThreadCommand);
          }),
    );
    const threadJson = await Promise.all(fromThreads);
    // The main registry last: it now holds every thread's reservation answers.
    const all = [await this.metrics.json(), ...threadJson];
    return AggregatorRegistry.aggregate(all as MetricsJson[]).metrics();
  }
}

/** Starts front-end thread `index` on `port`; resolves with the port it listens on. */
function startThread(
  index: number,
  port: number,
  deps: FrontEndThreadsDependencies,
  calls: PortCalls,
  group: ThreadGroup,
): Promise<number> {
  const { config } = deps;
  return new Promise((resolve, reject) => {
    const { port1, port2 } = new MessageChannel();
    const endpoint = new PortServer(port1, deps.host, calls, () => deps.host.isReady());
    const shardPorts = deps.shardPorts?.() ?? deps.direct?.ports() ?? [];
    const data: FrontEndThreadData = {
      index,
      // WS_MAX_CONNECTIONS bounds the process's sockets: each thread holds its share.
      config: { ...config, port, wsMaxConnections: Math.ceil(config.wsMaxConnections / config.httpThreads) },
      adminToken: deps.adminToken,
      jwtSecret: deps.jwtSecret,
      webhookSecret: deps.webhookSecret,
      channelPort: port2,
      shardPorts,
      servedShards: deps.direct?.served() ?? null,
      shardsReady: deps.host.isReady(),
      maxInFlight: portMaxInFlightDefault,
    };
    const transferList = [port2, ...shardPorts.map((shardPort) => shardPort.port)];
    const worker = new Worker(frontEndWorkerEntry, {
      eval: true,
      workerData: data,
      transferList,
      resourceLimits: { maxYoungGenerationSizeMb: frontEndYoungGenerationMb },
    });
    let listening = false;
    const stopped = new Promise<void>((resolveStopped) => worker.once('exit', () => resolveStopped()));
    let markHalted = () => {};
    const halted = new Promise<void>((resolveHalted) => (markHalted = resolveHalted));
    void stopped.then(markHalted);
    const thread: Thread = { index, worker, endpoint, stopped, halted };
    group.started.add(thread);
    worker.on('message', (event: ThreadEvent) => {
      if (event.type === 'listening') {
        listening = true;
        group.threads[index] = thread;
        // Changes while it started were not sent to it: the routes as they are now.
        if (deps.direct !== undefined) worker.postMessage({ type: 'routes', served: deps.direct.served() } satisfies ThreadCommand);
        resolve(event.port);
      } else if (event.type === 'fatal') {
        group.fatal(new Error(`front-end thread ${index}: ${event.error}`));
      } else if (event.type === 'halted') {
        markHalted();
      } else if (event.type === 'metrics') {
        group.metrics.received(index, event);
      } else if (event.type === 'stopped') {
        void worker.terminate();
      }
    });
    // The thread reports its own failures as `fatal` (front-end-worker.ts); an error that still gets here ends the process too.
    worker.on('error', (err) => group.fatal(new Error(`front-end thread ${index} failed: ${err.stack ?? err.message}`)));
    worker.once('exit', (code) => {
      group.started.delete(thread);
      endpoint.close();
      if (group.threads[index] === thread) group.threads[index] = null;
      if (!listening) reject(new Error(`front-end thread ${index} exited (code ${code}) before listening`));
      else if (!group.stopping) threadDied(group, index, code);
    });
  });
}

// A thread that dies is not restarted: the process stops (onFatal: log, exit
// 70) and its supervisor restarts it. A thread dies only of a bug, and
// uWebSockets.js aborts the whole process when a thread exits with its app
// open anyway ("uv_loop_close() while having open handles"), so a restart
// could not be relied on. Its requests never hang: the process ends.
function threadDied(group: ThreadGroup, index: number, code: number): void {
  group.fatal(new Error(`front-end thread ${index} exited unexpectedly (code ${code})`));
}

/** Tells the threads when the shards' readiness changes (see readinessWatchIntervalMs). */
function watchReadiness(host: { isReady(): boolean }, threads: (Thread | null)[]): NodeJS.Timeout {
  let readinessTold = host.isReady();
  const readinessWatch = setInterval(() => {
    const ready = host.isReady();
    if (ready === readinessTold) return;
    readinessTold = ready;
    for (const thread of threads) thread?.endpoint.pushReadiness();
  }, readinessWatchIntervalMs);
  readinessWatch.unref();
  return readinessWatch;
}
