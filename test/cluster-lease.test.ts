import t, { type Test } from 'tap';
import pg from 'pg';
import type { StockEvent } from '../src/allocator/types.js';
import { ClusterShards } from '../src/cluster/cluster-shards.js';
import { FencedError, isFencedPgError, Lease } from '../src/cluster/lease.js';
import { fencedInsertQuery, listNodesQuery, proveOwnershipQuery, type NodeRow } from '../src/cluster/sql.js';
import { insertEventsQuery } from '../src/outbox/event-log.js';
import { CommitError, Outbox } from '../src/outbox/outbox.js';
import { shardOf } from '../src/shard/placement.js';
import { createTestDatabase, testLog } from './helpers/db.js';
import { testHostOptions } from './helpers/shard-host.js';

const namespace = 4242;

function configured(sku: string, seq: number): StockEvent {
  return {
    kind: 'configured',
    sku,
    seq,
    atMs: 1_700_000_000_000,
    config: { stock: 10, perShopperLimit: 2, holdSeconds: 60, priceCents: 100, currency: 'USD', startsAtMs: null, endsAtMs: null },
  };
}

async function openLease(url: string, nodeId: string, lost: Error[] = []): Promise<Lease> {
  return Lease.open({
    databaseUrl: url,
    nodeId,
    url: `http://127.0.0.1:1/${nodeId}`,
    log: testLog,
    lockNamespace: namespace,
    statementTimeoutMs: 5_000,
    onLost: (reason) => lost.push(reason),
  });
}

async function rowCount(pool: pg.Pool, sku: string): Promise<number> {
  const { rows } = await pool.query<{ n: string }>('SELECT count(*) AS n FROM stock_events WHERE sku = $1', [sku]);
  return Number(rows[0]!.n);
}

async function nodes(pool: pg.Pool): Promise<Map<string, NodeRow>> {
  const { rows } = await pool.query<NodeRow>(listNodesQuery());
  return new Map(rows.map((row) => [row.node_id, row]));
}

t.test('two lease holders on one database: one owner per shard, epochs bump on every take', async (t) => {
  const db = await createTestDatabase(t);
  const a = await openLease(db.url, 'node-a');
  const b = await openLease(db.url, 'node-b');
  t.teardown(() => Promise.all([a.close(), b.close()]));

  t.equal(await a.take(3), 1, 'first take of a shard is epoch 1');
  t.equal(await b.take(3), null, 'the other node cannot take a held shard');
  t.equal(await a.take(3), 1, 'taking a held shard again changes nothing');
  t.equal(await b.take(4), 1, 'another shard is free');
  t.same(await a.heldInPostgres(), [3], 'Postgres agrees on what A holds');
  t.same(await b.heldInPostgres(), [4]);

  await a.release(3);
  t.throws(() => a.proof([3]), FencedError, 'a released shard cannot be proven');
  t.equal(await b.take(3), 2, 'the taker bumps the epoch');
  const owner = await db.pool.query('SELECT node_id, epoch FROM shard_owners WHERE shard = 3');
  t.same(owner.rows[0], { node_id: 'node-b', epoch: '2' });
  t.same(b.proof([4, 3, 3]), { nodeId: 'node-b', shards: [4, 3], epochs: [1, 2] }, 'proof deduplicates shards');
});

