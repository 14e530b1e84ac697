import pg from 'pg';
import type { Logger } from '../log.js';
import {
  claimShardQuery,
  deregisterNodeQuery,
  FENCED_SQLSTATE,
  heartbeatQuery,
  heldShardsQuery,
  markLeavingQuery,
  registerNodeQuery,
  releaseShardQuery,
  tryLockShardQuery,
  unlockShardQuery,
  type OwnershipProof,
} from './sql.js';

/**
 * A node's lease on its shards: one dedicated Postgres connection holding a
 * session advisory lock per owned shard. Postgres frees the locks the moment
 * that session ends (process killed, network cut, pg_terminate_backend), which
 * is what lets the other nodes take the shards over.
 *
 * The lock alone cannot stop a zombie that still has pool connections, so
 * taking a shard also bumps its epoch in `shard_owners`, and every commit for
 * a shard proves (in its own statement, see sql.ts fencedInsertQuery) that the
 * row still names this node at that epoch. Once this connection reports an
 * error or ends, the lease is lost: every epoch is forgotten at once, so
 * proof() refuses and nothing more is acknowledged; commits already in flight
 * are fenced by the epoch check as soon as a taker bumps it.
 */

/** The largest epoch the shard threads' Int32Array view holds (a shard is taken far fewer times). */
export const maxSharedEpoch = 2 ** 31 - 1;

export class FencedError extends Error {
  override name = 'FencedError';
  readonly code = 'fenced';
}

/** A Postgres error raised by a failed ownership proof (the commit wrote nothing). */
export function isFencedPgError(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === FENCED_SQLSTATE;
}

export interface LeaseOptions {
  databaseUrl: string;
  nodeId: string;
  /** How other nodes reach this one (NODE_ADVERTISE_URL). */
  url: string;
  log: Logger;
  /** Advisory-lock namespace (int4); one per cluster sharing a database. */
  lockNamespace: number;
  /** Client-side bound on every lease statement. */
  statementTimeoutMs: number;
  /** Called once, synchronously, when the lease session is gone. */
  onLost: (reason: Error) => void;
  /**
   * Shard threads' view of this lease (shared-lease.ts): epoch per shard, 0 when not held. Written with
   * every change of the epochs here, in the same synchronous step, so a thread's next proof sees a loss.
   */
  sharedEpochs?: Int32Array;
}

/** What a commit's proof needs of a lease: this Lease on the node's main thread, a SharedLease in a shard thread. */
export interface LeaseView {
  epochOf(shard: number): number | undefined;
  /** The fencing token for a commit touching `shards`; throws FencedError when one is not held. */
  proof(shards: Iterable<number>): OwnershipProof;
}

export class Lease implements LeaseView {
  private readonly epochs = new Map<number, number>();
  private lostReason: Error | null = null;
  private closing = false;

  private constructor(
    private readonly client: pg.Client,
    private readonly options: LeaseOptions,
  ) {}

  static async open(options: LeaseOptions): Promise<Lease> {
    const client = new pg.Client({
      connectionString: options.databaseUrl,
      application_name: `flashstock-lease:${options.nodeId}`.slice(0, 63),
      keepAlive: true,
      keepAliveInitialDelayMillis: 1_000,
      connectionTimeoutMillis: options.statementTimeoutMs,
      // Postgres notices a vanished client (machine gone, no RST) within ~10 s and frees its locks.
      options: '-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3',
    });
    const lease = new Lease(client, options);
    client.on('error', (err) => lease.markLost(err));
    client.on('end', () => lease.markLost(new Error('lease connection ended')));
    await client.connect();
    await lease.query(registerNodeQuery(options.nodeId, options.url));
    return lease;
  }

  get nodeId(): string {
    return this.options.nodeId;
  }

  get lost(): boolean {
    return this.lostReason !== null;
  }

  /** Shards held and their epochs (a copy). */
  owned(): Map<number, number> {
    return new Map(this.epochs);
  }

  epochOf(shard: number): number | undefined {
    return this.epochs.get(shard);
  }

  /**
   * Try to take a shard: its lock, then a new epoch. Returns the epoch, or
   * null when another node holds the lock. Recover the shard's state only
   * after this returns: commits of the previous owner are fenced from here on.
   */
  async take(shard: number): Promise<number | null> {
    this.assertLive();
    const held = this.epochs.get(shard);
    if (held !== undefined) return held;
    const locked = await this.query<{ ok: boolean }>(tryLockShardQuery(this.options.lockNamespace, shard));
    if (locked.rows[0]?.ok !== true) return null;
    try {
      const claimed = await this.query<{ epoch: string }>(claimShardQuery(shard, this.options.nodeId, this.options.url));
      const epoch = Number(claimed.rows[0]!.epoch);
      this.assertLive();
      this.setEpoch(shard, epoch);
      return epoch;
    } catch (error) {
      if (!this.lost) await this.query(unlockShardQuery(this.options.lockNamespace, shard)).catch(() => undefined);
      throw error;
    }
  }

