import { MessageChannel, Worker } from 'node:worker_threads';
import { AggregatorRegistry, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import type { Metrics } from '../metrics/metrics.js';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { DropsApi } from '../http/dependencies.js';
import type { Payments } from '../payments/payments.js';
import type { FrontEnd } from '../services/front-end.js';
import type { ShardEndpoint, ShardNotice, ShardRequest } from '../shard/messages.js';
import type { PeerNotice } from '../shard/protocol.js';
import type { ClusterThreadCalls } from '../cluster/node.js';
import type { FrontEndThreadData, ThreadCommand, ThreadEvent } from './front-end-worker.js';
import { PortEndpoint, portMaxInFlightDefault, type PortCalls } from './port-channel.js';
import { threadEntry } from './thread-entry.js';

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

const frontEndWorkerEntry = threadEntry(import.meta.url, 'front-end-worker');

export interface FrontEndThreadsDependencies {
  config: Config;
  log: Logger;
  /** Where shard requests go: the shard host (every shard of this process), or a cluster node's channel (its shards, or forwarded). */
  host: ShardEndpoint & { isReady(): boolean };
  /** A cluster node: what each thread's cluster endpoint and admin views ask the main thread (absent: a node alone). */
  cluster?: ClusterThreadCalls;
  /** Subscribes to every notice of the shards (broadcast to every thread). */
  onNotice: (listener: (notice: ShardNotice) => void) => void;
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
  endpoint: PortEndpoint;
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
 * each gets a PortEndpoint over the shard endpoint (the ShardHost alone; on a
 * cluster node the cluster channel, which forwards what other nodes own), the
 * named calls below (payments, drops, readiness, old-id lookups; on a
 * cluster node the membership view, forwarded commands and upgrade tokens),
 * and every shard notice. The first thread picks the port (PORT=0); the others
 * listen on that one.
 */
export async function startFrontEndThreads(deps: FrontEndThreadsDependencies): Promise<FrontEnd> {
  const { config, payments } = deps;
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
    calls.clusterNotices = async (peer: string, notices: PeerNotice[]) => cluster.receivedNotices(peer, notices);
  }
  const threads: (Thread | null)[] = Array.from({ length: config.httpThreads }, () => null);
  /** Every thread started, listening or not (a fatal exit halts them all). */
  const started = new Set<Thread>();
  const halt = halter(started);
  // A thread that fails: every thread's sockets closed, then the process's fatal path (one log line, exit 70).
  const fatal = (error: Error) => void halt().then(() => deps.onFatal(error));
  let stopping = false;
  let port = config.port;
  type MetricsJson = MetricObjectWithValues<MetricValue<string>>[];
  const metricsWaiters = new Map<number, (json: MetricsJson) => void>();
  /** Each thread's reservation answers already added to the main registry (threads report totals). */
  const answersReported = new Map<number, { successes: number; refusals: Record<string, number> }>();
  const addAnswers = (index: number, totals: { successes: number; refusals: Record<string, number> }) => {
    const last = answersReported.get(index) ?? { successes: 0, refusals: {} };
    const refusals: Record<string, number> = {};
    for (const [code, count] of Object.entries(totals.refusals)) refusals[code] = count - (last.refusals[code] ?? 0);
    deps.metrics.addReservationAnswers(totals.successes - last.successes, refusals);
    answersReported.set(index, totals);
  };
  let nextMetricsId = 1;
  // One scrape: the main thread's registry and every thread's, summed (a thread
  // that does not answer within the bound is left out rather than hanging the scrape).
  const collectMetrics = async (): Promise<string> => {
    const fromThreads = threads.map((thread) =>
      thread === null
        ? Promise.resolve<MetricsJson>([])
        : new Promise<MetricsJson>((resolve) => {
            const id = nextMetricsId++;
            const timer = setTimeout(() => {
              metricsWaiters.delete(id);
              resolve([]);
            }, metricsCollectTimeoutMs);
            metricsWaiters.set(id, (json) => {
              clearTimeout(timer);
              resolve(json);
            });
            thread.worker.postMessage({ type: 'collect_metrics', id } satisfies ThreadCommand);
          }),
    );
    const threadJson = await Promise.all(fromThreads);
    // The main registry last: it now holds every thread's reservation answers.
    const all = [await deps.metrics.registry.getMetricsAsJSON(), ...threadJson];
    return AggregatorRegistry.aggregate(all as MetricsJson[]).metrics();
  };
  // The main registry's text is the aggregate: the process's one metrics listener (src/metrics/listener.ts) serves it.
  deps.metrics.serveTextFrom(collectMetrics);

  deps.onNotice((notice) => {
    for (const thread of threads) thread?.endpoint.notify(notice);
  });

  const start = (index: number): Promise<number> =>
    new Promise((resolve, reject) => {
      const { port1, port2 } = new MessageChannel();
      const endpoint = new PortEndpoint(port1, deps.host, calls, () => deps.host.isReady());
      const data: FrontEndThreadData = {
        index,
        // WS_MAX_CONNECTIONS bounds the process's sockets: each thread holds its share.
        config: { ...config, port, wsMaxConnections: Math.ceil(config.wsMaxConnections / config.httpThreads) },
        adminToken: deps.adminToken,
        jwtSecret: deps.jwtSecret,
        webhookSecret: deps.webhookSecret,
        channelPort: port2,
        shardsReady: deps.host.isReady(),
        maxInFlight: portMaxInFlightDefault,
      };
      const worker = new Worker(frontEndWorkerEntry, { eval: true, workerData: data, transferList: [port2] });
      let listening = false;
      const stopped = new Promise<void>((resolveStopped) => worker.once('exit', () => resolveStopped()));
      let markHalted = () => {};
      const halted = new Promise<void>((resolveHalted) => (markHalted = resolveHalted));
      void stopped.then(markHalted);
      const thread: Thread = { index, worker, endpoint, stopped, halted };
      started.add(thread);
      worker.on('message', (event: ThreadEvent) => {
        if (event.type === 'listening') {
          listening = true;
          threads[index] = thread;
          resolve(event.port);
        } else if (event.type === 'fatal') {
          fatal(new Error(`front-end thread ${index}: ${event.error}`));
        } else if (event.type === 'halted') {
          markHalted();
        } else if (event.type === 'metrics') {
          const waiter = metricsWaiters.get(event.id);
          metricsWaiters.delete(event.id);
          addAnswers(index, event.answers);
          waiter?.(event.json);
        } else if (event.type === 'stopped') {
          void worker.terminate();
        }
      });
      // The thread reports its own failures as `fatal` (front-end-worker.ts); an error that still gets here ends the process too.
      worker.on('error', (err) => fatal(new Error(`front-end thread ${index} failed: ${err.stack ?? err.message}`)));
      worker.once('exit', (code) => {
        started.delete(thread);
        endpoint.close();
        if (threads[index] === thread) threads[index] = null;
        if (!listening) reject(new Error(`front-end thread ${index} exited (code ${code}) before listening`));
        else if (!stopping) died(index, code);
      });
    });

  // A thread that dies is not restarted: the process stops (onFatal: log, exit
  // 70) and its supervisor restarts it. A thread dies only of a bug, and
  // uWebSockets.js aborts the whole process when a thread exits with its app
  // open anyway ("uv_loop_close() while having open handles"), so a restart
  // could not be relied on. Its requests never hang: the process ends.
  const died = (index: number, code: number) => {
    fatal(new Error(`front-end thread ${index} exited unexpectedly (code ${code})`));
  };

  port = await start(0);
  await Promise.all(threads.map((_, index) => (index === 0 ? null : start(index))));
  let readinessTold = deps.host.isReady();
  const readinessWatch = setInterval(() => {
    const ready = deps.host.isReady();
    if (ready === readinessTold) return;
    readinessTold = ready;
    for (const thread of threads) thread?.endpoint.pushReadiness();
  }, readinessWatchIntervalMs);
  readinessWatch.unref();
  const host = config.host === '0.0.0.0' ? '127.0.0.1' : config.host;
  const command = (message: ThreadCommand) => {
    for (const thread of threads) thread?.worker.postMessage(message);
  };
  return {
    url: `http://${host}:${port}`,
    port,
    live: null,
    ready: async () => deps.host.isReady() && (await deps.databaseAlive()),
    stopListening: () => {
      stopping = true;
      command({ type: 'stop_listening' });
    },
    shardsRecovered: () => {
      for (const thread of threads) thread?.endpoint.pushReadiness();
    },
    halt,
    stop: async () => {
      stopping = true;
      clearInterval(readinessWatch);
      const running = threads.filter((thread): thread is Thread => thread !== null);
      command({ type: 'stop' });
      await Promise.all(running.map((thread) => thread.stopped));
    },
  };
}
