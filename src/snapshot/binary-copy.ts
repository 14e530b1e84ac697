/**
 * PostgreSQL's binary COPY format, read a chunk at a time: the tuples of
 * `COPY (…) TO STDOUT (FORMAT binary)`, each as its fields' raw bytes (null for
 * SQL NULL). Snapshots are read this way because the text protocol sends a
 * bytea as hex: a 169 MB snapshot (a million live holds) became a 338 MB
 * string and then a Buffer again, 8–9 s of CPU against 1.6–1.9 s through COPY
 * (docs/performance.md), and a snapshot past ~268 MB could not be read at all
 * (V8 refuses strings longer than 2^29 − 24 characters).
 *
 * Layout (big-endian): the 11-byte signature, a u32 of flags, a u32 header
 * extension length; then per tuple an i16 field count (−1 ends the data) and per
 * field an i32 length (−1: NULL) and that many bytes.
 */

export class BinaryCopyError extends Error {
  override name = 'BinaryCopyError';
}

const signature = Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1');
/** Signature, flags, header extension length. */
const headerBytes = signature.length + 4 + 4;
/** Bit 16 of the flags: the tuples carry OIDs (never asked for here). */
const withOidsFlag = 1 << 16;

type Stage = 'header' | 'count' | 'length' | 'value' | 'done';

export class BinaryCopyReader {
  private stage: Stage = 'header';
  /** Bytes the current fixed-size stage needs, gathered in `scratch` across chunks. */
  private need = headerBytes;
  private have = 0;
  private readonly scratch = Buffer.alloc(headerBytes);
  private fieldCount = 0;
  private fields: (Buffer | null)[] = [];
  /** The field being filled: its own copy, so that no tuple pins a socket chunk. */
  private value: Buffer = Buffer.alloc(0);
  private valueAt = 0;
  /** With `reuseValues`: per field position, the buffer its values are filled in, tuple after tuple. */
  private readonly stores: Buffer[] = [];

  /**
   * `reuseValues`: a tuple's fields are only valid during its `onTuple` call
   * (each position's bytes go in one buffer reused by the next tuple). For a
   * long value read in slices, a fresh buffer per slice left tens of MiB of
   * freed memory in the process (docs/performance.md).
   */
  constructor(
    private readonly onTuple: (fields: (Buffer | null)[]) => void,
    private readonly reuseValues = false,
  ) {}

  push(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length) {
      if (this.stage === 'done') throw new BinaryCopyError(`${chunk.length - at} bytes after the end of the COPY data`);
      if (this.stage === 'value') {
        const n = Math.min(chunk.length - at, this.value.length - this.valueAt);
        chunk.copy(this.value, this.valueAt, at, at + n);
        at += n;
        this.valueAt += n;
        if (this.valueAt === this.value.length) this.endField(this.value);
        continue;
      }
      const n = Math.min(chunk.length - at, this.need - this.have);
      chunk.copy(this.scratch, this.have, at, at + n);
      at += n;
      this.have += n;
      if (this.have === this.need) this.fixedPart();
    }
  }

  /** The stream ended: it must have ended at the trailer. */
  end(): void {
    if (this.stage !== 'done') throw new BinaryCopyError(`COPY data ended inside its ${this.stage}`);
  }

  private expect(stage: Stage, bytes: number): void {
    this.stage = stage;
    this.need = bytes;
    this.have = 0;
  }

  private fixedPart(): void {
    const s = this.scratch;
    if (this.stage === 'header') {
      if (!s.subarray(0, signature.length).equals(signature)) throw new BinaryCopyError('not binary COPY data (bad signature)');
      if ((s.readUInt32BE(signature.length) & withOidsFlag) !== 0) throw new BinaryCopyError('COPY data with OIDs');
      if (s.readUInt32BE(signature.length + 4) !== 0) throw new BinaryCopyError('COPY header extension is not read');
      this.expect('count', 2);
    } else if (this.stage === 'count') {
      const count = s.readInt16BE(0);
      if (count === -1) return this.expect('done', 0);
      if (count < 0) throw new BinaryCopyError(`tuple of ${count} fields`);
      this.fieldCount = count;
      this.fields = [];
      if (count === 0) return this.endTuple();
      this.expect('length', 4);
    } else {
      const length = s.readInt32BE(0);
      if (length === -1) return this.endField(null);
      if (length < 0) throw new BinaryCopyError(`field of ${length} bytes`);
      this.value = this.reuseValues ? this.store(length) : Buffer.allocUnsafeSlow(length);
      this.valueAt = 0;
      if (length === 0) return this.endField(this.value);
      this.stage = 'value';
    }
  }

  private store(length: number): Buffer {
    const at = this.fields.length;
    let store = this.stores[at];
    if (store === undefined || store.length < length) this.stores[at] = store = Buffer.allocUnsafeSlow(length);
    return store.subarray(0, length);
  }

  private endField(value: Buffer | null): void {
    this.fields.push(value);
    if (this.fields.length === this.fieldCount) this.endTuple();
    else this.expect('length', 4);
  }

  private endTuple(): void {
    const fields = this.fields;
    this.fields = [];
    this.expect('count', 2);
    this.onTuple(fields);
  }
}
