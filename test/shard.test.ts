import t, { type Test } from 'tap';
import fc from 'fast-check';
import pino from 'pino';
import { InProcessLink } from '../src/road/in-process-link.js';
import type { ShardEndpoint, ShardNotice, ShardRequest, ShardReply } from '../src/shard/messages.js';
import { newReservationId, shardOf, shardOfReservationId, skuHash } from '../src/shard/placement.js';
import { Router } from '../src/shard/router.js';
import { ShardHost } from '../src/shard/shard-host.js';
import { createTestDatabase } from './helpers/db.js';
import { testHostOptions } from './helpers/shard-host.js';
import { startTestService } from './helpers/service.js';

const silent = pino({ level: 'silent' });
const config = { stock: 3, perShopperLimit: 2, holdSeconds: 60, priceCents: 100, currency: 'USD', startsAtMs: null, endsAtMs: null };

t.test('placement: fnv1a32 of the name, stable; ids carry their SKU hash', async (t) => {
  // Published FNV-1a 32 test vectors: the function must never change (it places every SKU).
  t.equal(skuHash(''), 0x811c9dc5);
  t.equal(skuHash('a'), 0xe40c292c);
  t.equal(skuHash('foobar'), 0xbf9cf968);
  t.equal(shardOf('foobar', 64), 0xbf9cf968 % 64);
  t.equal(skuHash('é'), (Math.imul((Math.imul(0x811c9dc5 ^ 0xc3, 0x01000193) >>> 0) ^ 0xa9, 0x01000193) >>> 0), 'non-ASCII hashes its UTF-8 bytes');
  fc.assert(
    fc.property(fc.stringMatching(/^[A-Za-z0-9._-]{1,64}$/), fc.integer({ min: 1, max: 4096 }), (sku, shardCount) => {
      const id = newReservationId(sku);
      return (
        /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(id) &&
        shardOfReservationId(id, shardCount) === shardOf(sku, shardCount)
      );
    }),
  );
  t.equal(shardOfReservationId('0b6d1c52-3c4f-4d2a-9e55-2f1c0a7b9e10', 64), null, 'a version-4 id carries no SKU hash');
});

/** A shard endpoint that records what reaches it: the router alone, with nothing behind it. */
class RecordingEndpoint implements ShardEndpoint {
  readonly seen: { shard: number; request: ShardRequest }[] = [];
  handle<R extends ShardRequest>(shard: number, request: R): Promise<ShardReply<R['type']>> {
    this.seen.push({ shard, request });
    return Promise.resolve({ ok: false, code: 'not_found', detail: `recorded ${request.type}` } as ShardReply<R['type']>);
  }
}

t.test('router alone: each command goes, as a plain message, to the shard of its SKU', async (t) => {
  const db = await createTestDatabase(t);
  const channel = new InProcessLink({ clone: true });
  const endpoint = new RecordingEndpoint();
  channel.connect(endpoint);
  const router = new Router(channel, { shardCount: 16, shardsReady: () => true, pool: db.pool });
  const id = newReservationId('SNEAKER');
  await router.reserve({ sku: 'SNEAKER', shopperId: 'alice', quantity: 1, idempotencyKey: 'k' });
  await router.getSku('SNEAKER');
  await router.getReservation(id, 'alice');
  await router.release(id, 'alice');
  await router.checkout({ reservationId: id, shopperId: 'alice', idempotencyKey: 'c', paymentMethod: 'pm_ok' });
  await router.settle({ sku: 'SNEAKER', reservationId: id, orderId: id, outcome: 'committed', failureReason: null });
  const shard = shardOf('SNEAKER', 16);
  t.same(endpoint.seen.map((s) => s.shard), [shard, shard, shard, shard, shard, shard], 'every message went to the SKU’s shard');
  t.same(endpoint.seen[0]!.request, { type: 'reserve', sku: 'SNEAKER', shopperId: 'alice', quantity: 1, idempotencyKey: 'k' });
  t.same(structuredClone(endpoint.seen), endpoint.seen, 'messages survive structured clone');
  t.match(await router.getReservation('0b6d1c52-3c4f-4d2a-9e55-2f1c0a7b9e10', 'alice'), { ok: false, code: 'not_found' }, 'an unknown old-style id is not found without asking a shard');

  const notices: string[] = [];
  router.onStock((state) => notices.push(`${state.sku}:${state.available}`));
  channel.notify({ type: 'stock', state: { sku: 'SNEAKER', available: 2, held: 1, sold: 0, seq: 2 } });
  t.same(notices, ['SNEAKER:2']);
  t.same(router.stockState('SNEAKER'), { sku: 'SNEAKER', available: 2, held: 1, sold: 0, seq: 2 }, 'the router keeps the state shards push');
  channel.notify({ type: 'passivated', sku: 'SNEAKER' });
  t.equal(router.stockState('SNEAKER'), null);
});

