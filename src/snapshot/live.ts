import type pg from 'pg';
import type { SkuAllocator } from '../allocator/allocator.js';
import type { Reservation, StockEvent } from '../allocator/types.js';
import { SnapshotEncoder, snapshotFormatVersion } from './codec.js';
import { insertSnapshotQuery, pruneSnapshotsQuery } from './sql.js';

/**
 * A snapshot of a SKU taken from the shard's own allocator, not by folding the
 * log again: the state is exported at one seq (one synchronous step), then
 * encoded a slice of reservations per event-loop turn while the shard keeps
 * deciding. The allocator changes a reservation in place when an event about
 * it is applied, so while the snapshot is open the shard calls `beforeApply`
 * with every event first and the snapshot keeps a copy of that reservation as
 * it was: the bytes are exactly `encodeSnapshot` of the allocator at the seq
 * it was taken. Everything else the export holds is already a copy.
 *
 * Cost: the export walks the SKU's maps once (the pause); the encoding is a
 * slice of `reservationsPerSlice` per turn; nothing is read from Postgres.
 * Measured in bench/snapshot-cost.ts (docs/performance.md).
 *
 * The state includes decisions that may not be durable yet: the shard writes
 * the snapshot only once everything decided up to its seq has committed (an
 * outbox barrier), and drops it if that failed (the SKU is then rebuilt).
 */

/** Items (reservations, shoppers, keys…) encoded per event-loop turn: about 1 ms (docs/performance.md). */
export const reservationsPerSlice = 5_000;

export class LiveSnapshot {
  readonly sku: string;
  readonly seq: number;
  /** Reservations changed since the export, as they were at it. */
  private readonly before = new Map<string, Reservation>();
  private readonly encoder: SnapshotEncoder;
  private done = false;

  constructor(
    private readonly allocator: SkuAllocator,
    private readonly itemsPerSlice = reservationsPerSlice,
  ) {
    const state = allocator.exportState();
    this.sku = state.sku;
    this.seq = state.seq;
    this.encoder = new SnapshotEncoder(state, (r) => this.before.get(r.reservationId) ?? r);
  }

  /** The shard is about to apply `event` to this snapshot's allocator: keep the reservation it changes. */
  beforeApply(event: StockEvent): void {
    if (this.done || event.kind === 'reserved' || !('reservationId' in event)) return;
    const id = event.reservationId;
    if (this.before.has(id)) return;
    const reservation = this.allocator.reservations.get(id);
    if (reservation !== undefined) this.before.set(id, { ...reservation });
  }

  /** Encode the next slice: true once everything is encoded. */
  step(): boolean {
    if (this.done) return true;
    this.done = this.encoder.step(this.itemsPerSlice);
    if (this.done) this.before.clear();
    return this.done;
  }

  /** The snapshot's bytes (after `step` said done). */
  finish(): Buffer {
    if (!this.done) throw new Error(`snapshot of ${this.sku} at ${this.seq} is not encoded yet`);
    return this.encoder.finish();
  }
}

/** Encode a live snapshot one slice per event-loop turn (setImmediate: requests in between are served). */
export function encodeInSlices(snapshot: LiveSnapshot): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const turn = (): void => {
      try {
        if (snapshot.step()) resolve(snapshot.finish());
        else setImmediate(turn);
      } catch (error) {
        reject(error instanceof Error ? error : new Error(String(error)));
      }
    };
    setImmediate(turn);
  });
}

/** Write a snapshot (one INSERT: a crash before it commits leaves the previous one and the log), then keep the latest 2. */
export async function writeSnapshot(pool: pg.Pool, row: { sku: string; seq: number; state: Buffer; passivated: boolean }): Promise<void> {
  await pool.query(insertSnapshotQuery({ ...row, formatVersion: snapshotFormatVersion }));
  await pool.query(pruneSnapshotsQuery(row.sku));
}

/**
 * A shard's open live snapshots: it calls `beforeApply` before every event it
 * applies, and `write` to snapshot a SKU from its allocator.
 */
export class LiveSnapshots {
  private readonly open = new Map<SkuAllocator, LiveSnapshot>();

  constructor(
    private readonly pool: pg.Pool,
    /** Resolves once everything decided for `sku` so far is durable (null), or failed (the error). */
    private readonly durable: (sku: string) => Promise<Error | null>,
  ) {}

  beforeApply(allocator: SkuAllocator, event: StockEvent): void {
    if (this.open.size > 0) this.open.get(allocator)?.beforeApply(event);
  }

  /**
   * Snapshot `allocator` at its current seq and write it once that seq is durable. Rejects (nothing
   * written) when a commit up to that seq failed: the SKU is being rebuilt from the log.
   */
  async write(allocator: SkuAllocator, passivated: boolean): Promise<{ seq: number; bytes: number }> {
    const live = new LiveSnapshot(allocator);
    this.open.set(allocator, live);
    const durable = this.durable(live.sku);
    let state: Buffer;
    try {
      state = await encodeInSlices(live);
    } finally {
      this.open.delete(allocator);
    }
    const failed = await durable;
    if (failed !== null) throw new Error(`snapshot of ${live.sku} at ${live.seq} dropped: a commit up to it failed`, { cause: failed });
    await writeSnapshot(this.pool, { sku: live.sku, seq: live.seq, state, passivated });
    return { seq: live.seq, bytes: state.length };
  }
}
