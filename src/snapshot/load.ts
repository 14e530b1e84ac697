import type pg from 'pg';
import { to as copyTo } from 'pg-copy-streams';
import { SkuAllocator } from '../allocator/allocator.js';
import type { AllocatorLimits, StockEvent } from '../allocator/types.js';
import { readEvents, rowToEvent } from '../outbox/event-log.js';
import { BinaryCopyReader } from './binary-copy.js';
import { decodeSnapshot, SnapshotDecoder, SnapshotFormatError } from './codec.js';
import {
  latestSnapshotsCopy, latestSnapshotsOfCopy, logSkusQuery, snapshotRowOf, snapshotSliceBytes, snapshotSlicesCopy, tailEventsQuery, type StoredSnapshot,
} from './sql.js';

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
 * The tuples of a binary COPY (src/snapshot/sql.ts), each handed to `onTuple`
 * as it arrives. A pool lends one client for it; a COPY cut short (a malformed
 * stream, or `onTuple` throwing) leaves its connection mid-protocol, so that
 * client is discarded.
 */
async function copyTuples(db: Db, copy: string, onTuple: (fields: (Buffer | null)[]) => void, reuseValues = false): Promise<void> {
  const client = isPool(db) ? await db.connect() : db;
  // A held client's socket error (Postgres crashing mid-COPY) is also emitted on the client, and
  // with no listener that would end the process (src/db/pool.ts): the COPY fails with it on its own.
  const heldError = (): void => undefined;
  client.on('error', heldError);
  let failure: Error | undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      const reader = new BinaryCopyReader(onTuple, reuseValues);
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
}

async function copySnapshotRows(db: Db, copy: string): Promise<StoredSnapshot[]> {
  const rows: StoredSnapshot[] = [];
  await copyTuples(db, copy, (fields) => rows.push(snapshotRowOf(fields)));
  return rows;
}

/**
 * A snapshot too long to come inline, read in slices and decoded as they
 * arrive (PostgreSQL reads the next slice while this thread decodes one);
 * null when the row is gone (two newer snapshots were written since its
 * length was read: one COPY sees one version of the row, so it is all the
 * slices or none). Slices are fed in order whatever order they come in.
 */
async function decodeSlices(db: Db, row: StoredSnapshot, limits: AllocatorLimits): Promise<SkuAllocator | null> {
  const decoder = new SnapshotDecoder(row.bytes, limits);
  const order = new SliceOrder(Math.ceil(row.bytes / snapshotSliceBytes), (slice) => decoder.push(slice), `snapshot of ${row.sku} at ${row.seq}`);
  await copyTuples(db, snapshotSlicesCopy(row), ([index, slice]) => order.add(index?.length === 4 ? index.readInt32BE(0) : -1, slice ?? null), true);
  if (order.none()) return null;
  order.end();
  return decoder.finish();
}

/**
 * Numbered slices handed on in order, whatever order they come in (the plan
 * of the slices' COPY sends them in order; an early one is kept, copied, as
 * the COPY reader reuses its buffer).
 */
export class SliceOrder {
  private next = 0;
  private readonly early = new Map<number, Buffer>();

  constructor(
    private readonly count: number,
    private readonly onSlice: (slice: Buffer) => void,
    private readonly what: string,
  ) {}

  add(index: number, slice: Buffer | null): void {
    if (!Number.isInteger(index) || index < this.next || index >= this.count || this.early.has(index) || slice === null) {
      throw new SnapshotFormatError(`${this.what}: slice ${index} unexpected`);
    }
    if (index > this.next) return void this.early.set(index, Buffer.from(slice));
    this.onSlice(slice);
    for (this.next += 1; this.early.has(this.next); this.next += 1) {
      this.onSlice(this.early.get(this.next)!);
      this.early.delete(this.next);
    }
  }

  /** No slice came at all (the row is gone). */
  none(): boolean {
    return this.next === 0 && this.early.size === 0;
  }

  /** Every slice came. */
  end(): void {
    if (this.next !== this.count) throw new SnapshotFormatError(`${this.what}: ${this.next} of its ${this.count} slices read`);
  }
}

/** Reads of a SKU's latest snapshot that found it replaced before its slices were read, before giving up. */
const snapshotReadAttempts = 3;

/**
 * The allocator a stored snapshot holds. A long one removed before its slices
 * were read is replaced by the SKU's latest snapshot (a later seq: the tail
 * after it is read from there).
 */