function hostFor(
  db: { pool: import('pg').Pool; url: string },
  notices: ShardNotice[],
  shards: number[],
  t: Test,
  shardCount = 4,
  overrides: Parameters<typeof testHostOptions>[2] = {},
): ShardHost {
  return new ShardHost(db.pool, silent, { shards, shardCount, ...testHostOptions(db, t, overrides) }, (notice) => notices.push(notice));
}

t.test('shard alone: driven by plain messages, no HTTP, no router', async (t) => {
  const db = await createTestDatabase(t);
  const notices: ShardNotice[] = [];
  const host = hostFor(db, notices, [0, 1, 2, 3], t);
  t.teardown(() => host.close());
  const shard = shardOf('BOOT', 4);
  t.match(await host.handle(shard, { type: 'get_sku', sku: 'BOOT' }), { ok: false, code: 'unavailable' }, 'before recovery: unavailable, never not_found');
  await host.recover();
  t.match(await host.handle(shard, { type: 'get_sku', sku: 'BOOT' }), { ok: false, code: 'not_found' });
  t.match(await host.handle(shard, { type: 'configure', sku: 'BOOT', config }), { ok: true, value: { created: true, view: { stock: 3 } } });
  const reserved = await host.handle(shard, { type: 'reserve', sku: 'BOOT', shopperId: 'alice', quantity: 2, idempotencyKey: 'k1' });
  t.match(reserved, { ok: true, value: { sku: 'BOOT', quantity: 2, status: 'held' } });
  const id = reserved.ok ? reserved.value.reservationId : '';
  t.equal(shardOfReservationId(id, 4), shard, 'the id routes back to this shard');
  t.same(
    await host.handle(shard, { type: 'reserve', sku: 'BOOT', shopperId: 'alice', quantity: 2, idempotencyKey: 'k1' }),
    reserved,
    'same key, same request: the original reply',
  );
  t.match(await host.handle(shard, { type: 'get_reservation', reservationId: id, shopperId: 'bob' }), { ok: false, code: 'not_found' }, 'another shopper’s reservation');
  t.match(await host.handle(shard, { type: 'release', reservationId: id, shopperId: 'alice' }), { ok: true, value: { status: 'released' } });
  t.match(notices.at(-1), { type: 'stock', state: { sku: 'BOOT', available: 3, held: 0, seq: 3 } }, 'durable changes are pushed as StockState');
  t.match(await host.handle(99, { type: 'get_sku', sku: 'BOOT' }), { ok: false, code: 'unavailable' }, 'a shard not hosted here');
  const wrongShard = (shard + 1) % 4;
  t.match(await host.handle(wrongShard, { type: 'get_sku', sku: 'BOOT' }), { ok: false, code: 'unavailable', detail: /does not belong/ }, 'another shard refuses the SKU');

  // A second host on the same log recovers the same state (replay equals state).
  const again = hostFor(db, [], [shard], t);
  t.teardown(() => again.close());
  await host.close();
  await again.recover();
  t.match(await again.handle(shard, { type: 'get_sku', sku: 'BOOT' }), { ok: true, value: { available: 3, held: 0, sold: 0 } });
  t.match(await again.handle(shard, { type: 'get_reservation', reservationId: id, shopperId: 'alice' }), { ok: true, value: { status: 'released', quantity: 2 } });
});

