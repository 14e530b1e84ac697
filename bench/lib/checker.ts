import type { IdSet } from './ids.js';

/**
 * The post-run check, as a pure function over event rows (in (sku, seq) order)
 * and what the harness observed. It never touches a database: the callers feed
 * it rows from Postgres (or from a baseline's own storage), the tests feed it
 * fakes.
 *
 * Semantics of the log (migrations/001_stock_events.sql): `configured` carries
 * the SKU's config (stock, perShopperLimit); `reserved` takes `quantity` units;
 * `released`, `expired` and `payment_failed` give a reservation's units back;
 * `checkout_started` and `committed` keep them taken (held, then sold).
 */

export interface EventRow {
  sku: string;
  seq: number;
  kind: string;
  reservationId: string | null;
  shopperId: string | null;
  quantity: number | null;
  config: { stock?: number; perShopperLimit?: number } | null;
}

export interface SkuView {
  stock: number;
  available: number;
  held: number;
  sold: number;
}

export interface Observations {
  /** Every SKU this run created; rows of other SKUs are ignored. */
  skus: readonly string[];
  /** Distinct reservation ids from 201 bodies. */
  acknowledged: IdSet;
  /** 201 responses seen (a replayed key may repeat an id). */
  acknowledgedCount: number;
  /** Units in those 201s. */
  acknowledgedQuantity: number;
  /** 201s whose body had no parseable reservationId. */
  badBodies: number;
  /** Requests sent whose outcome the harness never learnt (timeouts, lost connections). */
  unanswered: number;
  /** The SKU views read after the run (GET /v1/skus/{sku}); null = could not be read. */
  views?: Record<string, SkuView | null>;
  /** Stock the harness configured, per SKU. */
  configuredStock?: Record<string, number>;
}

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

export interface SkuTotals {
  stock: number;
  /** held + sold at the end. */
  taken: number;
  /** Highest held + sold ever reached. */
  peakTaken: number;
  reserved: number;
  reservedQuantity: number;
  events: number;
}

export interface CheckReport {
  ok: boolean;
  checks: Check[];
  skus: Record<string, SkuTotals>;
  /** Reservations in the log for this run's SKUs. */
  loggedReservations: number;
  loggedQuantity: number;
}

interface SkuState {
  totals: SkuTotals;
  lastSeq: number;
  limit: number;
  /** Reservation id → quantity; negated once the units went back. */
  holds: Map<string, number>;
  shopperOf: Map<string, string>;
  shoppers: Map<string, number>;
}

const sampleLimit = 5;

class Problems {
  count = 0;
  readonly samples: string[] = [];
  add(text: string): void {
    this.count++;
    if (this.samples.length < sampleLimit) this.samples.push(text);
  }
  detail(okText: string): string {
    return this.count === 0 ? okText : `${this.count} violation(s), e.g. ${this.samples.join('; ')}`;
  }
}

export class InvariantChecker {
  private readonly states = new Map<string, SkuState>();
  private readonly oversold = new Problems();
  private readonly overLimit = new Problems();
  private readonly malformed = new Problems();
  private loggedReservations = 0;
  private loggedQuantity = 0;
  /** Units of the reservations the harness acknowledged, as the log records them. */
  private acknowledgedLoggedQuantity = 0;

  constructor(private readonly observations: Observations) {
    observations.acknowledged.resetMarks();
    for (const sku of observations.skus) {
      this.states.set(sku, {
        totals: { stock: 0, taken: 0, peakTaken: 0, reserved: 0, reservedQuantity: 0, events: 0 },
        lastSeq: 0,
        limit: Infinity,
        holds: new Map(),
        shopperOf: new Map(),
        shoppers: new Map(),
      });
    }
  }

  add(row: EventRow): void {
    const state = this.states.get(row.sku);
    if (state === undefined) return;
    const t = state.totals;
    t.events++;
    if (row.seq !== state.lastSeq + 1) this.malformed.add(`${row.sku}: seq ${row.seq} after ${state.lastSeq}`);
    state.lastSeq = row.seq;
    const give = (id: string | null): void => {
      const q = id === null ? undefined : state.holds.get(id);
      if (q === undefined || q < 0) {
        this.malformed.add(`${row.sku}#${row.seq}: ${row.kind} of ${q === undefined ? 'unknown' : 'already returned'} reservation ${id}`);
        return;
      }
      state.holds.set(id!, -q);
      t.taken -= q;
      const shopper = state.shopperOf.get(id!);
      if (shopper !== undefined) state.shoppers.set(shopper, (state.shoppers.get(shopper) ?? 0) - q);
    };
    const mustHold = (id: string | null): void => {
      const q = id === null ? undefined : state.holds.get(id);
      if (q === undefined || q < 0) this.malformed.add(`${row.sku}#${row.seq}: ${row.kind} of a reservation not held (${id})`);
    };
    switch (row.kind) {
      case 'configured': {
        const stock = row.config?.stock;
        if (typeof stock !== 'number') {
          this.malformed.add(`${row.sku}#${row.seq}: configured without config.stock`);
          break;
        }
        t.stock = stock;
        state.limit = typeof row.config?.perShopperLimit === 'number' ? row.config.perShopperLimit : Infinity;
        if (t.taken > stock) this.oversold.add(`${row.sku}#${row.seq}: stock set to ${stock} under ${t.taken} taken`);
        break;
      }
      case 'reserved': {
        const id = row.reservationId;
        const q = row.quantity;
        if (id === null || q === null || q <= 0 || !Number.isInteger(q)) {
          this.malformed.add(`${row.sku}#${row.seq}: reserved without id or positive quantity`);
          break;
        }
        if (state.holds.has(id)) {
          this.malformed.add(`${row.sku}#${row.seq}: reservation ${id} logged twice`);
          break;
        }
        state.holds.set(id, q);
        t.reserved++;
        t.reservedQuantity += q;
        this.loggedReservations++;
        this.loggedQuantity += q;
        t.taken += q;
        if (t.taken > t.peakTaken) t.peakTaken = t.taken;
        if (t.taken > t.stock) this.oversold.add(`${row.sku}#${row.seq}: ${t.taken} taken of ${t.stock}`);
        if (row.shopperId !== null) {
          state.shopperOf.set(id, row.shopperId);
          const mine = (state.shoppers.get(row.shopperId) ?? 0) + q;
          state.shoppers.set(row.shopperId, mine);
          if (mine > state.limit) this.overLimit.add(`${row.sku}#${row.seq}: shopper ${row.shopperId} holds ${mine} > limit ${state.limit}`);
        }
        if (this.observations.acknowledged.mark(id)) this.acknowledgedLoggedQuantity += q;
        break;
      }
      case 'released':
      case 'expired':
      case 'payment_failed':
        give(row.reservationId);
        break;
      case 'checkout_started':
      case 'committed':
        mustHold(row.reservationId);
        break;
      default:
        this.malformed.add(`${row.sku}#${row.seq}: unknown kind ${row.kind}`);
    }
  }

