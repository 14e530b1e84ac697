/**
 * PostgreSQL array literals for the group-commit insert, built directly from
 * typed columns. node-postgres can serialize JS arrays itself, but it inspects
 * and escapes every element generically (two regex replaces per string); on the
 * hot path that was ~5% of the service's CPU. Here numbers and UUIDs need no
 * escaping at all, and a text element is scanned once and escaped only when it
 * holds a character the array syntax reserves.
 */

/** `{1,2,NULL}` for integer columns. */
export function numberArray(values: readonly (number | null)[]): string {
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

function needsEscape(value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c === 0x22 /* " */ || c === 0x5c /* \ */) return true;
  }
  return false;
}
