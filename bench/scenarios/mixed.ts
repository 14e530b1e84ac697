import { getSkuRequest, keyMaker, reservationRequest, rng, ShopperPool, skuName, type Scenario } from './common.js';
import type { RequestSpec } from '../lib/types.js';

/** A sale page under load: 90% of requests read the SKU, 10% reserve it. */
export const mixed: Scenario<{ sku: string; readShare: number; shoppersPerThread: number }> = {
  name: 'mixed',
  description: 'one SKU: 90% GET /v1/skus/{sku}, 10% reservations',
  defaults: { connections: 256, durationSec: 10 },
  plan({ runId, stock, shoppers }) {
    const sku = skuName(runId, 'mixed', 0);
    return {
      skus: [{ sku, stock: stock ?? 1_000_000_000, perShopperLimit: 1000, holdSeconds: 3600, priceCents: 4999, currency: 'USD' }],
      params: { sku, readShare: 0.9, shoppersPerThread: shoppers ?? 20_000 },
      finite: false,
    };
  },
  createWorkload(context) {
    const { sku, readShare, shoppersPerThread } = context.params;
    const read = getSkuRequest(context.hostHeader, sku);
    const pool = new ShopperPool(context, shoppersPerThread);
    const key = keyMaker(context);
    const random = rng(0x313 + context.workerIndex);
    let shopper = 0;
    return {
      next(): RequestSpec {
        if (random() < readShare) return { op: 'get', data: read, quantity: 0, tag: 0 };
        const s = shopper;
        shopper = (shopper + 1) % shoppersPerThread;
        return { op: 'reserve', data: reservationRequest(context.hostHeader, sku, pool.tokens[s]!, key(), 1), quantity: 1, tag: s };
      },
      finished: () => false,
    };
  },
};
