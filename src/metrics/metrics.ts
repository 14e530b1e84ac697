import client from 'prom-client';
import type { StockEvent } from '../allocator/types.js';
import type { CommitError, OutboxObserver } from '../outbox/outbox.js';
import { sampled } from './sampled.js';

import { registerWaitlistMetrics, type WaitlistTotals } from './waitlist-metrics.js';
/**
 * Every Prometheus metric of one flashstock service, named once, in one
 * registry (tests run several services in one process, so there is no global
 * registry). Naming follows Prometheus: `flashstock_` prefix, base units
 * (seconds, bytes), `_total` on counters. Label values come only from bounded
 * sets (route patterns, methods, problem codes, fixed outcomes), never from
 * what a client sends.
 *
 * Hot-path instruments (HTTP, commits) are plain prom-client calls on cached
 * label children; everything that already has a number elsewhere (pool, queue
 * depth, WebSocket stats, the inventory) is read by `collect` at scrape time.
 */

export type BreakerState = 'closed' | 'open' | 'half_open';

/** Process-wide inventory numbers; the inventory (LocalInventory today, the shard next) supplies them. */
export interface InventoryStats {
  pendingEvents: number;
  /** null: this inventory does not report it yet (the gauge then has no sample). */
  liveHolds: number | null;
  /** Waiting-room tickets in memory (absent: not reported). */
  queueTickets?: { waiting: number; admitted: number };
  allocators: number | null;
  snapshotsWritten: number | null;
  /** Absent or null: not reported (no flashstock_waitlist_* samples). */
  waitlist?: WaitlistTotals | null;
}

export interface PoolStats {
  totalCount: number;
  idleCount: number;
  waitingCount: number;
}

export interface LiveStats {
  stream: { connections: number; lagging: number; closedSlow: number; closedPolicy: number };
  feed: { redis: 'none' | 'up' | 'down' };
}

export interface PaymentStats {
  paid: number;
  declined: number;
  transientFailures: number;
  compensated: number;
  /** Jobs put off without calling the provider because the breaker was open. */
  deferred: number;
}

/** What a cluster node counts since start (src/cluster/node.ts keeps it). */
export interface ClusterStats {
  /** Commands forwarded to their shard's owner. */
  forwarded: { sent: number; replied: number; timed_out: number };
  /** Frames the forwarded commands went out in: commands ÷ frames is how well forwarding batches. */
  forwardFrames: number;
  /** Live-stock notices: to peers, and from them. */
  notices: { sent: number; coalesced: number; dropped: number; received: number; stale: number };
  /** Frames and messages from peers refused, by reason (src/shard/protocol.ts). */
  refusals: Record<string, number>;
}

/** Where scrape-time numbers come from; app.ts provides them once the parts exist. */
export interface MetricSources {
  inventory?: () => InventoryStats;
  pool?: PoolStats;
  /** pg-boss queues whose depth is exported, and how to read one (sampled with a timeout). */
  queues?: readonly string[];
  queueSize?: (queue: string) => Promise<number | null>;
  payments?: () => PaymentStats;
  breakerState?: () => BreakerState;
  live?: () => LiveStats;
  /** Readiness as /readyz decides it (sampled with a timeout). */
  ready?: () => Promise<boolean>;
  /** Cluster nodes only: forwarding and live-stock notice totals (src/cluster/node.ts). */
  cluster?: () => ClusterStats;
  /** Cluster nodes only: frames and messages from peers refused by this thread's decoders, by reason (src/shard/protocol.ts). */
  frameRefusals?: () => Record<string, number>;
  /** Front-end threads only: shard requests sent through the main thread and straight to a shard thread. */
  shardRequests?: () => { main_thread: number; shard_thread: number };
}

/** Histogram buckets, in seconds or events. */
const httpSecondsBuckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
const commitSecondsBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const batchEventsBuckets = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];
/** A scrape waits at most this long for a sampled value, then reports the last one. */
const sampleTimeoutMs = 1000;
/** Sampled values (queue depth, readiness) younger than this are reused. */
const sampleMaxAgeMs = 2000;

