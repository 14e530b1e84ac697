import t from 'tap';
import { deepStrictEqual, equal } from 'node:assert/strict';
import fc from 'fast-check';
import { SkuAllocator } from '../src/allocator/allocator.js';
import { defaultAllocatorLimits, type SkuConfig, type StockEvent } from '../src/allocator/types.js';
import { decodeSnapshot, encodeSnapshot } from '../src/snapshot/codec.js';

const limits = { ...defaultAllocatorLimits, maxQuantityPerRequest: 5, maxLiveHoldsPerSku: 50, maxEventsPerBatch: 16, waitlistMaxEntries: 4, reservationMemoryMs: 60_000 };
const config: SkuConfig = {
  stock: 3,
  perShopperLimit: 3,
  holdSeconds: 60,
  priceCents: 1000,
  currency: 'USD',
  startsAtMs: null,
  endsAtMs: null,
  waitlistOfferSeconds: 30,
};

let offersMadeInAll = 0;

/** The shell in miniature: decide, apply, keep the log, and offer returned units after every event. */
function harness(cfg: SkuConfig = config) {
  const allocator = new SkuAllocator('A', limits);
  const log: StockEvent[] = [];
  let n = 0;
  const offers: string[] = [];
  /** Apply what one command decided (all of it), then offer, as the shard does. */
  const apply = (decided: StockEvent | StockEvent[], now: number) => {
    for (const event of Array.isArray(decided) ? decided : [decided]) {
      allocator.apply(event);
      log.push(event);
    }
    for (const offer of allocator.offerToWaitlist(now, () => `o${++n}`)) {
      // First in line that fits: no waiting entry before it could have taken these units.
      const before = [...allocator.waitlist.waiting()];
      const at = before.findIndex((e) => e.waitlistId === offer.waitlistId);
      if (at < 0) throw new Error('offer to an entry that is not waiting');
      for (const earlier of before.slice(0, at)) {
        const has = allocator.shoppers.units(earlier.shopperId);
        if (earlier.quantity <= allocator.available && has + earlier.quantity <= allocator.config!.perShopperLimit) {
          throw new Error(`offer out of join order: ${earlier.waitlistId} fits before ${offer.waitlistId}`);
        }
      }
      offersMadeInAll += 1;
      allocator.apply(offer);
      log.push(offer);
      offers.push(offer.waitlistId);
    }
  };
  const configured = allocator.configure(cfg, 0);
  if (!configured.ok) throw new Error('configure failed');
  apply(configured.event, 0);
  const reserve = (shopperId: string, quantity: number, now = 1000) => {
    const d = allocator.reserve({ reservationId: `r${++n}`, shopperId, quantity, idempotencyKey: `k${n}` }, now);
    if (d.ok && d.kind === 'new') apply(d.event, now);
    return d;
  };
  const join = (shopperId: string, quantity: number, key = `w-${shopperId}`, now = 1000) => {
    const d = allocator.joinWaitlist({ waitlistId: `w${++n}`, shopperId, quantity, idempotencyKey: key }, now);
    if (d.ok && d.kind === 'new') apply(d.event, now);
    return d;
  };
  const release = (reservationId: string, now = 1000) => {
    const d = allocator.release(reservationId, allocator.reservations.get(reservationId)!.shopperId, now);
    if (d.ok && d.event) apply(d.event, now);
    return d;
  };
  const expire = (now: number) => {
    apply(allocator.expireDue(now), now);
  };
  return { allocator, log, offers, apply, reserve, join, release, expire };
}

function entryId(d: ReturnType<ReturnType<typeof harness>['join']>): string {
  if (!d.ok || d.kind !== 'new') throw new Error(`join refused: ${JSON.stringify(d)}`);
  return d.event.waitlistId;
}

