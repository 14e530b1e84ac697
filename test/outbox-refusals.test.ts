import t from 'tap';
import type pg from 'pg';
import type { StockEvent } from '../src/allocator/types.js';
import { CommitError, defaultOutboxOptions, Outbox, type BatchFailure } from '../src/outbox/outbox.js';
import { createTestDatabase, testLog } from './helpers/db.js';

/**
 * One bad row never fails a group commit: a batch the database refuses for one
 * row's content commits everything else, refuses that row alone (and undoes
 * only what its SKU decided after it), and is never taken for another writer.
 * A real Postgres, a real Outbox, rows appended in one tick so they share a batch.
 */

interface Tag {
  key: string;
  sku: string;
}

/** The attachment writer of these tests: one row per tag in a table whose key is unique. */
async function writeTags(client: pg.PoolClient, tags: Tag[]): Promise<void> {
  await client.query({
    text: 'INSERT INTO test_tags (key, sku) SELECT * FROM unnest($1::text[], $2::text[])',
    values: [tags.map((tag) => tag.key), tags.map((tag) => tag.sku)],
  });
}

const atMs = Date.parse('2030-01-01T00:00:00Z');

function configured(sku: string, seq: number): StockEvent {
  const config = { stock: 100, perShopperLimit: 100, holdSeconds: 60, priceCents: 100, currency: 'EUR', startsAtMs: null, endsAtMs: null };
  return { kind: 'configured', sku, seq, atMs, config };
}

function reserved(sku: string, seq: number, quantity = 1): StockEvent {
  const reservationId = `00000000-0000-4000-8000-${String(seq).padStart(4, '0')}${sku.charCodeAt(0).toString(16).padStart(8, '0')}`;
  return { kind: 'reserved', sku, seq, atMs, reservationId, shopperId: `s-${sku}-${seq}`, quantity, expiresAtMs: atMs + 60_000, idempotencyKey: `k-${seq}` };
}

async function setUp(t: { teardown(fn: () => unknown): void }) {
  const db = await createTestDatabase(t);
  await db.pool.query('CREATE TABLE test_tags (key text PRIMARY KEY, sku text NOT NULL)');
  await db.pool.query(`INSERT INTO test_tags VALUES ('taken', 'elsewhere')`);
  const failures: BatchFailure[] = [];
  const outbox = new Outbox<Tag>(db.pool, { ...defaultOutboxOptions, commitTimeoutMs: 10_000 }, testLog, (failure) => failures.push(failure), writeTags);
  /** Append in this tick; resolves with what the entry heard (null: durable). */
  const append = (event: StockEvent, tag?: Tag) =>
    new Promise<Error | null>((resolve) => outbox.append(event, resolve, tag));
  const barrier = (sku: string) => new Promise<Error | null>((resolve) => outbox.barrier(sku, resolve));
  const logged = async () =>
    (await db.pool.query<{ place: string }>(`SELECT sku || ':' || seq AS place FROM stock_events ORDER BY sku, seq`)).rows.map((r) => r.place);
  return { db, outbox, failures, append, barrier, logged };
}

