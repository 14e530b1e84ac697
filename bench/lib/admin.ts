import type { SkuView } from './checker.js';
import type { SkuSpec } from '../scenarios/common.js';

/** Set-up and read-back through the public HTTP contract (admin PUT, SKU GET). */

async function inParallel<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await fn(items[next++]!);
  });
  await Promise.all(lanes);
}

export async function createSkus(baseUrl: string, adminToken: string, specs: readonly SkuSpec[]): Promise<void> {
  await inParallel(specs, 16, async (spec) => {
    const { sku, ...body } = spec;
    const r = await fetch(`${baseUrl}/v1/admin/skus/${encodeURIComponent(sku)}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const text = await r.text();
    if (r.status !== 201 && r.status !== 200) throw new Error(`PUT /v1/admin/skus/${sku} answered ${r.status}: ${text.slice(0, 300)}`);
  });
}

export async function readViews(baseUrl: string, skus: readonly string[]): Promise<Record<string, SkuView | null>> {
  const views: Record<string, SkuView | null> = {};
  await inParallel(skus, 16, async (sku) => {
    try {
      const r = await fetch(`${baseUrl}/v1/skus/${encodeURIComponent(sku)}`);
      const v = (await r.json()) as Partial<SkuView>;
      views[sku] =
        r.status === 200 && typeof v.stock === 'number' && typeof v.available === 'number' && typeof v.held === 'number' && typeof v.sold === 'number'
          ? { stock: v.stock, available: v.available, held: v.held, sold: v.sold }
          : null;
    } catch {
      views[sku] = null;
    }
  });
  return views;
}

/** Waits until GET /readyz (or /healthz) answers 200. */
export async function waitReady(baseUrl: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    for (const p of ['/readyz', '/healthz']) {
      try {
        const r = await fetch(baseUrl + p);
        await r.arrayBuffer();
        if (r.status === 200) return;
        last = `${p} ${r.status}`;
      } catch (error) {
        last = (error as Error).message;
      }
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${baseUrl} not ready after ${timeoutMs} ms (${last})`);
}
