import type pg from 'pg';
import type { Logger } from '../log.js';
import { FencedError, Lease } from './lease.js';
import { isAlive, planFor, type ClusterView } from './plan.js';
import {
  listNodesQuery,
  listOwnersQuery,
  removeDeadNodesQuery,
  terminateHungLeaseQuery,
  type NodeRow,
  type OwnerRow,
} from './sql.js';

/**
 * Membership: the I/O loop around plan.ts. Every `heartbeatMs` a node renews
 * its heartbeat, reads who is alive and who owns what, ends the lease session
 * of a node whose heartbeat is stale (hung, or cut off with its session still
 * open), and applies its own plan: drain then release surplus shards, take and
 * open free ones. The lease (lease.ts) is the guarantee; this loop only decides.
 */

/** What the node's shards must do when ownership changes (the shard host implements it). */
export interface ShardHost {
  /** Load the shard (snapshot + tail) and serve it; commits must prove `epoch`. Throws if it cannot. */
  open(shard: number, epoch: number): Promise<void>;
  /** Stop taking commands for the shard and commit what is queued: after this it is handed over. */
  drain(shard: number): Promise<void>;
  /** The lease is gone: stop acknowledging for every shard now (no await, no commit). */
  dropAll(reason: Error): void;
}

export interface MembershipOptions {
  /** Each round's new view (the routing table follows it: src/cluster/routes.ts). */
  onSnapshot?: (snapshot: ClusterSnapshot) => void;
  databaseUrl: string;
  nodeId: string;
  url: string;
  shardCount: number;
  lockNamespace: number;
  heartbeatMs: number;
  /** A node whose heartbeat is older than this is dead; its lease session is ended. */
  leaseTimeoutMs: number;
  /** Shards taken or released per round (bounds how much moves at once). */
  maxMovesPerRound: number;
  statementTimeoutMs: number;
  log: Logger;
  /** With shard threads: the lease's epochs, mirrored where every thread reads them (shared-lease.ts). */
  sharedEpochs?: Int32Array;
}

export interface OwnerInfo {
  nodeId: string;
  url: string;
  epoch: number;
}

export interface NodeInfo {
  nodeId: string;
  url: string;
  alive: boolean;
  leaving: boolean;
  shards: number[];
}

/** What the admin view and the router read: refreshed every round. */
export interface ClusterSnapshot {
  self: string;
  shardCount: number;
  nodes: NodeInfo[];
  /** owners[shard]: current owner if it is alive, else null (unknown or moving: callers get 503). */
  owners: (OwnerInfo | null)[];
  /** Epoch per shard as last read (also for released shards). */
  epochs: number[];
}

/** Lease sessions a starting node may lose (each joins again on a new one) before its start fails. */
const maxLeasesLostWhileJoining = 3;

export class Membership {
  private lease: Lease | null = null;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<number> | null = null;
  private leaving = false;
  private stopped = false;
  private snapshotValue: ClusterSnapshot;

  constructor(
    private readonly pool: pg.Pool,
    private readonly host: ShardHost,
    private readonly options: MembershipOptions,
  ) {
    this.snapshotValue = {
      self: options.nodeId,
      shardCount: options.shardCount,
      nodes: [],
      owners: new Array<OwnerInfo | null>(options.shardCount).fill(null),
      epochs: new Array<number>(options.shardCount).fill(0),
    };
  }

  get snapshot(): ClusterSnapshot {
    return this.snapshotValue;
  }

  /** The shards this node holds now, with their epochs (empty once the lease is lost). */
  owned(): Map<number, number> {
    return this.lease?.owned() ?? new Map();
  }

  /** The current lease, for the fencing proof of a commit (null: own nothing). */
  currentLease(): Lease | null {
    return this.lease !== null && !this.lease.lost ? this.lease : null;
  }

  /**
   * Join, and run rounds back to back while they still move shards (bounded),
   * so a node that starts alone owns every shard before it says it is ready.
   */
  async start(): Promise<void> {
    const most = Math.ceil(this.options.shardCount / this.options.maxMovesPerRound) + 2;
    let leasesLost = 0;
    for (let i = 0; i < most; ) {
      let moved: number;
      try {
        moved = await this.round();
      } catch (err) {
        // The lease session ended mid-round (Postgres restarted, an operator or a peer's hung-node check
        // terminated it): the node has dropped every shard and joins again on a new lease, as a running
        // node does at its next round. Anything else, or a lease lost again and again, fails the start.
        if (!this.leaseLostIn(err) || leasesLost === maxLeasesLostWhileJoining) throw err;
        leasesLost += 1;
        this.options.log.warn({ leasesLost, err }, 'lease lost while joining; joining again on a new lease');
        await new Promise((resolve) => setTimeout(resolve, this.options.heartbeatMs));
        continue;
      }
      if (moved === 0) break;
      i += 1;
    }
    this.schedule();
  }

  /** Whether a round failed because its lease session ended (the error, or the lease, says so). */
  private leaseLostIn(error: unknown): boolean {
    return error instanceof FencedError || this.lease?.lost === true;
  }

