import t from 'tap';
import { deepStrictEqual, equal } from 'node:assert/strict';
import fc from 'fast-check';
import { SkuAllocator, InvariantViolation } from '../src/allocator/allocator.js';
import { defaultAllocatorLimits, type SkuConfig, type StockEvent } from '../src/allocator/types.js';

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
  t.equal(allocator.shopperQuantity.get('alice'), 2);
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
  t.equal(allocator.shopperQuantity.get('alice'), undefined);
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
  t.equal(allocator.shopperQuantity.get('alice'), 2, 'paid units keep counting toward the limit');

  t.match(allocator.checkout({ reservationId: b.event.reservationId, shopperId: 'bob', orderId: 'o2', idempotencyKey: 'c1', paymentMethod: 'pm_ok' }, 2000), { ok: false, code: 'reservation_not_held' });
  const c = reserve('carol', 1, 'k1', 2_000_000);
  if (!c.ok || c.kind !== 'new') throw new Error('reserve failed');
  const c2 = allocator.checkout({ reservationId: c.event.reservationId, shopperId: 'carol', orderId: 'o2', idempotencyKey: 'c1', paymentMethod: 'pm_ok' }, 2_000_001);
  if (!c2.ok || c2.kind !== 'new') throw new Error('checkout failed');
  apply(c2.event);
  apply(allocator.settlePayment(c.event.reservationId, 'payment_failed', 2_000_002)!);
  t.equal(allocator.available, 8);
  t.equal(allocator.shopperQuantity.get('carol'), undefined);
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
            const before = allocator.shopperQuantity.get(shopper) ?? 0;
            const availableBefore = allocator.available;
            const d = allocator.reserve({ reservationId: `r${++n}`, shopperId: shopper, quantity: c.quantity, idempotencyKey: `k${c.key}` }, now);
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
            if (id === undefined) break;
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
            if (id === undefined) break;
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
