import t from 'tap';
import { deepStrictEqual, equal, throws } from 'node:assert/strict';
import { isDeepStrictEqual } from 'node:util';
import fc from 'fast-check';
import { SkuAllocator, InvariantViolation } from '../src/allocator/allocator.js';
import { slotHash } from '../src/allocator/remembered-keys.js';
import { Shoppers } from '../src/allocator/shoppers.js';
import { defaultAllocatorLimits, type Reservation, type SkuConfig, type StockEvent } from '../src/allocator/types.js';

const limits = { ...defaultAllocatorLimits, maxQuantityPerRequest: 5, maxLiveHoldsPerSku: 50, maxEventsPerBatch: 16 };
const baseConfig: SkuConfig = {
  stock: 10,
  perShopperLimit: 3,
  holdSeconds: 60,
  priceCents: 1000,
  currency: 'USD',
  startsAtMs: null,
  endsAtMs: null,
};

/** Decide, then apply what was decided, keeping the log: the shell's loop in miniature. */
function harness(config: SkuConfig = baseConfig, allocatorLimits = limits) {
  const allocator = new SkuAllocator('A', allocatorLimits);
  const log: StockEvent[] = [];
  const apply = (event: StockEvent) => {
    allocator.apply(event);
    log.push(event);
  };
  const configured = allocator.configure(config, 0);
  if (!configured.ok) throw new Error('configure failed');
  apply(configured.event);
  let nextId = 0;
  const reserve = (shopperId: string, quantity: number, key: string, now = 1000) => {
    const decision = allocator.reserve({ reservationId: `r${++nextId}`, shopperId, quantity, idempotencyKey: key }, now);
    if (decision.ok && decision.kind === 'new') apply(decision.event);
    return decision;
  };
  return { allocator, log, apply, reserve };
}

t.test('reserve takes units from available and counts toward the shopper', async (t) => {
  const { allocator, reserve } = harness();
  const decision = reserve('alice', 2, 'k1');
  t.ok(decision.ok);
  t.equal(allocator.available, 8);
  t.equal(allocator.held, 2);
  t.equal(allocator.shoppers.units('alice'), 2);
  t.equal(allocator.seq, 2);
});

t.test('refusals: sold_out, limit_exceeded, quantity_too_large, too_many_holds, sale_not_open', async (t) => {
  const { reserve } = harness({ ...baseConfig, stock: 4, perShopperLimit: 3 });
  t.match(reserve('alice', 3, 'k1'), { ok: true });
  t.match(reserve('alice', 1, 'k2'), { ok: false, code: 'limit_exceeded' });
  t.match(reserve('bob', 2, 'k1'), { ok: false, code: 'sold_out' });
  t.match(reserve('bob', 6, 'k3'), { ok: false, code: 'quantity_too_large' });

  const few = harness({ ...baseConfig, stock: 100 }, { ...limits, maxLiveHoldsPerSku: 2 });
  t.match(few.reserve('a', 1, 'k'), { ok: true });
  t.match(few.reserve('b', 1, 'k'), { ok: true });
  t.match(few.reserve('c', 1, 'k'), { ok: false, code: 'too_many_holds' });

  const windowed = harness({ ...baseConfig, startsAtMs: 5000, endsAtMs: 9000 });
  t.match(windowed.reserve('a', 1, 'k', 4999), { ok: false, code: 'sale_not_open' });
  t.match(windowed.reserve('a', 1, 'k', 5000), { ok: true });
  t.match(windowed.reserve('b', 1, 'k', 9000), { ok: false, code: 'sale_not_open' });
});

t.test('idempotency: same key and request replays, different request is refused', async (t) => {
  const { allocator, reserve } = harness();
  const first = reserve('alice', 2, 'key');
  const again = reserve('alice', 2, 'key');
  t.match(again, { ok: true, kind: 'replay' });
  t.equal((again as { reservation: { reservationId: string } }).reservation.reservationId, (first as { event: { reservationId: string } }).event.reservationId);
  t.match(reserve('alice', 1, 'key'), { ok: false, code: 'idempotency_key_reused' });
  t.match(reserve('bob', 1, 'key'), { ok: true, kind: 'new' }, 'keys are per shopper');
  t.equal(allocator.held, 3);
});

t.test('restore: idempotency slots come back whether keys are distinct or shared by shoppers', async (t) => {
  for (const keyOf of [(shopper: string) => `key-${shopper}`, () => 'shared']) {
    const { allocator, reserve } = harness();
    const ids = new Map<string, string>();
    for (const shopper of ['alice', 'bob', 'carol']) {
      const decision = reserve(shopper, 1, keyOf(shopper));
      if (!decision.ok || decision.kind !== 'new') throw new Error('reserve failed');
      ids.set(shopper, decision.event.reservationId);
    }
    const restored = SkuAllocator.restore(allocator.exportState(), limits);
    t.same(restored.shoppers.slotEntries().sort(), allocator.shoppers.slotEntries().sort(), 'the same slots');
    t.equal(restored.shoppers.slotCount, 3);
    for (const [shopper, id] of ids) {
      const replay = restored.reserve({ reservationId: 'new', shopperId: shopper, quantity: 1, idempotencyKey: keyOf(shopper) }, 1_000);
      t.match(replay, { ok: true, kind: 'replay', reservation: { reservationId: id } }, `${shopper}'s key replays its own hold`);
    }
  }
});

