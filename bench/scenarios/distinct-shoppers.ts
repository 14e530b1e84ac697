import { mintShopperToken } from '../lib/jwt.js';
import type { RequestSpec } from '../lib/types.js';
import { keyMaker, reservationRequest, skuName, type Scenario } from './common.js';

/**
 * A fixed number of reservations of one unit on one SKU, each from a shopper
 * never seen before (token minted as the request is built, so a million
 * shoppers cost no memory in the generator), then done. Short holds by default:
 * what bench/memory.ts needs to see memory return to where it was.
 * `--shoppers` = reservations in all (default 1,000,000); `--hold-seconds` is
 * the SKU's holdSeconds when driven from bench/memory.ts.
 */
export interface DistinctShoppersParams {
  sku: string;
  total: number;
}

export const distinctShoppers: Scenario<DistinctShoppersParams> = {
  name: 'distinct-shoppers',
  description: 'N reservations of 1 unit on one SKU, each from a new shopper; finite',
  defaults: { connections: 256 },
  plan({ runId, stock, shoppers }) {
    const sku = skuName(runId, 'distinct', 0);
    return {
      skus: [{ sku, stock: stock ?? 1_000_000_000, perShopperLimit: 1, holdSeconds: 1, priceCents: 1999, currency: 'USD' }],
      params: { sku, total: shoppers ?? 1_000_000 },
      finite: true,
    };
  },
  createWorkload(context) {
    const { sku, total } = context.params;
    // This thread's share: shoppers workerIndex, workerIndex + workerCount, ...
    const share = Math.floor(total / context.workerCount) + (context.workerIndex < total % context.workerCount ? 1 : 0);
    const key = keyMaker(context);
    const now = Math.floor(Date.now() / 1000);
    let sent = 0;
    return {
      next(): RequestSpec | null {
        if (sent === share) return null;
        const id = `d-${context.runId}-${context.workerIndex}-${sent}`;
        const token = mintShopperToken(context.jwtSecret, id, now, 7200);
        sent += 1;
        return { op: 'reserve', data: reservationRequest(context.hostHeader, sku, token, key(), 1), quantity: 1, tag: sent };
      },
      finished: () => sent === share,
    };
  },
};
