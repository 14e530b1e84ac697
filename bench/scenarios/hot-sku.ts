import { endlessReservations, skuName, type Scenario } from './common.js';

/** One SKU with more stock than the run can sell, many distinct shoppers: the durable reservation rate. */
export const hotSku: Scenario<{ sku: string; shoppersPerThread: number }> = {
  name: 'hot-sku',
  description: 'one SKU, stock the run cannot exhaust, distinct shoppers reserving 1 unit each',
  defaults: { connections: 256, durationSec: 10 },
  plan({ runId, stock, shoppers }) {
    const sku = skuName(runId, 'hot', 0);
    return {
      skus: [{ sku, stock: stock ?? 1_000_000_000, perShopperLimit: 1000, holdSeconds: 3600, priceCents: 1999, currency: 'USD' }],
      params: { sku, shoppersPerThread: shoppers ?? 50_000 },
      finite: false,
    };
  },
  createWorkload(context) {
    return endlessReservations(context, [context.params.sku], () => 0, context.params.shoppersPerThread);
  },
};