t.test('restore: every shopper gets their units, in or out of reservation order; a state listing a shopper twice or at 0 units is refused', async (t) => {
  const { allocator, reserve, apply } = harness();
  const decisions = ['alice', 'bob', 'alice', 'carol'].map((shopper, i) => reserve(shopper, 1, `k${i}`));
  for (const d of decisions) if (!d.ok || d.kind !== 'new') throw new Error('reserve failed');
  const released = allocator.release((decisions[1] as { event: { reservationId: string } }).event.reservationId, 'bob', 2_000);
  if (!released.ok || released.event === null) throw new Error('release failed');
  apply(released.event);
  const state = allocator.exportState();
  t.same(state.shoppers, ['alice', 'carol'], 'bob holds nothing');
  const reversed = { ...state, shoppers: [...state.shoppers].reverse(), shopperQuantities: [...state.shopperQuantities].reverse() };
  for (const [name, s] of [['as listed', state], ['listed in reverse', reversed]] as const) {
    const restored = SkuAllocator.restore(s, limits);
    t.same([restored.shoppers.units('alice'), restored.shoppers.units('bob'), restored.shoppers.units('carol')], [2, 0, 1], name);
    t.equal(restored.shoppers.size, 3, `${name}: bob stays for his slot`);
  }
  t.throws(() => SkuAllocator.restore({ ...state, shoppers: ['alice', 'alice'] }, limits), InvariantViolation, 'a shopper twice');
  t.throws(() => SkuAllocator.restore({ ...state, shopperQuantities: [2, 0] }, limits), InvariantViolation, '0 units');
  t.throws(() => SkuAllocator.restore({ ...state, shopperQuantities: [2, 1.5] }, limits), InvariantViolation, 'a fraction');
});

t.test('release and expiry return stock and free the shopper limit', async (t) => {
  const { allocator, reserve, apply } = harness();
  const decision = reserve('alice', 3, 'k1');
  if (!decision.ok || decision.kind !== 'new') throw new Error('reserve failed');
  const id = decision.event.reservationId;
  t.match(allocator.release(id, 'mallory', 2000), { ok: false, code: 'not_found' }, 'another shopper cannot release');
  const release = allocator.release(id, 'alice', 2000);
  if (!release.ok || release.event === null) throw new Error('release failed');
  t.equal(release.event.kind, 'released');
  apply(release.event);
  t.equal(allocator.available, 10);
  t.equal(allocator.shoppers.units('alice'), 0);
  const repeat = allocator.release(id, 'alice', 3000);
  t.match(repeat, { ok: true, event: null }, 'repeating a release changes nothing');

  const second = reserve('alice', 3, 'k2', 10_000);
  if (!second.ok || second.kind !== 'new') throw new Error('reserve failed');
  t.equal(allocator.nextExpiryMs(), 70_000);
  t.same(allocator.expireDue(69_999), []);
  const expired = allocator.expireDue(70_000);
  t.equal(expired.length, 1);
  for (const event of expired) apply(event);
  t.equal(allocator.reservations.get(second.event.reservationId)?.status, 'expired');
  t.equal(allocator.available, 10);
  t.equal(allocator.nextExpiryMs(), null);

  const third = reserve('bob', 1, 'k3', 100_000);
  if (!third.ok || third.kind !== 'new') throw new Error('reserve failed');
  const late = allocator.release(third.event.reservationId, 'bob', 160_000);
  t.match(late, { ok: true, event: { kind: 'expired' } }, 'releasing after the hold ran out records an expiry');
});

t.test('configure: updates keep committed units, refuse going below them', async (t) => {
  const { allocator, reserve, apply } = harness();
  reserve('alice', 3, 'k1');
  t.match(allocator.configure({ ...baseConfig, stock: 2 }, 5), { ok: false, code: 'stock_below_committed' });
  const update = allocator.configure({ ...baseConfig, stock: 5 }, 5);
  if (!update.ok) throw new Error('update failed');
  t.equal(update.created, false);
  apply(update.event);
  t.equal(allocator.available, 2);
  t.equal(allocator.held, 3);
});

