import t from 'tap';
import fc from 'fast-check';
import { Coalescer, CoalescingPublisher } from '../src/ws/coalescer.js';
import { maxStockFrameBytes, newBucket, parseClientMessage, statusOf, stockMessage, takeToken, type ClientMessage } from '../src/ws/protocol.js';
import { isSkuName } from '../src/http/validation.js';
import pino from 'pino';
import { createStockFeed, maxStatesPerMessage, parseEnvelope } from '../src/ws/fanout.js';
import type { StockState } from '../src/inventory/inventory.js';

/** The pure parts of the stream: coalescing rules, message parsing, the rate bucket, the Redis envelope, the feed's choice of what to deliver. */

const text = (value: unknown) => new TextEncoder().encode(typeof value === 'string' ? value : JSON.stringify(value)).buffer as ArrayBuffer;

t.test('coalescer: a lone change is published at once; a burst once per window, ending after the last change', async (t) => {
  const c = new Coalescer();
  t.equal(c.changed('A'), 'publish', 'first change: at once');
  t.equal(c.changed('A'), 'wait');
  t.equal(c.changed('A'), 'wait');
  t.equal(c.changed('B'), 'publish', 'keys are independent');
  t.equal(c.windowEnded('A'), 'publish', 'changes during the window: publish at its end');
  t.equal(c.windowEnded('A'), 'idle', 'nothing since: the window closes');
  t.equal(c.windowEnded('B'), 'idle');
  t.equal(c.size, 0, 'no entries once quiet');
  t.equal(c.windowEnded('never'), 'idle');
});

t.test('coalescer property: at most one publish per window, and the last change is always followed by a publish', async (t) => {
  fc.assert(
    fc.property(fc.array(fc.constantFrom('change', 'tick'), { maxLength: 200 }), (steps) => {
      const c = new Coalescer();
      let windowOpen = false;
      let publishesThisWindow = 0;
      let unpublishedChange = false;
      for (const step of steps) {
        if (step === 'change') {
          unpublishedChange = true;
          if (c.changed('k') === 'publish') {
            if (windowOpen) return false;
            windowOpen = true;
            publishesThisWindow = 1;
            unpublishedChange = false;
          }
        } else if (windowOpen) {
          // The shell's timer: the window opened by the last publish ends.
          const action = c.windowEnded('k');
          publishesThisWindow = 0;
          if (action === 'publish') {
            publishesThisWindow = 1;
            unpublishedChange = false;
          } else windowOpen = false;
        }
        if (publishesThisWindow > 1) return false;
      }
      // Drain: let the windows run out.
      while (windowOpen) {
        if (c.windowEnded('k') === 'publish') unpublishedChange = false;
        else windowOpen = false;
      }
      return !unpublishedChange && c.size === 0;
    }),
  );
});

