import { endlessReservations, rng, skuName, zipfSampler, type Scenario } from './common.js';

interface Params {
  skus: string[];
  zipf: number;
  shoppersPerThread: number;
}

function manySkus(name: string, zipf: number): Scenario<Params> {
  return {
    name,
    description: zipf > 0 ? `1,000 SKUs, Zipf-skewed (s = ${zipf}) reservations` : '1,000 SKUs, uniformly spread reservations',
    defaults: { connections: 256, durationSec: 10 },
    plan({ runId, skus, stock, shoppers }) {
      const count = skus ?? 1000;
      const specs = Array.from({ length: count }, (_, i) => ({
        sku: skuName(runId, zipf > 0 ? 'zipf' : 'many', i),
        stock: stock ?? 10_000_000,
        perShopperLimit: 1000,
        holdSeconds: 3600,
        priceCents: 999,
        currency: 'USD',
      }));
      return { skus: specs, params: { skus: specs.map((s) => s.sku), zipf, shoppersPerThread: shoppers ?? 50_000 }, finite: false };
    },
    createWorkload(context) {
      const { skus, zipf: s, shoppersPerThread } = context.params;
      const random = rng(0x5eed + context.workerIndex);
      const pick = s > 0 ? zipfSampler(skus.length, s, random) : () => Math.floor(random() * skus.length);
      return endlessReservations(context, skus, pick, shoppersPerThread);
    },
  };
}

export const manySkusUniform = manySkus('many-skus', 0);
export const manySkusZipf = manySkus('many-skus-zipf', 1.0);
