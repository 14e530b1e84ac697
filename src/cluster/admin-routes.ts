import type uWS from 'uWebSockets.js';
import { Exchange, type ExchangeContext } from '../http/exchange.js';
import { skuPattern } from '../http/validation.js';
import { shardOf } from '../shard/placement.js';
import type { ClusterSnapshot } from './membership.js';

/**
 * Admin views of the cluster, on every node (admin token):
 *   GET /v1/admin/cluster                → {self, nodes: [{nodeId, url, shards, alive}], shardCount}
 *   GET /v1/admin/skus/{sku}/placement   → {sku, shard, owner: {nodeId, url} | null, epoch}
 * Both read the membership snapshot of the last round (at most
 * CLUSTER_HEARTBEAT_MS old); `owner` is null while a shard moves or its
 * owner is dead and not yet replaced.
 */

export interface ClusterAdminDependencies {
  ctx: ExchangeContext;
  isAdmin: (authorization: string | undefined) => boolean;
  snapshot: () => ClusterSnapshot;
}

export function clusterView(snapshot: ClusterSnapshot) {
  return {
    self: snapshot.self,
    nodes: snapshot.nodes.map((node) => ({ nodeId: node.nodeId, url: node.url, shards: node.shards, alive: node.alive, leaving: node.leaving })),
    shardCount: snapshot.shardCount,
  };
}

export function placementView(snapshot: ClusterSnapshot, sku: string) {
  const shard = shardOf(sku, snapshot.shardCount);
  const owner = snapshot.owners[shard] ?? null;
  return { sku, shard, owner: owner === null ? null : { nodeId: owner.nodeId, url: owner.url }, epoch: snapshot.epochs[shard] ?? 0 };
}

export function attachClusterAdminRoutes(app: uWS.TemplatedApp, deps: ClusterAdminDependencies): void {
  const admin = (exchange: Exchange, req: uWS.HttpRequest): boolean => {
    if (deps.isAdmin(req.getHeader('authorization'))) return true;
    exchange.problem('unauthorized', 'an admin bearer token is required', [['www-authenticate', 'Bearer']]);
    return false;
  };
  app.get('/v1/admin/cluster', (res, req) => {
    const exchange = new Exchange(res, req, deps.ctx);
    if (admin(exchange, req)) exchange.send(200, clusterView(deps.snapshot()));
  });
  app.get('/v1/admin/skus/:sku/placement', (res, req) => {
    const exchange = new Exchange(res, req, deps.ctx);
    if (!admin(exchange, req)) return;
    const sku = req.getParameter(0);
    if (!skuPattern.test(sku)) exchange.problem('invalid_request', 'sku must be 1-64 characters of [A-Za-z0-9._-]');
    else exchange.send(200, placementView(deps.snapshot(), sku));
  });
}
