import t from 'tap';
import { to as copyTo } from 'pg-copy-streams';
import { BinaryCopyError, BinaryCopyReader } from '../src/snapshot/binary-copy.js';
import { SliceOrder } from '../src/snapshot/load.js';
import { snapshotRowOf, snapshotSliceBytes } from '../src/snapshot/sql.js';
import { createTestDatabase } from './helpers/db.js';

/** Binary COPY as PostgreSQL sends it, read in every chunking; and streams no PostgreSQL sends, refused. */

function readAll(bytes: Buffer, chunkBytes: number, reuseValues = false): (Buffer | null)[][] {
  const tuples: (Buffer | null)[][] = [];
  // Reused values are valid only during the call: copied there, as a caller that keeps them must.
  const reader = new BinaryCopyReader((fields) => tuples.push(reuseValues ? fields.map((f) => f && Buffer.from(f)) : fields), reuseValues);
  for (let at = 0; at < bytes.length; at += chunkBytes) reader.push(bytes.subarray(at, at + chunkBytes));
  reader.end();
  return tuples;
}

const allBytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i));

t.test('the tuples of a real binary COPY, whatever the chunks', async (t) => {
  const db = await createTestDatabase(t);
  const sql = `COPY (SELECT * FROM (VALUES
      ('a'::text, 1::bigint, 2::integer, $$\\x00ff$$::bytea, true),
      ('ünï', 9007199254740991::bigint, -1::integer, ''::bytea, false),
      (NULL::text, 0::bigint, 0::integer, NULL::bytea, NULL::boolean),
      ('all', 3::bigint, 4::integer, decode('${allBytes.toString('hex')}', 'hex'), true)) v) TO STDOUT (FORMAT binary)`;
  const chunks: Buffer[] = [];
  const client = await db.pool.connect();
  try {
    await new Promise<void>((resolve, reject) => {
      const stream = client.query(copyTo(sql));
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('end', resolve);
      stream.on('error', reject);
    });
  } finally {
    client.release();
  }
  const bytes = Buffer.concat(chunks);
  for (const chunkBytes of [1, 5, 64, bytes.length]) {
    t.same(readAll(bytes, chunkBytes, true), readAll(bytes, chunkBytes), `${chunkBytes}-byte chunks: reused values carry the same bytes`);
  }
  const seen: Buffer[] = [];
  new BinaryCopyReader((fields) => fields[3] && seen.push(fields[3]), true).push(bytes);
  t.equal(seen[0]!.buffer, seen[1]!.buffer, 'and are filled in one buffer per field position (grown when a value is longer)');
  for (const chunkBytes of [1, 2, 3, 5, 19, 64, bytes.length]) {
    const tuples = readAll(bytes, chunkBytes);
    t.equal(tuples.length, 4, `${chunkBytes}-byte chunks: four tuples`);
    t.same(tuples.map((f) => f.length), [5, 5, 5, 5]);
    t.equal(tuples[0]![0]!.toString('utf8'), 'a');
    t.equal(tuples[0]![1]!.readBigInt64BE(0), 1n);
    t.equal(tuples[0]![2]!.readInt32BE(0), 2);
    t.same([...tuples[0]![3]!], [0, 255]);
    t.same([...tuples[0]![4]!], [1]);
    t.equal(tuples[1]![0]!.toString('utf8'), 'ünï');
    t.equal(Number(tuples[1]![1]!.readBigInt64BE(0)), Number.MAX_SAFE_INTEGER);
    t.equal(tuples[1]![2]!.readInt32BE(0), -1);
    t.equal(tuples[1]![3]!.length, 0, 'an empty bytea is an empty buffer, not NULL');
    t.same([tuples[2]![0], tuples[2]![3], tuples[2]![4]], [null, null, null], 'NULL fields are null');
    t.ok(tuples[3]![3]!.equals(allBytes), 'every byte value comes through as itself');
  }
  // A snapshot row: these fields with the state's length before the state (sql.ts copyColumns).
  const asRow = ([sku, seq, version, state, passivated]: (Buffer | null)[], length: number) => [sku!, seq!, version!, Buffer.from(i32(length)), state!, passivated!];
  const [first, , nulls] = readAll(bytes, 7);
  const row = snapshotRowOf(asRow(first!, 2));
  t.same({ ...row, state: [...row.state!] }, { sku: 'a', seq: 1, formatVersion: 2, bytes: 2, state: [0, 255], passivated: true });
  t.throws(() => snapshotRowOf(nulls!), /unexpected shape/, 'a row with NULLs is not a snapshot');
  t.throws(() => snapshotRowOf(asRow(first!, 3)), /of 3 bytes with 2 bytes inline/, 'a state whose length disagrees');
  const long = snapshotRowOf([...asRow(first!, snapshotSliceBytes + 1).slice(0, 4), null, first![4]!]);
  t.same([long.bytes, long.state], [snapshotSliceBytes + 1, null], 'a long state comes without its bytes, to be read in slices');
  t.throws(() => snapshotRowOf([...asRow(first!, 2).slice(0, 4), null, first![4]!]), /no bytes inline/, 'a short state must come inline');
});