export async function fromRow(db: Db, first: StoredSnapshot, limits: AllocatorLimits): Promise<SkuAllocator> {
  let row: StoredSnapshot | undefined = first;
  for (let attempt = 1; row !== undefined; attempt++) {
    const allocator = row.state === null ? await decodeSlices(db, row, limits) : decodeSnapshot(row.state, limits);
    if (allocator !== null) {
      if (allocator.sku !== row.sku || allocator.seq !== row.seq) {
        throw new SnapshotFormatError(`snapshot row (${row.sku}, ${row.seq}) holds (${allocator.sku}, ${allocator.seq})`);
      }
      return allocator;
    }
    if (attempt === snapshotReadAttempts) throw new SnapshotFormatError(`snapshot of ${row.sku} replaced ${attempt} times while read`);
    [row] = await copySnapshotRows(db, latestSnapshotsOfCopy([row.sku]));
  }
  throw new SnapshotFormatError(`${first.sku} has no snapshot any more (it had one at seq ${first.seq})`);
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
  const rows = await copySnapshotRows(db, latestSnapshotsOfCopy([sku]));
  const allocator = rows[0] === undefined ? new SkuAllocator(sku, limits) : await fromRow(db, rows[0], limits);
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

/** SKUs per snapshot COPY of `loadSkuStates`: the list travels as literals in the statement's text. */
const skusPerSnapshotCopy = 1_000;

/** What one load of many SKUs is doing: the allocators so far, and how a broken SKU leaves them. */
class ManyLoad {
  readonly states = new Map<string, SkuAllocator>();
  readonly brokenSkus = new Set<string>();

  constructor(
    private readonly db: Db,
    private readonly limits: AllocatorLimits,
    private readonly options: LoadAllOptions,
  ) {}

  broken(sku: string, error: Error): void {
    this.states.delete(sku);
    this.brokenSkus.add(sku);
    if (this.options.onBroken === undefined) throw error;
    this.options.onBroken(sku, error);
  }

  /** Decodes the rows of a snapshot COPY, dropping each row's bytes once decoded. */
  async snapshots(copy: string): Promise<void> {
    const rows: (StoredSnapshot | undefined)[] = await copySnapshotRows(this.db, copy);
    for (let i = 0; i < rows.length; i++) {
      const row = rows[i]!;
      rows[i] = undefined; // a big snapshot's bytes go as soon as it is decoded
      try {
        this.states.set(row.sku, await fromRow(this.db, row, this.limits));
      } catch (error) {
        this.broken(row.sku, error as Error);
      }
    }
  }

  /** An empty allocator for a SKU with no snapshot; false when the SKU broke. */
  pend(sku: string): boolean {
    if (this.brokenSkus.has(sku)) return false;
    if (!this.states.has(sku)) this.states.set(sku, new SkuAllocator(sku, this.limits));
    return true;
  }

  /**
   * The tails of `pending` together, `tailRowsPerRound` events a round shared
   * among the SKUs not yet caught up (not one round trip per SKU). With
   * `onLoaded`, each SKU is handed over as soon as it has caught up.
   */
  async catchUp(pending: string[]): Promise<void> {
    const { states, options } = this;
    while (pending.length > 0) {
      const perSku = Math.max(1, Math.floor(tailRowsPerRound / pending.length));
      const after = pending.map((sku) => states.get(sku)!.seq);
      const rows = (await this.db.query(tailEventsQuery(pending, after, perSku))).rows;
      const got = new Map<string, number>();
      for (const row of rows) {
        const event = rowToEvent(row) as StockEvent;
        got.set(event.sku, (got.get(event.sku) ?? 0) + 1);
        const allocator = states.get(event.sku);
        if (allocator === undefined) continue; // broken earlier in this round
        try {
          allocator.apply(event);
        } catch (error) {
          this.broken(event.sku, error as Error);
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
  }

  /** The result: with `onLoaded`, what is left is handed over too (a snapshot whose SKU has no log rows) and none kept. */
  finish(): Map<string, SkuAllocator> {
    if (this.options.onLoaded !== undefined) {
      for (const allocator of this.states.values()) this.options.onLoaded(allocator);
      this.states.clear();
    }
    return this.states;
  }
}

/**
 * Every SKU's allocator: one query for all latest snapshots, one for the SKU
 * list, then the tails of all SKUs together (`ManyLoad.catchUp`).
 */
export async function loadAllSkuStates(db: Db, limits: AllocatorLimits, options: LoadAllOptions = {}): Promise<Map<string, SkuAllocator>> {
  const load = new ManyLoad(db, limits, options);
  await load.snapshots(latestSnapshotsCopy());
  const pending: string[] = [];
  for (const { sku } of (await db.query<{ sku: string }>(logSkusQuery())).rows) {
    if (load.pend(sku)) pending.push(sku);
  }
  await load.catchUp(pending);
  return load.finish();
}

/**
 * The allocators of `skus` (a shard's recovery): their latest snapshots in one
 * COPY per `skusPerSnapshotCopy`, then their tails together. A SKU with
 * neither snapshot nor events comes back empty (seq 0).
 */
export async function loadSkuStates(db: Db, skus: readonly string[], limits: AllocatorLimits, options: LoadAllOptions = {}): Promise<Map<string, SkuAllocator>> {
  const load = new ManyLoad(db, limits, options);
  for (let at = 0; at < skus.length; at += skusPerSnapshotCopy) {
    await load.snapshots(latestSnapshotsOfCopy(skus.slice(at, at + skusPerSnapshotCopy)));
  }
  await load.catchUp(skus.filter((sku) => load.pend(sku)));
  return load.finish();
}
