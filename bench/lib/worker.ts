import { performance } from 'node:perf_hooks';
import { Http1Connection, type ParsedResponse } from './http1.js';
import { encodeHistogram, newHistogram, recordMs, type Histogram } from './histogram.js';
import { IdList } from './ids.js';
import { isForwarded, skuOfRequest } from './placement.js';
import type { Op, OpStats, PlacementStats, RequestSpec, WorkerResult, WorkerTask, Workload } from './types.js';
import { scenarios } from '../scenarios/index.js';

/**
 * One load-generator thread (run by piscina): many keep-alive connections, one
 * request in flight on each. Closed loop: a connection sends its next request
 * as soon as the previous one answers. Open loop: requests are due at a fixed
 * rate and their latency counts from the time they were due, so a slow server
 * cannot hide its queue by slowing the generator down (coordinated omission).
 */

const epochNow = (): number => performance.timeOrigin + performance.now();
/** --to-owner / --to-others: draws per request before one aimed elsewhere is sent anyway (3 nodes need ~3 on average). */
const maxAimDraws = 50;

const reservationIdPattern = /"reservationId"\s*:\s*"/;
const codePattern = /"code"\s*:\s*"([^"]{1,80})"/;
/** What a cluster node says when a forwarded command's reply was lost (src/cluster/channel.ts). */
const unknownOutcomeText = 'outcome is unknown';

interface OpAccumulator {
  histogram: Histogram;
  count: number;
  statuses: Map<number, number>;
  codes: Map<string, number>;
}

function bump<K>(map: Map<K, number>, key: K): void {
  map.set(key, (map.get(key) ?? 0) + 1);
}

export function problemCode(body: string): string | null {
  if (body.length === 0) return null;
  const match = codePattern.exec(body);
  return match === null ? null : match[1]!;
}

async function waitForGo(sync: Int32Array): Promise<void> {
  Atomics.add(sync, 0, 1);
  while (Atomics.load(sync, 1) === 0) {
    const waited = (Atomics as unknown as { waitAsync(a: Int32Array, i: number, v: number, t: number): { async: boolean; value: Promise<string> | string } }).waitAsync(sync, 1, 0, 1000);
    if (waited.async) await waited.value;
  }
}