  finish(): CheckReport {
    const obs = this.observations;
    const checks: Check[] = [];
    checks.push({ name: 'no SKU oversold', ok: this.oversold.count === 0, detail: this.oversold.detail(`held + sold never above stock on ${this.states.size} SKU(s)`) });
    checks.push({ name: 'per-shopper limits held', ok: this.overLimit.count === 0, detail: this.overLimit.detail('no shopper above perShopperLimit') });
    checks.push({ name: 'event log well-formed', ok: this.malformed.count === 0, detail: this.malformed.detail('seq gap-free from 1, every release of a live hold, no id twice') });

    const configuredMissing: string[] = [];
    for (const [sku, state] of this.states) {
      if (state.lastSeq === 0) configuredMissing.push(sku);
      const want = obs.configuredStock?.[sku];
      if (want !== undefined && state.lastSeq > 0 && state.totals.stock !== want) configuredMissing.push(`${sku} (stock ${state.totals.stock}, configured ${want})`);
    }
    checks.push({
      name: 'every SKU configured as requested',
      ok: configuredMissing.length === 0,
      detail: configuredMissing.length === 0 ? `${this.states.size} SKU(s)` : `${configuredMissing.length} not as configured, e.g. ${configuredMissing.slice(0, sampleLimit).join(', ')}`,
    });

    const missing = obs.acknowledged.unmarked(sampleLimit);
    checks.push({
      name: 'every 201 is in the log',
      ok: missing.count === 0 && obs.badBodies === 0,
      detail:
        missing.count === 0 && obs.badBodies === 0
          ? `${obs.acknowledged.size} acknowledged reservation(s) all logged`
          : `${missing.count} acknowledged reservation(s) missing${missing.count > 0 ? ` (e.g. ${missing.sample.join(', ')})` : ''}` +
            (obs.badBodies > 0 ? `; ${obs.badBodies} 201(s) without a readable reservationId` : ''),
    });

    // The log may hold more reservations than the harness saw answered only by
    // requests whose answer never arrived.
    const distinct = obs.acknowledged.size;
    const extra = this.loggedReservations - distinct;
    const repeats = obs.acknowledgedCount - distinct;
    const countProblems: string[] = [];
    if (extra < 0) countProblems.push(`log has ${this.loggedReservations} reservations, harness saw ${distinct} distinct 201s`);
    if (extra > obs.unanswered) countProblems.push(`log has ${extra} reservation(s) the harness never saw acknowledged, but only ${obs.unanswered} request(s) went unanswered`);
    if (repeats === 0 && this.acknowledgedLoggedQuantity !== obs.acknowledgedQuantity) {
      countProblems.push(`201s were for ${obs.acknowledgedQuantity} unit(s), the log has ${this.acknowledgedLoggedQuantity} for those reservations`);
    }
    checks.push({
      name: 'harness counts agree with the log',
      ok: countProblems.length === 0,
      detail:
        countProblems.length === 0
          ? `${this.loggedReservations} logged, ${distinct} acknowledged (${obs.acknowledgedQuantity} units), ${obs.unanswered} unanswered`
          : countProblems.join('; '),
    });

    if (obs.views !== undefined) {
      const off: string[] = [];
      for (const [sku, state] of this.states) {
        if (!(sku in obs.views)) continue;
        const view = obs.views[sku];
        const t = state.totals;
        if (view === null || view === undefined) off.push(`${sku}: unreadable`);
        else if (view.stock !== t.stock || view.held + view.sold !== t.taken || view.available !== t.stock - t.taken) {
          off.push(`${sku}: view stock ${view.stock} available ${view.available} held+sold ${view.held + view.sold}, log stock ${t.stock} taken ${t.taken}`);
        }
      }
      checks.push({
        name: 'SKU views agree with the log',
        ok: off.length === 0,
        detail: off.length === 0 ? `${Object.keys(obs.views).length} view(s) match` : `${off.length} disagree, e.g. ${off.slice(0, sampleLimit).join('; ')}`,
      });
    }

    const skus: Record<string, SkuTotals> = {};
    for (const [sku, state] of this.states) skus[sku] = state.totals;
    return { ok: checks.every((c) => c.ok), checks, skus, loggedReservations: this.loggedReservations, loggedQuantity: this.loggedQuantity };
  }
}

/** The whole check in one call. */
export function checkInvariants(rows: Iterable<EventRow>, observations: Observations): CheckReport {
  const checker = new InvariantChecker(observations);
  for (const row of rows) checker.add(row);
  return checker.finish();
}
