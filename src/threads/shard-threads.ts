import { addWaitlistTotals, noWaitlistTotals, type WaitlistTotals } from '../metrics/waitlist-metrics.js';
import { MessageChannel, Worker } from 'node:worker_threads';
import type { Config } from '../config.js';
import type { StockState } from '../inventory/inventory.js';
import type { Logger } from '../log.js';
import type { CommitTally } from '../metrics/metrics.js';
import type { OutboxStats } from '../outbox/outbox.js';
import type { ShardEndpoint, ShardNotice, ShardReply, ShardRequest } from '../shard/messages.js';
import type { Link } from '../road/link.js';
import { addRecoveries, type RecoverySummary } from '../shard/shard-host.js';
import type { ShardStats } from '../shard/shard.js';
import { PortLink, portMaxInFlightDefault, type ShardPort } from '../road/port-link.js';
import { RoutingTable } from '../road/routes.js';
import type { ClusterThreadCall, ShardThreadCall, ShardThreadCommand, ShardThreadData, ShardThreadEvent, ShardThreadReport, ShardThreadStats } from './shard-worker.js';
import { threadEntry } from './thread-entry.js';

const shardWorkerEntry = threadEntry(import.meta.url, 'shard-worker');

/** How often each shard thread reports its counts and commits (metrics gauges and `/metrics` counters lag by at most this). */
export const shardThreadReportIntervalMs = 250;

/** The thread serving `shard`: shards are dealt round-robin, so SKUs (hashed to shards) spread evenly. */
export function shardThreadOf(shard: number, threadCount: number): number {
  return shard % threadCount;
}

export interface ShardThreadsOptions {
  databaseUrl: string;
  /** A thread's fatal (a broken invariant, or the thread dying) goes here, on the main thread. */
  onFatal: (error: unknown) => void;
  /** A test clock's shared memory; null: every thread reads Date.now. */
  clock: SharedArrayBuffer | null;
  writeOrders: boolean;
  /** Commits the threads report (metrics). */
  onTally?: (tally: CommitTally) => void;
  /** The latest durable counts of a SKU, as the threads pushed them (the router keeps them): for the audit. */
  stockState: (sku: string) => StockState | null;
  /**
   * A cluster node: its lease's epochs, shared with every thread (src/cluster/shared-lease.ts). The
   * threads then start with no shard and open and drain them when told (`callShard`).
   */
  clusterEpochs?: SharedArrayBuffer;
}

interface ShardThread {
  index: number;
  worker: Worker;
  channel: PortLink;
  /** The shards it serves. */
  shards: number[];
  stats: ShardThreadStats;
  exited: Promise<void>;
}

const noStats: ShardThreadStats = {
  pendingEvents: 0,
  allocatorCount: 0,
  liveHolds: 0,
  reservationsInMemory: 0,
  stats: { snapshotsWritten: 0, snapshotsFailed: 0, passivated: 0 },
  outboxStats: { batches: 0, events: 0, failedBatches: 0, lastBatchEvents: 0, maxBatchEvents: 0, outcomeChecks: 0, committedAfterAll: 0, unknownOutcomes: 0, callbackErrors: 0, isolatedBatches: 0, refusedEvents: 0, undoneEvents: 0 },
};

/**
 * The main thread's side of SHARD_THREADS shard threads: their routing table
 * (shard → the PortLink of its thread), which the router and the front-end
 * threads' PortServers send through, and every thread's notices. Counts come
 * from the threads' reports (every `shardThreadReportIntervalMs`, or now:
 * `refresh`).
 */
export class ShardThreads implements Link, ShardEndpoint {
  private readonly threads: ShardThread[];
  private readonly routes: RoutingTable;
  private closing = false;
  private closed: Promise<void> | null = null;

  constructor(
    config: Config,
    private readonly log: Logger,
    private readonly options: ShardThreadsOptions,
  ) {
    const poolMax = shardThreadPoolMax(config);
    this.threads = Array.from({ length: config.shardThreads }, (_, index) => this.startThread(config, index, poolMax));
    this.routes = new RoutingTable(config.shardCount, (shard) => `shard ${shard} has no thread`);
    for (let shard = 0; shard < config.shardCount; shard += 1) this.routes.set(shard, this.threadOf(shard).channel);
  }