export default async function runWorker(task: WorkerTask): Promise<WorkerResult> {
  const scenario = scenarios[task.scenario];
  if (scenario === undefined) throw new Error(`unknown scenario ${task.scenario}`);
  const workload: Workload = scenario.createWorkload({
    params: task.params,
    workerIndex: task.workerIndex,
    workerCount: task.workerCount,
    hostHeader: task.hostHeader,
    jwtSecret: task.jwtSecret,
    runId: task.runId,
  });
  workload.prepare?.();

  const ops = new Map<Op, OpAccumulator>();
  const opStats = (op: Op): OpAccumulator => {
    let acc = ops.get(op);
    if (acc === undefined) {
      acc = { histogram: newHistogram(), count: 0, statuses: new Map(), codes: new Map() };
      ops.set(op, acc);
    }
    return acc;
  };
  opStats('reserve');
  // A cluster: latencies also by whether the receiving node owned the SKU's shard.
  const placement = task.placement;
  const split = placement === undefined ? null : { local: newHistogram(), forwarded: newHistogram(), localCount: 0, forwardedCount: 0 };
  const targetIndex = (connectionId: number): number => (task.firstConnection + connectionId) % task.targets.length;
  // The forwarded answer that makes a drawn request miss its aim (null: no aim).
  const missed = placement === undefined || task.aim === undefined ? null : task.aim === 'owner';

  const ids = new IdList(64 * 1024);
  let acknowledged = 0;
  let acknowledgedQuantity = 0;
  let badBodies = 0;
  let unanswered = 0;
  let unknownOutcomes = 0;
  let connectionErrors = 0;
  let timeouts = 0;
  let unsent = 0;
  let lastResponseAt = 0;
  let lastAcknowledgedAt = 0;
  const errorSamples: string[] = [];
  const sample = (text: string): void => {
    if (errorSamples.length < 5) errorSamples.push(text);
  };

  let stopping = false;
  let inFlight = 0;
  let resolveDone: (() => void) | null = null;
  const idle: Http1Connection[] = [];
  // Open loop: arrivals due while every connection was busy wait here with their due time.
  const backlog: number[] = [];
  let backlogHead = 0;

  const open = task.mode === 'open';
  let issueDue = (): void => {};

  const dispatch = (conn: Http1Connection, intendedAt: number): boolean => {
    let request = workload.next();
    // --to-owner / --to-others: draw again until the connection's node owns (does not own) the request's SKU.
    for (let draws = 1; request !== null && missed !== null && draws < maxAimDraws; draws++) {
      if (isForwarded(placement!, skuOfRequest(request.data), targetIndex(conn.id)) !== missed) break;
      request = workload.next();
    }
    if (request === null) return false;
    conn.request = request;
    const now = performance.now();
    conn.sentAt = now;
    conn.intendedAt = open ? intendedAt : now;
    inFlight++;
    conn.send(request.data);
    return true;
  };

  const checkDone = (): void => {
    if (inFlight === 0 && resolveDone !== null && (stopping || workload.finished())) {
      const resolve = resolveDone;
      resolveDone = null;
      resolve();
    }
  };

  /** Gives a free connection work, or parks it. */
  const release = (conn: Http1Connection): void => {
    if (conn.socket === null) return;
    if (!stopping) {
      if (open) {
        if (backlogHead < backlog.length) {
          const intended = backlog[backlogHead++]!;
          if (backlogHead > 4096 && backlogHead * 2 > backlog.length) {
            backlog.splice(0, backlogHead);
            backlogHead = 0;
          }
          if (dispatch(conn, intended)) return;
        }
      } else if (dispatch(conn, 0)) return;
    }
    idle.push(conn);
  };

  /** Closed loop: a response produced new work (e.g. a retry): wake parked connections. */
  const pump = (): void => {
    if (open || stopping) return;
    while (idle.length > 0) {
      const conn = idle.pop()!;
      if (conn.socket === null) continue;
      if (!dispatch(conn, 0)) {
        idle.push(conn);
        break;
      }
    }
  };

  const onResponse = (conn: Http1Connection, response: ParsedResponse): void => {
    const request = conn.request as RequestSpec;
    inFlight--;
    const now = performance.now();
    const acc = opStats(request.op);
    recordMs(acc.histogram, now - conn.intendedAt);
    acc.count++;
    bump(acc.statuses, response.status);
    lastResponseAt = now;
    if (split !== null) {
      const forwarded = isForwarded(placement!, skuOfRequest(request.data), targetIndex(conn.id));
      if (forwarded === true) {
        recordMs(split.forwarded, now - conn.intendedAt);
        split.forwardedCount++;
      } else if (forwarded === false) {
        recordMs(split.local, now - conn.intendedAt);
        split.localCount++;
      }
    }
    let code: string | null = null;
    if (response.status >= 400) {
      code = problemCode(response.body);
      if (code !== null) bump(acc.codes, code);
      if (response.status === 503 && response.body.includes(unknownOutcomeText)) unknownOutcomes++;
    } else if (request.op === 'reserve' && response.status === 201) {
      acknowledged++;
      acknowledgedQuantity += request.quantity;
      lastAcknowledgedAt = now;
      const match = reservationIdPattern.exec(response.body);
      if (match === null || !ids.pushUuid(response.body, match.index + match[0].length)) {
        badBodies++;
        sample(`201 without a reservationId: ${response.body.slice(0, 200)}`);
      }
    }
    workload.onResponse?.(request, response.status, code);
    const follow = workload.followUp?.(request, response.status, response.body) ?? null;
    if (follow !== null && conn.socket !== null) {
      // The same connection carries the flow's next step at once (even while stopping).
      conn.request = follow;
      conn.sentAt = now;
      conn.intendedAt = now;
      inFlight++;
      conn.send(follow.data);
    } else release(conn);
    if (open && !stopping) issueDue();
    pump();
    checkDone();
  };

  const reconnect = (conn: Http1Connection): void => {
    if (stopping) return;
    conn
      .connect()
      .then(() => release(conn))
      .catch((error: Error) => {
        connectionErrors++;
        sample(`reconnect: ${error.message}`);
        setTimeout(() => reconnect(conn), 100);
      });
  };

  const onFailure = (conn: Http1Connection, error: Error, requestLost: boolean): void => {
    connectionErrors++;
    sample(error.message);
    if (requestLost) {
      inFlight--;
      unanswered++;
      const request = conn.request as RequestSpec;
      workload.onResponse?.(request, 0, 'connection_lost');
    }
    const at = idle.indexOf(conn);
    if (at >= 0) idle.splice(at, 1);
    reconnect(conn);
    checkDone();
  };

  const connections: Http1Connection[] = [];
  for (let i = 0; i < task.connections; i++) {
    const target = task.targets[targetIndex(i)]!;
    connections.push(new Http1Connection(i, target.host, target.port, { onResponse, onFailure }));
  }
  // Connect in slices so a few thousand connections do not overrun the listen backlog.
  for (let i = 0; i < connections.length; i += 128) {
    await Promise.all(connections.slice(i, i + 128).map((c) => c.connect()));
  }

  await waitForGo(new Int32Array(task.sync));
  const elu0 = performance.eventLoopUtilization();
  const startedAt = epochNow();
  const t0 = performance.now();
  const deadline = task.durationMs > 0 ? t0 + task.durationMs : Infinity;

  const done = new Promise<void>((resolve) => {
    resolveDone = resolve;
  });

  // Per-request timeouts, checked in sweeps rather than one timer per request.
  const timeoutSweep = setInterval(() => {
    const now = performance.now();
    for (const conn of connections) {
      if (conn.inFlight && now - conn.sentAt > task.timeoutMs) {
        timeouts++;
        conn.abort(`request timed out after ${task.timeoutMs} ms`);
      }
    }
  }, Math.min(250, task.timeoutMs));

  let stopTimer: NodeJS.Timeout | null = null;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    if (open) unsent += backlog.length - backlogHead;
    checkDone();
  };
  if (deadline !== Infinity) stopTimer = setTimeout(stop, task.durationMs);

  if (open) {
    const interval = 1000 / task.rate;
    const keepWarmMs = 5000;
    for (const conn of connections) conn.sentAt = t0;
    let issued = 0;
    // Issues every arrival due by now. Called from a timer and after every
    // response, so arrivals leave close to their due time without a busy loop.
    issueDue = (): void => {
      const until = Math.min(performance.now(), deadline);
      while (t0 + issued * interval <= until) {
        const intended = t0 + issued * interval;
        issued++;
        // The most recently freed connection, unless one has idled long enough for the server to
        // close it (uWS: 10 s), which a low rate would otherwise run into at the end of the run.
        const conn = idle.length > 0 && until - idle[0]!.sentAt > keepWarmMs ? idle.shift() : idle.pop();
        if (conn === undefined) backlog.push(intended);
        else if (!dispatch(conn, intended)) idle.push(conn);
      }
    };
    const tick = (): void => {
      if (stopping) return;
      issueDue();
      const wait = t0 + issued * interval - performance.now();
      setTimeout(tick, wait > 1 ? Math.floor(wait) : 0);
    };
    for (const conn of connections) idle.push(conn);
    tick();
  } else {
    for (const conn of connections) release(conn);
    checkDone();
  }

  await done;
  clearInterval(timeoutSweep);
  if (stopTimer !== null) clearTimeout(stopTimer);
  const utilization = performance.eventLoopUtilization(elu0).utilization;
  for (const conn of connections) conn.close();

  const opsOut: Partial<Record<Op, OpStats>> = {};
  for (const [op, acc] of ops) {
    opsOut[op] = {
      histogram: encodeHistogram(acc.histogram),
      count: acc.count,
      statuses: Object.fromEntries([...acc.statuses].map(([k, v]) => [String(k), v])),
      codes: Object.fromEntries(acc.codes),
    };
  }
  const toEpoch = (t: number): number => (t === 0 ? 0 : performance.timeOrigin + t);
  const placementStats: PlacementStats | null =
    split === null
      ? null
      : { local: { histogram: encodeHistogram(split.local), count: split.localCount }, forwarded: { histogram: encodeHistogram(split.forwarded), count: split.forwardedCount } };
  return {
    workerIndex: task.workerIndex,
    ops: opsOut,
    reservationIds: ids.toArrayBuffer(),
    acknowledged,
    acknowledgedQuantity,
    badBodies,
    unanswered,
    unknownOutcomes,
    connectionErrors,
    timeouts,
    unsent,
    startedAt,
    lastResponseAt: toEpoch(lastResponseAt),
    lastAcknowledgedAt: toEpoch(lastAcknowledgedAt),
    utilization,
    metrics: workload.metrics?.() ?? {},
    ...(workload.transfer !== undefined ? { transfer: workload.transfer() } : {}),
    ...(placementStats !== null ? { placement: placementStats } : {}),
    errorSamples,
  };
}