t.test('checkout freezes a hold; commit sells it, failure gives it back', async (t) => {
  const { allocator, reserve, apply } = harness();
  const a = reserve('alice', 2, 'k1');
  const b = reserve('bob', 1, 'k1');
  if (!a.ok || a.kind !== 'new' || !b.ok || b.kind !== 'new') throw new Error('reserve failed');
  const checkout = allocator.checkout({ reservationId: a.event.reservationId, shopperId: 'alice', orderId: 'o1', idempotencyKey: 'c1', paymentMethod: 'pm_ok' }, 2000);
  if (!checkout.ok || checkout.kind !== 'new') throw new Error('checkout failed');
  apply(checkout.event);
  t.match(
    allocator.checkout({ reservationId: a.event.reservationId, shopperId: 'alice', orderId: 'o9', idempotencyKey: 'c1', paymentMethod: 'pm_ok' }, 2001),
    { ok: true, kind: 'replay', orderId: 'o1' },
    'same checkout key: the same order',
  );
  t.match(
    allocator.checkout({ reservationId: a.event.reservationId, shopperId: 'alice', orderId: 'o9', idempotencyKey: 'c2', paymentMethod: 'pm_ok' }, 2001),
    { ok: false, code: 'reservation_not_held' },
    'another key on the same reservation: no second order',
  );
  t.match(
    allocator.checkout({ reservationId: a.event.reservationId, shopperId: 'alice', orderId: 'o9', idempotencyKey: 'c1', paymentMethod: 'pm_other' }, 2001),
    { ok: false, code: 'idempotency_key_reused' },
  );
  const due = allocator.expireDue(1_000_000);
  t.same(due.map((e) => e.kind === 'expired' && e.reservationId), [b.event.reservationId], 'a hold in checkout does not expire');
  for (const e of due) apply(e);
  t.match(allocator.release(a.event.reservationId, 'alice', 3000), { ok: false, code: 'reservation_not_held' });
  const committed = allocator.settlePayment(a.event.reservationId, 'committed', 3000)!;
  apply(committed);
  t.equal(allocator.sold, 2);
  t.equal(allocator.settlePayment(a.event.reservationId, 'committed', 3000), null, 'settling twice is a no-op');
  t.equal(allocator.shoppers.units('alice'), 2, 'paid units keep counting toward the limit');

  t.match(allocator.checkout({ reservationId: b.event.reservationId, shopperId: 'bob', orderId: 'o2', idempotencyKey: 'c1', paymentMethod: 'pm_ok' }, 2000), { ok: false, code: 'reservation_not_held' });
  const c = reserve('carol', 1, 'k1', 2_000_000);
  if (!c.ok || c.kind !== 'new') throw new Error('reserve failed');
  const c2 = allocator.checkout({ reservationId: c.event.reservationId, shopperId: 'carol', orderId: 'o2', idempotencyKey: 'c1', paymentMethod: 'pm_ok' }, 2_000_001);
  if (!c2.ok || c2.kind !== 'new') throw new Error('checkout failed');
  apply(c2.event);
  apply(allocator.settlePayment(c.event.reservationId, 'payment_failed', 2_000_002)!);
  t.equal(allocator.available, 8);
  t.equal(allocator.shoppers.units('carol'), 0);
});

t.test('apply refuses corrupt logs loudly', async (t) => {
  const { allocator, log } = harness();
  t.throws(() => allocator.apply({ ...log[0]!, seq: 5 }), InvariantViolation, 'gap in seq');
  t.throws(
    () =>
      allocator.apply({
        kind: 'reserved', sku: 'A', seq: 2, atMs: 0, reservationId: 'x', shopperId: 's', quantity: 11, expiresAtMs: 1, idempotencyKey: 'k',
      }),
    InvariantViolation,
    'reserving more than available',
  );
  t.throws(() => allocator.apply({ kind: 'released', sku: 'A', seq: 2, atMs: 0, reservationId: 'nope' }), InvariantViolation);
  t.throws(() => allocator.apply({ ...log[0]!, sku: 'B' }), InvariantViolation, 'wrong SKU');
});

// ------------------------------------------------------------------ properties

type Command =
  | { type: 'reserve'; shopper: number; quantity: number; key: number }
  | { type: 'release'; pick: number; asOwner: boolean }
  | { type: 'advance'; ms: number }
  | { type: 'configure'; stock: number; limit: number }
  | { type: 'checkout'; pick: number }
  | { type: 'settle'; pick: number; paid: boolean };

const command: fc.Arbitrary<Command> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ type: fc.constant('reserve' as const), shopper: fc.nat(7), quantity: fc.integer({ min: 1, max: 6 }), key: fc.nat(3) }) },
  { weight: 2, arbitrary: fc.record({ type: fc.constant('release' as const), pick: fc.nat(), asOwner: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ type: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 40_000 }) }) },
  { weight: 1, arbitrary: fc.record({ type: fc.constant('configure' as const), stock: fc.nat(30), limit: fc.integer({ min: 1, max: 6 }) }) },
  { weight: 2, arbitrary: fc.record({ type: fc.constant('checkout' as const), pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ type: fc.constant('settle' as const), pick: fc.nat(), paid: fc.boolean() }) },
);

