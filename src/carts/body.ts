import { isSkuName, skuRule } from '../http/validation.js';
import type { CartItem } from './coordinator.js';

/** Largest quantity of a line the body may carry (the allocator's MAX_QUANTITY_PER_REQUEST refuses more, per line). */
const maxQuantity = 1_000_000_000;

/** A refused body: why, and the line at fault when one is. */
export interface CartBodyRefusal {
  detail: string;
  line?: number;
  sku?: string;
}

/**
 * The body of `POST /v1/carts`: `{"items":[{"sku","quantity"}, ...]}`, 1 to
 * `maxLines` lines, each SKU once, nothing else. Checked by hand so the
 * refusal can name its line.
 */
export function parseCartBody(body: unknown, maxLines: number): CartItem[] | CartBodyRefusal {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return { detail: 'the body must be an object with `items`' };
  const keys = Object.keys(body);
  if (keys.length !== 1 || keys[0] !== 'items') return { detail: 'the body must have `items` and nothing else' };
  const items = (body as { items: unknown }).items;
  if (!Array.isArray(items) || items.length === 0 || items.length > maxLines) {
    return { detail: `items must be an array of 1 to ${maxLines} lines` };
  }
  const seen = new Set<string>();
  const parsed: CartItem[] = [];
  for (const [line, item] of items.entries()) {
    const refusal = itemRefusal(item, line);
    if (refusal !== null) return refusal;
    const { sku, quantity } = item as CartItem;
    if (seen.has(sku)) return { detail: `SKU ${sku} is in the cart twice: one line per SKU`, line, sku };
    seen.add(sku);
    parsed.push({ sku, quantity });
  }
  return parsed;
}

function itemRefusal(item: unknown, line: number): CartBodyRefusal | null {
  if (typeof item !== 'object' || item === null || Array.isArray(item)) return { detail: `items[${line}] must be an object`, line };
  const { sku, quantity, ...rest } = item as Record<string, unknown>;
  if (Object.keys(rest).length > 0) return { detail: `items[${line}] may have only sku and quantity`, line };
  if (typeof sku !== 'string' || !isSkuName(sku)) return { detail: `items[${line}].sku must be ${skuRule}`, line };
  if (typeof quantity !== 'number' || !Number.isInteger(quantity) || quantity < 1 || quantity > maxQuantity) {
    return { detail: `items[${line}].quantity must be an integer from 1 to ${maxQuantity}`, line, sku };
  }
  return null;
}