/** `count` SKU names that live in `shard` of `shardCount` (prefix-N, first found). */
function skusIn(shard: number, count: number, prefix: string, shardCount = 4): string[] {
  const found: string[] = [];
  for (let i = 0; found.length < count; i++) if (shardOf(`${prefix}-${i}`, shardCount) === shard) found.push(`${prefix}-${i}`);
  return found;
}

async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

t.test('shard host at run time: addShard recovers a shard (snapshot + tail, passivated sales left out) before it serves', async (t) => {
  const db = await createTestDatabase(t);
  const shard = 2;
  const [sku, ended] = skusIn(shard, 2, 'RUN');
  const [elsewhere] = skusIn(1, 1, 'RUN');
  const notices: ShardNotice[] = [];
  // Every 3 events: configure, alice and bob make the one snapshot (seq 3); carol alone cannot make another.
  const writer = hostFor(db, notices, [0, 1, 2, 3], t, 4, { snapshotEveryEvents: 3 });
  await writer.recover();
  for (const name of [sku!, ended!, elsewhere!]) t.match(await writer.handle(shardOf(name, 4), { type: 'configure', sku: name, config }), { ok: true });
  const reserve = (host: ShardHost, shopperId: string) =>
    host.handle(shard, { type: 'reserve', sku: sku!, shopperId, quantity: 1, idempotencyKey: `k-${shopperId}` });
  t.match(await reserve(writer, 'alice'), { ok: true });
  t.match(await reserve(writer, 'bob'), { ok: true });
  const snapshotSeq = async () => (await db.pool.query('SELECT max(seq)::int AS seq FROM sku_snapshots WHERE sku = $1', [sku])).rows[0].seq as number | null;
  await until('a snapshot of the SKU', async () => (await snapshotSeq()) !== null);
  t.match(await reserve(writer, 'carol'), { ok: true }, 'a decision after the snapshot: the tail');
  t.ok((await snapshotSeq())! < 4, 'the log runs past the latest snapshot');
  t.match(await writer.handle(shard, { type: 'archive', sku: ended! }), { ok: true });
  await until('the archived sale to leave memory', () => notices.some((n) => n.type === 'passivated' && n.sku === ended));
  await writer.close();

  let clock = Date.now();
  const host = hostFor(db, [], [], t, 4, { nowMs: () => clock });
  t.teardown(() => host.close());
  t.match(await host.handle(shard, { type: 'get_sku', sku: sku! }), { ok: false, code: 'unavailable', detail: /not served here/ }, 'before it is added');
  const adding = host.addShard(shard);
  t.match(await host.handle(shard, { type: 'get_sku', sku: sku! }), { ok: false, code: 'unavailable' }, 'while it recovers: 503, never not_found');
  await adding;
  t.equal(host.allocatorCount, 1, 'only the live SKU of that shard is loaded: the passivated sale and other shards stay out');
  t.same(host.stockState(sku!), { sku, available: 0, held: 3, sold: 0, seq: 4, archived: false, startsAtMs: null, endsAtMs: null, waitlist: false }, 'snapshot + tail');
  t.match(await host.handle(shard, { type: 'get_sku', sku: ended! }), { ok: true, value: { sku: ended } }, 'the passivated sale still answers');
  t.match(await host.handle(1, { type: 'get_sku', sku: elsewhere! }), { ok: false, code: 'unavailable' }, 'a shard not added is not served');
  t.match(await host.handle(shard, { type: 'reserve', sku: sku!, shopperId: 'carol', quantity: 1, idempotencyKey: 'k-carol' }), { ok: true, value: { status: 'held' } }, 'its keys came back from the log');
  await t.rejects(host.addShard(shard), /already served/);

  // The sweeper, started by addShard (recover() never ran), covers the added shard.
  clock += 61_000;
  await until('the holds to expire', () => host.stockState(sku!)?.held === 0);
  t.same(host.stockState(sku!), { sku, available: 3, held: 0, sold: 0, seq: 7, archived: false, startsAtMs: null, endsAtMs: null, waitlist: false });
});

