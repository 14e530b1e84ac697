/**
 * The pure part of drops: which cycles exist when, and what each one sells.
 * No I/O, no clock (time is an argument), so the scheduler, the view and the
 * tests all ask the same questions of the same functions.
 *
 * A drop's schedule is an arithmetic sequence anchored at one cycle:
 * `startsAt(n) = anchorStartsAtMs + (n − anchorCycle) · everySeconds` for
 * n ≥ anchorCycle. A new drop anchors cycle 1 at `firstStartsAt`. An update
 * re-anchors at the first cycle number neither created nor started (see
 * `reanchor`), so cycles already created keep their number and configuration.
 */

import { latestInstantMs } from '../allocator/types.js';

/** `{name}.{n}` must fit the 64-character SKU grammar: 54 + "." + 9 digits. */
export const dropNameMaxChars = 54;
/** The highest cycle number (9 digits): at one cycle a second, 31 years. */
export const maxCycleNumber = 999_999_999;
export const dropNamePattern = /^[A-Za-z0-9._-]{1,54}$/;
/**
 * A cycle's SKU is created this long before the announced lead time, so the
 * pg-boss poll (0.5 s) and the creation itself still finish before it, also
 * on a busy machine (1 s was seen to be too little on 2 shared cores).
 */
export const creationMarginMs = 2_000;
/** Most cycles one scheduler run creates (a catch-up never is a long loop). */
export const maxCyclesPerRun = 16;

/** What every cycle of a drop sells (as the last PUT gave it). */
export interface CycleTerms {
  stockPerCycle: number;
  perShopperLimit: number;
  holdSeconds: number;
  priceCents: number;
  currency: string;
}

/** A drop as the admin defines it (the PUT body, parsed). */
export interface DropDefinition extends CycleTerms {
  firstStartsAtMs: number;
  everySeconds: number;
  openSeconds: number;
  /** The last cycle number; null: forever. */
  cycles: number | null;
}

/** A drop as stored: its definition plus where the schedule is anchored and whether it was stopped. */
export interface DropState extends DropDefinition {
  name: string;
  anchorCycle: number;
  anchorStartsAtMs: number;
  /** DELETE: no cycle after this number is created. */
  stoppedAfterCycle: number | null;
}

/** One cycle as created (a drop_cycles row): its own copy of the terms. */
export interface CyclePlan extends CycleTerms {
  cycle: number;
  sku: string;
  startsAtMs: number;
  endsAtMs: number;
}

export interface CreatedCycle {
  cycle: number;
  startsAtMs: number;
  endsAtMs: number;
}

export function cycleSku(name: string, cycle: number): string {
  return `${name}.${cycle}`;
}

/** The last cycle this drop may ever have: its `cycles`, where DELETE stopped it, the highest number, the last that closes by `latestInstantMs`. */
export function lastCycle(drop: DropState): number {
  const byDate = lastCycleClosingInTime(drop.anchorCycle, drop.anchorStartsAtMs, drop);
  return Math.min(drop.cycles ?? maxCycleNumber, drop.stoppedAfterCycle ?? maxCycleNumber, maxCycleNumber, byDate);
}

/**
 * When the last cycle a definition allows (its `cycles`, else the highest cycle
 * number, and none closing after `latestInstantMs`) closes, counted from cycle 1 at `firstStartsAt`.
 */
export function lastCycleEndsAtMs(definition: DropDefinition): number {
  const last = Math.min(definition.cycles ?? maxCycleNumber, maxCycleNumber, lastCycleClosingInTime(1, definition.firstStartsAtMs, definition));
  return definition.firstStartsAtMs + ((last - 1) * definition.everySeconds + definition.openSeconds) * 1000;
}

/** The highest cycle that closes by `latestInstantMs`, when cycle `cycle` starts at `startsAtMs` (below `cycle` when none does). */
function lastCycleClosingInTime(cycle: number, startsAtMs: number, timing: Pick<DropDefinition, 'everySeconds' | 'openSeconds'>): number {
  return cycle + Math.floor((latestInstantMs - timing.openSeconds * 1000 - startsAtMs) / (timing.everySeconds * 1000));
}

/**
 * Whether a definition can ever produce a cycle at `nowMs`: the scheduler
 * creates only cycles whose window has not ended (`firstPendingCycle`), so a
 * schedule whose last cycle has already closed (all `cycles` in the past, or,
 * with no limit, past the highest cycle number: starting in 1970 every second
 * runs out in 2001) would be stored and then never show a current or next cycle.
 */
export function definitionEverRuns(definition: DropDefinition, nowMs: number): boolean {
  return lastCycleEndsAtMs(definition) > nowMs;
}

export function cycleStartsAtMs(drop: DropState, cycle: number): number {
  return drop.anchorStartsAtMs + (cycle - drop.anchorCycle) * drop.everySeconds * 1000;
}

/** How long before its start a cycle's SKU exists: min(everySeconds, 60) s. */
export function announceLeadMs(drop: Pick<DropDefinition, 'everySeconds'>): number {
  return Math.min(drop.everySeconds, 60) * 1000;
}

/** When the scheduler creates a cycle: its lead time plus the margin before its start. */
export function cycleCreateAtMs(drop: DropState, cycle: number): number {
  return cycleStartsAtMs(drop, cycle) - announceLeadMs(drop) - creationMarginMs;
}

