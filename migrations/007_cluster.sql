-- Cluster membership and shard ownership (src/cluster). Ownership itself is a
-- session advisory lock per shard, pg_try_advisory_lock(<namespace>, shard),
-- held on each node's dedicated lease connection: it is freed the moment that
-- session ends (process killed, connection cut, pg_terminate_backend). These
-- tables are for routing (who owns what, at which URL) and for fencing (the
-- epoch every group commit proves in its own statement).

CREATE TABLE cluster_nodes (
  node_id             text        PRIMARY KEY,
  url                 text        NOT NULL,
  -- The node's lease session: alive while this backend exists (pid + start
  -- time, since pids are reused).
  lease_pid           integer     NOT NULL,
  lease_backend_start timestamptz NOT NULL,
  started_at          timestamptz NOT NULL DEFAULT now(),
  heartbeat_at        timestamptz NOT NULL DEFAULT now(),
  -- Set by a graceful leave: the node hands its shards over and takes none.
  leaving             boolean     NOT NULL DEFAULT false
);

CREATE TABLE shard_owners (
  shard      integer     PRIMARY KEY CHECK (shard >= 0),
  -- NULL: released (handed over) or never taken.
  node_id    text,
  url        text,
  -- Bumped by every take. A node commits for a shard only while the row still
  -- names it at the epoch it took: a lost shard can never be written again.
  epoch      bigint      NOT NULL DEFAULT 0 CHECK (epoch >= 0),
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- The fencing proof, run inside the group commit's statement (see
-- src/cluster/sql.ts fencedInsertQuery): true when `node` holds every shard at
-- the given epoch, otherwise it raises SQLSTATE FS001 and the statement (and
-- its transaction) writes nothing. STABLE and uncorrelated, so the planner
-- runs it once per statement (a one-time filter), not once per row.
CREATE FUNCTION cluster_prove_ownership(node text, shards integer[], epochs bigint[])
RETURNS boolean LANGUAGE plpgsql STABLE AS $$
DECLARE
  proven integer;
BEGIN
  IF cardinality(shards) IS DISTINCT FROM cardinality(epochs) THEN
    RAISE EXCEPTION 'cluster_prove_ownership: % shards but % epochs', cardinality(shards), cardinality(epochs);
  END IF;
  SELECT count(*) INTO proven
  FROM shard_owners o
  JOIN unnest(shards, epochs) AS p(shard, epoch) ON o.shard = p.shard AND o.epoch = p.epoch
  WHERE o.node_id = node;
  IF proven <> cardinality(shards) THEN
    RAISE EXCEPTION USING ERRCODE = 'FS001',
      MESSAGE = format('fenced: node %s no longer owns all of shards %s at epochs %s', node, shards, epochs);
  END IF;
  RETURN true;
END $$;
