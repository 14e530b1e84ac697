import { isBalanced, type ClusterView as PlanView } from '../../src/cluster/plan.js';
import { shardOf } from '../../src/shard/placement.js';
import type { Placement } from './types.js';

/**
 * Which requests a cluster forwards. A node serves the shards it owns and
 * forwards every other command to the owner, so a request is forwarded when
 * the node it was sent to does not own its SKU's shard (src/shard/placement.ts
 * `shardOf`). The generator knows where each connection goes; with the shard
 * owners read from `GET /v1/admin/cluster` before the run it tells forwarded
 * from local per request, exactly, as long as no shard moves during the run
 * (the harness compares the placement before and after). Pure functions.
 */

/** `GET /v1/admin/cluster` (src/cluster/admin-routes.ts). */
export interface AdminClusterView {
  self: string;
  nodes: { nodeId: string; url: string; shards: number[]; alive: boolean }[];
  shardCount: number;
}

const skuPath = '/v1/skus/';

/** The SKU in a serialized request's path (`/v1/skus/{sku}…`), or null. */
export function skuOfRequest(data: string | Buffer): string | null {
  const head = typeof data === 'string' ? data : data.toString('latin1', 0, Math.min(data.length, 256));
  const lineEnd = head.indexOf(' HTTP/1.1');
  const at = head.indexOf(skuPath);
  if (at < 0 || (lineEnd >= 0 && at > lineEnd)) return null;
  const start = at + skuPath.length;
  let end = start;
  while (end < head.length) {
    const c = head.charCodeAt(end);
    if (c === 0x2f /* / */ || c === 0x20 /* space */ || c === 0x3f /* ? */) break;
    end++;
  }
  return end > start ? head.slice(start, end) : null;
}

/** The view as the cluster's own balance rule (src/cluster/plan.ts) reads it. */
function planView(view: AdminClusterView): PlanView {
  const owners: (string | null)[] = Array.from({ length: view.shardCount }, () => null);
  for (const node of view.nodes) for (const shard of node.shards) owners[shard] = node.nodeId;
  return { shardCount: view.shardCount, nodes: view.nodes.map((n) => ({ nodeId: n.nodeId, alive: n.alive, leaving: false })), owners };
}

/** `nodes` live nodes, every shard owned, each node at its target share (⌊S/n⌋ or ⌈S/n⌉). */
export function balancedOver(view: AdminClusterView, nodes: number): boolean {
  return view.nodes.filter((n) => n.alive).length === nodes && isBalanced(planView(view));
}

/** Shard → index of the target URL that owns it (-1: no live owner among them). */
export function placementOf(view: AdminClusterView, targetUrls: readonly string[]): Placement {
  const ownerTarget: number[] = Array.from({ length: view.shardCount }, () => -1);
  for (const node of view.nodes) {
    const target = targetUrls.indexOf(node.url.replace(/\/$/, ''));
    if (!node.alive || target < 0) continue;
    for (const shard of node.shards) ownerTarget[shard] = target;
  }
  return { shardCount: view.shardCount, ownerTarget };
}

/** Whether a request for `sku` sent to target `target` is forwarded (also when no node owned the shard); null: not a SKU request. */
export function isForwarded(placement: Placement, sku: string | null, target: number): boolean | null {
  if (sku === null) return null;
  return placement.ownerTarget[shardOf(sku, placement.shardCount)] !== target;
}