t.test('a unique violation in one attachment row: the rest commits, only that decision is refused, not fenced', async (t) => {
  const { db, outbox, failures, append, barrier, logged } = await setUp(t);
  // All in one tick: one batch. A's third decision carries the row that collides.
  const heard = [
    append(configured('A', 1)),
    append(reserved('A', 2), { key: 'a-2', sku: 'A' }),
    append(reserved('A', 3), { key: 'taken', sku: 'A' }),
    append(reserved('A', 4), { key: 'a-4', sku: 'A' }),
    append(configured('B', 1)),
    append(reserved('B', 2), { key: 'b-2', sku: 'B' }),
    append(configured('C', 1)),
  ];
  const barrierB = barrier('B');
  const barrierA = barrier('A');
  const [a1, a2, a3, a4, b1, b2, c1] = await Promise.all(heard);

  t.same([a1, a2, b1, b2, c1], [null, null, null, null, null], 'every other decision is durable, also A’s before the refused one');
  t.ok(a3 instanceof CommitError, 'the refused decision hears a CommitError');
  const refused = a3 as CommitError;
  t.equal(refused.refused, true, 'marked refused: its own row');
  t.equal(refused.fenced, false, 'not fencing');
  t.match(refused.cause, { code: '23505', constraint: 'test_tags_pkey' }, 'the database’s reason travels with it');
  t.ok(a4 instanceof CommitError && !a4.refused && !a4.fenced, 'A’s later decision, made on top of it, is undone (not refused, not fenced)');
  t.equal(await barrierB, null, 'a barrier of another SKU is satisfied');
  t.ok((await barrierA) instanceof CommitError, 'a barrier of A after the refused decision is not');

  t.same(await logged(), ['A:1', 'A:2', 'B:1', 'B:2', 'C:1'], 'the log holds everything but the refused decision and what followed it on A');
  const tags = (await db.pool.query<{ key: string }>('SELECT key FROM test_tags ORDER BY key')).rows.map((r) => r.key);
  t.same(tags, ['a-2', 'b-2', 'taken'], 'attachments commit with their decisions, the refused one’s not');

  t.equal(failures.length, 1, 'the refused SKU is reported, so its shell rebuilds it from the log');
  t.same([...failures[0]!.skus], ['A']);
  t.same([...failures[0]!.firstSeqs], [['A', 3]]);
  t.equal(failures[0]!.error.fenced, false);
  t.match(outbox.stats, { batches: 1, failedBatches: 0, isolatedBatches: 1, refusedEvents: 1, undoneEvents: 1, lastBatchEvents: 5 }, 'one batch, committed without the refused rows');

  // The outbox keeps going: A continues from the log's seq 3.
  t.equal(await append(reserved('A', 3), { key: 'a-3', sku: 'A' }), null, 'A’s next decision commits');
});

t.test('a row the event log itself refuses (a check constraint), in a single-statement batch, is refused alone too', async (t) => {
  const { db, outbox, failures, append, logged } = await setUp(t);
  await db.pool.query('ALTER TABLE stock_events ADD CONSTRAINT no_sevens CHECK (quantity IS DISTINCT FROM 7)');
  const heard = await Promise.all([
    append(configured('X', 1)),
    append(configured('Y', 1)),
    append(reserved('Y', 2, 7)),
    append(reserved('X', 2)),
    append(reserved('Y', 3)),
  ]);
  t.same([heard[0], heard[1], heard[3]], [null, null, null], 'X and Y’s earlier decision are durable');
  t.match(heard[2], { refused: true, fenced: false, cause: { code: '23514', constraint: 'no_sevens' } }, 'the 7 is refused alone');
  t.match(heard[4], { refused: false, fenced: false }, 'Y’s later decision is undone');
  t.same(await logged(), ['X:1', 'X:2', 'Y:1']);
  t.same([...failures[0]!.skus], ['Y']);
  t.match(outbox.stats, { batches: 1, failedBatches: 0, isolatedBatches: 1 });
});

t.test('a unique violation is fencing only when another writer’s rows hold the batch’s (sku, seq)', async (t) => {
  const { db, outbox, failures, append } = await setUp(t);
  t.equal(await append(configured('F', 1)), null);
  // Another writer takes F's seq 2.
  await db.pool.query(`INSERT INTO stock_events (sku, seq, kind, at_ms) VALUES ('F', 2, 'archived', 1)`);
  const heard = await Promise.all([append(reserved('F', 2), { key: 'f-2', sku: 'F' }), append(configured('G', 1))]);
  t.match(heard[0], { fenced: true, refused: false }, 'a (sku, seq) collision with a foreign row is fencing');
  t.match(heard[1], { fenced: true }, 'and fails its whole batch, as a lost lease does');
  t.equal(failures.length, 1);
  t.equal(failures[0]!.error.fenced, true);
  t.equal(outbox.stats.isolatedBatches, 0, 'a collision in the log is never written again row by row');
});
