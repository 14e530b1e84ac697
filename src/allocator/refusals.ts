import type { Rejection, SkuConfig } from './types.js';

/**
 * Refusals that reservations, cart lines and waitlist joins share, each written
 * once: pure, from the state they are handed.
 */

/** sale_not_open while the sale is archived, not started yet, or over; else null. */
export function saleClosed(archived: boolean, config: SkuConfig, nowMs: number): Rejection | null {
  if (archived) return { ok: false, code: 'sale_not_open', detail: 'the sale is archived' };
  if (config.startsAtMs !== null && nowMs < config.startsAtMs) {
    return { ok: false, code: 'sale_not_open', detail: `the sale opens at ${new Date(config.startsAtMs).toISOString()}` };
  }
  if (config.endsAtMs !== null && nowMs >= config.endsAtMs) {
    return { ok: false, code: 'sale_not_open', detail: `the sale closed at ${new Date(config.endsAtMs).toISOString()}` };
  }
  return null;
}

/** limit_exceeded when `quantity` more would take the shopper past the SKU's per-shopper limit; else null. */
export function shopperLimitRefusal(config: SkuConfig, shopperHas: number, quantity: number): Rejection | null {
  if (shopperHas + quantity <= config.perShopperLimit) return null;
  return {
    ok: false,
    code: 'limit_exceeded',
    detail: `at most ${config.perShopperLimit} per shopper; you already hold or bought ${shopperHas}`,
  };
}
