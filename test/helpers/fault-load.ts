import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import type { Test } from 'tap';
import { SkuAllocator } from '../../src/allocator/allocator.js';
import { readEvents } from '../../src/outbox/event-log.js';
import type { CallResult, TestService } from './service.js';

/**
 * Reservation load for fault tests, and the checks every fault must pass,
 * all read back from the event log. The load runs each SKU to sell-out; then
 * every answer must be a documented one (201, 409 sold_out, 503 with
 * Retry-After), every acknowledged (201) reservation is in the log and
 * readable, a replay of its key returns the original body, a key never holds
 * twice, a retry of a 503's (or an unanswered request's) key learns what
 * happened, the counts served equal a replay of the log, and the units the
 * log holds or sold are at most the stock (counted from the rows, not by the
 * allocator). An exception (a contract error, a bad body) is never "no
 * answer": only a connection-level failure to a process that is being killed
 * is, and only where the test says processes die.
 */

type Api = Pick<TestService, 'call' | 'reserve'>;

export interface Attempt {
  sku: string;
  shopper: string;
  key: string;
  quantity: number;
  /** HTTP status; 0: no answer (the connection died with the process); -1: an exception (see `error`). */
  status: number;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  body: any;
  retryAfter: string | null;
  error?: string;
}

export interface LoadOptions {
  /** Processes are being killed: a refused or reset connection is "no answer" (status 0), resolved later from the log. */
  processesDie?: boolean;
  /** Units per reservation for the i-th request of a worker (default 1); the SKU's per-shopper limit must allow it. */
  quantity?: (i: number) => number;
}

