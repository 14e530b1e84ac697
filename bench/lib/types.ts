/** Shapes shared by the main thread, the load-generator workers and the report. */

export type Op = 'reserve' | 'checkout' | 'get' | 'other';

/** Cluster diagnostics (`--to-owner`, `--to-others`): requests only to their SKU's owner, or only to other nodes. */
export type Aim = 'owner' | 'other';

/** One request a workload wants sent. */
export interface RequestSpec {
  op: Op;
  /** The whole serialized HTTP/1.1 request. */
  data: string | Buffer;
  /** Units asked for (reservations). */
  quantity: number;
  /** Workload-defined (e.g. a shopper index), handed back in onResponse. */
  tag: number;
}

/** What a scenario builds inside each worker thread. */
export interface Workload {
  /** Before the clock starts: mint tokens, build buffers. */
  prepare?(): void;
  /** The next request, or null when there is nothing to send right now. */
  next(): RequestSpec | null;
  /** Finite workloads: true once no request will ever come again. */
  finished(): boolean;
  onResponse?(request: RequestSpec, status: number, code: string | null): void;
  /**
   * A request to send next on the same connection, right away (e.g. the checkout
   * of the reservation this response created): it is not an arrival of its own,
   * so its latency counts from now. Also called while the run is stopping, so a
   * started flow finishes.
   */
  followUp?(request: RequestSpec, status: number, body: string): RequestSpec | null;
  /** Binary data for the main thread (e.g. order ids from 202 bodies, 16 bytes each). */
  transfer?(): Record<string, ArrayBuffer>;
  /** Scenario-specific figures for the report (summed over threads). */
  metrics?(): Record<string, number>;
}

export interface WorkloadContext<P = unknown> {
  params: P;
  workerIndex: number;
  workerCount: number;
  /** Value of the Host header. */
  hostHeader: string;
  jwtSecret: string;
  runId: string;
}

export type LoadMode = 'closed' | 'open';

/** Where a load-generator connection goes. */
export interface Target {
  host: string;
  port: number;
}

/**
 * Which target owns each shard (a cluster's placement, read before the run):
 * a request for a SKU whose shard another target owns is forwarded by the
 * node that receives it.
 */
export interface Placement {
  shardCount: number;
  /** ownerTarget[shard]: index into WorkerTask.targets, -1 when no node owned it. */
  ownerTarget: number[];
}

export interface WorkerTask {
  /** Connection i of this thread goes to targets[(firstConnection + i) mod targets.length] (round robin over all threads). */
  targets: Target[];
  firstConnection: number;
  hostHeader: string;
  /** Set for a cluster: latencies are also split by local vs forwarded. */
  placement?: Placement;
  /**
   * With `placement`: which node a request goes to. 'owner': a request its connection's node does not
   * own is drawn again; 'other': one it does own is drawn again (up to `maxAimDraws` times).
   */
  aim?: Aim;
  connections: number;
  mode: LoadMode;
  /** Open loop: this thread's share of the arrival rate (requests/s). */
  rate: number;
  /** Stop issuing after this long; 0 = run until the workload is finished. */
  durationMs: number;
  timeoutMs: number;
  scenario: string;
  params: unknown;
  workerIndex: number;
  workerCount: number;
  jwtSecret: string;
  runId: string;
  /** [ready count, go flag] shared with the main thread to start all threads together. */
  sync: SharedArrayBuffer;
}

export interface OpStats {
  histogram: string;
  count: number;
  statuses: Record<string, number>;
  codes: Record<string, number>;
}

/** Latencies of requests for a SKU, split by whether the receiving node owned its shard. */
export interface PlacementStats {
  local: { histogram: string; count: number };
  forwarded: { histogram: string; count: number };
}

export interface WorkerResult {
  workerIndex: number;
  ops: Partial<Record<Op, OpStats>>;
  /** Reservation ids from 201 bodies, 16 bytes each. */
  reservationIds: ArrayBuffer;
  acknowledged: number;
  acknowledgedQuantity: number;
  /** 201 reservations whose body had no parseable reservationId. */
  badBodies: number;
  /** Requests sent whose outcome is unknown (timeout, connection lost). */
  unanswered: number;
  /** 503s saying the outcome is unknown (a forwarded command whose reply was lost): it may have run. */
  unknownOutcomes: number;
  connectionErrors: number;
  timeouts: number;
  /** Open loop: arrivals that were due but never sent before the end. */
  unsent: number;
  /** Epoch ms (fractional): clock start, first send, last response, last 201. */
  startedAt: number;
  lastResponseAt: number;
  lastAcknowledgedAt: number;
  /** Event-loop utilization of this thread during the run (0..1). */
  utilization: number;
  metrics: Record<string, number>;
  /** Workload.transfer(), when the workload has one. */
  transfer?: Record<string, ArrayBuffer>;
  placement?: PlacementStats;
  errorSamples: string[];
}
