import t from 'tap';
import { decodeShardReply, decodeShardRequest } from '../src/shard/protocol.js';
import { newWaitlistId, shardOf } from '../src/shard/placement.js';

/**
 * The waitlist's messages between nodes: what a peer sends is checked field by
 * field, routed by the SKU or by the SKU hash inside the waitlist id, and a
 * reply must answer its own request.
 */

const shardCount = 64;
const sku = 'SNEAKER-42';
const shard = shardOf(sku, shardCount);
const waitlistId = newWaitlistId(sku);
const join = { type: 'join_waitlist', sku, shopperId: 'alice', quantity: 1, idempotencyKey: 'k1' };
const view = { waitlistId, sku, quantity: 1, status: 'waiting', position: 3, reservationId: null, offerExpiresAt: null };

t.test('requests: well-formed ones pass, with only their known fields', async (t) => {
  t.same(decodeShardRequest({ ...join, extra: 'dropped' }, shard, shardCount), join);
  t.same(decodeShardRequest({ type: 'get_waitlist', waitlistId, shopperId: 'alice' }, shard, shardCount), { type: 'get_waitlist', waitlistId, shopperId: 'alice' });
  t.same(decodeShardRequest({ type: 'leave_waitlist', waitlistId, shopperId: 'alice' }, shard, shardCount), { type: 'leave_waitlist', waitlistId, shopperId: 'alice' });
});

t.test('requests: hostile fields and the wrong shard are refused with a reason', async (t) => {
  const other = (shard + 1) % shardCount;
  t.equal(decodeShardRequest(join, other, shardCount), 'wrong_shard');
  t.equal(decodeShardRequest({ type: 'get_waitlist', waitlistId, shopperId: 'alice' }, other, shardCount), 'wrong_shard');
  t.equal(decodeShardRequest({ type: 'get_waitlist', waitlistId: crypto.randomUUID(), shopperId: 'alice' }, shard, shardCount), 'wrong_shard', 'an id without a SKU hash');
  for (const bad of [
    { ...join, quantity: 0 },
    { ...join, quantity: 1.5 },
    { ...join, quantity: '1' },
    { ...join, sku: '..' },
    { ...join, idempotencyKey: 'has space' },
    { ...join, shopperId: '' },
    { ...join, shopperId: undefined },
    { type: 'get_waitlist', waitlistId: 'not-a-uuid', shopperId: 'alice' },
    { type: 'leave_waitlist', waitlistId, shopperId: 42 },
  ]) {
    t.equal(decodeShardRequest(bad, shard, shardCount), 'bad_field', JSON.stringify(bad));
  }
});

t.test('replies: a view about the request, or refused', async (t) => {
  const get = { type: 'get_waitlist' as const, waitlistId, shopperId: 'alice' };
  t.same(decodeShardReply(get, { ok: true, value: view }), { ok: true, value: view });
  t.same(decodeShardReply(get, { ok: false, code: 'waitlist_full', detail: 'full' }), { ok: false, code: 'waitlist_full', detail: 'full' });
  t.equal(decodeShardReply(get, { ok: true, value: { ...view, waitlistId: newWaitlistId(sku) } }), 'mismatch', 'another entry');
  t.equal(decodeShardReply({ type: 'join_waitlist', sku: 'OTHER', shopperId: 'a', quantity: 1, idempotencyKey: 'k' }, { ok: true, value: view }), 'mismatch');
  for (const bad of [{ ...view, status: 'lost' }, { ...view, position: 0 }, { ...view, reservationId: 'x' }, { ...view, offerExpiresAt: 'soon' }]) {
    t.equal(decodeShardReply(get, { ok: true, value: bad }), 'bad_field', JSON.stringify(bad));
  }
  t.equal(decodeShardReply(get, { ok: false, code: 'no_such_code', detail: 'x' }), 'bad_field');
});
