import type pg from 'pg';
import type { CallResult } from './service.js';

/** Shared by the drop tests: a body, waiting for a wall-clock instant, polling for a condition. */

export const dropDefaults = { stockPerCycle: 3, perShopperLimit: 1, holdSeconds: 300, priceCents: 500, currency: 'USD' };

export function dropBody(firstStartsAtMs: number, everySeconds: number, openSeconds: number, extra: Record<string, unknown> = {}) {
  return { firstStartsAt: new Date(firstStartsAtMs).toISOString(), everySeconds, openSeconds, ...dropDefaults, ...extra };
}

export function sleepUntil(atMs: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, atMs - Date.now())));
}

/** Polls `probe` every 25 ms until it returns a value (not null/undefined/false); fails after `timeoutMs`. */
export async function until<T>(what: string, probe: () => Promise<T | null | undefined | false>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== null && value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

export interface CycleRecord {
  cycle: number;
  sku: string;
  startsAtMs: number;
  endsAtMs: number;
  stock: number;
  createdAtMs: number;
  configuredAtMs: number | null;
}

export async function cycleRows(pool: pg.Pool, name: string): Promise<CycleRecord[]> {
  const { rows } = await pool.query<{ cycle: number; sku: string; s: number; e: number; stock: number; c: number; k: number | null }>(
    `SELECT cycle, sku, extract(epoch FROM starts_at) * 1000 AS s, extract(epoch FROM ends_at) * 1000 AS e, stock,
            extract(epoch FROM created_at) * 1000 AS c, extract(epoch FROM configured_at) * 1000 AS k
     FROM drop_cycles WHERE name = $1 ORDER BY cycle`,
    [name],
  );
  return rows.map((r) => ({
    cycle: r.cycle,
    sku: r.sku,
    startsAtMs: Math.round(Number(r.s)),
    endsAtMs: Math.round(Number(r.e)),
    stock: r.stock,
    createdAtMs: Math.round(Number(r.c)),
    configuredAtMs: r.k === null ? null : Math.round(Number(r.k)),
  }));
}

/** `configured` events per SKU of a drop, from the event log. */
export async function configuredEvents(pool: pg.Pool, name: string): Promise<Map<string, number>> {
  const { rows } = await pool.query<{ sku: string; n: string }>(
    `SELECT sku, count(*) AS n FROM stock_events WHERE kind = 'configured' AND starts_with(sku, $1 || '.') GROUP BY sku`,
    [name],
  );
  return new Map(rows.map((r) => [r.sku, Number(r.n)]));
}

export function statusOf(result: CallResult): string {
  return `${result.status} ${typeof result.body === 'object' && result.body !== null ? (result.body.code ?? '') : ''}`.trim();
}
