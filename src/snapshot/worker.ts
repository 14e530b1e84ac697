import type { AllocatorLimits } from '../allocator/types.js';
import { encodeSnapshot, snapshotFormatVersion } from './codec.js';
import { foldSku } from './load.js';
import { insertSnapshotQuery, pruneSnapshotsQuery } from './sql.js';
import { workerPool } from './worker-db.js';
import { lowerThisThreadsPriority } from './background-thread.js';

// Off the allocators' CPU as well as their loop (see background-thread.ts).
lowerThisThreadsPriority();

/**
 * Piscina worker: writes a SKU's next snapshot from the durable log alone, by
 * folding it since the latest snapshot through the same pure allocator. The
 * service does not use it (its shards snapshot their own allocators,
 * live.ts); it is the way to snapshot a SKU no process holds (tests,
 * bench/audit-loop-delay.ts). The write is one INSERT: a crash before it
 * commits leaves the previous snapshot and the log, which recover the same state.
 */

export interface SnapshotTask {
  databaseUrl: string;
  sku: string;
  /** Snapshot at this seq (events after it are left for the next one); default: the whole durable log. */
  uptoSeq?: number;
  /** The SKU is leaving memory: mark the snapshot so. */
  passivated?: boolean;
  limits: AllocatorLimits;
}

export interface SnapshotResult {
  sku: string;
  /** Seq the latest snapshot covers after this task. */
  seq: number;
  /** Size of the snapshot written (0 when nothing new was written). */
  bytes: number;
  /** Events folded after the previous snapshot. */
  events: number;
}

export default async function snapshotSku(task: SnapshotTask): Promise<SnapshotResult> {
  const pool = workerPool(task.databaseUrl);
  const { allocator, snapshotSeq, events, lastAtMs } = await foldSku(pool, task.sku, task.limits, task.uptoSeq);
  if (allocator.seq === 0 || (events === 0 && task.passivated !== true)) {
    return { sku: task.sku, seq: snapshotSeq, bytes: 0, events: 0 };
  }
  // Settled reservations past their memory time would be forgotten by the next apply anyway.
  if (lastAtMs !== null) allocator.forgetSettled(lastAtMs);
  const state = encodeSnapshot(allocator);
  await pool.query(
    insertSnapshotQuery({
      sku: task.sku,
      seq: allocator.seq,
      formatVersion: snapshotFormatVersion,
      state,
      passivated: task.passivated === true,
    }),
  );
  await pool.query(pruneSnapshotsQuery(task.sku));
  return { sku: task.sku, seq: allocator.seq, bytes: state.length, events };
}