export interface Load {
  acknowledged(): number;
  /** Resolves once every one of the load's SKUs has refused a 1-unit request sold_out; throws after `timeoutMs`. */
  soldOut(timeoutMs: number): Promise<void>;
  stop(): Promise<Attempt[]>;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The error codes of a connection to a process that went away (refused, reset, closed mid-answer). */
const connectionLostCodes = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED']);

/** Whether `error` (a fetch failure or node:http error) is a connection-level failure, not a bad answer or a bug. */
export function isConnectionLost(error: unknown): boolean {
  for (let e = error as { code?: string; message?: string; cause?: unknown; errors?: unknown[] } | undefined; e; e = e.cause as typeof e) {
    if (e.code !== undefined && connectionLostCodes.has(e.code)) return true;
    if (e.message === 'socket hang up' || e.message === 'other side closed') return true;
    if (Array.isArray(e.errors) && e.errors.some(isConnectionLost)) return true;
  }
  return false;
}

function describe(error: unknown): string {
  const e = error as { message?: string; cause?: { code?: string; message?: string } };
  return `${e?.message ?? String(error)}${e?.cause ? ` (cause: ${e.cause.code ?? ''} ${e.cause.message ?? ''})` : ''}`;
}

/** Why an answer to a reservation is not a documented one, or null when it is. */
export function undocumentedReservationAnswer(a: Pick<Attempt, 'status' | 'body' | 'retryAfter' | 'error'>, processesDie: boolean): string | null {
  if (a.status === 201 && typeof a.body?.reservationId === 'string') return null;
  if (a.status === 409 && a.body?.code === 'sold_out') return null;
  if (a.status === 503 && (a.body?.code === 'unavailable' || a.body?.code === 'not_ready') && Number(a.retryAfter) > 0) return null;
  if (a.status === 0 && processesDie) return null;
  if (a.status === -1) return `exception: ${a.error}`;
  return `${a.status} ${JSON.stringify(a.body)} retry-after ${a.retryAfter}`;
}

/**
 * `workers` loops, each reserving as a new shopper with a new key, over `skus`
 * in turn, until stopped. Every answer is recorded as it came.
 */
export function startLoad(api: Api, skus: string | string[], workers: number, options: LoadOptions = {}): Load {
  const list = typeof skus === 'string' ? [skus] : skus;
  const quantityOf = options.quantity ?? (() => 1);
  const attempts: Attempt[] = [];
  // Shoppers are new in every load: a later load on the same SKU must not meet an earlier one's per-shopper limit.
  const loadId = randomUUID().slice(0, 8);
  const soldOut = new Set<string>();
  let acked = 0;
  let stopped = false;
  const worker = async (w: number) => {
    for (let i = 0; !stopped; i++) {
      const sku = list[(w + i) % list.length]!;
      const attempt: Attempt = { sku, shopper: `${sku}-${loadId}-w${w}-${i}`, key: randomUUID(), quantity: quantityOf(i), status: -1, body: null, retryAfter: null };
      let res: CallResult | undefined;
      try {
        res = await api.reserve(sku, attempt.shopper, attempt.quantity, attempt.key);
      } catch (error) {
        if (options.processesDie === true && isConnectionLost(error)) attempt.status = 0;
        else attempt.error = describe(error);
      }
      if (res !== undefined) Object.assign(attempt, { status: res.status, body: res.body, retryAfter: res.headers.get('retry-after') });
      attempts.push(attempt);
      if (attempt.status === 201) acked += 1;
      // A 1-unit request refused sold_out: nothing at all is left.
      if (attempt.status === 409 && attempt.body?.code === 'sold_out' && attempt.quantity === 1) soldOut.add(sku);
      // Sold out: a shopper still tries, at a calmer pace (the answers stay checked).
      if (attempt.status !== 201) await sleep(attempt.status === 409 ? 20 : attempt.status === 503 ? 25 : 50);
    }
  };
  const running = Array.from({ length: workers }, (_, w) => worker(w));
  return {
    acknowledged: () => acked,
    async soldOut(timeoutMs) {
      const started = Date.now();
      while (list.some((sku) => !soldOut.has(sku))) {
        if (Date.now() - started > timeoutMs) {
          throw new Error(`not sold out after ${timeoutMs} ms: ${list.filter((sku) => !soldOut.has(sku)).join(', ')} (${acked} acknowledged)`);
        }
        await sleep(20);
      }
    },
    async stop() {
      stopped = true;
      await Promise.all(running);
      return attempts;
    },
  };
}

/** Polls until a new reservation on `probeSku` is acknowledged (the service serves again by itself). */
export async function waitUntilServing(api: Api, probeSku: string, timeoutMs: number): Promise<number> {
  const started = Date.now();
  for (;;) {
    try {
      const res = await api.reserve(probeSku, `probe-${randomUUID()}`, 1);
      if (res.status === 201) return Date.now() - started;
      if (res.status !== 503) throw new Error(`probe answered ${res.status} ${JSON.stringify(res.body)}`);
    } catch (error) {
      if (!isConnectionLost(error)) throw error; // not listening yet, or reset: try again; anything else is a failure
    }
    if (Date.now() - started > timeoutMs) throw new Error(`not serving again after ${timeoutMs} ms`);
    await sleep(100);
  }
}

type Assert = Pick<Test, 'same' | 'equal' | 'ok'>;

interface LoggedReservation {
  id: string;
  shopper_id: string;
  idempotency_key: string;
}

async function loggedByKey(pool: pg.Pool, sku: string): Promise<Map<string, LoggedReservation[]>> {
  const rows = await pool.query<LoggedReservation>(
    `SELECT reservation_id::text AS id, shopper_id, idempotency_key FROM stock_events WHERE sku = $1 AND kind = 'reserved'`,
    [sku],
  );
  const byKey = new Map<string, LoggedReservation[]>();
  for (const row of rows.rows) {
    const slot = `${row.shopper_id}\u0000${row.idempotency_key}`;
    byKey.set(slot, [...(byKey.get(slot) ?? []), row]);
  }
  return byKey;
}

/** Units the log says are held or sold: every reserved row's quantity unless a later row gave it back. Counted in SQL, not by the allocator. */
export async function unitsTakenInLog(pool: pg.Pool, sku: string): Promise<number> {
  const rows = await pool.query<{ units: string | null }>(
    `SELECT sum(r.quantity) AS units FROM stock_events r
      WHERE r.sku = $1 AND r.kind = 'reserved'
        AND NOT EXISTS (SELECT 1 FROM stock_events x WHERE x.sku = r.sku AND x.reservation_id = r.reservation_id
                        AND x.kind IN ('released', 'expired', 'payment_failed'))`,
    [sku],
  );
  return Number(rows.rows[0]?.units ?? 0);
}

async function inParallel<T>(items: T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < items.length) await fn(items[next++]!);
  }));
}

/** Answers that are neither the documented success nor a documented refusal, with the answer itself (at most 5). */
export function undocumentedAnswers(attempts: Attempt[], processesDie: boolean): string[] {
  const wrong: string[] = [];
  for (const a of attempts) {
    const why = undocumentedReservationAnswer(a, processesDie);
    if (why !== null) wrong.push(`${a.sku} ${a.key}: ${why}`);
  }
  return wrong.slice(0, 5);
}

