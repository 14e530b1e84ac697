/**
 * Balance planning: pure functions of a snapshot of the cluster (no I/O, no
 * clock), so every node computes the same targets from the same view and the
 * property tests can run whole clusters of them.
 *
 * Targets: the active nodes (alive and not leaving) sorted by node id; node of
 * rank i gets ⌈S/n⌉ shards when i < S mod n, otherwise ⌊S/n⌋. They sum to S.
 * Each node, each round: releases what it holds beyond its target (the
 * highest-numbered first), takes free shards (no owner, or a dead owner) up to
 * its target, starting at its own offset rank·S/n so nodes do not all race for
 * the same shards. Moves per round are bounded. Whoever loses a race for a
 * shard just finds its lock taken; the lock, not the plan, guarantees one owner.
 */

export interface NodeView {
  nodeId: string;
  /** Lease session present and heartbeat fresh (see `isAlive`). */
  alive: boolean;
  leaving: boolean;
}

export interface ClusterView {
  shardCount: number;
  nodes: readonly NodeView[];
  /** owners[shard]: the node named in shard_owners, or null. */
  owners: readonly (string | null)[];
}

export interface Plan {
  release: number[];
  take: number[];
}

/** Liveness from the two signals membership reads: the lease session exists and heartbeats are recent. */
export function isAlive(sessionAlive: boolean, heartbeatAgeMs: number, leaseTimeoutMs: number): boolean {
  return sessionAlive && heartbeatAgeMs <= leaseTimeoutMs;
}

export function activeNodes(view: ClusterView): string[] {
  return view.nodes
    .filter((node) => node.alive && !node.leaving)
    .map((node) => node.nodeId)
    .sort();
}

/** Target shard count of every active node. */
export function targets(shardCount: number, active: readonly string[]): Map<string, number> {
  const result = new Map<string, number>();
  const n = active.length;
  if (n === 0) return result;
  const base = Math.floor(shardCount / n);
  const extra = shardCount % n;
  active.forEach((nodeId, rank) => result.set(nodeId, base + (rank < extra ? 1 : 0)));
  return result;
}

/** What `self` should release and take this round, at most `maxMoves` of each. */
export function planFor(view: ClusterView, self: string, maxMoves: number): Plan {
  const alive = new Set(view.nodes.filter((node) => node.alive).map((node) => node.nodeId));
  const active = activeNodes(view);
  const owned: number[] = [];
  for (let shard = 0; shard < view.shardCount; shard++) if (view.owners[shard] === self) owned.push(shard);

  const rank = active.indexOf(self);
  if (rank < 0) return { release: owned.slice(0, maxMoves), take: [] };
  const target = targets(view.shardCount, active).get(self)!;

  if (owned.length > target) return { release: owned.slice(target).reverse().slice(0, maxMoves), take: [] };

  const take: number[] = [];
  const wanted = Math.min(target - owned.length, maxMoves);
  const start = Math.floor((rank * view.shardCount) / active.length);
  for (let i = 0; i < view.shardCount && take.length < wanted; i++) {
    const shard = (start + i) % view.shardCount;
    const owner = view.owners[shard] ?? null;
    if (owner === null || !alive.has(owner)) take.push(shard);
  }
  return { release: [], take };
}

/** Every active node holds exactly its target and no shard is unowned or held by an inactive node. */
export function isBalanced(view: ClusterView): boolean {
  const active = activeNodes(view);
  if (active.length === 0) return false;
  const want = targets(view.shardCount, active);
  const counts = new Map<string, number>();
  for (let shard = 0; shard < view.shardCount; shard++) {
    const owner = view.owners[shard] ?? null;
    if (owner === null || !want.has(owner)) return false;
    counts.set(owner, (counts.get(owner) ?? 0) + 1);
  }
  return active.every((nodeId) => (counts.get(nodeId) ?? 0) === want.get(nodeId));
}
