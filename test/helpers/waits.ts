import { SharedClock } from '../../src/threads/shared-clock.js';
import type { TestService } from './service.js';

/** A test clock in shared memory, so shard threads (TEST_SHARD_THREADS) read the same time. */
export function sharedTestClock(startMs = Date.parse('2030-01-01T00:00:00Z')): { nowMs: () => number; advance(ms: number): void } {
  const shared = new SharedClock(startMs);
  return { nowMs: shared.nowMs, advance: (ms: number) => shared.advance(ms) };
}

/** The shards' counts now (with shard threads the getters otherwise show their last report). */
export async function shardCounts(api: TestService): Promise<TestService['service']['shards']> {
  const shards = api.service.shards;
  if ('refresh' in shards) await shards.refresh?.();
  return shards;
}

/** Polls `check` until it holds; past `timeoutMs` fails the test with `what` (generous: a loaded machine is slow). */
export async function waitUntil(t: { fail(message: string): void }, what: string, check: () => boolean | Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) {
      t.fail(`timed out waiting: ${what}`);
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
