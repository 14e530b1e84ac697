import t from 'tap';
import fc from 'fast-check';
import { createTestDatabase } from './helpers/db.js';
import { insertEventsQuery, readEvents } from '../src/outbox/event-log.js';
import { int4Array, int8Array, jsonbArray, textArray, uuidArray } from '../src/outbox/pg-binary-array.js';
import type { StockEvent } from '../src/allocator/types.js';

/** The group-commit insert writes exactly what it is given, whatever the strings hold. */
const db = await createTestDatabase(t);

t.test('binary arrays: Postgres reads back every value, NULLs included', async (t) => {
  const { rows } = await db.pool.query({
    text: `SELECT (SELECT array_agg(x::text ORDER BY o) FROM unnest($1::bigint[]) WITH ORDINALITY u(x, o)) AS int8,
                  (SELECT array_agg(x::text ORDER BY o) FROM unnest($2::int[]) WITH ORDINALITY u(x, o)) AS int4,
                  (SELECT array_agg(x ORDER BY o) FROM unnest($3::text[]) WITH ORDINALITY u(x, o)) AS text,
                  (SELECT array_agg(x::text ORDER BY o) FROM unnest($4::uuid[]) WITH ORDINALITY u(x, o)) AS uuid,
                  (SELECT array_agg(x::text ORDER BY o) FROM unnest($5::jsonb[]) WITH ORDINALITY u(x, o)) AS jsonb,
                  cardinality($6::text[]) AS no_text`,
    values: [
      int8Array([0, 1, null, 1_763_700_000_123, -1, -4_294_967_297, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER]),
      int4Array([1, null, -7, 2_147_483_647]),
      textArray(['a', null, 'b"c', 'd\\e', '', 'ünï 😀 {,}', 'NULL']),
      uuidArray(['00000000-0000-4000-8000-000000000001', null, 'ABCDEF01-2345-8678-9ABC-DEF012345678']),
      jsonbArray(['{"stock":5,"currency":"EUR"}', null, '"ä"']),
      textArray([]),
    ],
  });
  t.same(rows[0], {
    int8: ['0', '1', null, '1763700000123', '-1', '-4294967297', String(Number.MAX_SAFE_INTEGER), String(Number.MIN_SAFE_INTEGER)],
    int4: ['1', null, '-7', '2147483647'],
    text: ['a', null, 'b"c', 'd\\e', '', 'ünï 😀 {,}', 'NULL'],
    uuid: ['00000000-0000-4000-8000-000000000001', null, 'abcdef01-2345-8678-9abc-def012345678'],
    jsonb: ['{"stock": 5, "currency": "EUR"}', null, '"ä"'],
    no_text: 0,
  });
  t.throws(() => uuidArray(['00000000-0000-4000-8000-00000000000g']), /not a UUID/, 'a UUID with a non-hex digit');
  t.throws(() => uuidArray(['00000000-0000-4000-8000-0000000000']), /not a UUID/, 'a short UUID');
  t.throws(() => int8Array([1.5]), /not a safe integer/);
  t.throws(() => int8Array([2 ** 53]), /not a safe integer/);
  t.throws(() => int4Array([0.5]), /not an integer/);
});

t.test('strings round-trip through the log byte for byte', async (t) => {
  const nasty = fc.string({ unit: 'binary', maxLength: 40 }).filter((s) => !s.includes('\u0000'));
  let run = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(fc.tuple(nasty, nasty), { minLength: 1, maxLength: 20 }), async (pairs) => {
      const sku = `RT-${++run}`;
      const events: StockEvent[] = pairs.map(([shopperId, idempotencyKey], i) => ({
        kind: 'reserved',
        sku,
        seq: i + 1,
        atMs: 1_763_700_000_123 + i,
        reservationId: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
        shopperId,
        quantity: 1 + i,
        expiresAtMs: 1_763_700_300_000,
        idempotencyKey,
      }));
      await db.pool.query(insertEventsQuery(events));
      const read: StockEvent[] = [];
      for await (const page of readEvents(db.pool, { sku })) read.push(...page);
      t.same(read, events);
    }),
    { numRuns: 30 },
  );
});