t.test('the fenced group-commit insert: the owner writes, a stale epoch writes nothing', async (t) => {
  const db = await createTestDatabase(t);
  const a = await openLease(db.url, 'node-a');
  const b = await openLease(db.url, 'node-b');
  t.teardown(() => Promise.all([a.close(), b.close()]));

  await a.take(7);
  const staleProof = a.proof([7]);
  const insert = fencedInsertQuery(insertEventsQuery([configured('SKU-1', 1), configured('SKU-2', 1)]), staleProof);
  const written = await db.pool.query(insert);
  t.equal(written.rowCount, 2, 'the owner at its epoch commits the whole batch in one statement');

  await a.release(7);
  await b.take(7);
  const refused = await db.pool.query(fencedInsertQuery(insertEventsQuery([configured('SKU-1', 2)]), staleProof)).then(
    () => null,
    (error: unknown) => error,
  );
  t.ok(isFencedPgError(refused), 'the stale epoch is refused with FS001');
  t.equal(await rowCount(db.pool, 'SKU-1'), 1, 'nothing of the fenced batch was written');

  const wrongNode = { ...b.proof([7]), nodeId: 'node-a' };
  t.ok(isFencedPgError(await db.pool.query(proveOwnershipQuery(wrongNode)).catch((e: unknown) => e)), 'right epoch, wrong node: fenced');
  const partial = { nodeId: 'node-b', shards: [7, 8], epochs: [2, 1] };
  t.ok(isFencedPgError(await db.pool.query(proveOwnershipQuery(partial)).catch((e: unknown) => e)), 'one unowned shard fences the batch');
  const ok = await db.pool.query(proveOwnershipQuery(b.proof([7])));
  t.equal(ok.rows[0].ok, true, 'the current owner proves ownership');

  // In a transaction (batches with attachments), the failed proof rolls back what came before it.
  const client = await db.pool.connect();
  try {
    await client.query('BEGIN');
    await client.query(insertEventsQuery([configured('SKU-3', 1)]));
    const err = await client.query(proveOwnershipQuery(staleProof)).catch((e: unknown) => e);
    t.ok(isFencedPgError(err));
    await client.query('ROLLBACK');
  } finally {
    client.release();
  }
  t.equal(await rowCount(db.pool, 'SKU-3'), 0, 'the transaction wrote nothing');
});

