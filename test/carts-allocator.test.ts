import t from 'tap';
import { SkuAllocator } from '../src/allocator/allocator.js';
import { cartLineKey, defaultAllocatorLimits, reservedAtMs, type StockEvent } from '../src/allocator/types.js';
import { decodeSnapshot, encodeSnapshot } from '../src/snapshot/codec.js';
import { decodeShardRequest } from '../src/shard/protocol.js';
import { shardOf } from '../src/shard/placement.js';
import { cartIdFor, lineIdFor, requestHashOf } from '../src/carts/ids.js';

/** Cart lines in the pure allocator: prepare, commit, abort, release; replay and snapshots rebuild them; the wire checks them. */

const config = { stock: 5, perShopperLimit: 3, holdSeconds: 60, priceCents: 100, currency: 'USD', startsAtMs: null, endsAtMs: null };
const limits = defaultAllocatorLimits;
const cartId = cartIdFor('ann', 'key-1');

/** An allocator driven through commands, keeping every event it applied (for replay). */
function driven() {
  const a = new SkuAllocator('SKU', limits);
  const log: StockEvent[] = [];
  const apply = (event: StockEvent | null) => {
    if (event === null) return;
    a.apply(event);
    log.push(event);
  };
  const configured = a.configure(config, 0);
  if (!configured.ok) throw new Error('configure');
  apply(configured.event);
  return { a, log, apply };
}

function prepare(a: SkuAllocator, id: string, quantity: number, cart = cartId, shopperId = 'ann', nowMs = 1_000) {
  const decision = a.prepareLine({ reservationId: id, cartId: cart, shopperId, quantity }, nowMs);
  if (!decision.ok || decision.kind !== 'new') throw new Error(JSON.stringify(decision));
  return decision.event;
}

t.test('prepare takes units and counts toward the limit; commit makes a hold expiring with the cart; abort gives back', async (t) => {
  const { a, log, apply } = driven();
  const line = lineIdFor(cartId, 'SKU');
  apply(prepare(a, line, 2));
  t.match(a, { available: 3, held: 2, liveHolds: 1 });
  t.equal(a.reservations.get(line)!.status, 'tentative');
  t.same([...a.tentative.keys()], [line]);
  t.equal(a.nextExpiryMs(), null, 'a tentative line does not expire: its cart decides');
  t.match(a.reserve({ reservationId: 'r', shopperId: 'ann', quantity: 2, idempotencyKey: 'k' }, 1_000), { ok: false, code: 'limit_exceeded' });
  t.match(a.prepareLine({ reservationId: line, cartId, shopperId: 'ann', quantity: 2 }, 1_500), { ok: true, kind: 'replay' }, 'a repeat is the same line');
  t.match(a.prepareLine({ reservationId: line, cartId, shopperId: 'ann', quantity: 1 }, 1_500), { ok: false, code: 'idempotency_key_reused' });
  t.match(a.release(line, 'ann', 1_500), { ok: false, code: 'reservation_in_cart' }, 'a line is not released alone');

  apply(a.resolveLine(line, cartId, 'committed', 30_000, 2_000));
  t.equal(a.reservations.get(line)!.status, 'held');
  t.equal(a.nextExpiryMs(), 30_000, "the cart's expiry, not the line's own");
  t.equal(a.reservations.get(line)!.expiresAtMs, 30_000);
  t.equal(reservedAtMs(a.reservations.get(line)!), 1_000, 'still made when it was prepared (its key TTL starts there)');
  t.equal(reservedAtMs(decodeSnapshot(encodeSnapshot(a), limits).reservations.get(line)!), 1_000, 'also once restored');
  t.equal(a.resolveLine(line, cartId, 'aborted', 0, 2_000), null, 'resolved once: a late abort changes nothing');
  t.equal(a.tentative.size, 0);

  const other = cartIdFor('bob', 'key-2');
  const second = lineIdFor(other, 'SKU');
  apply(prepare(a, second, 3, other, 'bob'));
  t.match(a.prepareLine({ reservationId: lineIdFor(cartIdFor('cy', 'k'), 'SKU'), cartId: cartIdFor('cy', 'k'), shopperId: 'cy', quantity: 1 }, 2_000), { ok: false, code: 'sold_out' });
  // A snapshot with a tentative line restores it (the shard resolves it from its cart's decision).
  const restored = decodeSnapshot(encodeSnapshot(a), limits);
  t.same(restored.snapshot(), a.snapshot());
  t.same([...restored.tentative.keys()], [second]);
  apply(a.resolveLine(second, other, 'aborted', 0, 3_000));
  t.match(a, { available: 3, held: 2 });
  t.equal(a.reservations.get(second)!.status, 'released');
  // The cart releases its lines; then the expiry passes with nothing to expire.
  const released = a.release(line, 'ann', 4_000, cartId);
  if (!released.ok) throw new Error(released.detail);
  apply(released.event);
  t.match(a, { available: 5, held: 0, liveHolds: 0 });
  t.same(a.expireDue(40_000), []);
  // Replaying the log rebuilds the very same state.
  t.same(SkuAllocator.replay('SKU', limits, log).snapshot(), a.snapshot());
  t.equal(cartLineKey(cartId).includes(' '), true, 'a line key has a space: no request key can be one');
});

t.test('cart messages from a peer are checked like every other', async (t) => {
  const shardCount = 16;
  const lines = [{ sku: 'SKU', quantity: 1, reservationId: lineIdFor(cartId, 'SKU') }];
  const home = Number.parseInt(cartId.slice(0, 8), 16) % shardCount;
  const begin = { type: 'cart_begin', cartId, shopperId: 'ann', idempotencyKey: 'key-1', requestHash: requestHashOf(lines), lines };
  t.same(decodeShardRequest(begin, home, shardCount), begin);
  t.equal(decodeShardRequest(begin, (home + 1) % shardCount, shardCount), 'wrong_shard', "a cart's rows live on its home shard");
  t.equal(decodeShardRequest({ ...begin, lines: [] }, home, shardCount), 'bad_field');
  t.equal(decodeShardRequest({ ...begin, lines: Array(1001).fill(lines[0]) }, home, shardCount), 'oversized');
  t.equal(decodeShardRequest({ ...begin, requestHash: 'x' }, home, shardCount), 'bad_field');
  const prepare = { type: 'cart_prepare', sku: 'SKU', cartId, reservationId: lines[0]!.reservationId, shopperId: 'ann', quantity: 1 };
  const shard = shardOf('SKU', shardCount);
  t.same(decodeShardRequest(prepare, shard, shardCount), prepare);
  t.equal(decodeShardRequest({ ...prepare, quantity: 0 }, shard, shardCount), 'bad_field');
  t.equal(decodeShardRequest({ ...prepare, extra: 1 }, shard, shardCount) && 'ok', 'ok', 'unknown fields are dropped');
  const resolve = { type: 'cart_resolve', sku: 'SKU', cartId, reservationId: lines[0]!.reservationId, shopperId: 'ann', action: 'explode', expiresAtMs: 1 };
  t.equal(decodeShardRequest(resolve, shard, shardCount), 'bad_field');
  const decide = { type: 'cart_decide', cartId, shopperId: 'ann', decision: 'aborted', expiresAtMs: null, failure: { line: 0, sku: 'SKU', code: 'sold_out', detail: 'x'.repeat(3000) } };
  t.equal(decodeShardRequest(decide, home, shardCount), 'oversized');
});
