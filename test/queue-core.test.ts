import t from 'tap';
import { InvariantViolation, SkuAllocator } from '../src/allocator/allocator.js';
import { defaultAllocatorLimits, type SkuConfig, type StockEvent } from '../src/allocator/types.js';
import { preQueueRanks } from '../src/allocator/waiting-room.js';
import { decodeSnapshot, encodeSnapshot } from '../src/snapshot/codec.js';
import { queueView } from '../src/queue/view.js';
import { spearman } from './helpers/rank.js';
import { decodeShardReply, decodeShardRequest } from '../src/shard/protocol.js';
import { newReservationId, shardOf } from '../src/shard/placement.js';

// The waiting room's pure core: the pre-queue draw, admission times, limits, replay and snapshots.

const startsAtMs = Date.parse('2030-01-01T00:10:00Z');
const config: SkuConfig = {
  stock: 100,
  perShopperLimit: 1,
  holdSeconds: 60,
  priceCents: 100,
  currency: 'USD',
  startsAtMs,
  endsAtMs: null,
  waitingRoom: { admitPerSecond: 10, seed: '0123456789abcdef0123456789abcdef' },
};

function room(limits = defaultAllocatorLimits, c: SkuConfig = config) {
  const allocator = new SkuAllocator('Q', limits);
  const log: StockEvent[] = [];
  const apply = (event: StockEvent) => {
    allocator.apply(event);
    log.push(event);
  };
  const configured = allocator.configure(c, 0);
  if (!configured.ok) throw new Error('configure failed');
  apply(configured.event);
  const join = (shopper: string, atMs: number): string => {
    const decision = allocator.joinQueue(shopper, `00000000-0000-8000-8000-${String(log.length).padStart(12, '0')}`, atMs);
    if (!decision.ok) throw new Error(decision.code);
    if (decision.kind === 'existing') return decision.ticketId;
    apply(decision.event);
    return decision.event.ticketId;
  };
  return { allocator, log, apply, join };
}

t.test('the pre-queue draw: a permutation, reproducible from the seed, uncorrelated with join order', async (t) => {
  const identity = Array.from({ length: 40 }, (_, i) => i);
  t.equal(spearman(identity, identity), 1, 'the statistic sees a copied order (the check can fail)');
  // Fixed seeds: deterministic, cannot flake. For a uniform permutation of n, rho has mean 0 and
  // standard deviation 1/sqrt(n-1): 0.16 at n = 40, so |rho| < 0.5 is a 3-sigma bound here.
  const seeds = ['0123456789abcdef0123456789abcdef', 'ffffffffffffffffffffffffffffffff', '00000000000000000000000000000001', 'deadbeefcafef00d0badc0de12345678'];
  for (const seed of seeds) {
    for (const n of [40, 400]) {
      const ranks = preQueueRanks(n, seed);
      t.same([...ranks].sort((a, b) => a - b), Array.from({ length: n }, (_, i) => i), `seed ${seed}, n ${n}: a permutation`);
      const rho = spearman(Array.from({ length: n }, (_, i) => i), ranks);
      t.ok(Math.abs(rho) < (n === 40 ? 0.5 : 0.2), `seed ${seed}, n ${n}: rho ${rho.toFixed(3)} near 0`);
      t.same(preQueueRanks(n, seed), ranks, 'the same seed draws the same order');
    }
  }
  t.not([...preQueueRanks(40, seeds[0]!)].join(), [...preQueueRanks(40, seeds[1]!)].join(), 'another seed, another order');
});

t.test('positions: null before the start, drawn at the start, later joiners behind in arrival order', async (t) => {
  const { allocator, join } = room();
  const early = Array.from({ length: 50 }, (_, i) => join(`s${i}`, startsAtMs - 60_000 + i));
  t.equal(join('s3', startsAtMs - 1), early[3], 'asking again returns the same ticket');
  const before = queueView(allocator, 0, startsAtMs - 1);
  t.same([before.status, before.position, before.estimatedWaitSeconds], ['waiting', null, 1], 'no position before the draw');
  const late = [join('late0', startsAtMs + 1), join('late1', startsAtMs + 2)];
  t.equal(allocator.queue.earlyCount, 50, 'joins after the start are not in the pre-queue');
  const at = startsAtMs;
  const positions = early.map((ticket) => queueView(allocator, allocator.queue.indexOfTicket(ticket)!, at));
  t.equal(positions.filter((v) => v.status === 'admitted').length, 1, 'the first drawn is admitted at the start');
  t.same(positions.filter((v) => v.status === 'waiting').map((v) => v.position).sort((a, b) => a! - b!), Array.from({ length: 49 }, (_, i) => i + 1));
  t.same(late.map((ticket) => queueView(allocator, allocator.queue.indexOfTicket(ticket)!, at + 2).position), [50, 51], 'late joiners queue behind, in order');
});

t.test('admission runs at admitPerSecond from the start; a quiet spell saves up no burst', async (t) => {
  const { allocator, join } = room();
  for (let i = 0; i < 200; i++) join(`s${i}`, startsAtMs - 1000);
  for (const seconds of [0, 1, 2.5, 10, 19.9]) {
    const admitted = allocator.queue.admittedBy(startsAtMs + seconds * 1000, allocator.config!);
    t.ok(Math.abs(admitted - seconds * 10) <= 10, `after ${seconds} s: ${admitted} admitted, within a second of 10/s`);
  }
  // Everyone in by 20 s; an hour later ten newcomers still come in one every 100 ms.
  const quiet = startsAtMs + 3_600_000;
  const newcomers = Array.from({ length: 10 }, (_, i) => join(`n${i}`, quiet));
  const admitted = newcomers.filter((ticket) => queueView(allocator, allocator.queue.indexOfTicket(ticket)!, quiet + 450).status === 'admitted');
  t.equal(admitted.length, 5, 'after 450 ms, 5 of 10 newcomers are in (not all 10)');
  const last = queueView(allocator, allocator.queue.indexOfTicket(newcomers[9]!)!, quiet + 450);
  t.same([last.position, last.estimatedWaitSeconds], [5, 1]);
});

