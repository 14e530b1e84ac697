import { keyMaker, reservationRequest, rng, ShopperPool, skuName, type Scenario } from './common.js';
import type { RequestSpec } from '../lib/types.js';

interface Params {
  sku: string;
  shoppers: number;
  maxWanted: number;
}

/**
 * 10,000 units, more shoppers than units wanting 1-3 each, all at once. A
 * shopper told `sold_out` asks again for one unit less (what a person does when
 * fewer are left than they wanted) until they get some or want none. The run
 * ends when every shopper has an answer; the figure is the time to sell out.
 */
export const sellout: Scenario<Params> = {
  name: 'sellout',
  description: '10,000 units, 6,000 shoppers wanting 1-3 each (seeded), until every shopper has an answer',
  defaults: { connections: 1000 },
  plan({ runId, stock, shoppers }) {
    const sku = skuName(runId, 'sellout', 0);
    return {
      skus: [{ sku, stock: stock ?? 10_000, perShopperLimit: 3, holdSeconds: 3600, priceCents: 2500, currency: 'USD' }],
      params: { sku, shoppers: shoppers ?? 6_000, maxWanted: 3 },
      finite: true,
    };
  },
  createWorkload(context) {
    const { sku, shoppers, maxWanted } = context.params;
    // Shopper i belongs to thread i % workerCount.
    const mine = Math.floor(shoppers / context.workerCount) + (context.workerIndex < shoppers % context.workerCount ? 1 : 0);
    const pool = new ShopperPool(context, mine, 'sellout');
    const random = rng(0xc0ffee + context.workerIndex);
    const wanted = Array.from({ length: mine }, () => 1 + Math.floor(random() * maxWanted));
    const key = keyMaker(context);
    // Shoppers waiting to send: their first attempt, or a retry asking for less.
    const queue: number[] = Array.from({ length: mine }, (_, i) => i);
    // A request whose outcome is unknown (connection lost, 503) is sent again as is: same Idempotency-Key.
    const resend = new Map<number, RequestSpec>();
    const attempts = new Uint8Array(mine);
    let head = 0;
    let outstanding = mine;
    let unitsWanted = 0;
    let gotUnits = 0;
    let gaveUp = 0;
    let retries = 0;
    for (const w of wanted) unitsWanted += w;
    return {
      next(): RequestSpec | null {
        if (head === queue.length) return null;
        const s = queue[head++]!;
        const again = resend.get(s);
        if (again !== undefined) {
          resend.delete(s);
          return again;
        }
        const quantity = wanted[s]!;
        return { op: 'reserve', data: reservationRequest(context.hostHeader, sku, pool.tokens[s]!, key(), quantity), quantity, tag: s };
      },
      finished: () => outstanding === 0,
      onResponse(request, status, code) {
        const s = request.tag;
        if (status === 201) {
          gotUnits += request.quantity;
          outstanding--;
        } else if (code === 'sold_out' && request.quantity > 1) {
          wanted[s] = request.quantity - 1;
          retries++;
          queue.push(s);
        } else if ((status === 0 || status === 503) && attempts[s]! < 5) {
          attempts[s]!++;
          retries++;
          resend.set(s, request);
          queue.push(s);
        } else {
          gaveUp++;
          outstanding--;
        }
      },
      metrics: () => ({ shoppers: mine, unitsWanted, unitsReserved: gotUnits, shoppersWithout: gaveUp, retries }),
    };
  },
};