t.test('property: any command sequence keeps the invariants, never oversells, and replays to the same state', async (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 25 }), fc.array(command, { minLength: 10, maxLength: 200 }), (stock, commands) => {
      const { allocator, log, apply } = harness({ ...baseConfig, stock, holdSeconds: 30 });
      let now = 1000;
      let n = 0;
      const ids: string[] = [];
      for (const c of commands) {
        switch (c.type) {
          case 'reserve': {
            const shopper = `s${c.shopper}`;
            const before = allocator.shoppers.units(shopper);
            const availableBefore = allocator.available;
            let d = allocator.reserve({ reservationId: `r${++n}`, shopperId: shopper, quantity: c.quantity, idempotencyKey: `k${c.key}` }, now);
            // The shell would look the key up in Postgres; deciding it afresh is the not-found answer.
            if (d.ok && d.kind === 'key_remembered') d = allocator.reserve({ reservationId: `r${n}`, shopperId: shopper, quantity: c.quantity, idempotencyKey: `k${c.key}` }, now, { keyChecked: true });
            if (d.ok && d.kind === 'new') {
              if (before + c.quantity > allocator.config!.perShopperLimit) throw new Error('limit passed');
              if (c.quantity > availableBefore) throw new Error('oversold');
              apply(d.event);
              ids.push(d.event.reservationId);
            }
            if (d.ok && d.kind === 'replay' && d.reservation.shopperId !== shopper) throw new Error('replayed another shopper');
            break;
          }
          case 'release': {
            const id = ids[c.pick % Math.max(ids.length, 1)];
            if (id === undefined || !allocator.reservations.has(id)) break; // never made, or settled and forgotten
            const owner = allocator.reservations.get(id)!.shopperId;
            const d = allocator.release(id, c.asOwner ? owner : 'intruder', now);
            if (!c.asOwner && d.ok) throw new Error('released by another shopper');
            if (d.ok && d.event) apply(d.event);
            break;
          }
          case 'advance':
            now += c.ms;
            for (const e of allocator.expireDue(now)) apply(e);
            break;
          case 'configure': {
            const d = allocator.configure({ ...allocator.config!, stock: c.stock, perShopperLimit: c.limit }, now);
            if (d.ok) apply(d.event);
            else if (c.stock >= allocator.held + allocator.sold) throw new Error('refused a valid configure');
            break;
          }
          case 'checkout': {
            const id = ids[c.pick % Math.max(ids.length, 1)];
            if (id === undefined || !allocator.reservations.has(id)) break;
            const d = allocator.checkout({ reservationId: id, shopperId: allocator.reservations.get(id)!.shopperId, orderId: `o${id}`, idempotencyKey: `c${c.pick % 3}`, paymentMethod: 'pm_ok' }, now);
            if (d.ok && d.kind === 'new') apply(d.event);
            break;
          }
          case 'settle': {
            const id = ids[c.pick % Math.max(ids.length, 1)];
            if (id === undefined) break;
            const e = allocator.settlePayment(id, c.paid ? 'committed' : 'payment_failed', now);
            if (e) apply(e);
            break;
          }
        }
        allocator.assertInvariants();
        if (allocator.held + allocator.sold > allocator.stock) throw new Error('oversold');
        let live = 0;
        for (const r of allocator.reservations.values()) if (r.status === 'held' || r.status === 'checking_out') live += r.quantity;
        if (live !== allocator.held) throw new Error('held does not match live reservations');
      }
      const replayed = SkuAllocator.replay('A', limits, log);
      deepStrictEqual(replayed.snapshot(), allocator.snapshot());
      equal(replayed.nextExpiryMs(), allocator.nextExpiryMs());
    }),
    { numRuns: 500 },
  );
  t.pass('500 random command sequences held every property');
});

/** What a sweep at `atMs` would do to a copy of `allocator` (the copy goes through its exported state): holds it would expire, reservations it would forget, and the state after. */
function sweptCopy(allocator: SkuAllocator, allocatorLimits: typeof limits, atMs: number) {
  const copy = SkuAllocator.restore(allocator.exportState(), allocatorLimits);
  const expired = copy.expireDue(atMs).length;
  const forgotten = copy.forgetSettled(atMs);
  return { expired, forgotten, snapshot: copy.snapshot() };
}

t.test('property: nextDueMs is when time alone first gives a sweep work (so a shard may skip a quiet SKU until then)', async (t) => {
  const memoryLimits = { ...limits, reservationMemoryMs: 20_000, idempotencyKeyTtlMs: 60_000 };
  fc.assert(
    fc.property(fc.array(command, { minLength: 5, maxLength: 80 }), (commands) => {
      const { allocator, apply } = harness({ ...baseConfig, stock: 20, holdSeconds: 30 }, memoryLimits);
      let now = 1000;
      let n = 0;
      const ids: string[] = [];
      for (const c of commands) {
        if (c.type === 'reserve') {
          const d = allocator.reserve({ reservationId: `r${++n}`, shopperId: `s${c.shopper}`, quantity: c.quantity, idempotencyKey: `k${c.key}` }, now, { keyChecked: true });
          if (d.ok && d.kind === 'new') {
            apply(d.event);
            ids.push(d.event.reservationId);
          }
        } else if (c.type === 'release' || c.type === 'checkout' || c.type === 'settle') {
          const reservation = allocator.reservations.get(ids[c.pick % Math.max(ids.length, 1)] ?? '');
          if (reservation === undefined) continue;
          const id = reservation.reservationId;
          if (c.type === 'release') {
            const d = allocator.release(id, reservation.shopperId, now);
            if (d.ok && d.event) apply(d.event);
          } else if (c.type === 'checkout') {
            const d = allocator.checkout({ reservationId: id, shopperId: reservation.shopperId, orderId: `o${id}`, idempotencyKey: `c${id}`, paymentMethod: 'pm_ok' }, now);
            if (d.ok && d.kind === 'new') apply(d.event);
          } else {
            const e = allocator.settlePayment(id, c.paid ? 'committed' : 'payment_failed', now);
            if (e) apply(e);
          }
        } else if (c.type === 'advance') {
          // A sweep at the new time: the shell's timer in miniature.
          now += c.ms;
          for (const e of allocator.expireDue(now)) apply(e);
          allocator.forgetSettled(now);
        }
        const due = allocator.nextDueMs();
        const unchanged = allocator.snapshot();
        const before = sweptCopy(allocator, memoryLimits, Number.isFinite(due) ? due - 1 : now + 1e9);
        if (before.expired !== 0 || before.forgotten !== 0) throw new Error(`a sweep before ${due} had work`);
        deepStrictEqual(before.snapshot, unchanged);
        if (!Number.isFinite(due)) continue;
        const at = sweptCopy(allocator, memoryLimits, due);
        if (at.expired === 0 && at.forgotten === 0 && isDeepStrictEqual(at.snapshot, unchanged)) throw new Error(`a sweep at ${due} had no work`);
      }
    }),
    { numRuns: 300 },
  );
  t.pass('300 random command sequences: no sweep work before nextDueMs, some at it');
});

