import t from 'tap';
import { balancedOver, isForwarded, placementOf, skuOfRequest, type AdminClusterView } from '../bench/lib/placement.js';
import { getSkuRequest, reservationRequest } from '../bench/scenarios/common.js';
import { shardOf } from '../src/shard/placement.js';

/** Which generator requests a cluster forwards: from the request's SKU, its shard's owner and the node it went to. */

const view = (shards: number[][], alive = shards.map(() => true)): AdminClusterView => ({
  self: 'node1',
  shardCount: 8,
  nodes: shards.map((s, i) => ({ nodeId: `node${i + 1}`, url: `http://127.0.0.1:${9001 + i}`, shards: s, alive: alive[i]! })),
});
const urls = ['http://127.0.0.1:9001', 'http://127.0.0.1:9002'];

t.test('the SKU of a serialized request, from its path only', async (t) => {
  t.equal(skuOfRequest(reservationRequest('h', 'b-x-many-7', 'tok', 'k', 1)), 'b-x-many-7');
  t.equal(skuOfRequest(getSkuRequest('h', 'b-x-hot-0')), 'b-x-hot-0');
  t.equal(skuOfRequest('GET /v1/skus/abc?x=1 HTTP/1.1\r\n\r\n'), 'abc');
  t.equal(skuOfRequest('POST /v1/reservations/r1/checkout HTTP/1.1\r\nReferer: /v1/skus/abc\r\n\r\n'), null, 'a header is not the path');
  t.equal(skuOfRequest('GET /healthz HTTP/1.1\r\n\r\n'), null);
});

t.test('placement: shard owners as target indexes; forwarded when the receiving target does not own the shard', async (t) => {
  const v = view([
    [0, 1, 2, 3],
    [4, 5, 6, 7],
  ]);
  const p = placementOf(v, urls);
  t.same(p, { shardCount: 8, ownerTarget: [0, 0, 0, 0, 1, 1, 1, 1] });
  const sku = 'b-x-many-1';
  const owner = p.ownerTarget[shardOf(sku, 8)]!;
  t.equal(isForwarded(p, sku, owner), false);
  t.equal(isForwarded(p, sku, 1 - owner), true);
  t.equal(isForwarded(p, null, 0), null);
  const deadOwner = placementOf(view([[0, 1, 2, 3], [4, 5, 6, 7]], [true, false]), urls);
  t.equal(deadOwner.ownerTarget[4], -1, 'a dead node owns nothing');
});

t.test('balanced: every node alive at its share, every shard owned once', async (t) => {
  t.ok(balancedOver(view([[0, 1, 2, 3], [4, 5, 6, 7]]), 2));
  t.notOk(balancedOver(view([[0, 1, 2, 3, 4, 5], [6, 7]]), 2), 'uneven');
  t.notOk(balancedOver(view([[0, 1, 2, 3], [4, 5, 6]]), 2), 'a shard without owner');
  t.notOk(balancedOver(view([[0, 1, 2, 3, 4, 5, 6, 7]]), 2), 'a node missing');
});