  /**
   * Hand a shard over. The caller has drained it (nothing queued, no commit in
   * flight): after this, proofs for it fail and another node may take it.
   */
  async release(shard: number): Promise<void> {
    this.assertLive();
    const epoch = this.epochs.get(shard);
    if (epoch === undefined) return;
    this.setEpoch(shard, undefined);
    await this.query(releaseShardQuery(shard, this.options.nodeId, epoch));
    await this.query(unlockShardQuery(this.options.lockNamespace, shard));
  }

  /** The fencing token for a commit touching `shards`; throws FencedError when one is not held. */
  proof(shards: Iterable<number>): OwnershipProof {
    this.assertLive();
    const unique = [...new Set(shards)];
    const epochs: number[] = [];
    for (const shard of unique) {
      const epoch = this.epochs.get(shard);
      if (epoch === undefined) throw new FencedError(`node ${this.options.nodeId} does not own shard ${shard}`);
      epochs.push(epoch);
    }
    return { nodeId: this.options.nodeId, shards: unique, epochs };
  }

  /** Renew liveness; also notices a lost session (the query fails) or a replaced registration. */
  async heartbeat(): Promise<void> {
    this.assertLive();
    let result: pg.QueryResult;
    try {
      result = await this.query(heartbeatQuery(this.options.nodeId));
    } catch (error) {
      // A heartbeat that fails or hangs means the session cannot be trusted: drop it (Postgres frees the locks).
      this.markLost(error as Error);
      throw error instanceof FencedError ? error : new FencedError(`lease lost: ${(error as Error).message}`);
    }
    if (result.rowCount === 0) this.markLost(new Error(`node ${this.options.nodeId} was registered by another session`));
    this.assertLive();
  }

  /** The shard locks Postgres says this session holds (a check of the bookkeeping, for tests and the admin view). */
  async heldInPostgres(): Promise<number[]> {
    const result = await this.query<{ shard: number }>(heldShardsQuery(this.options.lockNamespace));
    return result.rows.map((row) => row.shard);
  }

  async markLeaving(): Promise<void> {
    this.assertLive();
    await this.query(markLeavingQuery(this.options.nodeId));
  }

  /** Release everything still held and leave the cluster (graceful). */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    try {
      if (!this.lost) {
        for (const shard of [...this.epochs.keys()]) await this.release(shard);
        await this.query(deregisterNodeQuery(this.options.nodeId));
      }
    } finally {
      this.clearEpochs();
      await this.client.end().catch(() => undefined);
    }
  }

  private markLost(reason: Error): void {
    if (this.lostReason !== null || this.closing) {
      this.lostReason ??= reason;
      return;
    }
    this.lostReason = reason;
    const shards = [...this.epochs.keys()];
    this.clearEpochs();
    this.options.log.error({ err: reason, shards }, 'shard lease lost: no longer acknowledging for any shard');
    void this.client.end().catch(() => undefined);
    this.options.onLost(reason);
  }

  /** Held at `epoch` (undefined: not held), here and in the shard threads' shared view at once. */
  private setEpoch(shard: number, epoch: number | undefined): void {
    if (epoch === undefined) this.epochs.delete(shard);
    else this.epochs.set(shard, epoch);
    const shared = this.options.sharedEpochs;
    if (shared === undefined) return;
    if (epoch !== undefined && !(epoch > 0 && epoch <= maxSharedEpoch)) throw new Error(`epoch ${epoch} of shard ${shard} does not fit the shared view`);
    Atomics.store(shared, shard, epoch ?? 0);
  }

  private clearEpochs(): void {
    for (const shard of [...this.epochs.keys()]) this.setEpoch(shard, undefined);
  }

  private assertLive(): void {
    if (this.lostReason !== null) throw new FencedError(`lease lost: ${this.lostReason.message}`);
  }

  /**
   * A statement on the lease session. One that fails because the session ended or hung (no SQLSTATE:
   * connection lost or client timeout; class 08 connection exception; 57P operator intervention such as
   * pg_terminate_backend) loses the lease at once, before the caller hears of it: a FencedError.
   */
  private async query<R extends pg.QueryResultRow = pg.QueryResultRow>(config: pg.QueryConfig): Promise<pg.QueryResult<R>> {
    try {
      // pg honours a per-query `query_timeout` its typings do not list.
      return await this.client.query<R>({ ...config, query_timeout: this.options.statementTimeoutMs } as pg.QueryConfig);
    } catch (error) {
      if (!sessionEnded(error)) throw error;
      this.markLost(error as Error);
      throw new FencedError(`lease lost: ${(error as Error).message}`);
    }
  }
}

function sessionEnded(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code !== 'string' || code.startsWith('08') || code.startsWith('57P');
}
