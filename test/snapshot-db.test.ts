import t from 'tap';
import pg from 'pg';
import { SkuAllocator } from '../src/allocator/allocator.js';
import { defaultAllocatorLimits, type AllocatorLimits, type SkuConfig, type StockEvent } from '../src/allocator/types.js';
import { insertEventsQuery } from '../src/outbox/event-log.js';
import { encodeSnapshot, snapshotFormatVersion, SnapshotFormatError } from '../src/snapshot/codec.js';
import { fromRow, loadAllSkuStates, loadSkuState, loadSkuStates } from '../src/snapshot/load.js';
import { insertSnapshotQuery, snapshotSliceBytes } from '../src/snapshot/sql.js';
import { SnapshotWorkers } from '../src/snapshot/workers.js';
import { LiveSnapshots } from '../src/snapshot/live.js';
import { createTestDatabase } from './helpers/db.js';

/** Snapshots against a real Postgres: the worker thread, recovery loaders, pruning, and crashes mid-write. */

const limits: AllocatorLimits = { ...defaultAllocatorLimits, reservationMemoryMs: 10_000, idempotencyKeyTtlMs: 60_000 };
const config: SkuConfig = { stock: 100_000, perShopperLimit: 5, holdSeconds: 30, priceCents: 100, currency: 'USD', startsAtMs: null, endsAtMs: null };

/** A SKU's writer in miniature: decides, applies, and keeps what would be committed. */
function writer(sku: string) {
  const allocator = new SkuAllocator(sku, limits);
  const pending: StockEvent[] = [];
  let now = 1_000_000;
  let n = 0;
  const apply = (events: StockEvent[]) => {
    for (const e of events) {
      allocator.apply(e);
      pending.push(e);
    }
  };
  const configured = allocator.configure(config, now);
  if (!configured.ok) throw new Error('configure');
  apply([configured.event]);
  return {
    allocator,
    get now() {
      return now;
    },
    /** `count` reservations by distinct shoppers, every other one released, then time moves on. */
    churn(count: number, stepMs: number) {
      for (let i = 0; i < count; i++) {
        n += 1;
        const d = allocator.reserve({ reservationId: `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`, shopperId: `${sku}-s${n}`, quantity: 1, idempotencyKey: `k${n}` }, now);
        if (!d.ok || d.kind !== 'new') throw new Error(`reserve: ${JSON.stringify(d)}`);
        apply([d.event]);
        if (n % 2 === 0) {
          const r = allocator.release(d.event.reservationId, d.event.shopperId, now);
          if (!r.ok || r.event === null) throw new Error('release');
          apply([r.event]);
        }
        now += stepMs;
        apply(allocator.expireDue(now));
      }
    },
    /** Hand over what is not committed yet. */
    drain(): StockEvent[] {
      return pending.splice(0);
    },
    async commit(pool: pg.Pool) {
      if (pending.length > 0) await pool.query(insertEventsQuery(pending.splice(0)));
    },
  };
}

function picture(allocator: SkuAllocator, nowMs: number) {
  allocator.forgetSettled(nowMs);
  return allocator.snapshot();
}

t.test('a shard snapshots its allocator once that seq is durable, never when its commit failed; snapshot + tail = live', async (t) => {
  const db = await createTestDatabase(t);
  const a = writer('A');
  a.churn(300, 100);
  // The outbox's barrier in miniature: what is pending commits, then the snapshot may be written.
  const snapshots = new LiveSnapshots(db.pool, async () => {
    await a.commit(db.pool);
    return null;
  });
  const first = await snapshots.write(a.allocator, false);
  t.match(first, { seq: a.allocator.seq });
  t.ok(first.bytes > 0);
  a.churn(200, 100);
  const failing = new LiveSnapshots(db.pool, async () => new Error('the batch holding these events failed'));
  await t.rejects(failing.write(a.allocator, false), /dropped/, 'a commit up to its seq failed: nothing written');
  const second = await snapshots.write(a.allocator, true);
  const rows = await db.pool.query('SELECT seq::int, passivated FROM sku_snapshots WHERE sku = $1 ORDER BY seq', ['A']);
  t.same(rows.rows, [{ seq: first.seq, passivated: false }, { seq: second.seq, passivated: true }], 'only the durable ones, the latest two');
  a.churn(30, 100);
  await a.commit(db.pool);
  const loaded = await loadSkuState(db.pool, 'A', limits);
  t.same(picture(loaded!, a.now), picture(a.allocator, a.now), 'snapshot + tail = live');
  t.equal(loaded!.nextExpiryMs(), a.allocator.nextExpiryMs());
});

