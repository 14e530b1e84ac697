import pg from 'pg';

/**
 * All snapshot SQL, one named builder per statement. `sku_snapshots` has
 * PRIMARY KEY (sku, seq): "the latest of a SKU" is one backward step of that index.
 */

export interface SnapshotRow {
  sku: string;
  seq: number;
  formatVersion: number;
  state: Buffer;
  passivated: boolean;
}

/**
 * A snapshot longer than this comes without its state from the COPYs of the
 * latest snapshots (`state` null) and is read in slices of this length
 * (`snapshotSlicesCopy`): PostgreSQL sends a whole value only once it has read
 * all of it from its TOAST table (1.5 s for 169 MB before the first byte,
 * docs/performance.md), and a slice of an uncompressed value (STORAGE
 * EXTERNAL, migrations/013) reads only its own chunks.
 */
export const snapshotSliceBytes = 1 << 20;

/** A snapshot row as read back: its state inline when it is at most `snapshotSliceBytes`. */
export interface StoredSnapshot {
  sku: string;
  seq: number;
  formatVersion: number;
  /** The state's length (`octet_length`, read from the TOAST pointer, not the value). */
  bytes: number;
  state: Buffer | null;
  passivated: boolean;
}

/** The columns of a snapshot row as the binary COPYs below send them, in this order. */
const copyColumns = `sku, seq, format_version, octet_length(state),
  CASE WHEN octet_length(state) <= ${snapshotSliceBytes} THEN state END, passivated`;

/** A snapshot at an existing (sku, seq) is the same state: writing it again changes nothing but may mark it passivated. */
export function insertSnapshotQuery(row: SnapshotRow): pg.QueryConfig {
  return {
    name: 'sku-snapshots-insert',
    text: `INSERT INTO sku_snapshots (sku, seq, format_version, state, passivated) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (sku, seq) DO UPDATE SET passivated = sku_snapshots.passivated OR EXCLUDED.passivated`,
    values: [row.sku, row.seq, row.formatVersion, row.state, row.passivated],
  };
}

/**
 * Snapshots are read by binary COPY (src/snapshot/binary-copy.ts): the state's
 * raw bytes, not the text protocol's hex of them. COPY takes no parameters, so
 * SKUs go in as quoted literals.
 *
 * The latest snapshot of each of `skus` that has one (one SKU, or a shard's
 * recovery); `skus` is not empty.
 */
export function latestSnapshotsOfCopy(skus: readonly string[]): string {
  if (skus.length === 0) throw new RangeError('no SKUs to read snapshots of');
  const list = skus.map((sku) => pg.escapeLiteral(sku)).join(', ');
  return `COPY (SELECT DISTINCT ON (sku) ${copyColumns} FROM sku_snapshots WHERE sku IN (${list}) ORDER BY sku, seq DESC)
          TO STDOUT (FORMAT binary)`;
}

/** The latest snapshot of every SKU that has one (recovery of every shard, the audit). */
export function latestSnapshotsCopy(): string {
  return `COPY (SELECT DISTINCT ON (sku) ${copyColumns} FROM sku_snapshots ORDER BY sku, seq DESC) TO STDOUT (FORMAT binary)`;
}

/** A snapshot row from its binary COPY fields (`copyColumns`: text, bigint, integer, integer, bytea or NULL, boolean). */
export function snapshotRowOf(fields: readonly (Buffer | null)[]): StoredSnapshot {
  const [sku, seq, formatVersion, bytes, state, passivated] = fields;
  if (fields.length !== 6 || sku == null || seq?.length !== 8 || formatVersion?.length !== 4 || bytes?.length !== 4 || passivated?.length !== 1) {
    throw new Error(`a snapshot row of unexpected shape (${fields.length} fields)`);
  }
  const row: StoredSnapshot = {
    sku: sku.toString('utf8'),
    seq: Number(seq.readBigInt64BE(0)),
    formatVersion: formatVersion.readInt32BE(0),
    bytes: bytes.readInt32BE(0),
    state: state ?? null,
    passivated: passivated[0] === 1,
  };
  if ((row.state === null) !== (row.bytes > snapshotSliceBytes) || (row.state !== null && row.state.length !== row.bytes)) {
    throw new Error(`a snapshot row of ${row.bytes} bytes with ${row.state?.length ?? 'no'} bytes inline`);
  }
  return row;
}

/**
 * The slices of one snapshot's state, in order: tuples (i int4, slice bytea),
 * slice i holding bytes [i × snapshotSliceBytes, (i + 1) × snapshotSliceBytes).
 * A snapshot removed meanwhile gives no tuples.
 */
export function snapshotSlicesCopy(row: Pick<StoredSnapshot, 'sku' | 'seq' | 'bytes'>): string {
  if (!Number.isSafeInteger(row.seq) || !Number.isSafeInteger(row.bytes) || row.bytes <= 0) throw new RangeError(`no slices of ${row.bytes} bytes at seq ${row.seq}`);
  const slices = Math.ceil(row.bytes / snapshotSliceBytes);
  return `COPY (SELECT i, substring(s.state FROM i * ${snapshotSliceBytes} + 1 FOR ${snapshotSliceBytes})
            FROM generate_series(0, ${slices - 1}) AS i
            CROSS JOIN LATERAL (SELECT state FROM sku_snapshots WHERE sku = ${pg.escapeLiteral(row.sku)} AND seq = ${row.seq}) s)
          TO STDOUT (FORMAT binary)`;
}

/** Keep the latest 2 snapshots of a SKU: the newest, and the one before in case the newest is unreadable. */
export function pruneSnapshotsQuery(sku: string): pg.QueryConfig {
  return {
    name: 'sku-snapshots-prune',
    text: `DELETE FROM sku_snapshots WHERE sku = $1 AND seq < (
             SELECT seq FROM sku_snapshots WHERE sku = $1 ORDER BY seq DESC OFFSET 1 LIMIT 1)`,
    values: [sku],
  };
}

/**
 * Every SKU in the log, by a loose index scan over the (sku, seq) primary key:
 * one index descent per SKU instead of reading every event.
 */
export function logSkusQuery(): pg.QueryConfig {
  return {
    name: 'stock-events-skus',
    text: `WITH RECURSIVE skus AS (
             (SELECT sku FROM stock_events ORDER BY sku LIMIT 1)
             UNION ALL
             SELECT (SELECT e.sku FROM stock_events e WHERE e.sku > skus.sku ORDER BY e.sku LIMIT 1)
             FROM skus WHERE skus.sku IS NOT NULL)
           SELECT sku FROM skus WHERE sku IS NOT NULL`,
  };
}

const eventColumns =
  'e.sku, e.seq, e.kind, e.at_ms, e.reservation_id, e.shopper_id, e.quantity, e.expires_at_ms, e.idempotency_key, e.order_id, e.config, e.payment_method, e.waitlist_id';

/**
 * The next events of many SKUs in one round trip: for each (sku, afterSeq),
 * at most `perSku` events after it, in (sku, seq) order. Batched recovery calls
 * it again for the SKUs that filled their share.
 */
export function tailEventsQuery(skus: readonly string[], afterSeqs: readonly number[], perSku: number): pg.QueryConfig {
  return {
    name: 'stock-events-tails',
    text: `SELECT ${eventColumns}
           FROM unnest($1::text[], $2::bigint[]) AS t(sku, after_seq)
           CROSS JOIN LATERAL (
             SELECT * FROM stock_events s WHERE s.sku = t.sku AND s.seq > t.after_seq ORDER BY s.seq LIMIT $3) e
           ORDER BY e.sku, e.seq`,
    values: [skus, afterSeqs, perSku],
  };
}
