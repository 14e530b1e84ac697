import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import type { Test } from 'tap';
import { SkuAllocator } from '../../src/allocator/allocator.js';
import { readEvents } from '../../src/outbox/event-log.js';
import type { CallResult, TestService } from './service.js';

/**
 * Reservation load for fault tests, and the checks every fault must pass,
 * all read back from the event log: every acknowledged (201) reservation is
 * there and readable, a replay of its key returns the original body, a key
 * never holds twice, a retry of a 503's key learns what happened, and the
 * counts served equal a replay of the log (nothing oversold).
 */

type Api = Pick<TestService, 'call' | 'reserve'>;

export interface Attempt {
  shopper: string;
  key: string;
  status: number;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  body: any;
}

export interface Load {
  acknowledged(): number;
  stop(): Promise<Attempt[]>;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** `workers` loops, each reserving 1 unit as a new shopper with a new key, until stopped. */
export function startLoad(api: Api, sku: string, workers: number): Load {
  const attempts: Attempt[] = [];
  let acked = 0;
  let stopped = false;
  const worker = async (w: number) => {
    for (let i = 0; !stopped; i++) {
      const shopper = `${sku}-w${w}-${i}`;
      const key = randomUUID();
      let res: CallResult;
      try {
        res = await api.reserve(sku, shopper, 1, key);
      } catch {
        attempts.push({ shopper, key, status: 0, body: null });
        await sleep(50);
        continue;
      }
      attempts.push({ shopper, key, status: res.status, body: res.body });
      if (res.status === 201) acked += 1;
      else await sleep(res.status === 503 ? 25 : 5);
    }
  };
  const running = Array.from({ length: workers }, (_, w) => worker(w));
  return {
    acknowledged: () => acked,
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
    } catch {
      /* not listening or connection reset: try again */
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

async function inParallel<T>(items: T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < items.length) await fn(items[next++]!);
  }));
}

/** Every check of the fault suite for one SKU, after the fault and once the service serves again. */
export async function verifyFromLog(t: Assert, api: Api, pool: pg.Pool, sku: string, stock: number, attempts: Attempt[]): Promise<void> {
  const byKey = await loggedByKey(pool, sku);
  t.same([...byKey.values()].filter((rows) => rows.length > 1), [], 'no key holds twice');
  const acked = attempts.filter((a) => a.status === 201);
  const missing = acked.filter((a) => byKey.get(`${a.shopper}\u0000${a.key}`)?.[0]?.id !== a.body.reservationId);
  t.same(missing, [], `all ${acked.length} acknowledged reservations are in the log`);

  const badReplays: string[] = [];
  await inParallel(acked, 16, async (a) => {
    const replay = await api.reserve(sku, a.shopper, 1, a.key);
    if (replay.status !== 201 || JSON.stringify(replay.body) !== JSON.stringify(a.body)) {
      badReplays.push(`${a.key}: ${replay.status} ${JSON.stringify(replay.body)}`);
    }
    const read = await api.call('GET', `/v1/reservations/${a.body.reservationId}`, { shopper: a.shopper });
    if (read.status !== 200) badReplays.push(`${a.body.reservationId}: GET ${read.status}`);
  });
  t.same(badReplays, [], 'same-key replays return the original bodies, and every acknowledged hold is readable');

  // A 503 (or no answer at all) changed nothing, or the retry with its key says what it did.
  const unanswered = attempts.filter((a) => a.status === 503 || a.status === 0);
  const wrongRetries: string[] = [];
  await inParallel(unanswered, 16, async (a) => {
    const logged = byKey.get(`${a.shopper}\u0000${a.key}`)?.[0];
    const retry = await api.reserve(sku, a.shopper, 1, a.key);
    if (logged !== undefined && (retry.status !== 201 || retry.body.reservationId !== logged.id)) {
      wrongRetries.push(`${a.key}: logged ${logged.id}, retry ${retry.status} ${JSON.stringify(retry.body)}`);
    }
    if (logged === undefined && retry.status !== 201 && retry.status !== 409) wrongRetries.push(`${a.key}: retry ${retry.status}`);
  });
  t.same(wrongRetries, [], `each of ${unanswered.length} unanswered or 503 keys, retried, learns its outcome`);

  const after = await loggedByKey(pool, sku);
  t.same([...after.values()].filter((rows) => rows.length > 1), [], 'still no key holds twice after the retries');
  const events = [];
  for await (const page of readEvents(pool, { sku })) events.push(...page);
  const replayed = SkuAllocator.replay(sku, { maxQuantityPerRequest: 100, maxLiveHoldsPerSku: 1_000_000, maxEventsPerBatch: 4096 }, events);
  const view = await api.call('GET', `/v1/skus/${sku}`);
  t.same(
    { available: view.body.available, held: view.body.held, sold: view.body.sold },
    { available: replayed.available, held: replayed.held, sold: replayed.sold },
    'the served counts are the log\'s',
  );
  t.ok(view.body.held + view.body.sold <= stock && view.body.available >= 0, `nothing oversold (held ${view.body.held} of ${stock})`);
}