/** A valid header, then `rest`. */
function stream(...rest: number[][]): Buffer {
  const header = Buffer.alloc(19);
  Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1').copy(header);
  return Buffer.concat([header, ...rest.map((bytes) => Buffer.from(bytes))]);
}
const i16 = (n: number) => [(n >> 8) & 0xff, n & 0xff];
const i32 = (n: number) => [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
const trailer = i16(-1);

t.test('streams PostgreSQL never sends are refused, never half-read', async (t) => {
  const valid = stream(i16(1), i32(2), [7, 8], trailer);
  t.same(readAll(valid, 1).map((f) => f.map((b) => [...b!])), [[[7, 8]]], 'the valid stream the others break');
  const cases: [string, Buffer, RegExp][] = [
    ['a text COPY', Buffer.from('sku\t1\t2\t\\\\x00ff\tt\n\\.\n'), /bad signature/],
    ['OIDs asked for', (() => { const b = stream(trailer); b.writeUInt32BE(1 << 16, 11); return b; })(), /OIDs/],
    ['a header extension', (() => { const b = stream(trailer); b.writeUInt32BE(4, 15); return b; })(), /extension/],
    ['a negative field count', stream(i16(-2)), /fields/],
    ['a negative field length', stream(i16(1), i32(-7)), /bytes/],
    ['bytes after the trailer', stream(trailer, [0]), /after the end/],
    ['ends inside the header', valid.subarray(0, 10), /ended inside its header/],
    ['ends before a field count', valid.subarray(0, 19), /ended inside its count/],
    ['ends inside a field length', valid.subarray(0, 23), /ended inside its length/],
    ['ends inside a value', valid.subarray(0, 26), /ended inside its value/],
    ['ends without its trailer', valid.subarray(0, 27), /ended inside its count/],
  ];
  for (const [name, bytes, message] of cases) {
    for (const chunkBytes of [1, 3, bytes.length]) {
      t.throws(() => readAll(bytes, chunkBytes), { name: 'BinaryCopyError', message }, `${name} (${chunkBytes}-byte chunks)`);
    }
  }
  t.ok(new BinaryCopyError('x') instanceof Error);
});

t.test('slices are handed on in order whatever order they come in, each once, all of them', async (t) => {
  const run = (arrivals: number[], count = 4) => {
    const got: string[] = [];
    const order = new SliceOrder(count, (slice) => got.push(slice.toString()), 'test');
    const scratch = Buffer.alloc(1);
    for (const i of arrivals) {
      scratch.write(String(i));
      order.add(i, scratch);
      scratch.write('x'); // the COPY reader reuses its buffer for the next tuple
    }
    return { got, order };
  };
  t.same(run([0, 1, 2, 3]).got, ['0', '1', '2', '3'], 'in order');
  const shuffled = run([2, 0, 3, 1]);
  t.same(shuffled.got, ['0', '1', '2', '3'], 'out of order: the early ones were kept as they were, not as the reused buffer is now');
  t.doesNotThrow(() => shuffled.order.end(), 'all of them');
  t.ok(run([]).order.none(), 'none at all: the row is gone');
  t.throws(() => run([0, 1]).order.end(), { name: 'SnapshotFormatError', message: /2 of its 4 slices/ }, 'some missing');
  for (const [what, arrivals] of [['a repeat', [0, 0]], ['an early repeat', [2, 2]], ['past the count', [4]], ['negative', [-1]]] as const) {
    t.throws(() => run([...arrivals]), { name: 'SnapshotFormatError', message: /unexpected/ }, what);
  }
  t.throws(() => new SliceOrder(2, () => undefined, 'test').add(0, null), /unexpected/, 'a NULL slice');
});