// ------------------------------------------------------------------ memory bounded by live work

const shortMemory = { ...limits, reservationMemoryMs: 10_000, idempotencyKeyTtlMs: 100_000 };

t.test('a forgotten checkout keeps its key taken: checkout answers key_remembered (the shell checks its order) until the TTL', async (t) => {
  const { allocator, reserve, apply, log } = harness({ ...baseConfig, holdSeconds: 1000 }, shortMemory);
  const first = reserve('bob', 1, 'r1', 1000);
  if (!first.ok || first.kind !== 'new') throw new Error('reserve failed');
  const checkout = (reservationId: string, key: string, now: number, keyChecked = false) =>
    allocator.checkout({ reservationId, shopperId: 'bob', orderId: `o-${now}`, idempotencyKey: key, paymentMethod: 'pm' }, now, keyChecked ? { keyChecked } : undefined);
  const started = checkout(first.event.reservationId, 'c1', 2000);
  if (!started.ok || started.kind !== 'new') throw new Error('checkout failed');
  apply(started.event);
  apply(allocator.settlePayment(first.event.reservationId, 'committed', 3000)!);
  t.equal(allocator.forgetSettled(13_000), 1, 'the paid reservation leaves memory, and its checkout slot with it');
  t.equal(allocator.checkoutKeys.size, 0);

  const second = reserve('bob', 1, 'r2', 14_000);
  if (!second.ok || second.kind !== 'new') throw new Error('reserve failed');
  const id = second.event.reservationId;
  t.match(checkout(id, 'c1', 15_000), { ok: true, kind: 'key_remembered' }, 'the reused key is remembered: the shell must look its order up before deciding');
  t.match(checkout(id, 'c1', 15_000, true), { ok: true, kind: 'new' }, 'no order found (a hash collision): decided as new');
  t.match(checkout(id, 'c2', 15_000), { ok: true, kind: 'new' }, 'a fresh key is decided from memory alone');
  const replayed = SkuAllocator.replay('A', shortMemory, log);
  replayed.forgetSettled(15_000);
  t.match(replayed.checkout({ reservationId: id, shopperId: 'bob', orderId: 'o', idempotencyKey: 'c1', paymentMethod: 'pm' }, 15_000), { kind: 'key_remembered' }, 'replaying the log remembers it too (a restart)');
  const restored = SkuAllocator.restore(allocator.exportState(), shortMemory);
  t.match(restored.checkout({ reservationId: id, shopperId: 'bob', orderId: 'o', idempotencyKey: 'c1', paymentMethod: 'pm' }, 15_000), { kind: 'key_remembered' }, 'and so does a snapshot');
  t.match(checkout(id, 'c1', 3000 + 100_000 + 1000), { ok: true, kind: 'new' }, 'past the TTL after its order settled, the key is new again');
});

t.test('settled reservations leave memory reservationMemoryMs after they settled; paid units keep counting', async (t) => {
  const { allocator, reserve, apply } = harness({ ...baseConfig, holdSeconds: 1000 }, shortMemory);
  const a = reserve('alice', 1, 'ka', 1000);
  const b = reserve('bob', 2, 'kb', 1000);
  const c = reserve('carol', 1, 'kc', 1000);
  if (!a.ok || a.kind !== 'new' || !b.ok || b.kind !== 'new' || !c.ok || c.kind !== 'new') throw new Error('reserve failed');
  apply((allocator.release(a.event.reservationId, 'alice', 2000) as { event: StockEvent }).event);
  const checkout = allocator.checkout({ reservationId: b.event.reservationId, shopperId: 'bob', orderId: 'o1', idempotencyKey: 'c1', paymentMethod: 'pm' }, 3000);
  if (!checkout.ok || checkout.kind !== 'new') throw new Error('checkout failed');
  apply(checkout.event);
  apply(allocator.settlePayment(b.event.reservationId, 'committed', 4000)!);
  t.equal(allocator.reservations.get(a.event.reservationId)?.settledAtMs, 2000);
  t.equal(allocator.reservations.get(b.event.reservationId)?.settledAtMs, 4000);
  t.equal(allocator.reservations.get(c.event.reservationId)!.expiresAtMs - allocator.reservations.get(c.event.reservationId)!.reservedBeforeExpiryMs, 1000);

  t.equal(allocator.forgetSettled(11_999), 0, 'not yet');
  t.equal(allocator.forgetSettled(12_000), 1, 'the release, 10 s after it settled');
  t.notOk(allocator.reservations.has(a.event.reservationId));
  t.equal(allocator.shoppers.owner('alice', 'ka'), undefined);
  t.equal(allocator.shoppers.units('alice'), 0, 'a shopper at 0 units');
  t.equal(allocator.shoppers.size, 2, 'with no slot either, alice leaves the index (bob and carol stay)');
  t.equal(allocator.forgetSettled(14_000), 1, 'the paid one');
  t.notOk(allocator.checkoutKeys.has('bob\u0000c1'), 'its checkout key went with it');
  t.equal(allocator.shoppers.units('bob'), 2, 'paid units still count toward perShopperLimit');
  t.equal(allocator.shoppers.slotCount, 1, "only carol's key still has a slot");
  t.match(reserve('bob', 2, 'kb2', 15_000), { ok: false, code: 'limit_exceeded' });
  t.equal(allocator.reservations.size, 1, 'only the live hold is left');
  t.equal(allocator.rememberedKeys.size, 3, 'alice’s and bob’s reservation keys and bob’s checkout key, as hashes');
  t.equal(allocator.sold, 2);
  allocator.assertInvariants();

  // apply compacts by itself: an event far later forgets what is due.
  const d = reserve('dave', 1, 'kd', 20_000);
  if (!d.ok || d.kind !== 'new') throw new Error('reserve failed');
  apply((allocator.release(d.event.reservationId, 'dave', 21_000) as { event: StockEvent }).event);
  reserve('erin', 1, 'ke', 31_000);
  t.notOk(allocator.reservations.has(d.event.reservationId), 'forgotten by apply(event at 31 s)');
});

