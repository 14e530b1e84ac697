import t from 'tap';
import { checkInvariants, type EventRow, type Observations } from '../bench/lib/checker.js';
import { IdList, IdSet } from '../bench/lib/ids.js';

/** The post-run invariant checker, fed fake event rows and fake harness observations. */

const id = (n: number): string => `00000000-0000-4000-8000-${n.toString(16).padStart(12, '0')}`;

function configured(sku: string, seq: number, stock: number, perShopperLimit = 10): EventRow {
  return { sku, seq, kind: 'configured', reservationId: null, shopperId: null, quantity: null, config: { stock, perShopperLimit } };
}
function reserved(sku: string, seq: number, n: number, quantity = 1, shopper = `s${n}`): EventRow {
  return { sku, seq, kind: 'reserved', reservationId: id(n), shopperId: shopper, quantity, config: null };
}
function ended(sku: string, seq: number, n: number, kind = 'released'): EventRow {
  return { sku, seq, kind, reservationId: id(n), shopperId: null, quantity: null, config: null };
}

function observe(acknowledged: number[], extra: Partial<Observations> = {}, quantities?: number): Observations {
  const list = new IdList();
  for (const n of acknowledged) list.pushUuid(id(n));
  return {
    skus: ['A'],
    acknowledged: new IdSet(list),
    acknowledgedCount: acknowledged.length,
    acknowledgedQuantity: quantities ?? acknowledged.length,
    badBodies: 0,
    unanswered: 0,
    ...extra,
  };
}

const failed = (r: ReturnType<typeof checkInvariants>): string[] => r.checks.filter((c) => !c.ok).map((c) => c.name);

t.test('a clean log that matches what the harness saw passes every check', async (t) => {
  const rows = [configured('A', 1, 3), reserved('A', 2, 1), reserved('A', 3, 2, 2), ended('A', 4, 1), reserved('A', 5, 3)];
  const r = checkInvariants(rows, observe([1, 2, 3], { views: { A: { stock: 3, available: 0, held: 3, sold: 0 } }, configuredStock: { A: 3 } }, 4));
  t.same(failed(r), []);
  t.ok(r.ok);
  t.same(r.skus.A, { stock: 3, taken: 3, peakTaken: 3, reserved: 3, reservedQuantity: 4, events: 5 });
  t.equal(r.loggedReservations, 3);
});

t.test('oversold: held + sold above stock is caught, also after a stock decrease', async (t) => {
  const over = checkInvariants([configured('A', 1, 2), reserved('A', 2, 1, 2), reserved('A', 3, 2)], observe([1, 2], {}, 3));
  t.same(failed(over), ['no SKU oversold']);
  t.match(over.checks[0]!.detail, /3 taken of 2/);
  const lowered = checkInvariants([configured('A', 1, 5), reserved('A', 2, 1, 3), configured('A', 3, 2)], observe([1], {}, 3));
  t.same(failed(lowered), ['no SKU oversold']);
  // released units come back: re-selling them is fine
  const resold = checkInvariants([configured('A', 1, 1), reserved('A', 2, 1), ended('A', 3, 1, 'expired'), reserved('A', 4, 2)], observe([1, 2]));
  t.ok(resold.ok);
});

t.test('per-shopper limits are checked over live holds', async (t) => {
  const rows = [configured('A', 1, 100, 2), reserved('A', 2, 1, 2, 'x'), reserved('A', 3, 2, 1, 'x')];
  t.same(failed(checkInvariants(rows, observe([1, 2], {}, 3))), ['per-shopper limits held']);
  const afterRelease = [configured('A', 1, 100, 2), reserved('A', 2, 1, 2, 'x'), ended('A', 3, 1), reserved('A', 4, 2, 2, 'x')];
  t.ok(checkInvariants(afterRelease, observe([1, 2], {}, 4)).ok);
});

