import t from 'tap';
import { deepStrictEqual, equal, throws } from 'node:assert/strict';
import fc from 'fast-check';
import { SkuAllocator } from '../src/allocator/allocator.js';
import { defaultAllocatorLimits, type AllocatorLimits, type SkuConfig, type StockEvent } from '../src/allocator/types.js';
import { decodeSnapshot, encodeSnapshot, SnapshotDecoder, snapshotFormatVersion, SnapshotFormatError } from '../src/snapshot/codec.js';
import { LiveSnapshot } from '../src/snapshot/live.js';

/** Short memory and TTL so random runs forget reservations and drop remembered keys. */
const limits: AllocatorLimits = {
  ...defaultAllocatorLimits,
  maxQuantityPerRequest: 5,
  maxLiveHoldsPerSku: 50,
  maxEventsPerBatch: 16,
  reservationMemoryMs: 20_000,
  idempotencyKeyTtlMs: 90_000,
};
const baseConfig: SkuConfig = {
  stock: 10, perShopperLimit: 3, holdSeconds: 30, priceCents: 1000, currency: 'USD', startsAtMs: null, endsAtMs: null,
};

type Command =
  | { type: 'reserve'; shopper: number; quantity: number; key: number }
  | { type: 'release'; pick: number }
  | { type: 'advance'; ms: number }
  | { type: 'configure'; stock: number; limit: number }
  | { type: 'checkout'; pick: number }
  | { type: 'settle'; pick: number; paid: boolean }
  | { type: 'archive' }
  | { type: 'forget' };

const command: fc.Arbitrary<Command> = fc.oneof(
  { weight: 8, arbitrary: fc.record({ type: fc.constant('reserve' as const), shopper: fc.nat(5), quantity: fc.integer({ min: 1, max: 3 }), key: fc.nat(3) }) },
  { weight: 2, arbitrary: fc.record({ type: fc.constant('release' as const), pick: fc.nat() }) },
  { weight: 3, arbitrary: fc.record({ type: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 40_000 }) }) },
  { weight: 1, arbitrary: fc.record({ type: fc.constant('configure' as const), stock: fc.nat(30), limit: fc.integer({ min: 1, max: 6 }) }) },
  { weight: 2, arbitrary: fc.record({ type: fc.constant('checkout' as const), pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ type: fc.constant('settle' as const), pick: fc.nat(), paid: fc.boolean() }) },
  { weight: 1, arbitrary: fc.constant({ type: 'archive' as const }) },
  { weight: 1, arbitrary: fc.constant({ type: 'forget' as const }) },
);

/**
 * The shell's loop in miniature, over random commands: decide, apply, log. A
 * `key_remembered` answer is resolved the way the shell does it, from the log
 * (standing in for Postgres): a reservation with that shopper and key inside
 * the TTL is a replay, anything else is decided again with `keyChecked`.
 */
/** How often the runs reached the new paths, so the properties cannot pass by never getting there. */
const seen = { keyRemembered: 0, rememberedReplay: 0, forgotten: 0, archived: 0 };