t.test('remembered keys: key_remembered until the TTL, then new; keyChecked decides as new', async (t) => {
  const { allocator, reserve, apply } = harness(baseConfig, shortMemory);
  const first = reserve('alice', 1, 'key', 1000);
  if (!first.ok || first.kind !== 'new') throw new Error('reserve failed');
  apply((allocator.release(first.event.reservationId, 'alice', 2000) as { event: StockEvent }).event);
  allocator.forgetSettled(12_000);
  t.notOk(allocator.reservations.has(first.event.reservationId));
  t.match(reserve('alice', 1, 'key', 13_000), { ok: true, kind: 'key_remembered' }, 'same request');
  t.match(reserve('alice', 2, 'key', 13_000), { ok: true, kind: 'key_remembered' }, 'another request: Postgres tells reused from replay');
  t.match(reserve('bob', 1, 'key', 13_000), { ok: true, kind: 'new' }, 'keys are per shopper');
  const checked = allocator.reserve({ reservationId: 'r-checked', shopperId: 'alice', quantity: 1, idempotencyKey: 'key' }, 13_000, { keyChecked: true });
  t.match(checked, { ok: true, kind: 'new' }, 'a collision, cleared by the shell, is decided as new');
  t.match(reserve('alice', 1, 'key', 100_999), { ok: true, kind: 'key_remembered' }, 'still inside the TTL');
  // Past the TTL (1 s + 100 s, rounded up to the second) the key is new again; the table forgets it too.
  t.match(reserve('carol', 1, 'c', 101_000), { ok: true, kind: 'new' });
  t.match(allocator.reserve({ reservationId: 'late', shopperId: 'alice', quantity: 1, idempotencyKey: 'key' }, 101_000), { ok: true, kind: 'new' });
  allocator.forgetSettled(200_000);
  t.equal(allocator.rememberedKeys.size, 0, 'expired generations dropped');
});

t.test('shoppers sharing one idempotency key: a slot each, each replayed and forgotten on its own', async (t) => {
  const { allocator, reserve, apply } = harness(baseConfig, shortMemory);
  const ids: string[] = [];
  for (const shopper of ['alice', 'bob', 'carol']) {
    const d = reserve(shopper, 1, 'same', 1000);
    if (!d.ok || d.kind !== 'new') throw new Error(`expected new, got ${JSON.stringify(d)}`);
    ids.push(d.event.reservationId);
  }
  t.equal(allocator.shoppers.slotCount, 3);
  t.match(reserve('bob', 1, 'same', 2000), { ok: true, kind: 'replay', reservation: { reservationId: ids[1] } });
  t.match(reserve('carol', 2, 'same', 2000), { ok: false, code: 'idempotency_key_reused' });
  apply((allocator.release(ids[1]!, 'bob', 3000) as { event: StockEvent }).event);
  allocator.forgetSettled(13_000);
  t.equal(allocator.shoppers.owner('bob', 'same'), undefined, "bob's slot freed with his reservation");
  t.equal(allocator.shoppers.owner('alice', 'same')?.reservationId, ids[0]);
  t.equal(allocator.shoppers.owner('carol', 'same')?.reservationId, ids[2]);
  t.match(reserve('alice', 1, 'same', 14_000), { ok: true, kind: 'replay', reservation: { reservationId: ids[0] } });
  apply((allocator.release(ids[0]!, 'alice', 15_000) as { event: StockEvent }).event);
  allocator.forgetSettled(25_000);
  t.same(allocator.shoppers.slotEntries(), [['carol\u0000same', ids[2]]]);
});

