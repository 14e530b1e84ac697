/**
 * PostgreSQL array literals for the group-commit insert, built directly from
 * typed columns. node-postgres can serialize JS arrays itself, but it inspects
 * and escapes every element generically (two regex replaces per string); on the
 * hot path that was ~5% of the service's CPU. Here numbers and UUIDs need no
 * escaping at all, and a text element is scanned once and escaped only when it
 * holds a character the array syntax reserves. A column with no NULL and
 * nothing to escape (most columns of a batch) is one `join`, which builds the
 * literal as one flat string instead of a chain of concatenations; a column of
 * NULLs only is one `repeat`.
 */

/** `{1,2,NULL}` for integer columns. */
export function numberArray(values: readonly (number | null)[]): string {
  if (values.length === 0) return '{}';
  const nulls = countNulls(values);
  if (nulls === 0) return '{' + values.join(',') + '}';
  if (nulls === values.length) return allNulls(values.length);
  let out = '{';
  for (let i = 0; i < values.length; i++) {
    if (i > 0) out += ',';
    const value = values[i];
    out += value === null || value === undefined ? 'NULL' : String(value);
  }
  return out + '}';
}

/** `{"a","b\\"c",NULL}` for text (and uuid) columns: every element quoted, `\` and `"` escaped. */
export function textArray(values: readonly (string | null)[]): string {
  if (values.length === 0) return '{}';
  const nulls = countNulls(values);
  if (nulls === values.length) return allNulls(values.length);
  if (nulls === 0 && !anyNeedsEscape(values as readonly string[])) return '{"' + values.join('","') + '"}';
  let out = '{';
  for (let i = 0; i < values.length; i++) {
    if (i > 0) out += ',';
    const value = values[i];
    if (value === null || value === undefined) {
      out += 'NULL';
    } else {
      out += '"' + (needsEscape(value) ? value.replace(/[\\"]/g, '\\$&') : value) + '"';
    }
  }
  return out + '}';
}

function countNulls(values: readonly unknown[]): number {
  let nulls = 0;
  for (let i = 0; i < values.length; i++) if (values[i] === null || values[i] === undefined) nulls++;
  return nulls;
}

/** `{NULL,NULL,…}` with `count` elements (count ≥ 1). */
function allNulls(count: number): string {
  return '{' + 'NULL,'.repeat(count - 1) + 'NULL}';
}

function anyNeedsEscape(values: readonly string[]): boolean {
  for (let i = 0; i < values.length; i++) if (needsEscape(values[i]!)) return true;
  return false;
}

function needsEscape(value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c === 0x22 /* " */ || c === 0x5c /* \ */) return true;
  }
  return false;
}