export function planCycle(drop: DropState, cycle: number): CyclePlan {
  const startsAtMs = cycleStartsAtMs(drop, cycle);
  return {
    cycle,
    sku: cycleSku(drop.name, cycle),
    startsAtMs,
    endsAtMs: startsAtMs + drop.openSeconds * 1000,
    stockPerCycle: drop.stockPerCycle,
    perShopperLimit: drop.perShopperLimit,
    holdSeconds: drop.holdSeconds,
    priceCents: drop.priceCents,
    currency: drop.currency,
  };
}

/**
 * The first cycle not created yet whose window has not ended at `nowMs`
 * (cycles whose window ended while no process ran are skipped, never created
 * late), or null when the drop has no more cycles.
 */
export function firstPendingCycle(drop: DropState, lastCreatedCycle: number | null, nowMs: number): number | null {
  const everyMs = drop.everySeconds * 1000;
  const sinceAnchorMs = nowMs - drop.anchorStartsAtMs - drop.openSeconds * 1000;
  const firstNotEnded = drop.anchorCycle + Math.floor(sinceAnchorMs / everyMs) + 1;
  const cycle = Math.max(drop.anchorCycle, (lastCreatedCycle ?? 0) + 1, firstNotEnded);
  return cycle <= lastCycle(drop) ? cycle : null;
}

export interface SchedulerRun {
  /** Cycles due now (their creation time has come), in order. */
  create: CyclePlan[];
  /** When to run again (the next cycle's creation time), or null: no more cycles. */
  nextRunAtMs: number | null;
}

/** What one scheduler run does at `nowMs`: the cycles to create and when to come back. */
export function schedulerRun(drop: DropState, lastCreatedCycle: number | null, nowMs: number): SchedulerRun {
  const create: CyclePlan[] = [];
  let cycle = firstPendingCycle(drop, lastCreatedCycle, nowMs);
  while (cycle !== null && cycleCreateAtMs(drop, cycle) <= nowMs) {
    if (create.length === maxCyclesPerRun) return { create, nextRunAtMs: nowMs };
    create.push(planCycle(drop, cycle));
    cycle = cycle + 1 <= lastCycle(drop) ? cycle + 1 : null;
  }
  return { create, nextRunAtMs: cycle === null ? null : cycleCreateAtMs(drop, cycle) };
}

/**
 * Where a PUT anchors the schedule.
 *
 * - Nothing created yet: the definition replaces the old one outright;
 *   cycle 1 starts at `firstStartsAt`.
 * - Otherwise the new schedule starts at cycle k, the first number that is
 *   neither created nor started under the old schedule, and k starts at the
 *   first instant of the new grid (`firstStartsAt + j·everySeconds`, j ≥ 0)
 *   that is not before now nor before the end of the last created cycle.
 *   Re-sending the same schedule therefore changes no cycle's number or time.
 */
export function reanchor(
  definition: DropDefinition,
  previous: DropState | null,
  lastCreated: CreatedCycle | null,
  nowMs: number,
): { anchorCycle: number; anchorStartsAtMs: number } {
  if (lastCreated === null) return { anchorCycle: 1, anchorStartsAtMs: definition.firstStartsAtMs };
  let anchorCycle = lastCreated.cycle + 1;
  if (previous !== null) {
    const everyMs = previous.everySeconds * 1000;
    const firstUnstarted = previous.anchorCycle + Math.max(0, Math.ceil((nowMs - previous.anchorStartsAtMs) / everyMs));
    anchorCycle = Math.max(anchorCycle, firstUnstarted);
  }
  const notBeforeMs = Math.max(nowMs, lastCreated.endsAtMs);
  const everyMs = definition.everySeconds * 1000;
  const steps = Math.max(0, Math.ceil((notBeforeMs - definition.firstStartsAtMs) / everyMs));
  return { anchorCycle, anchorStartsAtMs: definition.firstStartsAtMs + steps * everyMs };
}

export interface ViewCycle {
  plan: CyclePlan;
  created: boolean;
}

/**
 * The cycle whose window contains now and the next one to start, from the
 * created cycles that have not ended (with their own terms) and then the
 * schedule for the ones not created yet.
 */
export function currentAndNext(
  drop: DropState,
  createdNotEnded: CyclePlan[],
  lastCreatedCycle: number | null,
  nowMs: number,
): { current: ViewCycle | null; next: ViewCycle | null } {
  const candidates: ViewCycle[] = createdNotEnded
    .filter((c) => c.endsAtMs > nowMs)
    .sort((a, b) => a.cycle - b.cycle)
    .map((plan) => ({ plan, created: true }));
  const pending = firstPendingCycle(drop, lastCreatedCycle, nowMs);
  if (pending !== null) {
    candidates.push({ plan: planCycle(drop, pending), created: false });
    if (pending + 1 <= lastCycle(drop)) candidates.push({ plan: planCycle(drop, pending + 1), created: false });
  }
  const current = candidates.find((c) => c.plan.startsAtMs <= nowMs && nowMs < c.plan.endsAtMs) ?? null;
  const next = candidates.find((c) => c.plan.startsAtMs > nowMs) ?? null;
  return { current, next };
}