t.test('an in-memory key older than the TTL is new: the new reservation takes its slot over', async (t) => {
  const { allocator, reserve, apply } = harness({ ...baseConfig, holdSeconds: 1000 }, { ...shortMemory, idempotencyKeyTtlMs: 50_000 });
  const old = reserve('alice', 1, 'key', 1000);
  if (!old.ok || old.kind !== 'new') throw new Error('reserve failed');
  t.match(reserve('alice', 1, 'key', 50_999), { ok: true, kind: 'replay' });
  const fresh = reserve('alice', 1, 'key', 51_000);
  if (!fresh.ok || fresh.kind !== 'new') throw new Error(`expected new, got ${JSON.stringify(fresh)}`);
  t.equal(allocator.shoppers.owner('alice', 'key')?.reservationId, fresh.event.reservationId);
  t.equal(allocator.shoppers.units('alice'), 2);
  // The old one settles and is forgotten: the slot stays with the new one.
  apply((allocator.release(old.event.reservationId, 'alice', 52_000) as { event: StockEvent }).event);
  allocator.forgetSettled(62_000);
  t.equal(allocator.shoppers.owner('alice', 'key')?.reservationId, fresh.event.reservationId);
  t.match(reserve('alice', 1, 'key', 63_000), { ok: true, kind: 'replay', reservation: { reservationId: fresh.event.reservationId } });
});

t.test('archive: holds released, checkouts kept, reservations refused, configure reopens', async (t) => {
  const { allocator, reserve, apply } = harness({ ...baseConfig, holdSeconds: 10 });
  const a = reserve('alice', 1, 'ka', 1000);
  const b = reserve('bob', 1, 'kb', 1000);
  const c = reserve('carol', 1, 'kc', 5000);
  if (!a.ok || a.kind !== 'new' || !b.ok || b.kind !== 'new' || !c.ok || c.kind !== 'new') throw new Error('reserve failed');
  const checkout = allocator.checkout({ reservationId: b.event.reservationId, shopperId: 'bob', orderId: 'o1', idempotencyKey: 'c1', paymentMethod: 'pm' }, 2000);
  if (!checkout.ok || checkout.kind !== 'new') throw new Error('checkout failed');
  apply(checkout.event);
  t.notOk(allocator.canPassivate(12_000), 'open sale');
  const events = allocator.archive(12_000);
  if (!Array.isArray(events)) throw new Error('archive refused');
  t.same(events.map((e) => [e.kind, e.seq]), [['expired', 6], ['released', 7], ['archived', 8]], 'a hold whose time is up is recorded as expired');
  for (const e of events) apply(e);
  t.equal(allocator.archived, true);
  t.equal(allocator.held, 1, 'the checkout is still pending');
  t.notOk(allocator.canPassivate(12_000), 'a pending payment keeps it in memory');
  t.same(allocator.archive(12_001), [], 'archiving again decides nothing');
  t.match(reserve('dave', 1, 'kd', 13_000), { ok: false, code: 'sale_not_open', detail: 'the sale is archived' });
  t.match(reserve('alice', 1, 'ka', 13_000), { ok: true, kind: 'replay' }, 'a key replay still answers');
  apply(allocator.settlePayment(b.event.reservationId, 'committed', 14_000)!);
  t.ok(allocator.canPassivate(14_000));
  const reopen = allocator.configure(baseConfig, 15_000);
  if (!reopen.ok) throw new Error('configure refused');
  apply(reopen.event);
  t.equal(allocator.archived, false);
  t.notOk(allocator.canPassivate(15_000));
  t.match(reserve('dave', 1, 'kd', 16_000), { ok: true, kind: 'new' });
  t.match(new SkuAllocator('X', limits).archive(0), { ok: false, code: 'not_found' });

  const ended = harness({ ...baseConfig, endsAtMs: 20_000 });
  t.notOk(ended.allocator.canPassivate(19_999));
  t.ok(ended.allocator.canPassivate(20_000), 'an ended sale with nothing live');
  t.notOk(new SkuAllocator('Y', limits).canPassivate(0), 'never configured');
});