t.test('bounded: past maxQueueTicketsPerSku joins are refused; a SKU without a waiting room refuses joins', async (t) => {
  const { allocator, join } = room({ ...defaultAllocatorLimits, maxQueueTicketsPerSku: 3 });
  for (let i = 0; i < 3; i++) join(`s${i}`, 0);
  const full = allocator.joinQueue('s9', '00000000-0000-8000-8000-000000000099', 0);
  t.same(full.ok ? null : full.code, 'queue_full');
  t.equal(join('s1', 1), allocator.queue.ticketAt(1), 'an existing ticket is still answered when full');
  const plain = room(defaultAllocatorLimits, { ...config, waitingRoom: null }).allocator;
  const refused = plain.joinQueue('s1', '00000000-0000-8000-8000-000000000001', 0);
  t.same(refused.ok ? null : refused.code, 'no_waiting_room');
});

t.test('a waiting room with tickets keeps its rate, start and seed', async (t) => {
  const { allocator, join } = room();
  const again = allocator.configure({ ...config, stock: 200, waitingRoom: { admitPerSecond: 10, seed: 'ffffffffffffffffffffffffffffffff' } }, 1);
  t.ok(again.ok && again.event.kind === 'configured' && again.event.config.waitingRoom?.seed === config.waitingRoom!.seed, 'a new PUT keeps the first seed');
  join('s1', 2);
  for (const next of [{ ...config, startsAtMs: startsAtMs + 1 }, { ...config, waitingRoom: { admitPerSecond: 11, seed: config.waitingRoom!.seed } }, { ...config, waitingRoom: null }]) {
    const refused = allocator.configure(next, 3);
    t.same(refused.ok ? null : refused.code, 'waiting_room_in_use');
  }
  t.ok(allocator.configure({ ...config, stock: 300 }, 3).ok, 'other changes are fine');
});

t.test('replaying the log and decoding a snapshot give the same positions', async (t) => {
  const { allocator, log, join } = room();
  for (let i = 0; i < 60; i++) join(`s${i}`, startsAtMs - 5000 + i);
  for (let i = 0; i < 20; i++) join(`l${i}`, startsAtMs + 300 * i);
  const replayed = SkuAllocator.replay('Q', defaultAllocatorLimits, log);
  const twice = { ...log[1]!, seq: allocator.seq + 1 };
  t.throws(() => SkuAllocator.replay('Q', defaultAllocatorLimits, [...log, twice]), InvariantViolation, 'a ticket joined twice is a broken log');
  const decoded = decodeSnapshot(encodeSnapshot(allocator), defaultAllocatorLimits);
  t.same(replayed.snapshot(), allocator.snapshot(), 'replay rebuilds the same state');
  t.same(decoded.snapshot(), allocator.snapshot(), 'a snapshot round-trips it');
  for (const now of [startsAtMs - 1, startsAtMs, startsAtMs + 3_333, startsAtMs + 9_999]) {
    const want = Array.from({ length: 80 }, (_, i) => queueView(allocator, i, now));
    t.same(Array.from({ length: 80 }, (_, i) => queueView(replayed, i, now)), want, `replayed, at ${now - startsAtMs} ms`);
    t.same(Array.from({ length: 80 }, (_, i) => queueView(decoded, i, now)), want, `decoded, at ${now - startsAtMs} ms`);
  }
});

t.test('the shard protocol carries waiting-room messages and refuses lies about them', async (t) => {
  const shards = 16;
  const shard = shardOf('Q', shards);
  const ticket = newReservationId('Q');
  const join = { type: 'queue_join', sku: 'Q', shopperId: 's1' } as const;
  const poll = { type: 'queue_poll', ticket, shopperId: 's1' } as const;
  t.same(decodeShardRequest(join, shard, shards), join);
  t.same(decodeShardRequest(poll, shard, shards), poll);
  t.equal(decodeShardRequest(poll, (shard + 1) % shards, shards), 'wrong_shard', "a ticket names its SKU's shard");
  t.equal(decodeShardRequest({ ...poll, ticket: 'nope' }, shard, shards), 'bad_field');
  const configure = { type: 'configure', sku: 'Q', config };
  t.same(decodeShardRequest(configure, shard, shards), configure, 'a waiting room travels with its config');
  t.equal(decodeShardRequest({ ...configure, config: { ...config, waitingRoom: { admitPerSecond: 0, seed: 'x' } } }, shard, shards), 'bad_field');
  const view = { ticket, sku: 'Q', status: 'waiting', position: 3, estimatedWaitSeconds: 2 };
  t.same(decodeShardReply(poll, { ok: true, value: view }), { ok: true, value: view });
  t.equal(decodeShardReply(poll, { ok: true, value: { ...view, ticket: newReservationId('Q') } }), 'mismatch', "another ticket's answer");
  t.equal(decodeShardReply(join, { ok: true, value: { ...view, position: -1 } }), 'bad_field');
  t.same(decodeShardReply(join, { ok: false, code: 'queue_full', detail: 'full' }), { ok: false, code: 'queue_full', detail: 'full' });
});