t.test('coalescing publisher: windows end in order on one timer; each key once at once and once at its window end', async (t) => {
  // The clock is the test's: windows end when the test says, the timer only wakes the publisher.
  let nowMs = 1_000;
  const published: string[] = [];
  const publisher = new CoalescingPublisher(50, (key) => published.push(key), (error) => t.fail(String(error)), () => nowMs);
  t.teardown(() => publisher.close());
  const settle = async (): Promise<void> => {
    // Past every window's end on the test's clock; the publisher's timer (1 ms at least) then runs.
    while (publisher.openWindows > 0) {
      nowMs += 50;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  };
  for (const key of ['A', 'B', 'C']) publisher.changed(key);
  t.same(published, ['A', 'B', 'C'], 'a first change is published at once');
  for (const key of ['A', 'B', 'A']) publisher.changed(key);
  t.same(published, ['A', 'B', 'C'], 'changes inside a window wait');
  nowMs += 20;
  publisher.changed('D');
  t.same(published, ['A', 'B', 'C', 'D']);
  await settle();
  t.same(published.slice(4), ['A', 'B'], 'at the windows\' end, the keys that changed are published once more, in the order their windows opened');
  t.equal(publisher.openWindows, 0, 'every window closed once quiet');
  publisher.changed('C');
  t.same(published.slice(6), ['C'], 'a change after the window closed is published at once again');
  publisher.changed('C');
  await settle();
  t.same(published.slice(7), ['C'], 'and its trailing change at its window end');
  publisher.close();
  publisher.changed('E');
  t.equal(published.includes('E'), false, 'nothing after close');
});

t.test('parseClientMessage', async (t) => {
  t.same(parseClientMessage(text({ type: 'subscribe', skus: ['A', 'b.c_-9'] }), false), { ok: true, message: { type: 'subscribe', skus: ['A', 'b.c_-9'] } });
  t.match(parseClientMessage(text({ type: 'reserve', id: 'x', sku: 'A', quantity: 2, idempotencyKey: 'k' }), false), { ok: true });
  t.match(parseClientMessage(text({ type: 'release', id: 'x', reservationId: 'r' }), false), { ok: true });
  const refused: [unknown, RegExp][] = [
    ['nope', /not valid JSON/],
    ['null', /JSON object/],
    ['[]', /JSON object/],
    [{}, /type must be/],
    [{ type: 'toString' }, /type must be/],
    [{ type: 'subscribe' }, /skus/],
    [{ type: 'subscribe', skus: 'A' }, /skus/],
    [{ type: 'subscribe', skus: ['x'.repeat(65)] }, /skus/],
    [{ type: 'reserve', id: '', sku: 'A', quantity: 1, idempotencyKey: 'k' }, /id/],
    [{ type: 'reserve', id: 'x'.repeat(101), sku: 'A', quantity: 1, idempotencyKey: 'k' }, /id/],
    [{ type: 'reserve', id: 'i', sku: 'A', quantity: 1.5, idempotencyKey: 'k' }, /quantity/],
    [{ type: 'reserve', id: 'i', sku: 'A', quantity: '1', idempotencyKey: 'k' }, /quantity/],
    [{ type: 'reserve', id: 'i', sku: 'A', quantity: 1, idempotencyKey: 'has space' }, /idempotencyKey/],
    [{ type: 'reserve', id: 'i', sku: 'A', quantity: 1, idempotencyKey: 'x'.repeat(201) }, /idempotencyKey/],
    [{ type: 'release', id: 'i' }, /reservationId/],
  ];
  for (const [message, detail] of refused) {
    t.match(parseClientMessage(text(message), false), { ok: false, detail }, `refused ${JSON.stringify(message).slice(0, 60)}`);
  }
  t.match(parseClientMessage(text({ type: 'subscribe', skus: ['A'] }), true), { ok: false, detail: /binary/ });
  t.match(parseClientMessage(text({ type: 'reserve', id: 'mine', quantity: 1 }), false), { ok: false, id: 'mine' }, 'a usable id is kept');
  t.notOk('id' in (parseClientMessage(text({ type: 'reserve', id: 5 }), false) as object), 'an unusable one is not');
});

t.test('parseClientMessage, generated: any frame is a message of a known type or a refusal with a reason, never a throw', async (t) => {
  const types = ['subscribe', 'unsubscribe', 'reserve', 'release', 'cart'];
  // A valid message of each type, then maybe one field replaced by anything, dropped, or one added.
  const valid = fc.constantFrom<Record<string, unknown>>(
    { type: 'subscribe', skus: ['A', 'b.c_-9'] },
    { type: 'unsubscribe', skus: ['A'] },
    { type: 'reserve', id: 'r1', sku: 'A', quantity: 2, idempotencyKey: 'k1' },
    { type: 'release', id: 'r2', reservationId: '3f745ce5-5184-8fb2-8ec9-2f7ac65e21f6' },
    { type: 'cart', id: 'c1', items: [{ sku: 'A', quantity: 1 }], idempotencyKey: 'k2' },
  );
  const hostileValue = fc.oneof(fc.jsonValue(), fc.string({ maxLength: 300 }), fc.integer(), fc.double(), fc.constant(null));
  const fields = fc
    .tuple(valid, fc.constantFrom('none', 'replace', 'drop', 'add'), fc.nat(), hostileValue, fc.string({ maxLength: 12 }))
    .map(([message, change, pick, value, name]) => {
      const out = { ...message };
      const keys = Object.keys(out);
      const key = keys[pick % keys.length]!;
      if (change === 'replace') out[key] = value;
      if (change === 'drop') delete out[key];
      if (change === 'add') out[name] = value;
      return out;
    });
  const frame = fc.oneof(
    fields.map((f) => JSON.stringify(f)),
    fc.jsonValue().map((v) => JSON.stringify(v)),
    fc.string({ unit: 'binary', maxLength: 300 }),
    fc.constantFrom('{"type":"subscribe","skus":' + '['.repeat(5000), '{"__proto__":{"type":"subscribe"},"skus":["A"]}', '{"type":"subscribe","skus":["A"],"type":"cart"}'),
  );
  const accepted = new Map<string, number>();
  const wellFormed = (m: ClientMessage): boolean => {
    switch (m.type) {
      case 'subscribe':
      case 'unsubscribe':
        return m.skus.length > 0 && m.skus.every((sku) => isSkuName(sku));
      case 'reserve':
        return isSkuName(m.sku) && Number.isInteger(m.quantity) && m.quantity >= 1 && typeof m.idempotencyKey === 'string' && m.id.length >= 1;
      case 'release':
        return typeof m.reservationId === 'string' && m.id.length >= 1;
      case 'cart':
        return Array.isArray(m.items) && typeof m.idempotencyKey === 'string' && m.id.length >= 1;
    }
  };
  fc.assert(
    fc.property(frame, fc.boolean(), (data, binary) => {
      const parsed = parseClientMessage(text(data), binary);
      if (!parsed.ok) return typeof parsed.detail === 'string' && parsed.detail.length > 0;
      accepted.set(parsed.message.type, (accepted.get(parsed.message.type) ?? 0) + 1);
      return !binary && types.includes(parsed.message.type) && wellFormed(parsed.message);
    }),
    { numRuns: 3000, seed: 20261207 },
  );
  t.ok(accepted.size >= 3, `3,000 generated frames, each parsed whole or refused with a reason; accepted: ${JSON.stringify(Object.fromEntries(accepted))}`);
});

t.test('status codes come from the HTTP problem table', async (t) => {
  t.equal(statusOf('sold_out'), 409);
  t.equal(statusOf('idempotency_key_reused'), 422);
  t.equal(statusOf('unavailable'), 503);
  t.equal(statusOf('unauthorized'), 401);
  t.equal(statusOf('invalid_message'), 400);
  t.equal(statusOf('too_many_subscriptions'), 400);
});

t.test('stock frames fit the computed worst case', async (t) => {
  const message = stockMessage({ sku: 'S'.repeat(64), available: 999_999_999, held: 1, sold: 0, seq: 123_456_789 }, 0);
  t.ok(message.length + 4 <= maxStockFrameBytes);
  t.same(JSON.parse(message), {
    type: 'stock', sku: 'S'.repeat(64), state: 'on_sale', available: 999_999_999, held: 1, sold: 0, seq: 123_456_789, startsAt: null, endsAt: null, waitlist: false,
  });
  const widest = stockMessage(
    { sku: 'S'.repeat(64), available: 1e9, held: 1e9, sold: 1e9, seq: Number.MAX_SAFE_INTEGER, archived: false, startsAtMs: 8.64e15, endsAtMs: 8.64e15 },
    -8.64e15,
  );
  t.ok(widest.length + 4 <= maxStockFrameBytes, 'not_started with the widest dates');
});

t.test('stock frames say the sale state as of the moment they are sent; archived shows nothing available', async (t) => {
  const base = { sku: 'S', available: 7, held: 2, sold: 1, seq: 10 };
  const window = { startsAtMs: Date.parse('2030-01-01T00:00:00Z'), endsAtMs: Date.parse('2030-01-02T00:00:00Z') };
  const at = (state: object, iso: string) => JSON.parse(stockMessage({ ...base, ...state }, Date.parse(iso))) as Record<string, unknown>;
  t.match(at(window, '2029-12-31T23:59:59.999Z'), { state: 'not_started', available: 7, startsAt: '2030-01-01T00:00:00.000Z', endsAt: '2030-01-02T00:00:00.000Z' });
  t.match(at(window, '2030-01-01T00:00:00Z'), { state: 'on_sale', available: 7 });
  t.match(at(window, '2030-01-02T00:00:00Z'), { state: 'ended', available: 7 });
  t.match(at({ ...window, archived: true }, '2030-01-01T12:00:00Z'), { state: 'archived', available: 0, held: 2, sold: 1 });
  t.match(at({}, '2030-01-01T12:00:00Z'), { state: 'on_sale', startsAt: null, endsAt: null, waitlist: false }, 'a state without the fields (an older node): on sale, no waitlist');
  t.match(at({ waitlist: true }, '2030-01-01T12:00:00Z'), { waitlist: true }, 'a SKU with a waitlist says so');
});

t.test('token bucket: a burst of `capacity`, then `perSecond`', async (t) => {
  const bucket = newBucket(5, 0);
  for (let i = 0; i < 5; i += 1) t.ok(takeToken(bucket, 0, 5, 5));
  t.notOk(takeToken(bucket, 0, 5, 5), 'empty');
  t.notOk(takeToken(bucket, 100, 5, 5), '100 ms adds half a token');
  t.ok(takeToken(bucket, 200, 5, 5), '200 ms adds one');
  t.notOk(takeToken(bucket, 200, 5, 5));
  t.ok(takeToken(bucket, 100_000, 5, 5), 'a long pause refills');
  let granted = 0;
  for (let i = 0; i < 100; i += 1) if (takeToken(bucket, 100_000, 5, 5)) granted += 1;
  t.equal(granted, 4, 'but never past capacity');
  t.notOk(takeToken(bucket, 50, 5, 5), 'a clock going back adds nothing');
});

t.test('Redis envelopes are checked before use', async (t) => {
  const state = { sku: 'A', available: 1, held: 2, sold: 3, seq: 4 };
  t.same(parseEnvelope(JSON.stringify({ o: 'n1', s: state })), { o: 'n1', s: state });
  t.same(parseEnvelope(JSON.stringify({ o: 'n1', resync: true })), { o: 'n1', resync: true });
  const bad = [
    'x',
    'null',
    JSON.stringify({ s: state }),
    JSON.stringify({ o: '', s: state }),
    JSON.stringify({ o: 'n', s: { ...state, sku: 'has space' } }),
    JSON.stringify({ o: 'n', s: { ...state, available: -1 } }),
    JSON.stringify({ o: 'n', s: { ...state, seq: '4' } }),
    JSON.stringify({ o: 'n', s: { ...state, held: 1.5 } }),
    JSON.stringify({ o: 'n', s: { ...state, waitlist: 'yes' } }),
    JSON.stringify({ o: 'n', s: { ...state, startsAtMs: 9e15 } }),
    JSON.stringify({ o: 'n' }),
  ];
  const b = { ...state, sku: 'B', seq: 9 };
  t.same(parseEnvelope(JSON.stringify({ o: 'n1', s: state, more: [b] })), { o: 'n1', s: state, more: [b] }, 'a turn\'s states in one message');
  bad.push(
    JSON.stringify({ o: 'n', s: state, more: [] }),
    JSON.stringify({ o: 'n', s: state, more: b }),
    JSON.stringify({ o: 'n', s: state, more: [b, { ...b, sold: -1 }] }),
    JSON.stringify({ o: 'n', s: state, more: Array.from({ length: maxStatesPerMessage }, () => b) }),
  );
  for (const text of bad) t.equal(parseEnvelope(text), null, `refused ${text.slice(0, 120)}`);
  t.same(parseEnvelope(JSON.stringify({ o: 'n', s: { ...state, extra: 'dropped' } })), { o: 'n', s: state }, 'only known fields pass');
  t.same(parseEnvelope(JSON.stringify({ o: 'n', s: { ...state, waitlist: true } })), { o: 'n', s: { ...state, waitlist: true } }, 'the waitlist flag passes');
});

t.test('stock feed: a change nobody here follows is not delivered; one that is followed is, and later ones too', async (t) => {
  const states = new Map<string, StockState>([
    ['A', { sku: 'A', available: 5, held: 0, sold: 0, seq: 1 }],
    ['B', { sku: 'B', available: 7, held: 0, sold: 0, seq: 1 }],
  ]);
  const watching = new Set<string>(['B']);
  const delivered: string[] = [];
  const feed = createStockFeed({
    readLocal: (sku) => states.get(sku) ?? null,
    deliver: (state) => delivered.push(`${state.sku}:${state.seq}`),
    watched: (sku) => watching.has(sku),
    coalesceMs: 1,
    log: pino({ level: 'silent' }),
  });
  t.teardown(() => feed.close());
  feed.changed('A');
  feed.changed('B');
  t.same(delivered, ['B:1'], 'only the followed SKU');
  watching.add('A');
  states.set('A', { sku: 'A', available: 4, held: 1, sold: 0, seq: 2 });
  feed.changed('A');
  t.same(delivered, ['B:1', 'A:2'], 'once followed, its next change is delivered');
  t.same(feed.latest('A'), states.get('A'), 'and a new subscriber reads the latest state');
});