t.test('shard host at run time: removeShard commits what the shard decided, then refuses; other shards keep serving', async (t) => {
  const db = await createTestDatabase(t);
  const [gone] = skusIn(3, 1, 'RM');
  const [kept] = skusIn(0, 1, 'RM');
  const host = hostFor(db, [], [0, 1, 2, 3], t);
  t.teardown(() => host.close());
  await host.recover();
  const big = { ...config, stock: 100, perShopperLimit: 100 };
  t.match(await host.handle(3, { type: 'configure', sku: gone!, config: big }), { ok: true });
  t.match(await host.handle(0, { type: 'configure', sku: kept!, config: big }), { ok: true });
  const reserve = (shard: number, sku: string, i: number) =>
    host.handle(shard, { type: 'reserve', sku, shopperId: `s${i}`, quantity: 1, idempotencyKey: `k${i}` });
  // Decided in the same turn as the removal, in the same batches as another shard's decisions.
  const decided = Array.from({ length: 20 }, (_, i) => [reserve(3, gone!, i), reserve(0, kept!, i)]).flat();
  await host.removeShard(3);
  const rows = await db.pool.query("SELECT count(*)::int AS n FROM stock_events WHERE sku = $1 AND kind = 'reserved'", [gone]);
  t.equal(rows.rows[0].n, 20, 'everything the removed shard decided is in the log when removeShard resolves');
  t.ok((await Promise.all(decided)).every((reply) => reply.ok), 'and every one of those decisions was acknowledged');
  t.match(await reserve(3, gone!, 99), { ok: false, code: 'unavailable', detail: /not served here/ }, 'then: 503');
  t.equal(host.stockState(gone!), null);
  t.match(await reserve(0, kept!, 99), { ok: true }, 'the other shards keep serving');
  await host.removeShard(3);
  t.match(await reserve(3, gone!, 100), { ok: false, code: 'unavailable', detail: /not served here/ }, 'removing a shard that is not here changes nothing: still 503');
  t.match(await reserve(0, kept!, 100), { ok: true }, 'and the other shards still serve');
  const after = await db.pool.query("SELECT count(*)::int AS n FROM stock_events WHERE sku = $1 AND kind = 'reserved'", [gone]);
  t.equal(after.rows[0].n, 20, 'and nothing was written for the removed shard');

  await host.addShard(3);
  t.match(await host.handle(3, { type: 'get_sku', sku: gone! }), { ok: true, value: { held: 20, available: 80 } }, 'added back, it recovers all of it');
});

t.test('service: every reply and notice crosses the boundary as plain data; ids and keys need no process-wide map', async (t) => {
  const api = await startTestService(t, { shardCount: 8 });
  for (const sku of ['A1', 'B2', 'C3', 'D4']) t.equal((await api.putSku(sku, { stock: 5, perShopperLimit: 5 })).status, 201);
  const made = [];
  for (const sku of ['A1', 'B2', 'C3', 'D4']) {
    const result = await api.reserve(sku, 'alice', 1, 'same-key');
    t.equal(result.status, 201, `${sku}: the same key on another SKU is another request`);
    made.push(result.body);
  }
  for (const reservation of made) {
    const read = await api.call('GET', `/v1/reservations/${reservation.reservationId}`, { shopper: 'alice' });
    t.same(read.body, reservation, `${reservation.sku}: found by id alone`);
  }
});
