import type pg from 'pg';
import { int4Array, int8Array } from '../outbox/pg-binary-array.js';

/**
 * Every statement of the cluster layer, one named builder each (like pg-boss's
 * plans.js). Tables and the fencing function: migrations/007_cluster.sql.
 *
 * Advisory locks use the two-int4 form `(namespace, shard)`; pg_locks shows
 * them as classid = namespace, objid = shard, objsubid = 2.
 */

/** SQLSTATE raised by cluster_prove_ownership when the proof fails. */
export const FENCED_SQLSTATE = 'FS001';

/** Default advisory-lock namespace of shard leases (an int4; migrations use the bigint space). */
export const DEFAULT_LOCK_NAMESPACE = 0x46_53_48_44; // "FSHD"

/** What a commit proves: `nodeId` holds every shard at the epoch it took it with. */
export interface OwnershipProof {
  nodeId: string;
  shards: number[];
  epochs: number[];
}

export function tryLockShardQuery(namespace: number, shard: number): pg.QueryConfig {
  return { name: 'cluster-try-lock', text: 'SELECT pg_try_advisory_lock($1::int, $2::int) AS ok', values: [namespace, shard] };
}

export function unlockShardQuery(namespace: number, shard: number): pg.QueryConfig {
  return { name: 'cluster-unlock', text: 'SELECT pg_advisory_unlock($1::int, $2::int) AS ok', values: [namespace, shard] };
}

/** The shard locks this session holds (run on the lease connection). */
export function heldShardsQuery(namespace: number): pg.QueryConfig {
  return {
    name: 'cluster-held-shards',
    text: `SELECT objid::int AS shard FROM pg_locks
           WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND classid = $1::int::oid AND objsubid = 2 AND granted
           ORDER BY 1`,
    values: [namespace],
  };
}

/** After the lock is ours: name us the owner and bump the epoch (a new fencing token). */
export function claimShardQuery(shard: number, nodeId: string, url: string): pg.QueryConfig {
  return {
    name: 'cluster-claim-shard',
    text: `INSERT INTO shard_owners AS o (shard, node_id, url, epoch) VALUES ($1, $2, $3, 1)
           ON CONFLICT (shard) DO UPDATE SET node_id = excluded.node_id, url = excluded.url,
                                             epoch = o.epoch + 1, updated_at = now()
           RETURNING epoch`,
    values: [shard, nodeId, url],
  };
}

/** Hand a shard over: no owner until someone takes it (the epoch stays; the taker bumps it). */
export function releaseShardQuery(shard: number, nodeId: string, epoch: number): pg.QueryConfig {
  return {
    name: 'cluster-release-shard',
    text: `UPDATE shard_owners SET node_id = NULL, url = NULL, updated_at = now()
           WHERE shard = $1 AND node_id = $2 AND epoch = $3`,
    values: [shard, nodeId, epoch],
  };
}

/**
 * Register (or re-register after a lost lease, or a restart under the same
 * NODE_ID) with this session as the node's lease. The same statement clears
 * the shard_owners rows still naming this node id: the new session holds none
 * of their locks, and a row left naming a node that is alive again would be
 * taken by nobody (the others see a live owner, this node thinks it owns it),
 * so those shards would answer 503 for good. Clearing keeps their epochs (the
 * next taker bumps them) and fences any older session of this id at once.
 */
export function registerNodeQuery(nodeId: string, url: string): pg.QueryConfig {
  return {
    name: 'cluster-register-node',
    text: `WITH stale AS (UPDATE shard_owners SET node_id = NULL, url = NULL, updated_at = now() WHERE node_id = $1)
           INSERT INTO cluster_nodes AS n (node_id, url, lease_pid, lease_backend_start)
           SELECT $1, $2, pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()
           ON CONFLICT (node_id) DO UPDATE SET url = excluded.url, lease_pid = excluded.lease_pid,
             lease_backend_start = excluded.lease_backend_start, started_at = now(), heartbeat_at = now(),
             leaving = false`,
    values: [nodeId, url],
  };
}

/** 0 rows: another session registered under our node id (we are a zombie). */
export function heartbeatQuery(nodeId: string): pg.QueryConfig {
  return {
    name: 'cluster-heartbeat',
    text: 'UPDATE cluster_nodes SET heartbeat_at = now() WHERE node_id = $1 AND lease_pid = pg_backend_pid()',
    values: [nodeId],
  };
}

export function markLeavingQuery(nodeId: string): pg.QueryConfig {
  return {
    name: 'cluster-mark-leaving',
    text: 'UPDATE cluster_nodes SET leaving = true WHERE node_id = $1 AND lease_pid = pg_backend_pid()',
    values: [nodeId],
  };
}