  private startThread(config: Config, index: number, poolMax: number): ShardThread {
    const { port1, port2 } = new MessageChannel();
    const placed = Array.from({ length: config.shardCount }, (_, shard) => shard).filter((shard) => shardThreadOf(shard, config.shardThreads) === index);
    const clusterEpochs = this.options.clusterEpochs ?? null;
    const data: ShardThreadData = {
      index,
      // MAX_PENDING_EVENTS bounds the process: each thread's outbox holds its share.
      config: { ...config, maxPendingEvents: Math.ceil(config.maxPendingEvents / config.shardThreads) },
      databaseUrl: this.options.databaseUrl,
      // A cluster node's thread hosts of its share only what the node's lease holds, opened as it is taken.
      shards: clusterEpochs === null ? placed : [],
      clusterEpochs,
      poolMax,
      clock: this.options.clock,
      writeOrders: this.options.writeOrders,
      reportIntervalMs: shardThreadReportIntervalMs,
      channelPort: port2,
    };
    const worker = new Worker(shardWorkerEntry, { eval: true, workerData: data, transferList: [port2] });
    const channel = new PortLink(port1, { maxInFlight: portMaxInFlightDefault, shardsReady: false });
    const thread: ShardThread = { index, worker, channel, shards: placed, stats: noStats, exited: new Promise((resolve) => worker.once('exit', () => resolve())) };
    worker.on('message', (event: ShardThreadEvent) => {
      if (event.type === 'report') this.apply(thread, event.report);
      else this.options.onFatal(new Error(`shard thread ${index}: ${event.error}`));
    });
    worker.on('error', (err) => this.log.error({ err, shardThread: index }, 'shard thread failed'));
    // A shard thread holds the only allocator of its SKUs: without it they cannot
    // be served, so its death is the process's (supervisor restarts, recovery).
    worker.once('exit', (code) => {
      void channel.close();
      if (!this.closing) this.options.onFatal(new Error(`shard thread ${index} exited unexpectedly (code ${code})`));
    });
    return thread;
  }

  private apply(thread: ShardThread, report: ShardThreadReport): void {
    thread.stats = report.stats;
    this.options.onTally?.(report.tally);
  }

  private threadOf(shard: number): ShardThread {
    return this.threads[shardThreadOf(shard, this.threads.length)]!;
  }

  request<R extends ShardRequest>(shard: number, request: R): Promise<ShardReply<R['type']>> {
    return this.routes.request(shard, request);
  }

  /** The port link to the thread that hosts `shard`. */
  linkOf(shard: number): PortLink {
    return this.threadOf(shard).channel;
  }

  /** A named call on the thread that hosts `shard` (a cluster node's clusterOpen and clusterDrain). */
  callShard<T>(shard: number, method: ClusterThreadCall, args: unknown[]): Promise<T> {
    return this.threadOf(shard).channel.call<T>(method, args);
  }

  /**
   * A cluster node lost its lease: every thread forgets its shards. Their commits are already refused by
   * then (the lease cleared the shared epochs before this runs); this frees their memory and stops the 503s
   * saying "taken over" for shards that are simply gone.
   */
  dropAll(reason: Error): void {
    for (const thread of this.threads) {
      thread.channel.call('clusterDropAll', [reason.message]).catch((err: unknown) => this.log.warn({ err, shardThread: thread.index }, 'a shard thread did not drop its shards'));
    }
  }

  /** Requests a front-end thread sent through this thread rather than straight to a shard thread (none once it has its ports). */
  relayed = 0;

  handle<R extends ShardRequest>(shard: number, request: R): Promise<ShardReply<R['type']>> {
    this.relayed += 1;
    return this.request(shard, request);
  }

  onNotice(listener: (notice: ShardNotice) => void): void {
    this.routes.onNotice(listener);
  }

