import client from 'prom-client';

/** Waitlist numbers over every SKU in memory in this process (ShardHost sums its allocators'). */
export interface WaitlistTotals {
  waiting: number;
  offered: number;
  /** Counters since each SKU was loaded (a rebuild or passivation starts its part again: a counter reset). */
  offersMade: number;
  offersLapsed: number;
  offersTaken: number;
}

export const noWaitlistTotals: WaitlistTotals = { waiting: 0, offered: 0, offersMade: 0, offersLapsed: 0, offersTaken: 0 };

export function addWaitlistTotals(a: WaitlistTotals, b: WaitlistTotals): WaitlistTotals {
  return {
    waiting: a.waiting + b.waiting,
    offered: a.offered + b.offered,
    offersMade: a.offersMade + b.offersMade,
    offersLapsed: a.offersLapsed + b.offersLapsed,
    offersTaken: a.offersTaken + b.offersTaken,
  };
}

/** flashstock_waitlist_*: read at scrape time from `read` (null: not reported, no sample). */
export function registerWaitlistMetrics(registry: client.Registry, read: () => WaitlistTotals | null): void {
  if (registry.getSingleMetric('flashstock_waitlist_waiting') !== undefined) return;
  const gauges: [string, string, keyof WaitlistTotals][] = [
    ['flashstock_waitlist_waiting', 'Waitlist entries waiting for an offer, over every SKU in memory', 'waiting'],
    ['flashstock_waitlist_offered', 'Waitlist offers standing (held, not yet taken or lapsed)', 'offered'],
  ];
  for (const [name, help, key] of gauges) {
    new client.Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.reset();
        const totals = read();
        if (totals !== null) this.set(totals[key]);
      },
    });
  }
  new client.Counter({
    name: 'flashstock_waitlist_offers_total',
    help: 'Waitlist offers by what became of them: made, lapsed (went to the next in line), taken (checked out)',
    labelNames: ['outcome'] as const,
    registers: [registry],
    collect() {
      this.reset();
      const totals = read();
      if (totals === null) return;
      this.inc({ outcome: 'made' }, totals.offersMade);
      this.inc({ outcome: 'lapsed' }, totals.offersLapsed);
      this.inc({ outcome: 'taken' }, totals.offersTaken);
    },
  });
}