t.test('a 201 missing from the log fails, and so does a 201 without an id', async (t) => {
  const rows = [configured('A', 1, 10), reserved('A', 2, 1)];
  const r = checkInvariants(rows, observe([1, 7], {}, 2));
  t.ok(failed(r).includes('every 201 is in the log'));
  t.match(r.checks.find((c) => c.name === 'every 201 is in the log')!.detail, new RegExp(id(7)));
  const bad = checkInvariants(rows, observe([1], { badBodies: 1 }));
  t.same(failed(bad), ['every 201 is in the log']);
});

t.test('counts: the log may hold extra reservations only for unanswered requests', async (t) => {
  const rows = [configured('A', 1, 10), reserved('A', 2, 1), reserved('A', 3, 2)];
  t.same(failed(checkInvariants(rows, observe([1]))), ['harness counts agree with the log']);
  t.ok(checkInvariants(rows, observe([1], { unanswered: 1 })).ok);
  // quantities must agree for the acknowledged reservations
  t.same(failed(checkInvariants([configured('A', 1, 10), reserved('A', 2, 1, 2)], observe([1], {}, 1))), ['harness counts agree with the log']);
  // a replayed key gives the same id twice: counted once, quantity check skipped
  const list = new IdList();
  list.pushUuid(id(1));
  list.pushUuid(id(1));
  const replay = checkInvariants([configured('A', 1, 10), reserved('A', 2, 1)], { ...observe([]), acknowledged: new IdSet(list), acknowledgedCount: 2, acknowledgedQuantity: 2 });
  t.ok(replay.ok, JSON.stringify(replay.checks));
});

t.test('malformed logs: seq gaps, unknown or repeated releases, ids logged twice, unknown kinds', async (t) => {
  const cases: EventRow[][] = [
    [configured('A', 1, 10), reserved('A', 3, 1)],
    [configured('A', 1, 10), ended('A', 2, 9)],
    [configured('A', 1, 10), reserved('A', 2, 1), ended('A', 3, 1), ended('A', 4, 1, 'expired')],
    [configured('A', 1, 10), reserved('A', 2, 1), reserved('A', 3, 1)],
    [configured('A', 1, 10), { ...ended('A', 2, 1), kind: 'teleported' }],
    [configured('A', 1, 10), { ...ended('A', 2, 5), kind: 'committed' }],
  ];
  for (const rows of cases) {
    const r = checkInvariants(rows, { ...observe([1]), unanswered: 5 });
    t.ok(failed(r).includes('event log well-formed'), JSON.stringify(rows.map((x) => `${x.kind}#${x.seq}`)));
  }
});

t.test('checkout events keep units taken; payment_failed gives them back', async (t) => {
  const rows = [
    configured('A', 1, 1),
    reserved('A', 2, 1),
    { ...ended('A', 3, 1), kind: 'checkout_started' },
    { ...ended('A', 4, 1), kind: 'payment_failed' },
    reserved('A', 5, 2),
    { ...ended('A', 6, 2), kind: 'checkout_started' },
    { ...ended('A', 7, 2), kind: 'committed' },
  ];
  const r = checkInvariants(rows, observe([1, 2], { views: { A: { stock: 1, available: 0, held: 0, sold: 1 } } }));
  t.same(failed(r), []);
  t.equal(r.skus.A!.taken, 1);
});

t.test('SKU views and configured stock must agree with the log; other SKUs are ignored', async (t) => {
  const rows = [configured('A', 1, 5), reserved('A', 2, 1), configured('B', 1, 1), reserved('B', 2, 99), reserved('B', 3, 98)];
  const r = checkInvariants(rows, observe([1], { views: { A: { stock: 5, available: 5, held: 0, sold: 0 } }, configuredStock: { A: 6 } }));
  t.same(failed(r), ['every SKU configured as requested', 'SKU views agree with the log']);
  const unreadable = checkInvariants(rows, observe([1], { views: { A: null } }));
  t.same(failed(unreadable), ['SKU views agree with the log']);
  const neverConfigured = checkInvariants([], { ...observe([]), skus: ['A'] });
  t.same(failed(neverConfigured), ['every SKU configured as requested']);
});
