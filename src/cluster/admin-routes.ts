import { shardOf } from '../shard/placement.js';
import type { ClusterSnapshot } from './membership.js';

/**
 * Admin views of the cluster, on every node (admin token; routes in src/http/routes/cluster.ts):
 *   GET /v1/admin/cluster                → {self, nodes: [{nodeId, url, shards, alive}], shardCount}
 *   GET /v1/admin/skus/{sku}/placement   → {sku, shard, owner: {nodeId, url} | null, epoch}
 * Both read the membership snapshot of the last round (at most
 * CLUSTER_HEARTBEAT_MS old); `owner` is null while a shard moves or its
 * owner is dead and not yet replaced.
 */

export function clusterView(snapshot: ClusterSnapshot) {
  return {
    self: snapshot.self,
    nodes: snapshot.nodes.map((node) => ({ nodeId: node.nodeId, url: node.url, shards: node.shards, alive: node.alive })),
    shardCount: snapshot.shardCount,
  };
}

export function placementView(snapshot: ClusterSnapshot, sku: string) {
  const shard = shardOf(sku, snapshot.shardCount);
  const owner = snapshot.owners[shard] ?? null;
  return { sku, shard, owner: owner === null ? null : { nodeId: owner.nodeId, url: owner.url }, epoch: snapshot.epochs[shard] ?? 0 };
}