export function run(stock: number, commands: Command[]) {
  const allocator = new SkuAllocator('A', limits);
  const log: StockEvent[] = [];
  const apply = (event: StockEvent) => {
    allocator.apply(event);
    log.push(event);
  };
  let now = 1_000;
  const configured = allocator.configure({ ...baseConfig, stock }, now);
  if (!configured.ok) throw new Error('configure failed');
  apply(configured.event);
  let n = 0;
  const ids: string[] = [];
  const pick = (i: number) => ids[i % Math.max(ids.length, 1)];
  for (const c of commands) {
    switch (c.type) {
      case 'reserve': {
        const cmd = { reservationId: `r${++n}`, shopperId: `s${c.shopper}`, quantity: c.quantity, idempotencyKey: `k${c.key}` };
        const availableBefore = allocator.available;
        let d = allocator.reserve(cmd, now);
        if (d.ok && d.kind === 'key_remembered') {
          seen.keyRemembered += 1;
          const original = log.find((e) => e.kind === 'reserved' && e.shopperId === cmd.shopperId && e.idempotencyKey === cmd.idempotencyKey && e.atMs + limits.idempotencyKeyTtlMs! > now);
          if (original !== undefined) {
            seen.rememberedReplay += 1;
            break; // the shell replays it from Postgres
          }
          d = allocator.reserve(cmd, now, { keyChecked: true });
        }
        if (d.ok && d.kind === 'new') {
          if (c.quantity > availableBefore) throw new Error('oversold');
          if (allocator.archived) throw new Error('reserved on an archived SKU');
          apply(d.event);
          ids.push(d.event.reservationId);
        }
        break;
      }
      case 'release': {
        const id = pick(c.pick);
        const r = id === undefined ? undefined : allocator.reservations.get(id);
        if (r === undefined) break;
        const d = allocator.release(r.reservationId, r.shopperId, now);
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
        break;
      }
      case 'checkout': {
        const id = pick(c.pick);
        const r = id === undefined ? undefined : allocator.reservations.get(id);
        if (r === undefined) break;
        const d = allocator.checkout({ reservationId: r.reservationId, shopperId: r.shopperId, orderId: `o${r.reservationId}`, idempotencyKey: `c${c.pick % 3}`, paymentMethod: 'pm_ok' }, now);
        if (d.ok && d.kind === 'new') apply(d.event);
        break;
      }
      case 'settle': {
        const id = pick(c.pick);
        if (id === undefined) break;
        const e = allocator.settlePayment(id, c.paid ? 'committed' : 'payment_failed', now);
        if (e) apply(e);
        break;
      }
      case 'archive': {
        const d = allocator.archive(now);
        if (!Array.isArray(d)) throw new Error('archive refused');
        for (const e of d) apply(e);
        if (!allocator.archived) throw new Error('not archived after archive');
        seen.archived += 1;
        break;
      }
      case 'forget':
        seen.forgotten += allocator.forgetSettled(now);
        break;
    }
    allocator.assertInvariants();
    let live = 0;
    for (const r of allocator.reservations.values()) if (r.status === 'held' || r.status === 'checking_out') live += r.quantity;
    if (live !== allocator.held) throw new Error('held does not match live reservations');
    if (allocator.held + allocator.sold > allocator.stock) throw new Error('oversold');
  }
  return { allocator, log, now };
}

function snapshotAfter(allocator: SkuAllocator, nowMs: number) {
  allocator.forgetSettled(nowMs);
  return allocator.snapshot();
}

t.test('property: snapshot at any point + replay of the suffix = full replay = the live state', async (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 25 }), fc.array(command, { minLength: 5, maxLength: 150 }), fc.nat(), (stock, commands, cut) => {
      const { allocator, log, now } = run(stock, commands);
      const at = cut % (log.length + 1);
      const prefix = SkuAllocator.replay('A', limits, log.slice(0, at));
      const restored = decodeSnapshot(encodeSnapshot(prefix), limits);
      deepStrictEqual(restored.snapshot(), prefix.snapshot(), 'decode(encode(x)) = x');
      for (const event of log.slice(at)) restored.apply(event);
      const full = SkuAllocator.replay('A', limits, log);
      const expected = snapshotAfter(full, now);
      deepStrictEqual(snapshotAfter(restored, now), expected);
      deepStrictEqual(snapshotAfter(allocator, now), expected);
      equal(restored.nextExpiryMs(), full.nextExpiryMs());
      equal(restored.canPassivate(now), full.canPassivate(now));
    }),
    { numRuns: 400 },
  );
  t.pass('400 random runs: snapshot + suffix, full replay and live state agree');
  t.ok(seen.keyRemembered > 0 && seen.rememberedReplay > 0 && seen.forgotten > 0 && seen.archived > 0, `paths reached: ${JSON.stringify(seen)}`);
});

