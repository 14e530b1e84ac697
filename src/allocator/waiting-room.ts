import type { QueueJoinedEvent, Rejection, SkuConfig, WaitingRoomConfig } from './types.js';

/**
 * A SKU's waiting room as a deterministic state machine (part of the SKU's
 * allocator: same single writer, same log).
 *
 * Tickets are kept in join order (index 0, 1, …). Whoever joins before
 * `startsAt` (while nobody has joined after it) is in the pre-queue: a prefix
 * of the join order whose ranks are drawn once, by a Fisher–Yates shuffle
 * seeded with the config's logged `seed`, so arriving early or on a faster
 * line is no advantage and the draw is reproducible from the log. Later
 * joiners queue behind in arrival order.
 *
 * Admission is a function of time, not events: the pre-queue ticket of rank r
 * is admitted at startsAt + r × interval (interval = 1000 / admitPerSecond ms);
 * a later ticket one interval after the ticket before it, or when it joins if
 * that is later (so a quiet spell saves up no burst). Those later times are
 * fixed when the ticket joins and only grow, so the number admitted by a time
 * is a binary search and a ticket's position is O(log n) with no allocation.
 * A waiting room with tickets refuses changes to its rate and start
 * (`waiting_room_in_use`): the times already promised stay true.
 */

export type QueuePosition =
  /** `position` 1 is next; null before the start (the pre-queue is not drawn yet). */
  | { status: 'waiting'; position: number | null; admitAtMs: number }
  | { status: 'admitted'; admittedAtMs: number };

export type JoinDecision =
  | { ok: true; kind: 'new'; event: QueueJoinedEvent }
  /** This shopper already holds a ticket: the same one again (refreshing never costs a place). */
  | { ok: true; kind: 'existing'; ticketId: string }
  | Rejection;

/** The waiting room as plain data (snapshots): joins in order; everything else is derived from them. */
export interface QueueState {
  ticketIds: string[];
  shopperIds: string[];
  joinedAtMs: number[];
}

export class WaitingRoom {
  private ticketIds: string[] = [];
  private shopperIds: string[] = [];
  private joinedAtMs: number[] = [];
  private readonly byTicket = new Map<string, number>();
  private readonly byShopper = new Map<string, number>();
  /** Tickets in the pre-queue: indexes 0 .. earlyCount-1. */
  earlyCount = 0;
  /** Admission time of ticket earlyCount + i, non-decreasing. */
  private lateAdmitAtMs: number[] = [];
  /** Pre-queue rank by join index, drawn on first use after the start (a cache of a pure function of the state). */
  private ranks: Uint32Array | null = null;

  get size(): number {
    return this.ticketIds.length;
  }

  indexOfTicket(ticketId: string): number | undefined {
    return this.byTicket.get(ticketId);
  }

  ticketAt(index: number): string {
    return this.ticketIds[index]!;
  }

  shopperOf(index: number): string {
    return this.shopperIds[index]!;
  }

  /** Decide a join: the shopper's existing ticket, a refusal, or the event of a new ticket. */
  join(sku: string, seq: number, shopperId: string, ticketId: string, config: SkuConfig, maxTickets: number, nowMs: number): JoinDecision {
    if (!config.waitingRoom) return { ok: false, code: 'no_waiting_room', detail: `SKU ${sku} has no waiting room` };
    const existing = this.byShopper.get(shopperId);
    if (existing !== undefined) return { ok: true, kind: 'existing', ticketId: this.ticketIds[existing]! };
    if (config.endsAtMs !== null && nowMs >= config.endsAtMs) {
      return { ok: false, code: 'sale_not_open', detail: `the sale closed at ${new Date(config.endsAtMs).toISOString()}` };
    }
    if (this.size >= maxTickets) {
      return { ok: false, code: 'queue_full', detail: `the waiting room holds its ${maxTickets} tickets (QUEUE_MAX_TICKETS); try later` };
    }
    return { ok: true, kind: 'new', event: { kind: 'queue_joined', sku, seq, atMs: nowMs, ticketId, shopperId } };
  }

  /** Record a join. Throws on a duplicate (the log is corrupt, or a decision was applied twice). */
  apply(event: QueueJoinedEvent, config: SkuConfig): void {
    const room = config.waitingRoom;
    if (!room) throw new Error(`${event.sku}: queue_joined without a waiting room`);
    if (this.byTicket.has(event.ticketId) || this.byShopper.has(event.shopperId)) {
      throw new Error(`${event.sku}: ticket ${event.ticketId} of ${event.shopperId} joined twice`);
    }
    const index = this.ticketIds.length;
    this.ticketIds.push(event.ticketId);
    this.shopperIds.push(event.shopperId);
    this.joinedAtMs.push(event.atMs);
    this.byTicket.set(event.ticketId, index);
    this.byShopper.set(event.shopperId, index);
    const early = config.startsAtMs !== null && event.atMs < config.startsAtMs && index === this.earlyCount;
    if (early) {
      this.earlyCount += 1;
      this.ranks = null;
      return;
    }
    const interval = 1000 / room.admitPerSecond;
    const previous = this.lateAdmitAtMs.length > 0
      ? this.lateAdmitAtMs[this.lateAdmitAtMs.length - 1]! + interval
      : this.earlyCount > 0
        ? config.startsAtMs! + this.earlyCount * interval
        : -Infinity;
    this.lateAdmitAtMs.push(Math.max(previous, event.atMs, config.startsAtMs ?? -Infinity));
  }

