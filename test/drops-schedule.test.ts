import t from 'tap';
import fc from 'fast-check';
import {
  announceLeadMs,
  creationMarginMs,
  currentAndNext,
  cycleSku,
  definitionEverRuns,
  firstPendingCycle,
  cycleStartsAtMs,
  dropNameMaxChars,
  maxCycleNumber,
  planCycle,
  reanchor,
  schedulerRun,
  type CyclePlan,
  type DropDefinition,
  type DropState,
} from '../src/drops/schedule.js';
import { isDropName, parseDropBody } from '../src/drops/body.js';

/** The pure drop schedule: which cycles exist when (fast-check), and the admin body's rules. */

const t0 = Date.UTC(2030, 0, 1);

const definitionArb = fc.record({
  firstStartsAtMs: fc.integer({ min: t0 - 86_400_000, max: t0 + 86_400_000 }),
  everySeconds: fc.integer({ min: 1, max: 7200 }),
  openFraction: fc.double({ min: 0, max: 1, noNaN: true }),
  cycles: fc.option(fc.integer({ min: 1, max: 50 }), { nil: null }),
}).map(({ openFraction, ...d }): DropDefinition => ({
  ...d,
  openSeconds: Math.max(1, Math.floor(openFraction * d.everySeconds)),
  stockPerCycle: 10,
  perShopperLimit: 1,
  holdSeconds: 60,
  priceCents: 100,
  currency: 'USD',
}));

function fresh(definition: DropDefinition): DropState {
  return { ...definition, name: 'D', anchorCycle: 1, anchorStartsAtMs: definition.firstStartsAtMs, stoppedAfterCycle: null };
}

/**
 * Runs the scheduler the way the job chain does: at each requested time, or
 * later when the process was down (`delays`), and records what it created.
 */
function simulate(drop: DropState, startMs: number, delaysMs: number[]): { created: { plan: CyclePlan; atMs: number }[]; runs: number } {
  const created: { plan: CyclePlan; atMs: number }[] = [];
  let nowMs = startMs;
  let runs = 0;
  for (const delayMs of delaysMs) {
    const run = schedulerRun(drop, created.at(-1)?.plan.cycle ?? null, nowMs);
    runs += 1;
    for (const plan of run.create) created.push({ plan, atMs: nowMs });
    if (run.nextRunAtMs === null) break;
    nowMs = Math.max(nowMs, run.nextRunAtMs) + delayMs;
  }
  return { created, runs };
}

t.test('a cycle is created once, in order, never after its window ended, whatever the downtime', async (t) => {
  fc.assert(
    fc.property(
      definitionArb,
      fc.integer({ min: -3_600_000, max: 3_600_000 }),
      fc.array(fc.oneof(fc.constant(0), fc.constant(0), fc.integer({ min: 0, max: 20_000_000 })), { minLength: 1, maxLength: 60 }),
      (definition, offsetMs, delaysMs) => {
        const drop = fresh(definition);
        const { created } = simulate(drop, definition.firstStartsAtMs + offsetMs, delaysMs);
        let previous = 0;
        let nowSeen = -Infinity;
        for (const { plan, atMs } of created) {
          if (plan.cycle <= previous) return false; // each number once, increasing
          previous = plan.cycle;
          if (plan.startsAtMs !== cycleStartsAtMs(drop, plan.cycle)) return false;
          if (plan.endsAtMs - plan.startsAtMs !== definition.openSeconds * 1000) return false;
          if (atMs >= plan.endsAtMs) return false; // never created after its window
          if (definition.cycles !== null && plan.cycle > definition.cycles) return false;
          if (atMs < nowSeen) return false;
          nowSeen = atMs;
        }
        return true;
      },
    ),
    { numRuns: 500 },
  );
});

t.test('without downtime every cycle is created, with no gap, at least the lead time before it starts', async (t) => {
  fc.assert(
    fc.property(definitionArb, fc.integer({ min: -3_600_000, max: 0 }), (definition, offsetMs) => {
      const drop = fresh({ ...definition, cycles: definition.cycles ?? 20 });
      const startMs = definition.firstStartsAtMs + offsetMs - 60_000 - creationMarginMs - 1;
      const { created } = simulate(drop, startMs, new Array(200).fill(0));
      const numbers = created.map((c) => c.plan.cycle);
      for (let i = 1; i < numbers.length; i++) if (numbers[i] !== numbers[i - 1]! + 1) return false;
      if (created.some(({ plan, atMs }) => atMs > plan.startsAtMs - announceLeadMs(drop))) return false;
      return numbers.at(-1) === drop.cycles && numbers[0] === 1;
    }),
    { numRuns: 300 },
  );
});