/**
 * `bytes` pushed into a streaming decoder in chunks cut at `cuts` (offsets, any order, duplicates allowed),
 * each chunk in one scratch buffer overwritten after every push, as the slices' COPY reader reuses its own.
 */
function decodeInChunks(bytes: Buffer, cuts: number[]): SkuAllocator {
  const decoder = new SnapshotDecoder(bytes.length, limits);
  const scratch = Buffer.alloc(bytes.length);
  let at = 0;
  for (const cut of [...cuts.map((c) => c % (bytes.length + 1)), bytes.length].sort((a, b) => a - b)) {
    const n = bytes.copy(scratch, 0, at, cut);
    decoder.push(scratch.subarray(0, n));
    scratch.fill(0xee);
    at = cut;
  }
  return decoder.finish();
}

t.test('property: a snapshot decoded as its bytes arrive, in any chunks, = the snapshot decoded whole', async (t) => {
  let cutItems = 0;
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 25 }), fc.array(command, { minLength: 5, maxLength: 150 }), fc.array(fc.nat(), { maxLength: 40 }), (stock, commands, cuts) => {
      const { allocator } = run(stock, commands);
      const bytes = encodeSnapshot(allocator);
      const whole = decodeSnapshot(bytes, limits);
      deepStrictEqual(decodeInChunks(bytes, cuts).snapshot(), whole.snapshot());
      if (allocator.reservations.size > 0 && cuts.length > 0) cutItems += 1;
    }),
    { numRuns: 300 },
  );
  t.ok(cutItems > 100, `${cutItems} runs cut a snapshot with reservations`);
  const { allocator } = run(20, [
    { type: 'reserve', shopper: 1, quantity: 2, key: 1 },
    { type: 'reserve', shopper: 2, quantity: 1, key: 1 },
    { type: 'checkout', pick: 0 },
    { type: 'release', pick: 1 },
    { type: 'advance', ms: 25_000 },
    { type: 'forget' },
    { type: 'reserve', shopper: 3, quantity: 1, key: 2 },
  ]);
  const bytes = encodeSnapshot(allocator);
  const expected = decodeSnapshot(bytes, limits).snapshot();
  // One byte at a time: every item is cut at every one of its bytes.
  t.same(decodeInChunks(bytes, Array.from({ length: bytes.length }, (_, i) => i)).snapshot(), expected, 'byte by byte');
  // The stream is held to the length it was announced with, like a whole buffer to its header.
  for (const cut of [0, 11, 12, 40, bytes.length - 1]) {
    const decoder = new SnapshotDecoder(bytes.length, limits);
    decoder.push(bytes.subarray(0, cut));
    t.throws(() => decoder.finish(), SnapshotFormatError, `ends after ${cut} of ${bytes.length} bytes`);
  }
  const longer = new SnapshotDecoder(bytes.length, limits);
  longer.push(bytes);
  t.throws(() => longer.push(Buffer.alloc(1)), SnapshotFormatError, 'a byte past the announced length');
  const finished = new SnapshotDecoder(bytes.length, limits);
  finished.push(bytes);
  finished.finish();
  t.throws(() => finished.push(bytes), RangeError, 'bytes after finish');
  const wrongLength = new SnapshotDecoder(bytes.length + 1, limits);
  t.throws(() => wrongLength.push(bytes), SnapshotFormatError, 'a header that disagrees with the announced length');
});