t.test('remembered keys cost at most 32 bytes each; the hash is MurmurHash3 over UTF-8', async (t) => {
  const { allocator, reserve, apply } = harness({ ...baseConfig, stock: 1_000_000, perShopperLimit: 1 }, { ...shortMemory, maxLiveHoldsPerSku: 1_000_000 });
  let collisions = 0;
  for (let i = 0; i < 100_000; i++) {
    let d = reserve(`shopper-${i}`, 1, `key-${i}`, 1000 + i);
    if (d.ok && d.kind === 'key_remembered') {
      // A 32-bit hash collides now and then (~1 in 100,000 here): the shell's Postgres check clears it.
      collisions += 1;
      d = allocator.reserve({ reservationId: `c${i}`, shopperId: `shopper-${i}`, quantity: 1, idempotencyKey: `key-${i}` }, 1000 + i, { keyChecked: true });
      if (d.ok && d.kind === 'new') apply(d.event);
    }
    if (!d.ok || d.kind !== 'new') throw new Error('reserve failed');
    apply((allocator.release(d.event.reservationId, `shopper-${i}`, 1000 + i) as { event: StockEvent }).event);
  }
  allocator.forgetSettled(111_000); // all settled 10 s ago; the oldest generation expires at 113 s
  t.equal(allocator.reservations.size, 0);
  t.ok(allocator.rememberedKeys.size > 100_000 - 10, 'every key remembered (colliding hashes share an entry)');
  const perKey = allocator.rememberedKeys.bytes / allocator.rememberedKeys.size;
  t.ok(perKey <= 32, `${perKey.toFixed(1)} bytes per remembered key`);
  t.ok(collisions < 10, `${collisions} hash collisions among 100,000 keys (a random 32-bit function: ~1)`);

  // MurmurHash3 x86 32-bit, seed 0, published vectors (the empty string's 0 becomes 1: 0 marks an empty slot).
  t.equal(slotHash(''), 1);
  t.equal(slotHash('a'), 0x3c2569b2);
  t.equal(slotHash('abcd'), 0x43ed676a);
  t.equal(slotHash('Hello, world!'), 0xc0363e43);
  t.equal(slotHash('The quick brown fox jumps over the lazy dog'), 0x2e4ff723);
  // Any string hashes as its UTF-8 bytes do (lone surrogates as U+FFFD, like Buffer.from).
  const reference = (s: string) => {
    const b = Buffer.from(s, 'utf8');
    let h = 0;
    const mix = (k: number) => {
      k = Math.imul(k, 0xcc9e2d51);
      k = (k << 15) | (k >>> 17);
      return Math.imul(k, 0x1b873593);
    };
    let i = 0;
    for (; i + 4 <= b.length; i += 4) {
      h ^= mix(b.readInt32LE(i));
      h = (h << 13) | (h >>> 19);
      h = (Math.imul(h, 5) + 0xe6546b64) | 0;
    }
    let k = 0;
    for (let j = b.length - 1; j >= i; j--) k = (k << 8) | b[j]!;
    if (b.length > i) h ^= mix(k);
    h ^= b.length;
    h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
    h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
    return (h ^ (h >>> 16)) >>> 0 || 1;
  };
  fc.assert(fc.property(fc.string({ unit: 'binary' }), (s) => slotHash(s) === reference(s)), { numRuns: 2000 });
});

t.test('shoppers against a model: one owner per (shopper, key) through take and release, lists and per-shopper Maps alike; units; no shopper kept with neither', async (t) => {
  // Few shoppers and many keys: a shopper's owners pass the list's bound (8) and become a Map, and back to fewer.
  const op = fc.record({
    kind: fc.constantFrom('take', 'take', 'take', 'release', 'releaseOld', 'units'),
    shopper: fc.constantFrom('ann', 'ann', 'bob', 'cy'),
    key: fc.integer({ min: 0, max: 14 }).map((k) => `k${k}`),
    units: fc.integer({ min: -3, max: 3 }),
  });
  fc.assert(
    fc.property(fc.array(op, { minLength: 100, maxLength: 300 }), (ops) => {
      const shoppers = new Shoppers();
      const model = new Map<string, Reservation>();
      const units = new Map<string, number>([['ann', 0], ['bob', 0], ['cy', 0]]);
      const taken: Reservation[] = [];
      let n = 0;
      for (const { kind, shopper, key, units: delta } of ops) {
        const slot = `${shopper}\u0000${key}`;
        if (kind === 'take') {
          const r = { reservationId: `r${n++}`, shopperId: shopper, idempotencyKey: key } as Reservation;
          equal(shoppers.take(r), model.get(slot), `take ${slot} returns the owner it displaced`);
          model.set(slot, r);
          taken.push(r);
        } else if (kind === 'units') {
          // Never below 0: a negative step larger than what the shopper has is the allocator's bug, refused.
          const total = units.get(shopper)! + delta;
          if (total < 0) {
            throws(() => shoppers.addUnits(shopper, delta), RangeError);
          } else {
            shoppers.addUnits(shopper, delta);
            units.set(shopper, total);
          }
        } else {
          // release: the current owner; releaseOld: any reservation ever taken (a no-op unless it still owns its slot).
          const r = kind === 'release' ? model.get(slot) : taken[(key.length * 7 + n) % Math.max(1, taken.length)];
          if (r === undefined) continue;
          shoppers.release(r);
          const own = `${r.shopperId}\u0000${r.idempotencyKey}`;
          if (model.get(own) === r) model.delete(own);
        }
        equal(shoppers.slotCount, model.size, 'slot count');
        const kept = [...units].filter(([s, u]) => u > 0 || [...model.values()].some((r) => r.shopperId === s));
        equal(shoppers.size, kept.length, 'shoppers kept: those with units or a slot');
        for (const s of ['ann', 'bob', 'cy']) {
          equal(shoppers.units(s), units.get(s), `units of ${s}`);
          for (let k = 0; k <= 14; k++) equal(shoppers.owner(s, `k${k}`), model.get(`${s}\u0000k${k}`), `owner ${s} k${k}`);
        }
      }
      deepStrictEqual(shoppers.slotEntries().sort(), [...model].map(([slot, r]) => [slot, r.reservationId]).sort());
      deepStrictEqual(shoppers.unitLists().shoppers.sort(), [...units].filter(([, u]) => u > 0).map(([s]) => s).sort());
    }),
    { numRuns: 300 },
  );
  t.pass('take, release, units and owner agree with the model');
});