t.test('joining: only while sold out, only with a waitlist, one open entry per shopper, within limits', async (t) => {
  const h = harness();
  t.match(h.join('w', 1), { ok: false, code: 'not_sold_out' });
  const r = h.reserve('a', 3);
  t.ok(r.ok);
  const first = entryId(h.join('b', 1));
  t.match(h.join('b', 1), { ok: true, kind: 'replay', entry: { waitlistId: first } }, 'same key: same entry');
  t.match(h.join('b', 2), { ok: false, code: 'idempotency_key_reused' });
  t.match(h.join('b', 1, 'other-key'), { ok: false, code: 'already_waitlisted' });
  t.match(h.join('a', 1), { ok: false, code: 'limit_exceeded' }, 'held units count toward the limit');
  t.match(h.join('c', 6), { ok: false, code: 'quantity_too_large' });
  for (const s of ['d', 'e', 'f']) entryId(h.join(s, 1));
  t.match(h.join('g', 1), { ok: false, code: 'waitlist_full' }, 'WAITLIST_MAX_ENTRIES open entries');
  t.equal(h.allocator.waitlist.position(h.allocator.waitlist.entries.get(first)!), 1);

  const plain = harness({ ...config, waitlistOfferSeconds: null });
  plain.reserve('a', 3);
  t.match(plain.join('b', 1), { ok: false, code: 'waitlist_not_enabled' });
});

t.test('a returned unit is offered in join order; a lapsed offer moves to the next; newcomers get sold_out', async (t) => {
  const h = harness({ ...config, stock: 2 });
  const r1 = h.reserve('a', 1);
  const r2 = h.reserve('a2', 1);
  if (!r1.ok || r1.kind !== 'new' || !r2.ok || r2.kind !== 'new') throw new Error('reserve failed');
  const b = entryId(h.join('b', 1));
  const c = entryId(h.join('c', 1));
  h.release(r1.event.reservationId, 2000);
  const wl = h.allocator.waitlist;
  t.equal(wl.entries.get(b)!.status, 'offered', 'first in line gets the unit');
  t.equal(wl.entries.get(c)!.status, 'waiting');
  t.equal(wl.position(wl.entries.get(c)!), 1, 'and the next moves up');
  t.equal(h.allocator.available, 0);
  t.match(h.reserve('z', 1, 2000), { ok: false, code: 'sold_out' }, 'nobody outside the line');

  const offer = h.allocator.reservations.get(wl.entries.get(b)!.reservationId!)!;
  t.equal(offer.expiresAtMs, 2000 + 30_000, 'held for waitlistOfferSeconds');
  h.expire(2000 + 30_000);
  t.equal(wl.entries.get(b)!.status, 'expired', 'the lapsed entry reads expired');
  t.equal(wl.entries.get(c)!.status, 'offered', 'the unit goes to the next');
  const cOffer = wl.entries.get(c)!.reservationId!;
  const d = h.allocator.checkout({ reservationId: cOffer, shopperId: 'c', orderId: 'o-c', idempotencyKey: 'ck', paymentMethod: 'pm' }, 40_000);
  if (!d.ok || d.kind !== 'new') throw new Error('checkout of an offer refused');
  h.apply(d.event, 40_000);
  t.equal(wl.entries.get(c)!.status, 'taken');
  t.same(wl.counters, { offersMade: 2, offersLapsed: 1, offersTaken: 1 });

  // The line is empty now: a unit that comes back is on sale again.
  h.release(r2.event.reservationId, 41_000);
  t.equal(h.allocator.available, 1);
  t.ok(h.reserve('z', 1, 41_000).ok);
});

