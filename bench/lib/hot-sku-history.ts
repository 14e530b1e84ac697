import { randomUUID } from 'node:crypto';
import type { AllocatorLimits, StockEvent } from '../../src/allocator/types.js';

/** Limits that let one SKU hold millions of live holds (the snapshot benches). */
export const hotSkuLimits: AllocatorLimits = { maxQuantityPerRequest: 10, maxLiveHoldsPerSku: 10_000_000, maxEventsPerBatch: 1000 };

const startMs = Date.UTC(2026, 0, 1);

/**
 * A hot SKU's log: configured, then `count` one-unit reservations by distinct
 * shoppers, 20 per millisecond, holds of an hour (all live). `ids`:
 * 'sequential' for byte-for-byte repeatable runs (encode/decode timings),
 * 'random' for reservation ids and keys with the service's entropy (what
 * compression sees).
 */
export function hotSkuHistory(sku: string, count: number, ids: 'sequential' | 'random'): StockEvent[] {
  const config = { stock: 1e9, perShopperLimit: 5, holdSeconds: 3600, priceCents: 1000, currency: 'EUR', startsAtMs: null, endsAtMs: null };
  const events: StockEvent[] = [{ kind: 'configured', sku, seq: 1, atMs: startMs, config }];
  for (let i = 0; i < count; i++) {
    const atMs = startMs + 1 + Math.floor(i / 20);
    const hex = i.toString(16);
    events.push({
      kind: 'reserved',
      sku,
      seq: i + 2,
      atMs,
      reservationId: ids === 'random' ? randomUUID() : `7d2f61c0-${hex.padStart(4, '0').slice(-4)}-8abc-9def-${hex.padStart(12, '0')}`,
      shopperId: `shopper-${i}`,
      quantity: 1,
      expiresAtMs: atMs + 3_600_000,
      idempotencyKey: ids === 'random' ? randomUUID() : `bench-k-0-${i.toString(36)}`,
    });
  }
  return events;
}
