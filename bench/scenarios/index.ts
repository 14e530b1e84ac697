import { checkout } from './checkout.js';
import type { Scenario } from './common.js';
import { distinctShoppers } from './distinct-shoppers.js';
import { hotSku } from './hot-sku.js';
import { manySkusUniform, manySkusZipf } from './many-skus.js';
import { mixed } from './mixed.js';
import { sellout } from './sellout.js';

/** Every scenario by name. A new scenario is one module exporting a Scenario, added here. */
export const scenarios: Record<string, Scenario> = Object.fromEntries(
  [hotSku, sellout, manySkusUniform, manySkusZipf, mixed, checkout, distinctShoppers].map((s) => [s.name, s]),
);
