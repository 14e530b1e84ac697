/**
 * PostgreSQL arrays in the binary wire format, for the group-commit insert's
 * parameters. node-postgres sends a Buffer parameter as binary, so Postgres
 * reads each element with its type's receive function instead of parsing the
 * array literal's text (array_in, and the number and UUID parsers, were ~8% of
 * the writing backend's CPU), and the service builds no literal strings: each
 * column is written once into one buffer.
 *
 * The format (array_send in Postgres's arrayfuncs.c): int32 dimensions (1),
 * int32 flags (1 if any element is NULL), the element type's OID, then per
 * dimension its length and lower bound (1); then per element an int32 byte
 * length (-1: NULL) and the element's binary value. Big-endian throughout.
 */

const textOid = 25;
const int8Oid = 20;
const int4Oid = 23;
const uuidOid = 2950;
const jsonbOid = 3802;
/** jsonb's binary form is a version byte, then the JSON text. */
const jsonbVersion = 1;

const headerBytes = 20;
const twoTo32 = 4294967296;

function header(buffer: Buffer, count: number, hasNull: boolean, oid: number): void {
  buffer.writeInt32BE(1, 0);
  buffer.writeInt32BE(hasNull ? 1 : 0, 4);
  buffer.writeInt32BE(oid, 8);
  buffer.writeInt32BE(count, 12);
  buffer.writeInt32BE(1, 16);
}

function hasNulls(values: readonly unknown[]): boolean {
  for (let i = 0; i < values.length; i++) if (values[i] === null || values[i] === undefined) return true;
  return false;
}

/**
 * One array: `write` puts a non-NULL element (its int32 length, then its bytes)
 * at `at` and returns where the next one starts; `capacity` bounds the total.
 */
function binaryArray<T>(values: readonly (T | null)[], oid: number, capacity: number, write: (buffer: Buffer, at: number, value: T) => number): Buffer {
  const buffer = Buffer.allocUnsafe(capacity);
  header(buffer, values.length, hasNulls(values), oid);
  let at = headerBytes;
  // Indexed, not for…of: this generic loop is not always optimized, and then every step of an
  // iterator allocates its result (~500 B per reservation in the allocation profile).
  for (let i = 0; i < values.length; i++) {
    const value = values[i];
    at = value === null || value === undefined ? buffer.writeInt32BE(-1, at) : write(buffer, at, value);
  }
  return buffer.subarray(0, at);
}

/** An array of fixed-width elements: `write` puts one value's `width` bytes at `at`. */
function fixedWidthArray<T>(values: readonly (T | null)[], oid: number, width: number, write: (buffer: Buffer, at: number, value: T) => void): Buffer {
  return binaryArray(values, oid, headerBytes + values.length * (4 + width), (buffer, at, value) => {
    buffer.writeInt32BE(width, at);
    write(buffer, at + 4, value);
    return at + 4 + width;
  });
}

/** `bigint[]`: safe integers only (epoch milliseconds, sequence numbers). */
export function int8Array(values: readonly (number | null)[]): Buffer {
  return fixedWidthArray(values, int8Oid, 8, writeInt8);
}

function writeInt8(buffer: Buffer, at: number, value: number): void {
  if (!Number.isSafeInteger(value)) throw new RangeError(`not a safe integer for a bigint column: ${value}`);
  const high = Math.floor(value / twoTo32);
  buffer.writeInt32BE(high, at);
  buffer.writeUInt32BE(value - high * twoTo32, at + 4);
}

/** `int[]`. */
export function int4Array(values: readonly (number | null)[]): Buffer {
  return fixedWidthArray(values, int4Oid, 4, writeInt4);
}

function writeInt4(buffer: Buffer, at: number, value: number): void {
  if (!Number.isInteger(value)) throw new RangeError(`not an integer for an int column: ${value}`);
  buffer.writeInt32BE(value, at);
}

/** `text[]`: each element's UTF-8 bytes. */
export function textArray(values: readonly (string | null)[]): Buffer {
  return stringArray(values, textOid, false);
}

/** `jsonb[]` from JSON texts. */
export function jsonbArray(values: readonly (string | null)[]): Buffer {
  return stringArray(values, jsonbOid, true);
}

function stringArray(values: readonly (string | null)[], oid: number, jsonb: boolean): Buffer {
  // A UTF-16 code unit is at most 3 UTF-8 bytes: room for the worst case, then cut to what was written.
  let capacity = headerBytes;
  for (let i = 0; i < values.length; i++) {
    const value = values[i];
    capacity += 5 + (value === null || value === undefined ? 0 : value.length * 3);
  }
  return binaryArray(values, oid, capacity, (buffer, at, value) => {
    let end = at + 4;
    if (jsonb) buffer[end++] = jsonbVersion;
    end += buffer.write(value, end, 'utf8');
    buffer.writeInt32BE(end - at - 4, at);
    return end;
  });
}

/** The value of a hex digit's character code, or -1. */
const hexValues = new Int8Array(128).fill(-1);
for (let i = 0; i < 10; i++) hexValues[48 + i] = i;
for (let i = 0; i < 6; i++) {
  hexValues[65 + i] = 10 + i;
  hexValues[97 + i] = 10 + i;
}

/** `uuid[]` from the canonical text form (8-4-4-4-12 hex digits, either case). */
export function uuidArray(values: readonly (string | null)[]): Buffer {
  return fixedWidthArray(values, uuidOid, 16, writeUuid);
}

function writeUuid(buffer: Buffer, at: number, uuid: string): void {
  if (uuid.length !== 36 || uuid[8] !== '-' || uuid[13] !== '-' || uuid[18] !== '-' || uuid[23] !== '-') {
    throw new RangeError(`not a UUID: ${JSON.stringify(uuid)}`);
  }
  let i = 0;
  for (let byte = 0; byte < 16; byte++) {
    if (i === 8 || i === 13 || i === 18 || i === 23) i++;
    const high = hexValue(uuid, i++);
    const low = hexValue(uuid, i++);
    if ((high | low) < 0) throw new RangeError(`not a UUID: ${JSON.stringify(uuid)}`);
    buffer[at + byte] = (high << 4) | low;
  }
}

function hexValue(text: string, index: number): number {
  const code = text.charCodeAt(index);
  return code < 128 ? hexValues[code]! : -1;
}