t.test('a declined payment goes to the line; leaving releases a standing offer to the next', async (t) => {
  const h = harness({ ...config, stock: 1 });
  const r = h.reserve('a', 1);
  if (!r.ok || r.kind !== 'new') throw new Error('reserve failed');
  const co = h.allocator.checkout({ reservationId: r.event.reservationId, shopperId: 'a', orderId: 'o1', idempotencyKey: 'c1', paymentMethod: 'pm' }, 1000);
  if (!co.ok || co.kind !== 'new') throw new Error('checkout refused');
  h.apply(co.event, 1000);
  const b = entryId(h.join('b', 1));
  const c = entryId(h.join('c', 1));
  h.apply(h.allocator.settlePayment(r.event.reservationId, 'payment_failed', 1500)!, 1500);
  const wl = h.allocator.waitlist;
  t.equal(wl.entries.get(b)!.status, 'offered');
  const left = h.allocator.leaveWaitlist(b, 'b', 1600);
  if (!left.ok) throw new Error('leave refused');
  t.same(left.events.map((e) => e.kind), ['waitlist_left', 'released']);
  h.apply(left.events, 1600);
  t.equal(wl.entries.get(b)!.status, 'left');
  t.equal(wl.entries.get(c)!.status, 'offered');
  t.match(h.allocator.leaveWaitlist(b, 'b', 1700), { ok: true, events: [] }, 'leaving again changes nothing');
  t.match(h.allocator.leaveWaitlist(c, 'intruder', 1700), { ok: false, code: 'not_found' });
  // What a sweep waits for: the entry that left is forgotten reservationMemoryMs after it closed.
  t.equal(wl.nextForgetAtMs(60_000), 61_600, 'the closed entry is due reservationMemoryMs after it closed');
  wl.forgetClosed(61_599, 60_000);
  t.ok(wl.entries.has(b), 'not forgotten before');
  wl.forgetClosed(61_600, 60_000);
  t.notOk(wl.entries.has(b), 'forgotten then');
  t.equal(wl.nextForgetAtMs(60_000), Infinity, 'nothing closed is left');
});

t.test('a unit that fits nobody in line stays with the line; a later joiner that fits gets it', async (t) => {
  const h = harness({ ...config, stock: 2 });
  const r = h.reserve('a', 1);
  h.reserve('a2', 1);
  if (!r.ok || r.kind !== 'new') throw new Error('reserve failed');
  const b = entryId(h.join('b', 2));
  h.release(r.event.reservationId, 2000);
  t.equal(h.allocator.waitlist.entries.get(b)!.status, 'waiting', '1 unit does not fit 2');
  t.match(h.reserve('z', 1, 2000), { ok: false, code: 'sold_out' }, 'still not on sale');
  const c = entryId(h.join('c', 1, 'k', 2100));
  t.equal(h.allocator.waitlist.entries.get(c)!.status, 'offered', 'first entry that fits');
});

type Command =
  | { type: 'reserve'; shopper: number; quantity: number }
  | { type: 'join'; shopper: number; quantity: number }
  | { type: 'leave'; pick: number }
  | { type: 'release'; pick: number }
  | { type: 'advance'; ms: number }
  | { type: 'checkout'; pick: number }
  | { type: 'settle'; pick: number; paid: boolean }
  | { type: 'snapshot' };

const command: fc.Arbitrary<Command> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ type: fc.constant('reserve' as const), shopper: fc.nat(7), quantity: fc.integer({ min: 1, max: 2 }) }) },
  { weight: 4, arbitrary: fc.record({ type: fc.constant('join' as const), shopper: fc.nat(7), quantity: fc.integer({ min: 1, max: 3 }) }) },
  { weight: 1, arbitrary: fc.record({ type: fc.constant('leave' as const), pick: fc.nat() }) },
  { weight: 3, arbitrary: fc.record({ type: fc.constant('release' as const), pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ type: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 40_000 }) }) },
  { weight: 2, arbitrary: fc.record({ type: fc.constant('checkout' as const), pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ type: fc.constant('settle' as const), pick: fc.nat(), paid: fc.boolean() }) },
  { weight: 1, arbitrary: fc.constant({ type: 'snapshot' as const }) },
);