  /**
   * A port to every shard thread for one front-end thread: it sends its
   * shards' requests straight to their thread, and hears their notices there
   * unless `notices` is false (a MessageChannel per front-end thread × shard
   * thread, made at start).
   */
  openPorts(notices = true): ShardPort[] {
    return this.threads.map((thread) => {
      const { port1, port2 } = new MessageChannel();
      thread.worker.postMessage({ type: 'serve_port', port: port2, notices } satisfies ShardThreadCommand, [port2]);
      return { port: port1, shards: thread.shards };
    });
  }

  private callAll<T>(method: ShardThreadCall): Promise<T[]> {
    return Promise.all(this.threads.map((thread) => thread.channel.call<T>(method, [])));
  }

  /** Every thread loads its shards from the log; readiness waits for all of them. */
  async recover(): Promise<RecoverySummary> {
    const summaries = await this.callAll<RecoverySummary>('recover');
    await this.refresh();
    return addRecoveries(summaries);
  }

  isReady(): boolean {
    return !this.closing && this.threads.every((thread) => thread.channel.shardsReady);
  }

  /** Resolves once everything every thread decided so far is durable (their stock notices arrive before). */
  async settled(): Promise<void> {
    await this.callAll('settled');
  }

  /** Counts of a SKU as last pushed by its thread (the audit compares them with the log at the same seq). */
  stockState(sku: string): StockState | null {
    return this.options.stockState(sku);
  }

  /** Asks every thread for its counts and commits now (the getters otherwise show the last periodic report). */
  async refresh(): Promise<void> {
    const reports = await this.callAll<ShardThreadReport>('report');
    reports.forEach((report, index) => this.apply(this.threads[index]!, report));
  }

  private sum(read: (stats: ShardThreadStats) => number): number {
    return this.threads.reduce((total, thread) => total + read(thread.stats), 0);
  }

  get pendingEvents(): number {
    return this.sum((s) => s.pendingEvents);
  }

  get allocatorCount(): number {
    return this.sum((s) => s.allocatorCount);
  }

  get liveHolds(): number {
    return this.sum((s) => s.liveHolds);
  }

  get waitlist(): WaitlistTotals {
    return this.threads.reduce((total, thread) => addWaitlistTotals(total, thread.stats.waitlist ?? noWaitlistTotals), noWaitlistTotals);
  }

  get reservationsInMemory(): number {
    return this.sum((s) => s.reservationsInMemory);
  }

  get queueTickets(): { waiting: number; admitted: number } {
    return { waiting: this.sum((s) => s.queueTickets?.waiting ?? 0), admitted: this.sum((s) => s.queueTickets?.admitted ?? 0) };
  }

  get stats(): ShardStats {
    return {
      snapshotsWritten: this.sum((s) => s.stats.snapshotsWritten),
      snapshotsFailed: this.sum((s) => s.stats.snapshotsFailed),
      passivated: this.sum((s) => s.stats.passivated),
    };
  }

  get outboxStats(): OutboxStats {
    const total = { ...noStats.outboxStats };
    for (const { stats } of this.threads) {
      for (const key of Object.keys(total) as (keyof OutboxStats)[]) {
        total[key] = key === 'maxBatchEvents' || key === 'lastBatchEvents' ? Math.max(total[key], stats.outboxStats[key]) : total[key] + stats.outboxStats[key];
      }
    }
    return total;
  }

  /** Graceful: every thread stops taking work, commits its open batch and answers what it holds, then ends. */
  close(): Promise<void> {
    this.closed ??= this.closeThreads();
    return this.closed;
  }

  private async closeThreads(): Promise<void> {
    this.closing = true;
    await Promise.all(
      this.threads.map(async (thread) => {
        try {
          this.apply(thread, await thread.channel.call<ShardThreadReport>('close', []));
        } catch (err) {
          this.log.error({ err, shardThread: thread.index }, 'shard thread did not close cleanly');
        }
        await thread.channel.close();
        await thread.worker.terminate();
        await thread.exited;
      }),
    );
  }
}

/**
 * Each shard thread's own pool: its share of PG_POOL_MAX (the shards' commits,
 * loads and recovery), at least 2 so a commit and a SKU load never wait on each other.
 */
export function shardThreadPoolMax(config: Config): number {
  return Math.max(2, Math.ceil(config.pgPoolMax / config.shardThreads));
}