t.test("a shopper's name is decoded once: the shoppers' list reuses their reservations' strings", async (t) => {
  const many: AllocatorLimits = { ...limits, maxLiveHoldsPerSku: 1_000 };
  const a = new SkuAllocator('A', many);
  const configured = a.configure({ ...baseConfig, stock: 1_000 }, 1_000);
  if (!configured.ok) throw new Error('configure');
  a.apply(configured.event);
  const reserve = (shopperId: string, n: number) => {
    const d = a.reserve({ reservationId: `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`, shopperId, quantity: 1, idempotencyKey: `k${n}` }, 2_000);
    if (!d.ok || d.kind !== 'new') throw new Error(`reserve ${shopperId}`);
    a.apply(d.event);
    return d.event.reservationId;
  };
  for (let i = 0; i < 300; i++) reserve(`shopper-${i}`, i);
  const first = encodeSnapshot(a);
  const decoder = new SnapshotDecoder(first.length, many);
  decoder.pushWhole(first);
  deepStrictEqual(decoder.finish().snapshot(), a.snapshot());
  t.equal(decoder.sharedShopperNames, 300, 'one hold each: every name shared');
  // Runs of reservations whose shoppers hold nothing now (released), a shopper with a second hold, a non-ASCII name.
  for (let i = 300; i < 340; i++) {
    const id = reserve(`gone-${i}`, i);
    const released = a.release(id, `gone-${i}`, 2_000);
    if (!released.ok || released.event === null) throw new Error('release');
    a.apply(released.event);
  }
  reserve('shopper-0', 340);
  reserve('ünïcode', 341);
  reserve('after', 342);
  const bytes = encodeSnapshot(a);
  const again = new SnapshotDecoder(bytes.length, many);
  again.pushWhole(bytes);
  deepStrictEqual(again.finish().snapshot(), a.snapshot(), 'the same state whatever was shared');
  t.equal(again.sharedShopperNames, 300, 'past 40 reservations of nobody, the cursor stays: the two names after them are decoded');
});

t.test('property: a live snapshot encoded in slices while later events are applied = encodeSnapshot at its seq', async (t) => {
  let changedMidway = 0;
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 25 }),
      fc.array(command, { minLength: 5, maxLength: 150 }),
      fc.nat(),
      fc.integer({ min: 1, max: 4 }),
      (stock, commands, cut, perSlice) => {
        const { log, now } = run(stock, commands);
        const at = cut % (log.length + 1);
        const allocator = SkuAllocator.replay('A', limits, log.slice(0, at));
        const expected = encodeSnapshot(allocator);
        const live = new LiveSnapshot(allocator, perSlice);
        const before = JSON.stringify(allocator.snapshot());
        // The shard's order: one slice per turn, events applied (and memory swept) in between.
        let done = false;
        for (const event of log.slice(at)) {
          done = done || live.step();
          live.beforeApply(event);
          allocator.apply(event);
          allocator.forgetSettled(event.atMs);
        }
        allocator.forgetSettled(now);
        if (JSON.stringify(allocator.snapshot()) !== before && !done) changedMidway += 1;
        while (!live.step());
        equal(live.seq, at === 0 ? 0 : log[at - 1]!.seq);
        deepStrictEqual(live.finish(), expected);
      },
    ),
    { numRuns: 400 },
  );
  t.ok(changedMidway > 20, `the state changed under ${changedMidway} of 400 open snapshots`);
});

t.test('property: memory stays bounded by live work (every settled reservation past its memory time is gone)', async (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 25 }), fc.array(command, { minLength: 5, maxLength: 150 }), (stock, commands) => {
      const { allocator, now } = run(stock, commands);
      allocator.forgetSettled(now);
      for (const r of allocator.reservations.values()) {
        if (r.settledAtMs !== null && r.settledAtMs + limits.reservationMemoryMs! <= now) throw new Error('kept a settled reservation');
      }
      for (const [, , second] of allocator.snapshot().rememberedKeys) {
        if (second * 1000 + limits.idempotencyKeyTtlMs! + allocator.rememberedKeys.generationMs <= now) throw new Error('kept an expired key');
      }
    }),
    { numRuns: 300 },
  );
  t.pass('300 random runs');
});