const breakerStates: readonly BreakerState[] = ['closed', 'half_open', 'open'];
const knownMethods = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']);

/** One label value for every request no route matched, so raw URLs never become labels. */
export const unmatchedRoute = 'unmatched';

export type CommitFailureReason = 'fenced' | 'timeout' | 'error';

/**
 * Why a commit failed: the outbox's deadline ("took longer than
 * COMMIT_TIMEOUT_MS") and the pool's connect timeout ("timeout exceeded when
 * trying to connect") are timeouts; a unique violation on (sku, seq) is fencing; the rest are errors.
 */
export function commitFailureReason(error: CommitError): CommitFailureReason {
  if (error.fenced) return 'fenced';
  const message = error.cause instanceof Error ? error.cause.message : String(error.cause);
  return /timeout|timed out|took longer than/i.test(message) ? 'timeout' : 'error';
}

/**
 * Commits observed on another thread (a shard thread's outbox), sent to the
 * main thread's registry in plain numbers: `commits` holds one
 * [batchEvents, reservedEvents, seconds] triple per commit.
 */
export interface CommitTally {
  commits: number[];
  failures: Partial<Record<CommitFailureReason, number>>;
}

/** Commits per tally kept with their durations; past it (a report long overdue) only the counts are kept. */
export const maxTalliedCommits = 10_000;

/** A shard thread's OutboxObserver: collects commits until `take` hands them to the main thread. */
export class CommitTallier implements OutboxObserver {
  private tally: CommitTally = { commits: [], failures: {} };
  /** Reserved events of commits past `maxTalliedCommits` (still counted, without a duration sample). */
  private overflowReserved = 0;

  committed(events: readonly StockEvent[], seconds: number): void {
    const reserved = reservedCount(events);
    if (this.tally.commits.length < maxTalliedCommits * 3) this.tally.commits.push(events.length, reserved, seconds);
    else this.overflowReserved += reserved;
  }

  failed(error: CommitError): void {
    const reason = commitFailureReason(error);
    this.tally.failures[reason] = (this.tally.failures[reason] ?? 0) + 1;
  }

  take(): CommitTally {
    const tally = this.tally;
    // The overflow travels as one commit with no duration (NaN: not observed).
    if (this.overflowReserved > 0) tally.commits.push(0, this.overflowReserved, Number.NaN);
    this.tally = { commits: [], failures: {} };
    this.overflowReserved = 0;
    return tally;
  }
}

function reservedCount(events: readonly StockEvent[]): number {
  let reserved = 0;
  for (const event of events) if (event.kind === 'reserved') reserved += 1;
  return reserved;
}

/** The main thread's observer: commits made here, and tallies from shard threads. */
export interface OutboxMetrics extends OutboxObserver {
  addTally(tally: CommitTally): void;
  /** How to fetch the shard threads' tallies now: a scrape does, before it derives `replayed` from them. */
  tallySource(fetch: () => Promise<void>): void;
}

/** A request method as a bounded label value. */
export function methodLabel(method: string): string {
  const upper = method.toUpperCase();
  return knownMethods.has(upper) ? upper : 'other';
}

/**
 * The per-route instruments of one (route, method): the HTTP layer keeps one
 * and calls `done` per response. Plain numbers, no label hashing on the hot
 * path (prom-client hashes the label set on every `inc`/`observe`, ~1 µs per
 * request); the two collectors below turn them into samples at scrape time.
 */
export class RouteMetrics {
  /** Responses by status. */
  readonly counts = new Map<number, number>();
  /** Non-cumulative: `buckets[i]` counts durations in (bound[i-1], bound[i]]; the last is +Inf. */
  readonly buckets = new Float64Array(httpSecondsBuckets.length + 1);
  sumSeconds = 0;
  count = 0;

  constructor(
    readonly route: string,
    readonly method: string,
  ) {}

  done(status: number, seconds: number): void {
    this.counts.set(status, (this.counts.get(status) ?? 0) + 1);
    let i = 0;
    while (i < httpSecondsBuckets.length && seconds > httpSecondsBuckets[i]!) i += 1;
    this.buckets[i]! += 1;
    this.sumSeconds += seconds;
    this.count += 1;
  }
}

