import t from 'tap';
import { createTestDatabase } from './helpers/db.js';
import { sharedTestClock } from './helpers/waits.js';
import { startTestService, type TestService } from './helpers/service.js';
import { SkuAllocator } from '../src/allocator/allocator.js';
import { defaultAllocatorLimits, type StockEvent } from '../src/allocator/types.js';
import { readEvents } from '../src/outbox/event-log.js';
import { encodeSnapshot, snapshotFormatVersion } from '../src/snapshot/codec.js';
import { insertSnapshotQuery } from '../src/snapshot/sql.js';
import { foldSku } from '../src/snapshot/load.js';

/**
 * A unit that comes back while the service is down (a hold or an offer that
 * runs out) still goes to the line: recovery expires it and offers it before
 * the service answers anyone. Recovered from the log alone, and from a snapshot
 * holding the waitlist (plus the log after it).
 */

function join(api: TestService, sku: string, shopper: string) {
  return api.call('POST', `/v1/skus/${sku}/waitlist`, { shopper, body: { quantity: 1 }, headers: { 'idempotency-key': `join-${shopper}` } });
}

function entry(api: TestService, id: string, shopper: string) {
  return api.call('GET', `/v1/waitlist/${id}`, { shopper });
}

async function start(t: { teardown(fn: () => unknown): void }, url: string, clock: ReturnType<typeof sharedTestClock>) {
  return startTestService(t, { expirySweepIntervalMs: 20 }, { nowMs: clock.nowMs }, url);
}

/** A snapshot of the SKU as the log has it now, as the snapshot worker would write it. */
async function writeSnapshot(api: TestService, sku: string): Promise<number> {
  const events: StockEvent[] = [];
  for await (const page of readEvents(api.service.pool, { sku })) events.push(...page);
  const allocator = SkuAllocator.replay(sku, defaultAllocatorLimits, events);
  await api.service.pool.query(insertSnapshotQuery({ sku, seq: allocator.seq, formatVersion: snapshotFormatVersion, state: encodeSnapshot(allocator), passivated: false }));
  return allocator.seq;
}

for (const from of ['log', 'snapshot'] as const) {
  t.test(`expiry during a restart goes to the line (recovered from the ${from})`, async (t) => {
    const db = await createTestDatabase(t);
    const clock = sharedTestClock(Date.now());
    const first = await start({ teardown: () => undefined }, db.url, clock);
    await first.putSku('R', { stock: 1, holdSeconds: 1, waitlistOfferSeconds: 60 });
    const held = await first.reserve('R', 'alice', 1);
    const bob = await join(first, 'R', 'bob');
    const carol = await join(first, 'R', 'carol');
    t.equal(bob.status + carol.status, 402);
    if (from === 'snapshot') {
      const seq = await writeSnapshot(first, 'R');
      const folded = await foldSku(first.service.pool, 'R', defaultAllocatorLimits);
      t.equal(folded.snapshotSeq, seq, 'recovery starts from the snapshot');
      t.equal(folded.allocator.waitlist.waitingCount, 2, 'with the line in it');
    }
    await first.service.stop();

    clock.advance(Date.parse(held.body.expiresAt) - clock.nowMs() + 100);
    const second = await start({ teardown: () => undefined }, db.url, clock);
    t.match(await second.call('GET', `/v1/reservations/${held.body.reservationId}`, { shopper: 'alice' }), { body: { status: 'expired' } });
    const offered = await entry(second, bob.body.waitlistId, 'bob');
    t.match(offered.body, { status: 'offered' }, 'the first in line has the unit as soon as the service answers');
    t.match(await second.reserve('R', 'erin', 1), { status: 409, body: { code: 'sold_out' } }, 'nobody outside the line');
    t.match(await entry(second, carol.body.waitlistId, 'carol'), { body: { status: 'waiting', position: 1 } });
    if (from === 'snapshot') {
      const seq = await writeSnapshot(second, 'R');
      t.equal((await foldSku(second.service.pool, 'R', defaultAllocatorLimits)).snapshotSeq, seq, 'a snapshot with a standing offer');
    }
    await second.service.stop();

    clock.advance(Date.parse(offered.body.offerExpiresAt) - clock.nowMs());
    const third = await start(t, db.url, clock);
    t.match(await entry(third, bob.body.waitlistId, 'bob'), { body: { status: 'expired' } }, 'the offer lapsed while down');
    t.match(await entry(third, carol.body.waitlistId, 'carol'), { body: { status: 'offered' } }, 'and went to the next in line');
    t.match(await third.reserve('R', 'erin', 1), { status: 409, body: { code: 'sold_out' } });
    t.match(await third.call('GET', '/v1/skus/R'), { body: { available: 0, held: 1, sold: 0 } });
  });
}