t.test('encode/decode round-trips a state with remembered keys, checkouts and paid units', async (t) => {
  const { allocator, now } = run(20, [
    { type: 'reserve', shopper: 1, quantity: 2, key: 1 },
    { type: 'reserve', shopper: 2, quantity: 1, key: 1 },
    { type: 'checkout', pick: 0 },
    { type: 'settle', pick: 0, paid: true },
    { type: 'release', pick: 1 },
    { type: 'advance', ms: 25_000 },
    { type: 'reserve', shopper: 3, quantity: 1, key: 2 },
    { type: 'forget' },
  ]);
  t.equal(allocator.reservations.size, 1, 'the two settled reservations left memory');
  t.equal(allocator.rememberedKeys.size, 3, 'the two reservations\' keys and the paid checkout\'s key');
  t.equal(allocator.shoppers.units('s1'), 2, 'paid units still count toward the limit');
  const bytes = encodeSnapshot(allocator);
  const decoded = decodeSnapshot(bytes, limits);
  t.same(decoded.snapshot(), allocator.snapshot());
  t.equal(decoded.nextExpiryMs(), allocator.nextExpiryMs());
  t.match(decoded.reserve({ reservationId: 'x', shopperId: 's1', quantity: 2, idempotencyKey: 'k1' }, now), { ok: true, kind: 'key_remembered' });
  t.ok(bytes.length < 400, `compact: ${bytes.length} bytes`);
});

t.test('a snapshot of an unknown format version, or damaged, is refused loudly', async (t) => {
  const { allocator } = run(10, [
    { type: 'reserve', shopper: 1, quantity: 2, key: 1 },
    { type: 'reserve', shopper: 2, quantity: 1, key: 1 },
    { type: 'release', pick: 1 },
    { type: 'advance', ms: 25_000 },
    { type: 'forget' },
  ]);
  const bytes = encodeSnapshot(allocator);
  const future = Buffer.from(bytes);
  future.writeUInt32LE(snapshotFormatVersion + 1, 4);
  t.throws(() => decodeSnapshot(future, limits), { name: 'SnapshotFormatError', message: new RegExp(`version ${snapshotFormatVersion + 1} is unknown`) });
  const alien = Buffer.from(bytes);
  alien.write('JUNK', 0);
  t.throws(() => decodeSnapshot(alien, limits), SnapshotFormatError);
  t.throws(() => decodeSnapshot(Buffer.alloc(3), limits), SnapshotFormatError);
  // Every truncation is refused, whether or not the header length is patched to match.
  for (let cut = 0; cut < bytes.length; cut++) {
    const truncated = Buffer.from(bytes.subarray(0, cut));
    throws(() => decodeSnapshot(truncated, limits), SnapshotFormatError);
    if (cut >= 12) {
      truncated.writeUInt32LE(cut - 12, 8);
      throws(() => decodeSnapshot(truncated, limits), SnapshotFormatError, `patched truncation at ${cut}`);
    }
  }
  const longer = Buffer.concat([bytes, Buffer.alloc(1)]);
  t.throws(() => decodeSnapshot(longer, limits), SnapshotFormatError);
  // Parts that disagree (a total against the reservations) are refused, never loaded.
  const state = allocator.exportState();
  t.throws(() => SkuAllocator.restore({ ...state, held: state.held + 1, available: state.available - 1 }, limits), { name: 'InvariantViolation' });
  t.ok(state.reservations.length > 0, 'the state has reservations to damage');
  const twice = { ...state, reservations: [...state.reservations, state.reservations[0]!], slotOwners: [...state.slotOwners, false] };
  t.throws(() => SkuAllocator.restore(twice, limits), { name: 'InvariantViolation', message: /duplicated/ }, 'a reservation listed twice');
  t.throws(() => SkuAllocator.restore(twice, limits, true), { name: 'InvariantViolation', message: /duplicated/ }, 'also when adopted');
  t.pass(`all ${bytes.length} truncations refused`);
});