t.test('a terminated lease connection: the node learns at once, and its in-flight proof is fenced', async (t) => {
  const db = await createTestDatabase(t);
  const lostA: Error[] = [];
  const a = await openLease(db.url, 'node-a', lostA);
  const b = await openLease(db.url, 'node-b');
  t.teardown(() => Promise.all([a.close(), b.close()]));

  t.equal(await a.take(1), 1);
  t.equal(await a.take(2), 1);
  const inFlightProof = a.proof([1, 2]);
  const before = await nodes(db.pool);
  t.equal(before.get('node-a')?.session_alive, true);

  await db.pool.query('SELECT pg_terminate_backend($1)', [before.get('node-a')!.lease_pid]);
  const deadline = Date.now() + 30_000;
  while (lostA.length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
  t.equal(lostA.length, 1, 'the error listener reported the lost lease once');
  t.ok(a.lost);
  t.throws(() => a.proof([1]), FencedError, 'nothing new can be proven after the loss');
  t.same(a.owned(), new Map(), 'every shard was forgotten at once');
  await t.rejects(a.heartbeat(), FencedError);

  const after = await nodes(db.pool);
  t.equal(after.get('node-a')?.session_alive, false, 'membership sees the session gone');
  t.equal(after.get('node-b')?.session_alive, true);

  t.equal(await b.take(1), 2, 'the lock was freed by the session ending; the taker bumps the epoch');
  const zombie = await db.pool.query(fencedInsertQuery(insertEventsQuery([configured('Z', 1)]), inFlightProof)).catch((e: unknown) => e);
  t.ok(isFencedPgError(zombie), "the zombie's in-flight commit is fenced by the epoch");
  t.equal(await rowCount(db.pool, 'Z'), 0);
});

t.test('heartbeat: a second registration under the same node id fences the first', async (t) => {
  const db = await createTestDatabase(t);
  const lost: Error[] = [];
  const first = await openLease(db.url, 'node-x', lost);
  await first.heartbeat();
  const second = await openLease(db.url, 'node-x');
  t.teardown(() => Promise.all([first.close(), second.close()]));
  await t.rejects(first.heartbeat(), FencedError, 'the replaced registration learns on its next heartbeat');
  t.equal(lost.length, 1);
  await second.heartbeat();
  t.pass('the newer registration heartbeats');
});

t.test('the outbox proves ownership in its group commit: a stale epoch or a lost lease is fenced, nothing inserted', async (t) => {
  const db = await createTestDatabase(t);
  const a = await openLease(db.url, 'node-a');
  const b = await openLease(db.url, 'node-b');
  t.teardown(() => Promise.all([a.close(), b.close()]));
  const epoch = (await a.take(5))!;
  const failures: boolean[] = [];
  const outbox = new Outbox(
    db.pool,
    {
      batchMaxEvents: 100,
      maxPendingEvents: 100,
      commitTimeoutMs: 5000,
      fenceInsert: (insert) =>
        fencedInsertQuery(insert, (() => {
          if (a.epochOf(5) !== epoch) throw new FencedError('shard 5 is no longer ours');
          return a.proof([5]);
        })()),
    },
    testLog,
    (failure) => failures.push(failure.error.fenced),
  );
  const commit = (event: StockEvent) => new Promise<Error | null>((resolve) => outbox.append(event, resolve));

  t.equal(await commit(configured('P', 1)), null, 'the owner commits');
  t.equal(await rowCount(db.pool, 'P'), 1);

  // Another node takes the shard behind A's back (A's lease is still open: a partition).
  await db.pool.query("UPDATE shard_owners SET node_id = 'node-b', epoch = epoch + 1 WHERE shard = 5");
  const refused = await commit(configured('P', 2));
  t.type(refused, CommitError);
  t.ok(isFencedPgError((refused as CommitError).cause), 'a stale epoch is refused by Postgres in the same statement');
  t.equal((refused as CommitError).fenced, true, 'and the batch fails as fenced');

  await a.release(5).catch(() => undefined);
  const local = await commit(configured('P', 2));
  t.type((local as CommitError).cause, FencedError, 'once the lease no longer holds the shard, the commit fails before it is sent');
  t.equal((local as CommitError).fenced, true);
  t.same(failures, [true, true], 'the shell is told both batches were fenced');
  t.equal(await rowCount(db.pool, 'P'), 1, 'nothing was inserted after the shard was lost');
  await outbox.drained();
});

/** A node's shards over one ShardHost (one outbox), fenced by `lease`, on a 4-shard cluster. */
function nodeShards(db: { pool: pg.Pool; url: string }, t: Test, lease: Lease): ClusterShards {
  const shards = new ClusterShards(db.pool, testLog, {
    shardCount: 4,
    hostOptions: testHostOptions(db, t),
    lease: () => (lease.lost ? null : lease),
    notify: () => undefined,
  });
  t.teardown(() => shards.close());
  return shards;
}

/** A SKU name that lives in `shard` of 4. */
function skuIn(shard: number, prefix: string): string {
  for (let i = 0; ; i++) if (shardOf(`${prefix}-${i}`, 4) === shard) return `${prefix}-${i}`;
}

const bigSale = { stock: 100, perShopperLimit: 100, holdSeconds: 60, priceCents: 100, currency: 'USD', startsAtMs: null, endsAtMs: null };

function reserve(shards: ClusterShards, sku: string, key: string) {
  return shards.handle(shardOf(sku, 4), { type: 'reserve', sku, shopperId: `shopper-${key}`, quantity: 1, idempotencyKey: key });
}

async function reservedRows(pool: pg.Pool, sku: string): Promise<number> {
  const { rows } = await pool.query<{ n: number }>("SELECT count(*)::int AS n FROM stock_events WHERE sku = $1 AND kind = 'reserved'", [sku]);
  return rows[0]!.n;
}

t.test('one outbox per node: a batch of two shards proves both epochs; one stale epoch fences the whole batch', async (t) => {
  const db = await createTestDatabase(t);
  const a = await openLease(db.url, 'node-a');
  t.teardown(() => a.close());
  const node = nodeShards(db, t, a);
  const [x, y] = [skuIn(0, 'X'), skuIn(1, 'Y')];
  for (const shard of [0, 1]) await node.open(shard, (await a.take(shard))!);
  t.same(node.shards(), [0, 1]);
  for (const sku of [x, y]) t.match(await node.handle(shardOf(sku, 4), { type: 'configure', sku, config: bigSale }), { ok: true });

  const batches = node.outboxStats.batches;
  const both = await Promise.all([reserve(node, x, 'x1'), reserve(node, y, 'y1')]);
  t.ok(both.every((reply) => reply.ok), 'decided in one turn on two shards: both acknowledged');
  t.equal(node.outboxStats.batches, batches + 1, 'in one group commit');
  t.equal(node.outboxStats.lastBatchEvents, 2, 'holding the events of both shards');

  // Shard 1's epoch moves behind the node's back (a partition): a batch holding any of its events proves a stale epoch.
  await db.pool.query('UPDATE shard_owners SET epoch = epoch + 1 WHERE shard = 1');
  const failed = node.outboxStats.failedBatches;
  const fenced = await Promise.all([reserve(node, x, 'x2'), reserve(node, y, 'y2')]);
  t.match(fenced, [{ ok: false, code: 'unavailable' }, { ok: false, code: 'unavailable' }], 'neither decision is acknowledged');
  t.equal(node.outboxStats.failedBatches, failed + 1, 'the batch failed whole');
  t.same([await reservedRows(db.pool, x), await reservedRows(db.pool, y)], [1, 1], 'nothing of it was inserted, not even the shard still held');

  // Once rebuilt, shard 0's batches (no event of shard 1) prove only shard 0 and commit.
  let retried = await reserve(node, x, 'x3');
  for (let i = 0; !retried.ok && i < 200; i++) {
    await new Promise((resolve) => setTimeout(resolve, 25));
    retried = await reserve(node, x, 'x3');
  }
  t.match(retried, { ok: true }, 'a batch of the held shard alone commits');
  t.equal(await reservedRows(db.pool, x), 2);
  t.match(await reserve(node, y, 'y3'), { ok: false, code: 'unavailable' }, 'the stale shard never commits again');
  t.equal(await reservedRows(db.pool, y), 1);
});

t.test('drain commits the shard’s decisions (its epoch still proven) before the lease is released; dropAll fails what is queued', async (t) => {
  const db = await createTestDatabase(t);
  const a = await openLease(db.url, 'node-a');
  const b = await openLease(db.url, 'node-b');
  t.teardown(() => Promise.all([a.close(), b.close()]));
  const node = nodeShards(db, t, a);
  const [x, y] = [skuIn(0, 'X'), skuIn(1, 'Y')];
  for (const shard of [0, 1]) await node.open(shard, (await a.take(shard))!);
  await t.rejects(node.open(0, a.epochOf(0)!), /already open/);
  for (const sku of [x, y]) t.match(await node.handle(shardOf(sku, 4), { type: 'configure', sku, config: bigSale }), { ok: true });

  // Decided in the same turn as the drain, sharing batches with shard 1's decisions.
  const decided = Array.from({ length: 10 }, (_, i) => [reserve(node, x, `x${i}`), reserve(node, y, `y${i}`)]).flat();
  const draining = node.drain(0);
  t.same(node.shards(), [1], 'a draining shard is no longer served');
  t.match(await reserve(node, x, 'late'), { ok: false, code: 'unavailable' }, 'new work for it: 503 at once');
  await draining;
  t.equal(await reservedRows(db.pool, x), 10, 'everything it decided is in the log when drain resolves');
  t.ok((await Promise.all(decided)).every((reply) => reply.ok), 'and acknowledged');
  await a.release(0);
  t.equal(await b.take(0), 2, 'then the lease is handed over');
  t.match(await reserve(node, x, 'after'), { ok: false, code: 'unavailable', detail: /not owned/ });
  t.match(await reserve(node, y, 'y-after'), { ok: true }, 'the other shard keeps committing');

  const queued = Array.from({ length: 5 }, (_, i) => reserve(node, y, `q${i}`));
  node.dropAll(new Error('test: lease lost'));
  t.same(node.shards(), []);
  t.ok((await Promise.all(queued)).every((reply) => !reply.ok), 'decisions queued when the lease went are not acknowledged');
  t.equal(await reservedRows(db.pool, y), 11, 'and not inserted');
});
