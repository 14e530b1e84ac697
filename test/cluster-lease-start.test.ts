import t from 'tap';
import { FencedError } from '../src/cluster/lease.js';
import { Membership, type ShardHost } from '../src/cluster/membership.js';
import { createTestDatabase, testLog } from './helpers/db.js';
import { nodeLog, reapNodes, SHARDS, startNode, until, view } from './helpers/cluster.js';
import type { Child } from './helpers/child.js';
import { clientFor } from './helpers/service.js';

/**
 * A node whose lease connection is ended during its first membership round
 * (pg_terminate_backend on the lease session while it waits to claim a shard):
 * it takes a new lease and joins, and never dies of the lost one.
 *
 * The round is held at a known point: the test locks shard 0's owner row, so
 * the node's claim of shard 0 waits on it; the lease session is terminated
 * while it waits, and only then is the row let go. In-process, the lease is
 * also lost between two statements (while a taken shard opens, which then
 * fails), so handing that shard back meets the lost lease (FencedError).
 */

t.setTimeout(120_000);

t.test('the lease connection ended during the first round: the node retries, joins and serves', async (t) => {
  const db = await createTestDatabase(t);
  const nodes: Child[] = [];
  reapNodes(t, nodes);
  await db.pool.query(`INSERT INTO shard_owners (shard, node_id, url, epoch) VALUES (0, NULL, NULL, 0)`);
  const holder = await db.pool.connect();
  t.teardown(() => holder.release());
  await holder.query('BEGIN');
  await holder.query('SELECT shard FROM shard_owners WHERE shard = 0 FOR UPDATE');

  const logStart = nodeLog.length;
  const starting = startNode(db.url, 'lease-cut');
  // Keep a failed start from being an unhandled rejection before the test looks at it.
  const started = starting.then(
    (node) => ({ node, error: null }),
    (error: unknown) => ({ node: null, error }),
  );
  const waiting = await until('the lease session waiting to claim shard 0', async () => {
    const { rows } = await db.pool.query<{ pid: number }>(
      `SELECT pid FROM pg_stat_activity
       WHERE datname = current_database() AND application_name = 'flashstock-lease:lease-cut' AND wait_event_type = 'Lock'`,
    );
    return rows[0] ?? null;
  }, 60_000);
  const { rows } = await db.pool.query<{ ok: boolean }>('SELECT pg_terminate_backend($1) AS ok', [waiting.pid]);
  t.equal(rows[0]!.ok, true, 'the lease session was terminated in the middle of the first round');
  await holder.query('ROLLBACK');

  const { node, error } = await started;
  t.equal(error, null, `the node started (${String(error)})`);
  if (node === null) return;
  nodes.push(node);
  const joined = await until('the node owns every shard', async () => {
    const v = await view(node.url);
    const mine = v.nodes.find((n) => n.nodeId === 'lease-cut');
    return mine !== undefined && mine.shards.length === SHARDS ? v : null;
  });
  t.equal(joined.nodes.length, 1, 'one node');
  const { rows: leases } = await db.pool.query<{ pid: number }>(
    `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'flashstock-lease:lease-cut'`,
  );
  t.equal(leases.length, 1, 'on one lease session');
  t.not(leases[0]!.pid, waiting.pid, 'a new one');
  const client = clientFor(node.url);
  t.equal((await client.putSku('AFTER-CUT', { stock: 2 })).status, 201, 'it configures a SKU');
  t.equal((await client.reserve('AFTER-CUT', 'alice')).status, 201, 'and sells');
  t.equal(node.child.exitCode, null, 'still running');
  const lines = nodeLog.slice(logStart);
  // Warnings are kept to their first 600 characters: the count comes before the error.
  t.equal(lines.filter((line) => line.includes('"leasesLost":1,')).length, 1, 'one warning: joined again on a new lease');
  const crashes = lines.filter((line) => line.includes('"level":60') || line.includes(' stderr: ') || /unhandled|exited with/i.test(line));
  t.same(crashes, [], 'no fatal line, nothing on stderr, no exit');
});

t.test('membership start: the lease lost while a taken shard opens, its hand-back fenced; start joins again', async (t) => {
  const db = await createTestDatabase(t);
  const shardCount = 6;
  const opened = new Map<number, number>();
  let dropped = 0;
  let cut: number | null = null;
  const host: ShardHost = {
    async open(shard, epoch) {
      if (cut === null) {
        // The first shard taken: end the lease session while it opens. The node drops every shard, so
        // this open fails as a real one does, and the node hands the shard back on the lost lease.
        const { rows } = await db.pool.query<{ pid: number }>(
          `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'flashstock-lease:joining'`,
        );
        cut = rows[0]!.pid;
        await db.pool.query('SELECT pg_terminate_backend($1)', [cut]);
        for (const deadline = Date.now() + 30_000; dropped === 0 && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 10));
        throw new Error(`shard ${shard} was dropped while it opened`);
      }
      opened.set(shard, epoch);
    },
    async drain(shard) {
      opened.delete(shard);
    },
    dropAll() {
      dropped += 1;
      opened.clear();
    },
  };
  const errors: unknown[] = [];
  const log = Object.assign(Object.create(testLog) as typeof testLog, {
    warn: (object: { err?: unknown }) => errors.push(object.err),
  });
  const membership = new Membership(db.pool, host, {
    databaseUrl: db.url,
    nodeId: 'joining',
    url: 'http://127.0.0.1:1/joining',
    shardCount,
    lockNamespace: 78,
    heartbeatMs: 100,
    leaseTimeoutMs: 1_500,
    maxMovesPerRound: 2,
    statementTimeoutMs: 5_000,
    log,
  });
  t.teardown(() => membership.stop());
  await membership.start();
  t.not(cut, null, 'the lease session was terminated during the first round');
  t.equal(dropped, 1, 'the node dropped its shards once, when the lease was lost');
  t.ok(errors.length === 1 && errors[0] instanceof FencedError, `the round failed with a FencedError, logged once as a warning (${String(errors[0])})`);
  t.same([...opened.keys()].sort(), [0, 1, 2, 3, 4, 5], 'then it took every shard on a new lease');
  t.same([...membership.owned().keys()].sort(), [0, 1, 2, 3, 4, 5], 'the lease agrees');
  const { rows } = await db.pool.query<{ pid: number }>(
    `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'flashstock-lease:joining'`,
  );
  t.equal(rows.length, 1, 'one lease session');
  t.not(rows[0]!.pid, cut, 'a new one');
});