function step(h: ReturnType<typeof harness>, c: Command, now: number, ids: string[], entries: string[]): void {
  const a = h.allocator;
  const pickId = (pick: number) => ids[pick % Math.max(ids.length, 1)];
  switch (c.type) {
    case 'reserve': {
      const waiting = a.waitlist.waitingCount;
      const d = h.reserve(`s${c.shopper}`, c.quantity, now);
      if (d.ok && waiting > 0) throw new Error('a newcomer got a unit while someone waits');
      if (d.ok && d.kind === 'new') ids.push(d.event.reservationId);
      break;
    }
    case 'join': {
      const d = h.join(`s${c.shopper}`, c.quantity, `w${c.shopper}-${c.quantity}`, now);
      if (d.ok && d.kind === 'new') entries.push(d.event.waitlistId);
      break;
    }
    case 'leave': {
      const id = entries[c.pick % Math.max(entries.length, 1)];
      const entry = id === undefined ? undefined : a.waitlist.entries.get(id);
      if (entry === undefined) break;
      const d = a.leaveWaitlist(entry.waitlistId, entry.shopperId, now);
      if (d.ok) h.apply(d.events, now);
      break;
    }
    case 'release': {
      const id = pickId(c.pick) ?? [...a.waitlist.byReservation.keys()][0];
      if (id === undefined || !a.reservations.has(id)) break;
      h.release(id, now);
      break;
    }
    case 'advance':
      h.expire(now);
      break;
    case 'checkout': {
      const offered = [...a.waitlist.byReservation.keys()];
      const id = offered[c.pick % Math.max(offered.length, 1)] ?? pickId(c.pick);
      if (id === undefined || !a.reservations.has(id)) break;
      const d = a.checkout({ reservationId: id, shopperId: a.reservations.get(id)!.shopperId, orderId: `o${id}`, idempotencyKey: `c${id}`, paymentMethod: 'pm' }, now);
      if (d.ok && d.kind === 'new') {
        h.apply(d.event, now);
        ids.push(id);
      }
      break;
    }
    case 'settle': {
      const id = pickId(c.pick);
      const e = id === undefined ? null : a.settlePayment(id, c.paid ? 'committed' : 'payment_failed', now);
      if (e) h.apply(e, now);
      break;
    }
    case 'snapshot': {
      const restored = decodeSnapshot(encodeSnapshot(a), limits);
      deepStrictEqual(restored.snapshot(), a.snapshot());
      break;
    }
  }
}

t.test('property: with waitlist events, available + held + sold = stock, no newcomer skips the line, replay and snapshot rebuild the state', async (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 4 }), fc.array(command, { minLength: 10, maxLength: 150 }), (stock, commands) => {
      const h = harness({ ...config, stock, holdSeconds: 15, waitlistOfferSeconds: 10 });
      const a = h.allocator;
      let now = 1000;
      const ids: string[] = [];
      const entries: string[] = [];
      for (const c of commands) {
        if (c.type === 'advance') now += c.ms;
        step(h, c, now, ids, entries);
        a.assertInvariants();
        if (a.waitlist.waitingCount > 0 && a.available > 0) {
          // Units left over only when no waiting entry fits them.
          for (const e of a.waitlist.waiting()) {
            const has = a.shoppers.units(e.shopperId);
            if (e.quantity <= a.available && has + e.quantity <= a.config!.perShopperLimit) throw new Error('an entry that fits was passed over');
          }
        }
        let place = 0;
        for (const e of a.waitlist.waiting()) if (a.waitlist.position(e) !== ++place) throw new Error('position is not the place in line');
        let offered = 0;
        for (const e of a.waitlist.entries.values()) if (e.status === 'offered') offered += 1;
        if (offered !== a.waitlist.offeredCount) throw new Error('offered count drifted');
      }
      const replayed = SkuAllocator.replay('A', limits, h.log);
      deepStrictEqual(replayed.snapshot(), a.snapshot());
      equal(replayed.nextExpiryMs(), a.nextExpiryMs());
      const restored = decodeSnapshot(encodeSnapshot(a), limits);
      deepStrictEqual(restored.snapshot(), a.snapshot());
    }),
    { numRuns: 400 },
  );
  t.ok(offersMadeInAll > 50, `the sequences made offers (${offersMadeInAll})`);
  t.pass('400 random command sequences held every property');
});

