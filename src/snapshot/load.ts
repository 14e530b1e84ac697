import type pg from 'pg';
import { to as copyTo } from 'pg-copy-streams';
import { SkuAllocator } from '../allocator/allocator.js';
import type { AllocatorLimits, StockEvent } from '../allocator/types.js';
import { readEvents, rowToEvent } from '../outbox/event-log.js';
import { BinaryCopyReader } from './binary-copy.js';
import { decodeSnapshot, SnapshotFormatError } from './codec.js';
import { latestSnapshotCopy, latestSnapshotsCopy, logSkusQuery, snapshotRowOf, tailEventsQuery, type SnapshotRow } from './sql.js';

/**
 * A SKU's state from Postgres: its latest snapshot, then the log after it,
 * through the same pure allocator (which checks its invariants on every event).
 */

type Db = pg.Pool | pg.PoolClient | pg.Client;

/** Events fetched per round of the batched tail read: bounds memory whatever the number of SKUs. */
const tailRowsPerRound = 20_000;

/** A pool, by shape rather than instanceof: a caller's pg may be another copy of the module. */
function isPool(db: Db): db is pg.Pool {
  return 'totalCount' in db;
}

/**
 * The rows of a snapshot COPY (src/snapshot/sql.ts), all of them once the COPY
 * has ended. A pool lends one client for it; a COPY cut short (a malformed
 * stream) leaves its connection mid-protocol, so that client is discarded.
 */
async function copySnapshotRows(db: Db, copy: string): Promise<SnapshotRow[]> {
  const client = isPool(db) ? await db.connect() : db;
  // A held client's socket error (Postgres crashing mid-COPY) is also emitted on the client, and
  // with no listener that would end the process (src/db/pool.ts): the COPY fails with it on its own.
  const heldError = (): void => undefined;
  client.on('error', heldError);
  const rows: SnapshotRow[] = [];
  let failure: Error | undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      const reader = new BinaryCopyReader((fields) => rows.push(snapshotRowOf(fields)));
      const stream = client.query(copyTo(copy));
      stream.on('data', (chunk: Buffer) => {
        try {
          reader.push(chunk);
        } catch (error) {
          stream.destroy(error as Error);
        }
      });
      stream.on('error', reject);
      stream.on('end', () => {
        try {
          reader.end();
          resolve();
        } catch (error) {
          reject(error as Error);
        }
      });
    });
  } catch (error) {
    failure = error as Error;
    throw error;
  } finally {
    client.removeListener('error', heldError);
    if (client !== db) (client as pg.PoolClient).release(failure);
  }
  return rows;
}

function fromRow(row: SnapshotRow, limits: AllocatorLimits): SkuAllocator {
  const allocator = decodeSnapshot(row.state, limits);
  if (allocator.sku !== row.sku || allocator.seq !== row.seq) {
    throw new SnapshotFormatError(`snapshot row (${row.sku}, ${row.seq}) holds (${allocator.sku}, ${allocator.seq})`);
  }
  return allocator;
}

export interface FoldResult {
  allocator: SkuAllocator;
  /** Seq of the snapshot it started from (0: none). */
  snapshotSeq: number;
  /** Events applied after the snapshot. */
  events: number;
  /** atMs of the last event applied (the snapshot's own events excluded), or null when none. */
  lastAtMs: number | null;
}

/** Latest snapshot (or empty) + the events after it, up to `uptoSeq` when given. */
export async function foldSku(db: Db, sku: string, limits: AllocatorLimits, uptoSeq?: number): Promise<FoldResult> {
  const rows = await copySnapshotRows(db, latestSnapshotCopy(sku));
  const allocator = rows[0] === undefined ? new SkuAllocator(sku, limits) : fromRow(rows[0], limits);
  const snapshotSeq = allocator.seq;
  let events = 0;
  let lastAtMs: number | null = null;
  for await (const page of readEvents(db as pg.Pool, { sku, afterSeq: snapshotSeq })) {
    for (const event of page) {
      if (uptoSeq !== undefined && event.seq > uptoSeq) return { allocator, snapshotSeq, events, lastAtMs };
      allocator.apply(event);
      events += 1;
      lastAtMs = event.atMs;
    }
  }
  return { allocator, snapshotSeq, events, lastAtMs };
}

/** A SKU's allocator from snapshot + tail; null when the SKU has neither snapshot nor events. */
export async function loadSkuState(db: Db, sku: string, limits: AllocatorLimits): Promise<SkuAllocator | null> {
  const { allocator } = await foldSku(db, sku, limits);
  return allocator.seq === 0 ? null : allocator;
}

export interface LoadAllOptions {
  /**
   * Called when a SKU's snapshot or tail is broken (bad snapshot, invariant
   * violated). The SKU is left out of the result and the others carry on.
   * Without it, the first error is thrown.
   */
  onBroken?: (sku: string, error: Error) => void;
  /**
   * Called with each SKU as soon as it has caught up with the log. With it, SKUs
   * are handed over and not kept: the result is empty and memory holds only
   * the SKUs still reading their tails (the audit).
   */
  onLoaded?: (allocator: SkuAllocator) => void;
}

/**
 * Every SKU's allocator: one query for all latest snapshots, one for the SKU
 * list, then the tails of all SKUs together, `tailRowsPerRound` events a
 * round shared among the SKUs not yet caught up (not one round trip per SKU).
 */
export async function loadAllSkuStates(db: Db, limits: AllocatorLimits, options: LoadAllOptions = {}): Promise<Map<string, SkuAllocator>> {
  const states = new Map<string, SkuAllocator>();
  const broken = (sku: string, error: Error) => {
    states.delete(sku);
    if (options.onBroken === undefined) throw error;
    options.onBroken(sku, error);
  };
  const brokenSkus = new Set<string>();
  for (const row of await copySnapshotRows(db, latestSnapshotsCopy())) {
    try {
      states.set(row.sku, fromRow(row, limits));
    } catch (error) {
      brokenSkus.add(row.sku);
      broken(row.sku, error as Error);
    }
  }
  let pending: string[] = [];
  for (const { sku } of (await db.query<{ sku: string }>(logSkusQuery())).rows) {
    if (!states.has(sku) && !brokenSkus.has(sku)) states.set(sku, new SkuAllocator(sku, limits));
    if (states.has(sku)) pending.push(sku);
  }
  while (pending.length > 0) {
    const perSku = Math.max(1, Math.floor(tailRowsPerRound / pending.length));
    const after = pending.map((sku) => states.get(sku)!.seq);
    const rows = (await db.query(tailEventsQuery(pending, after, perSku))).rows;
    const got = new Map<string, number>();
    for (const row of rows) {
      const event = rowToEvent(row) as StockEvent;
      got.set(event.sku, (got.get(event.sku) ?? 0) + 1);
      const allocator = states.get(event.sku);
      if (allocator === undefined) continue; // broken earlier in this round
      try {
        allocator.apply(event);
      } catch (error) {
        brokenSkus.add(event.sku);
        broken(event.sku, error as Error);
      }
    }
    const next = pending.filter((sku) => got.get(sku) === perSku && states.has(sku));
    if (options.onLoaded !== undefined) {
      const still = new Set(next);
      for (const sku of pending) {
        const allocator = states.get(sku);
        if (allocator === undefined || still.has(sku)) continue;
        states.delete(sku);
        options.onLoaded(allocator);
      }
    }
    pending = next;
  }
  if (options.onLoaded !== undefined) {
    for (const allocator of states.values()) options.onLoaded(allocator); // a snapshot whose SKU has no log rows
    states.clear();
  }
  return states;
}