t.test('a process that was down creates only cycles whose window has not ended', async (t) => {
  const drop = fresh({ firstStartsAtMs: t0, everySeconds: 3600, openSeconds: 900, cycles: null, stockPerCycle: 1, perShopperLimit: 1, holdSeconds: 60, priceCents: 1, currency: 'USD' });
  // Cycle 3 was the last created; the process comes back at 05:10 (cycle 6 open until 05:15).
  const run = schedulerRun(drop, 3, t0 + 5 * 3600_000 + 600_000);
  t.same(run.create.map((c) => c.cycle), [6], 'cycles 4 and 5 ended while it was down: skipped');
  t.equal(run.nextRunAtMs, t0 + 6 * 3600_000 - 60_000 - creationMarginMs, 'cycle 7 is created 60 s (+ the margin) before it starts');
  const late = schedulerRun(drop, 3, t0 + 5 * 3600_000 + 900_000);
  t.same(late.create, [], 'at 05:15 cycle 6 has ended: nothing to catch up');
});

t.test('re-anchoring: the same schedule again changes nothing; a new one starts after what exists and after now', async (t) => {
  fc.assert(
    fc.property(definitionArb, definitionArb, fc.integer({ min: 0, max: 30 }), fc.integer({ min: 0, max: 3_600_000 }), (def, other, lastIndex, extraMs) => {
      const drop = fresh({ ...def, cycles: null });
      const last = planCycle(drop, lastIndex + 1);
      const nowMs = last.startsAtMs + Math.min(extraMs, def.everySeconds * 1000 - 1);
      const same = reanchor(def, drop, last, nowMs);
      // Same grid: the anchor cycle starts exactly where the old schedule had it.
      if (cycleStartsAtMs(drop, same.anchorCycle) !== same.anchorStartsAtMs) return false;
      if (same.anchorCycle <= last.cycle || same.anchorStartsAtMs < nowMs) return false;
      const moved = reanchor(other, drop, last, nowMs);
      if (moved.anchorCycle <= last.cycle) return false;
      if (moved.anchorStartsAtMs < Math.max(nowMs, last.endsAtMs)) return false;
      if ((moved.anchorStartsAtMs - other.firstStartsAtMs) % (other.everySeconds * 1000) !== 0) return false;
      return moved.anchorStartsAtMs >= other.firstStartsAtMs;
    }),
    { numRuns: 500 },
  );
  const def: DropDefinition = { firstStartsAtMs: t0, everySeconds: 60, openSeconds: 30, cycles: null, stockPerCycle: 1, perShopperLimit: 1, holdSeconds: 60, priceCents: 1, currency: 'USD' };
  t.same(reanchor(def, null, null, t0 + 3_600_000), { anchorCycle: 1, anchorStartsAtMs: t0 }, 'nothing created: the definition replaces the old one');
});

t.test('current is the open window, next the first to start', async (t) => {
  const drop = fresh({ firstStartsAtMs: t0, everySeconds: 10, openSeconds: 5, cycles: 3, stockPerCycle: 7, perShopperLimit: 1, holdSeconds: 60, priceCents: 1, currency: 'USD' });
  const c1 = planCycle(drop, 1);
  const c2 = planCycle(drop, 2);
  let view = currentAndNext(drop, [c1, c2], 2, t0 + 1000);
  t.equal(view.current?.plan.cycle, 1);
  t.equal(view.current?.created, true);
  t.equal(view.next?.plan.cycle, 2);
  view = currentAndNext(drop, [c2], 2, t0 + 7000);
  t.equal(view.current, null, 'between windows nothing is current');
  t.equal(view.next?.plan.cycle, 2);
  view = currentAndNext(drop, [c2], 2, t0 + 12_000);
  t.equal(view.current?.plan.cycle, 2);
  t.equal(view.next?.plan.cycle, 3);
  t.equal(view.next?.created, false, 'cycle 3 is not created yet: planned');
  view = currentAndNext(drop, [], 3, t0 + 26_000);
  t.same(view, { current: null, next: null }, 'after the last cycle: nothing');
  view = currentAndNext({ ...drop, stoppedAfterCycle: 2 }, [c2], 2, t0 + 12_000);
  t.equal(view.next, null, 'stopped after cycle 2: no next');
});

t.test('names: {name}.{cycle} always fits the SKU grammar', async (t) => {
  const sku = cycleSku('x'.repeat(dropNameMaxChars), maxCycleNumber);
  t.equal(sku.length, 64);
  t.match(sku, /^[A-Za-z0-9._-]{1,64}$/);
  t.ok(isDropName('x'.repeat(dropNameMaxChars)));
  t.notOk(isDropName('x'.repeat(dropNameMaxChars + 1)));
  t.ok(isDropName('a.b_c-9'));
  for (const bad of ['', '.', '..', 'a b', 'a/b', 'ü']) t.notOk(isDropName(bad), `${JSON.stringify(bad)} refused`);
});