t.test('the worker folds the log since the last snapshot; snapshot + tail = the live state', async (t) => {
  const db = await createTestDatabase(t);
  const workers = new SnapshotWorkers();
  workers.start();
  t.teardown(() => workers.stop());
  const a = writer('A');
  const b = writer('B');
  a.churn(300, 100);
  b.churn(50, 1_000);
  await a.commit(db.pool);
  await b.commit(db.pool);

  const first = await workers.snapshot({ databaseUrl: db.url, sku: 'A', limits });
  t.match(first, { sku: 'A', seq: a.allocator.seq, events: a.allocator.seq });
  t.ok(first.bytes > 0);
  t.same((await workers.snapshot({ databaseUrl: db.url, sku: 'A', limits })).events, 0, 'nothing new: nothing written');

  a.churn(200, 100);
  await a.commit(db.pool);
  const second = await workers.snapshot({ databaseUrl: db.url, sku: 'A', limits, uptoSeq: first.seq + 10 });
  t.match(second, { seq: first.seq + 10, events: 10 }, 'uptoSeq bounds the fold');
  const third = await workers.snapshot({ databaseUrl: db.url, sku: 'A', limits, passivated: true });
  t.match(third, { seq: a.allocator.seq, events: a.allocator.seq - second.seq });
  const rows = await db.pool.query('SELECT seq::int, passivated, format_version FROM sku_snapshots WHERE sku = $1 ORDER BY seq', ['A']);
  t.same(rows.rows, [
    { seq: second.seq, passivated: false, format_version: snapshotFormatVersion },
    { seq: third.seq, passivated: true, format_version: snapshotFormatVersion },
  ], 'the latest two are kept');

  a.churn(30, 100);
  await a.commit(db.pool);
  const loaded = await loadSkuState(db.pool, 'A', limits);
  t.ok(loaded);
  t.same(picture(loaded!, a.now), picture(a.allocator, a.now), 'snapshot + tail = live');
  t.equal(loaded!.nextExpiryMs(), a.allocator.nextExpiryMs());
  t.equal(await loadSkuState(db.pool, 'NOPE', limits), null);

  const all = await loadAllSkuStates(db.pool, limits);
  t.same([...all.keys()].sort(), ['A', 'B']);
  t.same(picture(all.get('A')!, a.now), picture(a.allocator, a.now));
  t.same(picture(all.get('B')!, b.now), picture(b.allocator, b.now), 'a SKU without a snapshot: the whole log');
});

