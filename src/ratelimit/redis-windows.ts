import type { Redis } from 'ioredis';

/**
 * Per-key request budgets shared through Redis, in fixed windows: a key's
 * window opens at its first request (a Redis key with the window as its TTL),
 * admits `points` requests, and every request is counted in it, admitted or
 * not. These are the semantics (and the keys, `prefix:key`) of
 * rate-limiter-flexible's Redis store, which the service used before.
 *
 * Why not that store: it sends one command per check, and each one costs the
 * service a command object, its encoding, a timer for the command timeout, a
 * promise chain and a result object (about 9 KB of heap and 14–33 µs of the
 * service's CPU per reservation with REDIS_URL set: docs/performance.md).
 * Here the checks of one event-loop turn go to Redis as one script call (per
 * `maxChecksPerCall`): one INCRBY per distinct key of the turn by its number of
 * requests, then each request is admitted by its place in that count. One
 * command, one timeout and one reply per turn; per check, a promise and its entry.
 *
 * A call Redis cannot answer (down, not ready, too slow) answers each of its
 * checks with the Error, and the caller falls back to the node's memory budget.
 */

/** Checks per script call: a turn's flood is cut into calls that each keep Redis busy for a short while only. */
export const maxChecksPerCall = 1_000;

/** What a check of this limiter hears: 0 admitted, or the ms until its window ends; an Error when Redis did not answer. */
export type RedisVerdict = number | Error;

interface Check {
  key: string;
  resolve: (verdict: RedisVerdict) => void;
}

/**
 * KEYS: the distinct keys of a batch; ARGV[1]: the window in seconds, then per
 * key its number of requests. Per key, as rate-limiter-flexible's script does:
 * open the window if there is none, count the requests, read its TTL (and give
 * a key without one the window). Returns [count after, TTL ms] per key.
 */
const takeScript = `
local out = {}
local seconds = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('set', key, 0, 'EX', seconds, 'NX')
  local consumed = redis.call('incrby', key, ARGV[i + 1])
  local ttl = redis.call('pttl', key)
  if ttl == -1 then
    redis.call('expire', key, seconds)
    ttl = 1000 * seconds
  end
  out[#out + 1] = consumed
  out[#out + 1] = ttl
end
return out
`;

/** The script's name on the ioredis client (defineCommand: EVALSHA, EVAL once per connection when Redis lacks it). */
const commandName = 'flashstockRateTake';

type TakeCommand = (numberOfKeys: number, ...args: (string | number)[]) => Promise<unknown>;

export class RedisWindows {
  private batch: Check[] = [];
  private scheduled = false;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly points: number,
    private readonly windowSeconds: number,
  ) {
    if (!(Number.isInteger(points) && points >= 1)) throw new RangeError(`points must be a positive integer, got ${points}`);
    if (!(Number.isInteger(windowSeconds) && windowSeconds >= 1)) throw new RangeError(`windowSeconds must be a positive integer, got ${windowSeconds}`);
    if (typeof (redis as unknown as Record<string, unknown>)[commandName] !== 'function') {
      redis.defineCommand(commandName, { lua: takeScript });
    }
  }

  /** Spends one request of `key`'s window, sent with the other checks of this event-loop turn. */
  take(key: string): Promise<RedisVerdict> {
    return new Promise((resolve) => {
      this.batch.push({ key, resolve });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(this.flush);
      }
    });
  }

  private readonly flush = (): void => {
    this.scheduled = false;
    const checks = this.batch;
    this.batch = [];
    for (let i = 0; i < checks.length; i += maxChecksPerCall) this.send(checks.slice(i, i + maxChecksPerCall));
  };

  private send(checks: Check[]): void {
    if (this.redis.status !== 'ready') {
      answerAll(checks, new Error(`Redis is not ready (${this.redis.status})`));
      return;
    }
    // Distinct keys in first-seen order, and each check's place among its key's requests.
    const index = new Map<string, number>();
    const keys: string[] = [];
    const counts: number[] = [];
    const slots = new Array<number>(checks.length);
    const places = new Array<number>(checks.length);
    for (let i = 0; i < checks.length; i++) {
      const key = `${this.prefix}:${checks[i]!.key}`;
      let slot = index.get(key);
      if (slot === undefined) {
        slot = keys.length;
        index.set(key, slot);
        keys.push(key);
        counts.push(0);
      }
      counts[slot]! += 1;
      slots[i] = slot;
      places[i] = counts[slot]!;
    }
    const take = (this.redis as unknown as Record<string, TakeCommand>)[commandName]!;
    take.call(this.redis, keys.length, ...keys, this.windowSeconds, ...counts).then(
      (reply) => this.answer(checks, slots, places, counts, reply),
      (error: unknown) => answerAll(checks, error instanceof Error ? error : new Error(String(error))),
    );
  }

  private answer(checks: Check[], slots: number[], places: number[], counts: number[], reply: unknown): void {
    if (!Array.isArray(reply) || reply.length !== counts.length * 2) {
      answerAll(checks, new Error('Redis answered the rate-limit script with an unexpected reply'));
      return;
    }
    for (let i = 0; i < checks.length; i++) {
      const slot = slots[i]!;
      const consumedAfter = Number(reply[slot * 2]);
      const ttlMs = Number(reply[slot * 2 + 1]);
      // This check's count in the window: what was there before the batch, plus its place in the batch.
      const consumed = consumedAfter - counts[slot]! + places[i]!;
      checks[i]!.resolve(consumed <= this.points ? 0 : Math.max(1, ttlMs));
    }
  }
}

function answerAll(checks: Check[], error: Error): void {
  for (const check of checks) check.resolve(error);
}