  /** Where ticket `index` stands at `nowMs`. O(log n); no allocation but the answer. */
  position(index: number, config: SkuConfig, nowMs: number): QueuePosition {
    const interval = 1000 / config.waitingRoom!.admitPerSecond;
    const startsAtMs = config.startsAtMs;
    let rank: number;
    let admitAtMs: number;
    if (index < this.earlyCount) {
      if (nowMs < startsAtMs!) return { status: 'waiting', position: null, admitAtMs: startsAtMs! };
      rank = this.drawnRanks(config.waitingRoom!.seed)[index]!;
      admitAtMs = startsAtMs! + rank * interval;
    } else {
      rank = index;
      admitAtMs = this.lateAdmitAtMs[index - this.earlyCount]!;
    }
    if (nowMs >= admitAtMs) return { status: 'admitted', admittedAtMs: admitAtMs };
    return { status: 'waiting', position: rank - this.admittedBy(nowMs, config, interval) + 1, admitAtMs };
  }

  /** Tickets admitted by `nowMs` (admission times grow with rank). */
  admittedBy(nowMs: number, config: SkuConfig, interval = 1000 / config.waitingRoom!.admitPerSecond): number {
    let count = 0;
    if (this.earlyCount > 0 && nowMs >= config.startsAtMs!) {
      count = Math.min(this.earlyCount, Math.floor((nowMs - config.startsAtMs!) / interval) + 1);
    }
    if (count < this.earlyCount) return count;
    const times = this.lateAdmitAtMs;
    let lo = 0;
    let hi = times.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (times[mid]! <= nowMs) lo = mid + 1;
      else hi = mid;
    }
    return count + lo;
  }

  private drawnRanks(seed: string): Uint32Array {
    if (this.ranks === null || this.ranks.length !== this.earlyCount) this.ranks = preQueueRanks(this.earlyCount, seed);
    return this.ranks;
  }

  /** Every ticket, for snapshots (shared arrays: read, do not keep across applies). */
  exportState(): QueueState {
    return { ticketIds: this.ticketIds, shopperIds: this.shopperIds, joinedAtMs: this.joinedAtMs };
  }

  /** Rebuild from exported joins: the same fold as replaying their events. */
  static restore(state: QueueState, sku: string, config: SkuConfig | null): WaitingRoom {
    const room = new WaitingRoom();
    const n = state.ticketIds.length;
    if (n === 0) return room;
    if (config === null || state.shopperIds.length !== n || state.joinedAtMs.length !== n) {
      throw new Error(`${sku}: restored waiting room is inconsistent`);
    }
    for (let i = 0; i < n; i++) {
      room.apply({ kind: 'queue_joined', sku, seq: 0, atMs: state.joinedAtMs[i]!, ticketId: state.ticketIds[i]!, shopperId: state.shopperIds[i]! }, config);
    }
    return room;
  }
}

/**
 * Why `next` may not replace `current` while the waiting room holds tickets: its rate, start or
 * existence would move admissions already promised. Null when it may.
 */
export function waitingRoomChangeRefusal(current: SkuConfig | null, next: SkuConfig, tickets: number): Rejection | null {
  if (tickets === 0 || current === null) return null;
  const same = !!next.waitingRoom && next.waitingRoom.admitPerSecond === current.waitingRoom?.admitPerSecond && next.startsAtMs === current.startsAtMs;
  if (same) return null;
  return {
    ok: false,
    code: 'waiting_room_in_use',
    detail: `the waiting room holds ${tickets} tickets: its admitPerSecond and the sale's startsAt cannot change, nor can it be removed`,
  };
}

/** The config to log: a waiting room keeps the seed it was first given (a new PUT never re-draws). */
export function keepSeed(current: SkuConfig | null, next: SkuConfig): SkuConfig {
  const seed = current?.waitingRoom?.seed;
  if (!next.waitingRoom || seed === undefined) return { ...next };
  return { ...next, waitingRoom: { admitPerSecond: next.waitingRoom.admitPerSecond, seed } };
}

/** A waiting room config is well formed (protocol and snapshot decoders). */
export function isWaitingRoomConfig(value: unknown): value is WaitingRoomConfig {
  if (typeof value !== 'object' || value === null) return false;
  const { admitPerSecond, seed } = value as { admitPerSecond?: unknown; seed?: unknown };
  return typeof admitPerSecond === 'number' && Number.isInteger(admitPerSecond) && admitPerSecond >= 1 && admitPerSecond <= maxAdmitPerSecond &&
    typeof seed === 'string' && seedPattern.test(seed);
}

export const maxAdmitPerSecond = 1_000_000;
export const seedPattern = /^[0-9a-f]{32}$/;

/**
 * The pre-queue's ranks: ranks[i] is the place of the i-th early joiner, from a Fisher–Yates
 * shuffle driven by sfc32 seeded with the 128-bit `seed`. O(n), done once per start.
 */
export function preQueueRanks(n: number, seed: string): Uint32Array {
  const next = sfc32(seed);
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor((next() / 4294967296) * (i + 1));
    const t = order[i]!;
    order[i] = order[j]!;
    order[j] = t;
  }
  const ranks = new Uint32Array(n);
  for (let k = 0; k < n; k++) ranks[order[k]!] = k;
  return ranks;
}

/** Small Fast Counting generator (Chris Doty-Humphrey's sfc32): 128-bit state, uint32 outputs. */
function sfc32(seed: string): () => number {
  let a = Number.parseInt(seed.slice(0, 8), 16) | 0;
  let b = Number.parseInt(seed.slice(8, 16), 16) | 0;
  let c = Number.parseInt(seed.slice(16, 24), 16) | 0;
  let d = Number.parseInt(seed.slice(24, 32), 16) | 0;
  const step = (): number => {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return t >>> 0;
  };
  for (let i = 0; i < 12; i++) step();
  return step;
}