export function deregisterNodeQuery(nodeId: string): pg.QueryConfig {
  return {
    name: 'cluster-deregister-node',
    text: 'DELETE FROM cluster_nodes WHERE node_id = $1 AND lease_pid = pg_backend_pid()',
    values: [nodeId],
  };
}

export interface NodeRow {
  node_id: string;
  url: string;
  leaving: boolean;
  lease_pid: number;
  lease_backend_start: Date;
  heartbeat_age_ms: number;
  session_alive: boolean;
}

/** Every registered node with the two liveness signals: its lease session exists, its heartbeat's age. */
export function listNodesQuery(): pg.QueryConfig {
  return {
    name: 'cluster-list-nodes',
    text: `SELECT n.node_id, n.url, n.leaving, n.lease_pid, n.lease_backend_start,
                  (extract(epoch FROM clock_timestamp() - n.heartbeat_at) * 1000)::float8 AS heartbeat_age_ms,
                  EXISTS (SELECT 1 FROM pg_stat_activity a
                          WHERE a.pid = n.lease_pid AND a.backend_start = n.lease_backend_start) AS session_alive
           FROM cluster_nodes n ORDER BY n.node_id`,
    values: [],
  };
}

export interface OwnerRow {
  shard: number;
  node_id: string | null;
  url: string | null;
  epoch: string;
}

export function listOwnersQuery(): pg.QueryConfig {
  return { name: 'cluster-list-owners', text: 'SELECT shard, node_id, url, epoch FROM shard_owners ORDER BY shard', values: [] };
}

export function shardOwnerQuery(shard: number): pg.QueryConfig {
  return { name: 'cluster-shard-owner', text: 'SELECT shard, node_id, url, epoch FROM shard_owners WHERE shard = $1', values: [shard] };
}

/**
 * End a hung node's lease session (heartbeat older than `staleMs`, session
 * still open): its locks are freed and its commits fenced by the epochs the
 * takers bump. Staleness is re-checked here so a node that just heartbeated is
 * spared.
 */
export function terminateHungLeaseQuery(nodeId: string, staleMs: number): pg.QueryConfig {
  return {
    name: 'cluster-terminate-hung-lease',
    text: `SELECT pg_terminate_backend(a.pid) AS terminated
           FROM cluster_nodes n JOIN pg_stat_activity a ON a.pid = n.lease_pid AND a.backend_start = n.lease_backend_start
           WHERE n.node_id = $1 AND n.heartbeat_at < clock_timestamp() - make_interval(secs => $2::float8 / 1000)
             AND a.pid <> pg_backend_pid()`,
    values: [nodeId, staleMs],
  };
}

/** Forget nodes whose lease session is gone and whose heartbeat is older than `staleMs`. */
export function removeDeadNodesQuery(staleMs: number): pg.QueryConfig {
  return {
    name: 'cluster-remove-dead-nodes',
    text: `DELETE FROM cluster_nodes n
           WHERE n.heartbeat_at < clock_timestamp() - make_interval(secs => $1::float8 / 1000)
             AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                             WHERE a.pid = n.lease_pid AND a.backend_start = n.lease_backend_start)`,
    values: [staleMs],
  };
}

/** The proof on its own, for a transaction that writes something other than the event insert. */
export function proveOwnershipQuery(proof: OwnershipProof): pg.QueryConfig {
  return {
    name: 'cluster-prove-ownership',
    text: 'SELECT cluster_prove_ownership($1, $2::int[], $3::bigint[]) AS ok',
    values: proofValues(proof),
  };
}

/** The proof's parameters: its arrays in binary, like the insert's own (no array literal built per commit). */
function proofValues(proof: OwnershipProof): [string, Buffer, Buffer] {
  return [proof.nodeId, int4Array(proof.shards), int8Array(proof.epochs)];
}

/**
 * The group-commit insert (src/outbox/event-log.ts, `INSERT … SELECT * FROM
 * unnest(…)`) with the proof as its WHERE: still one statement, one round
 * trip. A failed proof raises FENCED_SQLSTATE and inserts nothing.
 */
export function fencedInsertQuery(insert: pg.QueryConfig, proof: OwnershipProof): pg.QueryConfig {
  const values = insert.values ?? [];
  if (!/unnest\([^;]*\)\s*$/.test(insert.text)) {
    throw new Error('fencedInsertQuery: expected an INSERT … SELECT … FROM unnest(…) statement');
  }
  const n = values.length;
  return {
    ...insert,
    name: insert.name === undefined ? undefined : `${insert.name}-fenced`,
    text: `${insert.text}\nWHERE cluster_prove_ownership($${n + 1}, $${n + 2}::int[], $${n + 3}::bigint[])`,
    values: [...values, ...proofValues(proof)],
  };
}