  /** One round now (tests; also what the timer runs); resolves with the shards it moved. Rounds never overlap. */
  round(): Promise<number> {
    this.running ??= this.runRound().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  /** Graceful leave: take nothing more, drain and hand over every shard, deregister. */
  async leave(): Promise<void> {
    this.leaving = true;
    this.stopTimer();
    await this.running;
    const lease = this.currentLease();
    if (lease !== null) {
      await lease.markLeaving();
      for (const shard of lease.owned().keys()) {
        await this.host.drain(shard);
        await lease.release(shard);
        this.options.log.info({ shard }, 'handed shard over');
      }
      await lease.close();
    }
    this.stopped = true;
  }

  /** Stop without handing over (the sessions end; others take over after the lease timeout at most). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.stopTimer();
    await this.running;
    await this.lease?.close();
  }

  private schedule(): void {
    if (this.stopped || this.leaving) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.round().then(
        () => this.schedule(),
        (err: unknown) => {
          this.options.log.warn({ err }, 'membership round failed; retrying');
          this.schedule();
        },
      );
    }, this.options.heartbeatMs);
  }

  private stopTimer(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private async runRound(): Promise<number> {
    if (this.stopped || this.leaving) return 0;
    const lease = await this.liveLease();
    await lease.heartbeat();
    const [nodes, owners] = await Promise.all([
      this.pool.query<NodeRow>(listNodesQuery()),
      this.pool.query<OwnerRow>(listOwnersQuery()),
    ]);
    await this.endHungLeases(nodes.rows);
    const view = this.view(nodes.rows, owners.rows);
    this.snapshotValue = this.buildSnapshot(nodes.rows, owners.rows, view);
    this.options.onSnapshot?.(this.snapshotValue);
    return this.apply(lease, planFor(view, this.options.nodeId, this.options.maxMovesPerRound));
  }

  private async liveLease(): Promise<Lease> {
    if (this.lease !== null && !this.lease.lost) return this.lease;
    // A lost lease means other nodes may have taken and written our shards: start again with none.
    this.lease = await Lease.open({
      databaseUrl: this.options.databaseUrl,
      nodeId: this.options.nodeId,
      url: this.options.url,
      log: this.options.log,
      lockNamespace: this.options.lockNamespace,
      statementTimeoutMs: this.options.statementTimeoutMs,
      onLost: (reason) => this.host.dropAll(reason),
      ...(this.options.sharedEpochs === undefined ? {} : { sharedEpochs: this.options.sharedEpochs }),
    });
    return this.lease;
  }

  private async endHungLeases(rows: NodeRow[]): Promise<void> {
    for (const row of rows) {
      if (row.node_id === this.options.nodeId || !row.session_alive) continue;
      if (row.heartbeat_age_ms <= this.options.leaseTimeoutMs) continue;
      this.options.log.warn({ nodeId: row.node_id, heartbeatAgeMs: row.heartbeat_age_ms }, 'ending the lease of a hung node');
      await this.pool.query(terminateHungLeaseQuery(row.node_id, this.options.leaseTimeoutMs));
    }
    await this.pool.query(removeDeadNodesQuery(this.options.leaseTimeoutMs * 10));
  }

  private view(nodes: NodeRow[], owners: OwnerRow[]): ClusterView {
    const byShard = new Array<string | null>(this.options.shardCount).fill(null);
    for (const row of owners) if (row.shard < this.options.shardCount) byShard[row.shard] = row.node_id;
    return {
      shardCount: this.options.shardCount,
      nodes: nodes.map((row) => ({
        nodeId: row.node_id,
        // Self is alive while its lease is (it just heartbeated).
        alive: row.node_id === this.options.nodeId || isAlive(row.session_alive, row.heartbeat_age_ms, this.options.leaseTimeoutMs),
        leaving: row.leaving,
      })),
      owners: byShard,
    };
  }

  private buildSnapshot(nodes: NodeRow[], owners: OwnerRow[], view: ClusterView): ClusterSnapshot {
    const alive = new Map(view.nodes.map((node) => [node.nodeId, node.alive]));
    const info: NodeInfo[] = nodes.map((row) => ({
      nodeId: row.node_id,
      url: row.url,
      alive: alive.get(row.node_id) ?? false,
      leaving: row.leaving,
      shards: [],
    }));
    const byId = new Map(info.map((node) => [node.nodeId, node]));
    const ownerInfo = new Array<OwnerInfo | null>(this.options.shardCount).fill(null);
    const epochs = new Array<number>(this.options.shardCount).fill(0);
    for (const row of owners) {
      if (row.shard >= this.options.shardCount) continue;
      epochs[row.shard] = Number(row.epoch);
      const node = row.node_id === null ? undefined : byId.get(row.node_id);
      if (node === undefined) continue;
      node.shards.push(row.shard);
      if (node.alive && row.url !== null) ownerInfo[row.shard] = { nodeId: node.nodeId, url: row.url, epoch: epochs[row.shard]! };
    }
    return { self: this.options.nodeId, shardCount: this.options.shardCount, nodes: info, owners: ownerInfo, epochs };
  }

  private async apply(lease: Lease, plan: { release: number[]; take: number[] }): Promise<number> {
    let moved = 0;
    for (const shard of plan.release) {
      moved += 1;
      await this.host.drain(shard);
      await lease.release(shard);
      this.options.log.info({ shard }, 'released shard for balance');
    }
    for (const shard of plan.take) {
      if (this.stopped || this.leaving || lease.lost) return moved;
      const epoch = await lease.take(shard);
      if (epoch === null) continue; // another node won the race (or the dead owner's session is not gone yet)
      moved += 1;
      try {
        await this.host.open(shard, epoch);
        this.options.log.info({ shard, epoch }, 'took shard');
      } catch (err) {
        this.options.log.error({ err, shard }, 'could not open a taken shard; handing it back');
        await lease.release(shard);
      }
    }
    return moved;
  }
}