t.test('the batched loader shares its rounds among many SKUs', async (t) => {
  const db = await createTestDatabase(t);
  const writers = Array.from({ length: 30 }, (_, i) => writer(`S${String(i).padStart(2, '0')}`));
  for (const [i, w] of writers.entries()) {
    w.churn(i === 0 ? 1500 : 20, 50); // one SKU much longer than a round's share
    await w.commit(db.pool);
  }
  const workers = new SnapshotWorkers();
  workers.start();
  t.teardown(() => workers.stop());
  await workers.snapshot({ databaseUrl: db.url, sku: 'S03', limits });
  writers[3]!.churn(5, 50);
  await writers[3]!.commit(db.pool);
  const all = await loadAllSkuStates(db.pool, limits);
  t.equal(all.size, 30);
  for (const w of writers) t.same(picture(all.get(w.allocator.sku)!, w.now), picture(w.allocator, w.now), w.allocator.sku);

  // Handed over one by one: the same states, none kept.
  const handed = new Map<string, SkuAllocator>();
  const kept = await loadAllSkuStates(db.pool, limits, { onLoaded: (a) => handed.set(a.sku, a) });
  t.equal(kept.size, 0);
  t.equal(handed.size, 30);
  for (const w of writers) t.same(picture(handed.get(w.allocator.sku)!, w.now), picture(w.allocator, w.now), `handed over: ${w.allocator.sku}`);

  // A shard's share: only the SKUs asked for (with and without a snapshot), and one never logged comes back empty.
  const asked = ['S00', 'S03', 'S07', 'NEVER'];
  const some = await loadSkuStates(db.pool, asked, limits);
  t.same([...some.keys()].sort(), [...asked].sort());
  for (const w of [writers[0]!, writers[3]!, writers[7]!]) t.same(picture(some.get(w.allocator.sku)!, w.now), picture(w.allocator, w.now), `asked for: ${w.allocator.sku}`);
  t.match(some.get('NEVER'), { seq: 0, config: null });
  t.equal((await loadSkuStates(db.pool, [], limits)).size, 0, 'nothing asked, nothing read');
  // A SKU whose name needs quoting (the COPY carries SKUs as literals).
  const quoted = writer("it's \\ 'quoted'");
  quoted.churn(10, 50);
  await quoted.commit(db.pool);
  await workers.snapshot({ databaseUrl: db.url, sku: quoted.allocator.sku, limits });
  const one = await loadSkuStates(db.pool, [quoted.allocator.sku], limits);
  t.same(picture(one.get(quoted.allocator.sku)!, quoted.now), picture(quoted.allocator, quoted.now), 'a quoted SKU from its snapshot');
});