t.test('positions stay right in a long line that shrinks from the front and the middle (tree growth and compaction)', async (t) => {
  const allocator = new SkuAllocator('L', { ...limits, waitlistMaxEntries: 5000, maxLiveHoldsPerSku: 10_000 });
  const apply = (e: StockEvent | StockEvent[]) => {
    for (const event of Array.isArray(e) ? e : [e]) allocator.apply(event);
  };
  const configured = allocator.configure({ ...config, stock: 0 }, 0);
  if (!configured.ok) throw new Error('configure failed');
  apply(configured.event);
  const ids: string[] = [];
  for (let i = 0; i < 3000; i++) {
    const d = allocator.joinWaitlist({ waitlistId: `w${i}`, shopperId: `s${i}`, quantity: 1, idempotencyKey: 'k' }, 1000);
    if (!d.ok || d.kind !== 'new') throw new Error('join refused');
    apply(d.event);
    ids.push(d.event.waitlistId);
  }
  const check = () => {
    let place = 0;
    for (const e of allocator.waitlist.waiting()) if (allocator.waitlist.position(e) !== ++place) return false;
    return place === allocator.waitlist.waitingCount;
  };
  t.ok(check(), '3000 in line');
  for (let i = 1; i < 3000; i += 3) {
    const d = allocator.leaveWaitlist(ids[i]!, `s${i}`, 2000);
    if (d.ok) apply(d.events);
  }
  t.ok(check(), 'a third left from the middle');
  // More stock: units are offered from the front of the line.
  let n = 0;
  const more = allocator.configure({ ...config, stock: 1500 }, 3000);
  if (!more.ok) throw new Error('configure failed');
  apply(more.event);
  for (;;) {
    const offers = allocator.offerToWaitlist(3000, () => `o${++n}`);
    if (offers.length === 0) break;
    apply(offers);
  }
  t.equal(allocator.waitlist.offeredCount, 1500);
  t.ok(check(), 'the front went to offers');
  t.equal(allocator.waitlist.position(allocator.waitlist.waiting().next().value!), 1);
  deepStrictEqual(decodeSnapshot(encodeSnapshot(allocator), limits).snapshot(), allocator.snapshot());
});

t.test('a snapshot of format 1 (before waiting rooms and waitlists) is still read', async (t) => {
  const cfg = { ...config, waitlistOfferSeconds: null };
  const h = harness(cfg);
  h.reserve('a', 2);
  const v2 = encodeSnapshot(h.allocator);
  // Format 2 has, after the config's sale window, a waiting-room flag (1 byte, 0: none), and ends with
  // the waiting-room section (0 tickets: 4 bytes) and the waitlist section (no offer seconds: 1 byte,
  // 0 entries, 0 closed: 4 + 4). Format 1 has none of them.
  const windowEnd =
    12 + (4 + Buffer.byteLength('A')) + 8 + 1 + 1 + 4 * 8 + (4 + Buffer.byteLength(cfg.currency)) +
    (cfg.startsAtMs === null ? 1 : 9) + (cfg.endsAtMs === null ? 1 : 9);
  t.equal(v2[windowEnd], 0, 'the waiting-room flag of a SKU without one');
  const v1 = Buffer.concat([v2.subarray(0, windowEnd), v2.subarray(windowEnd + 1, v2.length - 13)]);
  v1.writeUInt32LE(1, 4);
  v1.writeUInt32LE(v1.length - 12, 8);
  deepStrictEqual(decodeSnapshot(v1, limits).snapshot(), h.allocator.snapshot());
  t.pass('read as the same state');
});

t.test('an admin turning the waitlist off: units go on sale, entries keep their places and may leave', async (t) => {
  const h = harness({ ...config, stock: 1 });
  const r = h.reserve('a', 1);
  if (!r.ok || r.kind !== 'new') throw new Error('reserve failed');
  const b = entryId(h.join('b', 1));
  const off = h.allocator.configure({ ...config, stock: 1, waitlistOfferSeconds: null }, 1500);
  if (!off.ok) throw new Error('configure refused');
  h.apply(off.event, 1500);
  h.release(r.event.reservationId, 2000);
  t.equal(h.allocator.waitlist.entries.get(b)!.status, 'waiting', 'no offers while off');
  t.ok(h.reserve('z', 1, 2000).ok, 'the unit is on sale');
  t.match(h.join('c', 1), { ok: false, code: 'waitlist_not_enabled' });
  const left = h.allocator.leaveWaitlist(b, 'b', 2100);
  if (!left.ok) throw new Error('leave refused');
  h.apply(left.events, 2100);
  t.equal(h.allocator.waitlist.entries.get(b)!.status, 'left');
  deepStrictEqual(SkuAllocator.replay('A', limits, h.log).snapshot(), h.allocator.snapshot());
});