/**
 * Every check of the fault suite for one SKU, after the fault, once the
 * service serves again and the load sold the SKU out. `attempts` may hold
 * other SKUs' answers: only this SKU's are checked here.
 */
export async function verifyFromLog(
  t: Assert,
  api: Api,
  pool: pg.Pool,
  sku: string,
  stock: number,
  allAttempts: Attempt[],
  options: { processesDie?: boolean } = {},
): Promise<void> {
  const attempts = allAttempts.filter((a) => a.sku === sku);
  const processesDie = options.processesDie === true;
  t.same(undocumentedAnswers(attempts, processesDie), [], `${sku}: every one of ${attempts.length} answers is 201, 409 sold_out or 503 with Retry-After${processesDie ? ' (or none, from a killed process)' : ''}`);
  t.ok(attempts.some((a) => a.status === 409 && a.body?.code === 'sold_out'), `${sku}: the load ran it to sell-out (409 sold_out answered)`);

  const taken = await unitsTakenInLog(pool, sku);
  t.ok(taken <= stock, `${sku}: the log holds or sold ${taken} units of ${stock} (never more)`);
  const byKey = await loggedByKey(pool, sku);
  t.same([...byKey.values()].filter((rows) => rows.length > 1), [], `${sku}: no key holds twice`);
  const acked = attempts.filter((a) => a.status === 201);
  const missing = acked.filter((a) => byKey.get(`${a.shopper}\u0000${a.key}`)?.[0]?.id !== a.body.reservationId);
  t.same(missing.slice(0, 5), [], `${sku}: all ${acked.length} acknowledged reservations are in the log`);

  const badReplays: string[] = [];
  await inParallel(acked, 16, async (a) => {
    const replay = await api.reserve(sku, a.shopper, a.quantity, a.key);
    if (replay.status !== 201 || JSON.stringify(replay.body) !== JSON.stringify(a.body)) {
      badReplays.push(`${a.key}: ${replay.status} ${JSON.stringify(replay.body)}`);
    }
    const read = await api.call('GET', `/v1/reservations/${a.body.reservationId}`, { shopper: a.shopper });
    if (read.status !== 200) badReplays.push(`${a.body.reservationId}: GET ${read.status}`);
  });
  t.same(badReplays.slice(0, 5), [], `${sku}: same-key replays return the original bodies, and every acknowledged hold is readable`);

  // A 503 (or no answer at all) changed nothing, or the retry with its key says what it did; sold out now, so nothing new is made.
  const unanswered = attempts.filter((a) => a.status === 503 || a.status === 0);
  const wrongRetries: string[] = [];
  await inParallel(unanswered, 16, async (a) => {
    const logged = byKey.get(`${a.shopper}\u0000${a.key}`)?.[0];
    const retry = await api.reserve(sku, a.shopper, a.quantity, a.key);
    if (logged !== undefined && (retry.status !== 201 || retry.body.reservationId !== logged.id)) {
      wrongRetries.push(`${a.key}: logged ${logged.id}, retry ${retry.status} ${JSON.stringify(retry.body)}`);
    }
    if (logged === undefined && !(retry.status === 409 && retry.body.code === 'sold_out')) {
      wrongRetries.push(`${a.key}: not in the log, retry ${retry.status} ${JSON.stringify(retry.body)}`);
    }
  });
  t.same(wrongRetries.slice(0, 5), [], `${sku}: each of ${unanswered.length} unanswered or 503 keys, retried, learns its outcome`);

  const after = await loggedByKey(pool, sku);
  t.same([...after.values()].filter((rows) => rows.length > 1), [], `${sku}: still no key holds twice after the retries`);
  const events = [];
  for await (const page of readEvents(pool, { sku })) events.push(...page);
  const replayed = SkuAllocator.replay(sku, { maxQuantityPerRequest: 100, maxLiveHoldsPerSku: 1_000_000, maxEventsPerBatch: 4096 }, events);
  const view = await api.call('GET', `/v1/skus/${sku}`);
  t.same(
    { available: view.body.available, held: view.body.held, sold: view.body.sold },
    { available: replayed.available, held: replayed.held, sold: replayed.sold },
    `${sku}: the served counts are the log's`,
  );
  t.ok(view.body.held + view.body.sold <= stock && view.body.available >= 0, `${sku}: nothing oversold (held ${view.body.held} + sold ${view.body.sold} of ${stock})`);
  t.equal(view.body.available, 0, `${sku}: sold out at the end`);
}
