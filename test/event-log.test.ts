import t from 'tap';
import fc from 'fast-check';
import { createTestDatabase } from './helpers/db.js';
import { insertEventsQuery, readEvents } from '../src/outbox/event-log.js';
import { numberArray, textArray } from '../src/outbox/pg-array.js';
import type { StockEvent } from '../src/allocator/types.js';

/** The group-commit insert writes exactly what it is given, whatever the strings hold. */
const db = await createTestDatabase(t);

t.test('array literals', async (t) => {
  t.equal(numberArray([1, 2, null, 1763700000123]), '{1,2,NULL,1763700000123}');
  t.equal(textArray(['a', null, 'b"c', 'd\\e', '']), '{"a",NULL,"b\\"c","d\\\\e",""}');
  t.equal(textArray([]), '{}');
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