type Sample = { labels: Record<string, string | number>; value: number; metricName?: string };

/** A metric prom-client's registry formats from `get()`: how RouteMetrics are exported. */
function routeCollector(
  registry: client.Registry,
  name: string,
  help: string,
  type: 'counter' | 'histogram',
  routes: Map<string, RouteMetrics>,
  samples: (route: RouteMetrics) => Sample[],
): void {
  const metric = {
    name,
    help,
    type,
    aggregator: 'sum',
    get: () => ({ name, help, type, aggregator: 'sum', values: [...routes.values()].flatMap(samples) }),
    reset: () => undefined,
  };
  registry.registerMetric(metric as unknown as client.Metric);
}

export class Metrics {
  readonly registry = new client.Registry();
  private sources: MetricSources = {};
  private textSource: (() => Promise<string>) | null = null;
  private readonly routes = new Map<string, RouteMetrics>();

  readonly commitDuration = new client.Histogram({
    name: 'flashstock_commit_duration_seconds',
    help: 'Duration of successful group commits (one multi-row INSERT and, with orders, its transaction)',
    buckets: commitSecondsBuckets,
    registers: [this.registry],
  });
  readonly commitBatchEvents = new client.Histogram({
    name: 'flashstock_commit_batch_events',
    help: 'Events per successful group commit',
    buckets: batchEventsBuckets,
    registers: [this.registry],
  });
  readonly commitsFailed = new client.Counter({
    name: 'flashstock_commits_failed_total',
    help: 'Failed group commits: fenced (another writer owns the seq), timeout (COMMIT_TIMEOUT_MS or no connection), error',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly rateLimited = new client.Counter({
    name: 'flashstock_rate_limited_total',
    help: 'Requests and stream messages refused with 429 rate_limited, by the key that ran out',
    labelNames: ['limit'] as const,
    registers: [this.registry],
  });
  readonly carts = new client.Counter({
    name: 'flashstock_carts_total',
    help: 'Cart requests answered, by outcome: held (every line held), or the problem code of the refusal (the first failing line)',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  readonly rateLimiterFallbacks = new client.Counter({
    name: 'flashstock_rate_limiter_fallbacks_total',
    help: 'Rate-limit checks answered by the in-memory insurance limiter because Redis was unreachable',
    registers: [this.registry],
  });

  /** Reservation answers seen by the front ends; `created` comes from the log (see reservationsCollect). */
  private readonly reservationAnswers = new Map<string, number>();
  private frontEndSuccesses = 0;
  private durableReservations = 0;
  /** Shard threads: their commits since the last report, fetched at scrape (null: commits are counted here). */
  private fetchTallies: (() => Promise<unknown>) | null = null;
  private replayedReported = 0;

  constructor(options: { defaultMetrics?: boolean } = {}) {
    if (options.defaultMetrics ?? true) {
      // Event-loop lag, GC, heap, handles, CPU, RSS: prom-client's standard names (no prefix).
      client.collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 10 });
      // prom-client also exports these totals as gauges named `_total`, which Prometheus naming
      // (and `promtool check metrics`) reserves for counters; the per-type gauges stay.
      for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
        this.registry.removeSingleMetric(name);
      }
    }
    for (const code of ['created', 'replayed']) this.reservationAnswers.set(code, 0);
    this.defineHttp();
    this.defineReservations();
    this.defineInfrastructureGauges();
    this.defineLiveGauges();
    this.defineCluster();
    this.defineThreadRoads();
    this.defineQueueGauges();
  }

  /**
   * Hand over the scrape-time sources. A gauge whose source does not report its
   * number (null) is not registered at all: an unlabelled gauge would otherwise
   * show a misleading 0.
   */
  provide(sources: MetricSources): void {
    this.sources = { ...this.sources, ...sources };
    this.registerOptionalGauges();
    this.registerForwardFrames();
  }

  /**
   * Registered once a cluster source exists: an unlabelled counter always
   * shows a sample, and a node running alone would show a misleading 0 where
   * the other cluster metrics show none.
   */
  private registerForwardFrames(): void {
    const name = 'flashstock_cluster_forward_frames_total';
    if (this.sources.cluster === undefined || this.registry.getSingleMetric(name) !== undefined) return;
    const self = this;
    new client.Counter({
      name,
      help: "Frames that carried this node's forwarded commands to their owners: commands sent ÷ frames is the commands per frame (one frame per owner per event-loop turn)",
      registers: [this.registry],
      collect() {
        this.reset();
        this.inc(self.sources.cluster?.().forwardFrames ?? 0);
      },
    });
  }

  /** The cached instruments of one route pattern and method. */
  route(route: string, method: string): RouteMetrics {
    const label = methodLabel(method);
    const key = `${label} ${route}`;
    let metrics = this.routes.get(key);
    if (metrics === undefined) {
      metrics = new RouteMetrics(route, label);
      this.routes.set(key, metrics);
    }
    return metrics;
  }

  /** Waiting-room answers (joins and polls) by the ticket's status. */
  readonly queueAnswers = new client.Counter({
    name: 'flashstock_queue_polls_total',
    help: 'Waiting-room tickets answered (joins and polls), by the status answered: waiting or admitted',
    labelNames: ['status'] as const,
    registers: [this.registry],
  });

  private readonly queueAnswerCounters = { waiting: this.queueAnswers.labels('waiting'), admitted: this.queueAnswers.labels('admitted') };

  queueAnswered(status: 'waiting' | 'admitted'): void {
    this.queueAnswerCounters[status].inc();
  }

  /** flashstock_queue_tickets{state}: tickets in the waiting rooms in memory, waiting and admitted now. */
  private defineQueueGauges(): void {
    const self = this;
    new client.Gauge({
      name: 'flashstock_queue_tickets',
      help: 'Waiting-room tickets of the SKUs in memory, by state: waiting, or admitted by now',
      labelNames: ['state'] as const,
      registers: [this.registry],
      collect(this: client.Gauge<'state'>) {
        this.reset();
        const tickets = self.sources.inventory?.().queueTickets;
        if (tickets === undefined) return;
        this.set({ state: 'waiting' }, tickets.waiting);
        this.set({ state: 'admitted' }, tickets.admitted);
      },
    });
  }

  /** A reservation request (HTTP or stream) was answered: ok, or refused with `code`. */
  reservationAnswered(ok: boolean, code?: string): void {
    if (ok) {
      this.frontEndSuccesses += 1;
      return;
    }
    const label = code ?? 'internal';
    this.reservationAnswers.set(label, (this.reservationAnswers.get(label) ?? 0) + 1);
  }

  /** The reservation answers counted here so far (a front-end thread's, handed to the main thread's registry). */
  reservationAnswerTotals(): { successes: number; refusals: Record<string, number> } {
    const refusals: Record<string, number> = {};
    for (const [code, count] of this.reservationAnswers) if (code !== 'created' && code !== 'replayed') refusals[code] = count;
    return { successes: this.frontEndSuccesses, refusals };
  }

  /** Answers a front-end thread counted since its last report (main thread: `replayed` needs them next to the commits). */
  addReservationAnswers(successes: number, refusals: Record<string, number>): void {
    this.frontEndSuccesses += successes;
    for (const [code, count] of Object.entries(refusals)) this.reservationAnswers.set(code, (this.reservationAnswers.get(code) ?? 0) + count);
  }

  /** A group commit succeeded (the outbox's observer). */
  commitSucceeded(events: readonly StockEvent[], seconds: number): void {
    this.commitObserved(events.length, reservedCount(events), seconds);
  }

  private commitObserved(batchEvents: number, reservedEvents: number, seconds: number): void {
    if (!Number.isNaN(seconds)) {
      this.commitDuration.observe(seconds);
      this.commitBatchEvents.observe(batchEvents);
    }
    this.durableReservations += reservedEvents;
  }

  /** Commits a shard thread made since its last report. */
  addTally(tally: CommitTally): void {
    for (let i = 0; i + 2 < tally.commits.length; i += 3) this.commitObserved(tally.commits[i]!, tally.commits[i + 1]!, tally.commits[i + 2]!);
    for (const [reason, count] of Object.entries(tally.failures)) this.commitsFailed.inc({ reason }, count);
  }

  commitFailed(reason: CommitFailureReason): void {
    this.commitsFailed.inc({ reason });
  }

  /** What the outbox reports each commit to. */
  outboxObserver(): OutboxMetrics {
    return {
      committed: (events, seconds) => this.commitSucceeded(events, seconds),
      failed: (error) => this.commitFailed(commitFailureReason(error)),
      addTally: (tally) => this.addTally(tally),
      tallySource: (fetch) => (this.fetchTallies = sampled(sampleTimeoutMs, 0, fetch)),
    };
  }

  contentType(): string {
    return this.registry.contentType;
  }

  async text(): Promise<string> {
    if (this.textSource !== null) return this.textSource();
    await this.fetchTallies?.();
    return this.registry.metrics();
  }

  /**
   * This registry as JSON, for the front-end threads' aggregate. Like `text`,
   * it first fetches the shard threads' reports, so that every gauge read from
   * them (holds, allocators, the waitlist, commits) is as of this scrape, not
   * of their last periodic report.
   */
  async json(): Promise<client.MetricObjectWithValues<client.MetricValue<string>>[]> {
    await this.fetchTallies?.();
    return this.registry.getMetricsAsJSON();
  }

  /** Front-end threads: `GET /metrics` answers the main thread's aggregate of every thread (src/threads). */
  serveTextFrom(source: () => Promise<string>): void {
    this.textSource = source;
  }

  // ------------------------------------------------------------ scrape-time metrics

  private defineHttp(): void {
    routeCollector(this.registry, 'flashstock_http_requests_total', 'HTTP responses by route pattern, method and status', 'counter', this.routes, (r) =>
      [...r.counts].map(([status, value]) => ({ labels: { route: r.route, method: r.method, status: String(status) }, value })),
    );
    const name = 'flashstock_http_request_duration_seconds';
    routeCollector(this.registry, name, 'Time from the request to its response, by route pattern and method', 'histogram', this.routes, (r) => {
      // A route never requested has no series yet (as prom-client does for labelled histograms).
      if (r.count === 0) return [];
      const labels = { route: r.route, method: r.method };
      const values: Sample[] = [];
      let cumulative = 0;
      for (let i = 0; i <= httpSecondsBuckets.length; i++) {
        cumulative += r.buckets[i]!;
        const le = i < httpSecondsBuckets.length ? httpSecondsBuckets[i]! : '+Inf';
        values.push({ metricName: `${name}_bucket`, labels: { ...labels, le }, value: cumulative });
      }
      values.push({ metricName: `${name}_sum`, labels, value: r.sumSeconds });
      values.push({ metricName: `${name}_count`, labels, value: r.count });
      return values;
    });
  }

  /**
   * `created` counts reservation events made durable (exact, from the commits);
   * refusals count front-end answers by code; `replayed` is the front ends'
   * successful answers that created nothing (a repeated Idempotency-Key):
   * successes − created. Both are counted synchronously before any reply can be
   * scraped, so the difference is exact between scrapes; it is kept monotonic.
   */
  private defineReservations(): void {
    const self = this;
    new client.Counter({
      name: 'flashstock_reservations_total',
      help: 'Reservation requests (HTTP and stream) by outcome: created, replayed, or the refusal code',
      labelNames: ['outcome'] as const,
      registers: [this.registry],
      // `replayed` is answers − commits: the commits made on shard threads are in first (`text`, `json`).
      collect() {
        self.replayedReported = Math.max(self.replayedReported, self.frontEndSuccesses - self.durableReservations);
        self.reservationAnswers.set('created', self.durableReservations);
        self.reservationAnswers.set('replayed', self.replayedReported);
        this.reset();
        for (const [outcome, count] of self.reservationAnswers) this.inc({ outcome }, count);
      },
    });
  }

  private registerOptionalGauges(): void {
    const inventory = this.sources.inventory?.();
    const gauge = (name: string, help: string, read: (stats: InventoryStats) => number | null) => {
      const self = this;
      if (inventory === undefined || read(inventory) === null || this.registry.getSingleMetric(name) !== undefined) return;
      new client.Gauge({
        name,
        help,
        registers: [this.registry],
        collect() {
          this.reset();
          const stats = self.sources.inventory?.();
          const value = stats === undefined ? null : read(stats);
          if (value !== null) this.set(value);
        },
      });
    };
    gauge('flashstock_pending_events', 'Events decided but not yet committed (limit: MAX_PENDING_EVENTS)', (s) => s.pendingEvents);
    gauge('flashstock_live_holds', 'Live holds (held or checking out) across every SKU of this process', (s) => s.liveHolds);
    gauge('flashstock_allocators', 'SKU allocators in memory in this process', (s) => s.allocators);
    gauge('flashstock_snapshots_written', 'Allocator snapshots written since start', (s) => s.snapshotsWritten);
    if (inventory?.waitlist != null) registerWaitlistMetrics(this.registry, () => this.sources.inventory?.().waitlist ?? null);
    const self = this;
    const redis = this.sources.live?.().feed.redis;
    if (redis !== undefined && redis !== 'none' && this.registry.getSingleMetric('flashstock_ws_redis_up') === undefined) {
      new client.Gauge({
        name: 'flashstock_ws_redis_up',
        help: 'Cross-node stock fan-out through Redis: 1 up, 0 down (absent without REDIS_URL)',
        registers: [this.registry],
        collect() {
          this.set(self.sources.live?.().feed.redis === 'up' ? 1 : 0);
        },
      });
    }
  }

  private defineInfrastructureGauges(): void {
    this.definePoolGauges();
    this.definePaymentMetrics();
    this.defineReadinessGauge();
  }

  private definePoolGauges(): void {
    const self = this;
    for (const [name, help, read] of [
      ['flashstock_pg_pool_connections', 'PostgreSQL pool connections, open', (p: PoolStats) => p.totalCount],
      ['flashstock_pg_pool_idle_connections', 'PostgreSQL pool connections, idle', (p: PoolStats) => p.idleCount],
      ['flashstock_pg_pool_waiting_clients', 'Callers waiting for a PostgreSQL pool connection', (p: PoolStats) => p.waitingCount],
    ] as const) {
      new client.Gauge({
        name,
        help,
        registers: [this.registry],
        collect() {
          this.reset();
          if (self.sources.pool !== undefined) this.set(read(self.sources.pool));
        },
      });
    }
  }

  private definePaymentMetrics(): void {
    const self = this;
    const queueSizes = sampled(sampleTimeoutMs, sampleMaxAgeMs, async () => {
      const { queues = [], queueSize } = self.sources;
      if (queueSize === undefined) return new Map<string, number>();
      const sizes = await Promise.all(queues.map(async (queue) => [queue, await queueSize(queue)] as const));
      return new Map(sizes.filter((entry): entry is readonly [string, number] => entry[1] !== null));
    });
    new client.Gauge({
      name: 'flashstock_payment_queue_jobs',
      help: 'Jobs waiting in each pg-boss queue (sampled at most every 2 s; a slow database never stalls a scrape)',
      labelNames: ['queue'] as const,
      registers: [this.registry],
      async collect() {
        const sizes = await queueSizes();
        this.reset();
        for (const [queue, size] of sizes ?? []) this.set({ queue }, size);
      },
    });

    totalsCounter(
      this.registry,
      'flashstock_payment_jobs_total',
      'Payment jobs by outcome: paid, declined, transient_failure (pg-boss retries), deferred (breaker open), dead_lettered (compensated)',
      'outcome',
      () => {
        const stats = self.sources.payments?.();
        if (stats === undefined) return undefined;
        return {
          paid: stats.paid,
          declined: stats.declined,
          transient_failure: stats.transientFailures,
          dead_lettered: stats.compensated,
          deferred: stats.deferred,
        };
      },
    );

    new client.Gauge({
      name: 'flashstock_payment_breaker_state',
      help: 'Payment provider circuit breaker: 1 for the current state (closed, half_open, open)',
      labelNames: ['state'] as const,
      registers: [this.registry],
      collect() {
        const current = self.sources.breakerState?.() ?? 'closed';
        for (const state of breakerStates) this.set({ state }, state === current ? 1 : 0);
      },
    });
  }

  private defineReadinessGauge(): void {
    const self = this;
    const readiness = sampled(sampleTimeoutMs, sampleMaxAgeMs, async () => (self.sources.ready ? self.sources.ready() : null));
    new client.Gauge({
      name: 'flashstock_ready',
      help: '1 when the service is ready (recovered and PostgreSQL answers), as /readyz decides; 0 otherwise',
      registers: [this.registry],
      async collect() {
        const ready = await readiness();
        this.reset();
        if (ready !== null && ready !== undefined) this.set(ready ? 1 : 0);
      },
    });
  }

  /** Front-end threads: which road their shard requests took (no samples with the front end on the main thread). */
  private defineThreadRoads(): void {
    totalsCounter(
      this.registry,
      'flashstock_thread_shard_requests_total',
      "Front-end threads' shard requests by the road they took: main_thread (the shards there, or on a cluster node those of other nodes or moving), shard_thread (straight to the shard's thread)",
      'via',
      () => this.sources.shardRequests?.(),
    );
  }

  /** Cluster nodes: forwarding and live-stock notices between nodes (no samples on a node running alone). */
  private defineCluster(): void {
    totalsCounter(
      this.registry,
      'flashstock_cluster_forwarded_total',
      "Commands this node forwarded to their shard's owner: sent, replied, timed_out (the outcome is then unknown)",
      'outcome',
      () => this.sources.cluster?.().forwarded,
    );
    totalsCounter(
      this.registry,
      'flashstock_cluster_notices_total',
      'Live-stock notices: to peers sent, coalesced (replaced by a later one), dropped; from peers received, stale',
      'outcome',
      () => this.sources.cluster?.().notices,
    );
    totalsCounter(
      this.registry,
      'flashstock_cluster_frames_refused_total',
      'Frames and messages from other nodes refused by the protocol decoder (never executed nor relayed), by reason',
      'reason',
      () => this.sources.frameRefusals?.(),
    );
  }

  private defineLiveGauges(): void {
    const self = this;
    const live = (read: (stats: LiveStats) => number | null) =>
      function (this: client.Gauge) {
        this.reset();
        const stats = self.sources.live?.();
        const value = stats === undefined ? null : read(stats);
        if (value !== null) this.set(value);
      };
    new client.Gauge({
      name: 'flashstock_ws_connections',
      help: 'Open /v1/stream WebSockets',
      registers: [this.registry],
      collect: live((s) => s.stream.connections),
    });
    new client.Gauge({
      name: 'flashstock_ws_lagging_connections',
      help: 'Stream sockets over the backpressure bound (off their topics until drained)',
      registers: [this.registry],
      collect: live((s) => s.stream.lagging),
    });
    totalsCounter(
      this.registry,
      'flashstock_ws_closed_total',
      'Stream sockets the server closed: slow (over the backpressure bound too long), policy (1008: flood, invalid messages)',
      'reason',
      () => {
        const stats = self.sources.live?.();
        return stats === undefined ? undefined : { slow: stats.stream.closedSlow, policy: stats.stream.closedPolicy };
      },
    );
  }
}

/**
 * A counter whose values are totals some part of the service already keeps
 * (payment and socket stats): each scrape exports them as they are, one
 * series per label value; no sample until the source exists.
 */
function totalsCounter(
  registry: client.Registry,
  name: string,
  help: string,
  label: string,
  read: () => Record<string, number> | undefined,
): void {
  new client.Counter({
    name,
    help,
    labelNames: [label],
    registers: [registry],
    collect() {
      const totals = read();
      if (totals === undefined) return;
      this.reset();
      for (const [value, total] of Object.entries(totals)) this.inc({ [label]: value }, total);
    },
  });
}