t.test('a crash while a snapshot is written loses nothing; a damaged snapshot is refused loudly', async (t) => {
  const db = await createTestDatabase(t);
  const a = writer('A');
  a.churn(100, 100);
  await a.commit(db.pool);
  const workers = new SnapshotWorkers();
  workers.start();
  t.teardown(() => workers.stop());
  await workers.snapshot({ databaseUrl: db.url, sku: 'A', limits });
  a.churn(20, 100);
  await a.commit(db.pool);

  // A writer dies with its INSERT uncommitted: the connection is killed mid-transaction.
  const dying = new pg.Client({ connectionString: db.url });
  dying.on('error', () => undefined);
  await dying.connect();
  await dying.query('BEGIN');
  await dying.query(insertSnapshotQuery({ sku: 'A', seq: a.allocator.seq, formatVersion: snapshotFormatVersion, state: encodeSnapshot(a.allocator).subarray(0, 40), passivated: false }));
  const pid = (await dying.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
  await db.pool.query('SELECT pg_terminate_backend($1)', [pid]);
  await dying.end().catch(() => undefined);
  const loaded = await loadSkuState(db.pool, 'A', limits);
  t.same(picture(loaded!, a.now), picture(a.allocator, a.now), 'previous snapshot + log recover everything');

  // A committed but damaged snapshot (a bug, a bit flip): refused, never half-read.
  await db.pool.query(insertSnapshotQuery({ sku: 'A', seq: a.allocator.seq, formatVersion: snapshotFormatVersion, state: Buffer.from('garbage'), passivated: false }));
  await t.rejects(loadSkuState(db.pool, 'A', limits), SnapshotFormatError);
  await t.rejects(loadAllSkuStates(db.pool, limits), SnapshotFormatError);
  await t.rejects(loadSkuStates(db.pool, ['A'], limits), SnapshotFormatError);
  const broken: string[] = [];
  const rest = await loadAllSkuStates(db.pool, limits, { onBroken: (sku) => broken.push(sku) });
  t.same(broken, ['A']);
  t.equal(rest.size, 0);
});

t.test('an archived SKU round-trips through the log and a passivated snapshot', async (t) => {
  const db = await createTestDatabase(t);
  const a = writer('ARCH');
  a.churn(10, 100);
  const events = a.allocator.archive(a.now);
  if (!Array.isArray(events)) throw new Error('archive refused');
  for (const e of events) a.allocator.apply(e);
  await db.pool.query(insertEventsQuery([...a.drain(), ...events]));
  const kinds = await db.pool.query(`SELECT kind, reservation_id FROM stock_events WHERE sku = 'ARCH' ORDER BY seq DESC LIMIT 1`);
  t.same(kinds.rows, [{ kind: 'archived', reservation_id: null }]);
  const loaded = await loadSkuState(db.pool, 'ARCH', limits);
  t.equal(loaded!.archived, true);
  t.ok(loaded!.canPassivate(a.now), 'archived with nothing live');
  const workers = new SnapshotWorkers();
  workers.start();
  t.teardown(() => workers.stop());
  t.match(await workers.snapshot({ databaseUrl: db.url, sku: 'ARCH', limits, passivated: true }), { seq: a.allocator.seq });
  const row = await db.pool.query(`SELECT passivated FROM sku_snapshots WHERE sku = 'ARCH'`);
  t.same(row.rows, [{ passivated: true }]);
  t.same(picture((await loadSkuState(db.pool, 'ARCH', limits))!, a.now), picture(a.allocator, a.now));
});

t.test('a snapshot longer than a slice is read in slices, decoded as they arrive, by every loader', async (t) => {
  const db = await createTestDatabase(t);
  const a = writer('LONG');
  a.churn(32_000, 0); // 16,000 holds and 16,000 released reservations still in memory
  await a.commit(db.pool);
  const state = encodeSnapshot(a.allocator);
  const snapshotSeq = a.allocator.seq;
  t.ok(state.length > 2 * snapshotSliceBytes, `${state.length} bytes: three slices or more`);
  await db.pool.query(insertSnapshotQuery({ sku: 'LONG', seq: a.allocator.seq, formatVersion: snapshotFormatVersion, state, passivated: false }));
  a.churn(50, 100); // a tail after the snapshot
  await a.commit(db.pool);
  const expected = picture(a.allocator, a.now);
  t.same(picture((await loadSkuState(db.pool, 'LONG', limits))!, a.now), expected, 'loadSkuState');
  t.same(picture((await loadAllSkuStates(db.pool, limits)).get('LONG')!, a.now), expected, 'loadAllSkuStates');
  t.same(picture((await loadSkuStates(db.pool, ['LONG'], limits)).get('LONG')!, a.now), expected, 'loadSkuStates');

  // Two newer snapshots written between reading a row's length and its slices remove that row: the latest is read instead.
  const gone = { sku: 'LONG', seq: snapshotSeq - 1, formatVersion: snapshotFormatVersion, bytes: state.length, state: null, passivated: false };
  t.equal((await fromRow(db.pool, gone, limits)).seq, snapshotSeq, 'a removed row gives way to the latest snapshot');
  await t.rejects(fromRow(db.pool, { ...gone, sku: 'NONE' }, limits), { name: 'SnapshotFormatError', message: /no snapshot any more/ });

  // A long snapshot that disagrees with its own header is refused mid-stream, and the pool stays usable.
  const longer = Buffer.concat([state, Buffer.alloc(100)]);
  await db.pool.query(insertSnapshotQuery({ sku: 'LONG', seq: a.allocator.seq, formatVersion: snapshotFormatVersion, state: longer, passivated: false }));
  await t.rejects(loadSkuState(db.pool, 'LONG', limits), SnapshotFormatError);
  await t.rejects(loadSkuStates(db.pool, ['LONG'], limits), SnapshotFormatError);
  t.same((await db.pool.query('SELECT 1 AS one')).rows, [{ one: 1 }], 'the pool answers after the COPY was cut');
});