t.test('the admin body', async (t) => {
  const body = { firstStartsAt: '2030-01-01T10:00:00Z', everySeconds: 3600, openSeconds: 900, stockPerCycle: 10000, perShopperLimit: 10, holdSeconds: 300, priceCents: 0, currency: 'USD' };
  const ok = parseDropBody(body);
  t.ok(ok.ok);
  const { firstStartsAt: _first, ...terms } = body;
  if (ok.ok) t.same(ok.definition, { ...terms, firstStartsAtMs: Date.UTC(2030, 0, 1, 10), cycles: null });
  t.ok(parseDropBody({ ...body, cycles: 24 }).ok);
  const bad: Record<string, unknown>[] = [
    { firstStartsAt: 'tomorrow' },
    { firstStartsAt: '2030-13-01T00:00:00Z' },
    { everySeconds: 0 },
    { everySeconds: 1.5 },
    { openSeconds: 0 },
    { openSeconds: 3601 },
    { stockPerCycle: -1 },
    { perShopperLimit: 0 },
    { holdSeconds: 0 },
    { priceCents: -1 },
    { currency: 'usd' },
    { cycles: 0 },
    { cycles: maxCycleNumber + 1 },
    { extra: 1 },
  ];
  for (const patch of bad) t.notOk(parseDropBody({ ...body, ...patch }).ok, `refused ${JSON.stringify(patch)}`);
  const { currency: _, ...missing } = body;
  t.notOk(parseDropBody(missing).ok, 'required fields');
});

t.test('definitionEverRuns says exactly whether the scheduler would ever find a cycle to create', async (t) => {
  fc.assert(
    fc.property(definitionArb, fc.integer({ min: -400 * 86_400_000, max: 400 * 86_400_000 }), (definition, offsetMs) => {
      const nowMs = definition.firstStartsAtMs + offsetMs;
      return definitionEverRuns(definition, nowMs) === (firstPendingCycle(fresh(definition), null, nowMs) !== null);
    }),
    { numRuns: 2000 },
  );
  const now = Date.UTC(2026, 11, 6);
  const base = { openSeconds: 1, stockPerCycle: 1, perShopperLimit: 1, holdSeconds: 60, priceCents: 1, currency: 'USD' };
  t.notOk(definitionEverRuns({ ...base, firstStartsAtMs: 0, everySeconds: 1, cycles: null }, now), '1970, every second, no limit: ran out in 2001');
  t.equal(firstPendingCycle(fresh({ ...base, firstStartsAtMs: 0, everySeconds: 1, cycles: null }), null, now), null, 'as the scheduler sees it');
  t.ok(definitionEverRuns({ ...base, firstStartsAtMs: 0, everySeconds: 3600, cycles: null }, now), '1970, hourly, no limit: runs for ages');
  t.notOk(definitionEverRuns({ ...base, firstStartsAtMs: now - 86_400_000, everySeconds: 60, cycles: 3 }, now), 'three cycles, all yesterday');
  t.ok(definitionEverRuns({ ...base, firstStartsAtMs: now - 1500, everySeconds: 60, openSeconds: 2, cycles: 1 }, now), 'one cycle, still open');
});

t.test('no cycle closes after 9999-12-31T23:59:59.999Z (what RFC 3339 can write): the schedule ends there, a later first cycle is refused', async (t) => {
  const latest = Date.UTC(9999, 11, 31, 23, 59, 59, 999);
  const base = { firstStartsAt: '9999-12-31T20:00:00Z', everySeconds: 3600, openSeconds: 1800, stockPerCycle: 1, perShopperLimit: 1, holdSeconds: 60, priceCents: 1, currency: 'USD' };
  const parsed = parseDropBody(base);
  t.ok(parsed.ok, 'a first cycle that closes in 9999 is accepted');
  if (!parsed.ok) return;
  const drop = fresh(parsed.definition);
  const now = Date.UTC(9999, 11, 31, 19);
  const { created } = simulate(drop, now, Array.from({ length: 20 }, () => 0));
  t.same(created.map((c) => c.plan.cycle), [1, 2, 3, 4], 'the cycles that close by the last instant, and no more');
  t.ok(created.every((c) => c.plan.endsAtMs <= latest && new Date(c.plan.endsAtMs).toISOString().startsWith('9999-')), 'each closes in 9999');
  t.ok(definitionEverRuns(parsed.definition, now), 'and it runs');
  t.notOk(parseDropBody({ ...base, firstStartsAt: '9999-12-31T23:50:00Z' }).ok, 'a first cycle that would close in 10000 is refused');
  t.notOk(parseDropBody({ ...base, firstStartsAt: '9999-12-31T20:00:00-12:00' }).ok, 'also when its local time says 9999');
});
