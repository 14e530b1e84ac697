import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import type PgBoss from 'pg-boss';
import type { Logger } from 'pino';
import type { SkuConfig } from '../allocator/types.js';
import { createJobQueue } from '../db/job-queues.js';
import type { Inventory, SkuView } from '../inventory/inventory.js';
import {
  claimUnconfiguredQuery,
  cycleFromRow,
  dropFromRow,
  insertCyclesQuery,
  lockDropQuery,
  markConfiguredQuery,
  releaseClaimQuery,
  selectArmedDropsQuery,
  selectCyclesNotEndedQuery,
  selectDropQuery,
  selectLastCycleQuery,
  setJobTokenQuery,
  stopDropQuery,
  upsertDropQuery,
  type ClaimedCycleRow,
  type CycleRow,
  type DropRow,
} from './sql.js';
import {
  currentAndNext,
  definitionEverRuns,
  lastCycleEndsAtMs,
  maxCycleNumber,
  reanchor,
  schedulerRun,
  type CyclePlan,
  type DropDefinition,
  type DropState,
  type ViewCycle,
} from './schedule.js';

/**
 * Drops: recurring sales whose cycles create themselves.
 *
 * Each drop has exactly one live scheduler job in pg-boss (`drop-schedule`,
 * data `{name, token}`; the drop row holds the live token). A run, under the
 * drop's advisory lock, inserts the cycles whose creation time has come
 * (drop_cycles, primary key (name, cycle): the last line against a cycle made
 * twice), hands the schedule to the next job — sent in the same transaction,
 * startAfter = the next cycle's creation time — and only then configures the
 * new cycles' SKUs through the inventory. A job with an old token (a PUT or a
 * DELETE replaced it, or it is a retry) creates nothing: it only repairs.
 *
 * Repair: a cycle row is claimed by its creator for `claimLeaseMs`; if the
 * process dies before configuring the SKU, any later run (a retry of the job
 * after pg-boss expires it, the next job, or a start) claims the row once the
 * lease is over and configures the SKU, if its window has not ended. A SKU
 * that already exists is left as it is (never re-configured: its stock could
 * be below what is held and sold).
 */

export const dropQueue = 'drop-schedule';

export interface DropsOptions {
  nowMs: () => number;
  /** How long a process may take to configure a cycle's SKU before another repairs it. */
  claimLeaseMs: number;
  /** A job active this long is presumed dead (its process crashed) and retried. */
  jobExpireSeconds: number;
  /** Retries of a failed scheduler run (exponential, from 1 s). */
  jobRetryLimit: number;
  /** Drops read per page when re-arming at start. */
  rearmPageSize: number;
}

export const defaultDropsOptions: DropsOptions = {
  nowMs: Date.now,
  claimLeaseMs: 15_000,
  jobExpireSeconds: 30,
  jobRetryLimit: 10,
  rearmPageSize: 500,
};

export type DropOutcome<T> = { ok: true; value: T } | { ok: false; code: 'unavailable' | 'drop_never_runs'; detail: string };

export interface DropJob {
  name: string;
  token: string;
}

export interface CycleView {
  cycle: number;
  sku: string;
  startsAt: string;
  endsAt: string;
  /** null only while a created cycle's SKU is served by another node this one cannot see. */
  available: number | null;
  held: number | null;
  sold: number | null;
}

export interface DropView {
  name: string;
  everySeconds: number;
  openSeconds: number;
  stockPerCycle: number;
  perShopperLimit: number;
  current: CycleView | null;
  next: CycleView | null;
}

/** How many created-and-not-ended cycles the view reads (windows do not overlap: a few at most). */
const viewCyclesLimit = 4;
/** Polling of the schedule queue; a local timer wakes the worker on time in between. */
const pollingIntervalSeconds = 0.5;
const jobBatchSize = 8;

export class Drops {
  private workerId: string | null = null;
  private stopped = false;
  private running: Promise<void> = Promise.resolve();
  private wakeTimer: NodeJS.Timeout | null = null;
  private wakeAtMs = Infinity;
  readonly stats = { runs: 0, cyclesCreated: 0, skusConfigured: 0, repaired: 0 };

  constructor(
    private readonly pool: pg.Pool,
    private readonly boss: PgBoss,
    private readonly inventory: Inventory,
    private readonly log: Logger,
    private readonly options: DropsOptions = defaultDropsOptions,
  ) {}

  /** After the inventory has recovered: the queue, the worker, then re-arm and repair. */
  async start(): Promise<void> {
    const policy = {
      name: dropQueue,
      retryLimit: this.options.jobRetryLimit,
      retryDelay: 1,
      retryBackoff: true,
      expireInSeconds: this.options.jobExpireSeconds,
    };
    await createJobQueue(this.boss, dropQueue, policy);
    await this.boss.updateQueue(dropQueue, policy);
    this.workerId = await this.boss.work<DropJob>(dropQueue, { batchSize: jobBatchSize, pollingIntervalSeconds }, (jobs) =>
      this.track(this.runBatch(jobs)),
    );
    await this.rearm();
    await this.repair(null).catch((err: unknown) => this.log.error({ err }, 'drops: repair at start failed; the next run retries'));
  }

  /** Stop taking scheduler jobs and wait for the run in progress (before the inventory closes). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.wakeTimer !== null) clearTimeout(this.wakeTimer);
    this.wakeTimer = null;
    await this.boss.offWork(dropQueue).catch(() => undefined);
    await this.running;
  }

  /** PUT: create or replace the definition; the update applies from the first cycle neither created nor started. */
  put(name: string, definition: DropDefinition): Promise<DropOutcome<{ created: boolean; view: DropView }>> {
    if (!definitionEverRuns(definition, this.options.nowMs())) {
      const lastEnds = new Date(lastCycleEndsAtMs(definition)).toISOString();
      return Promise.resolve({
        ok: false,
        code: 'drop_never_runs',
        detail: `this schedule never produces a cycle: its last cycle (${definition.cycles ?? maxCycleNumber}) closes at ${lastEnds}, which has passed; move firstStartsAt forward`,
      });
    }
    return this.answer('define', name, () => this.define(name, definition));
  }

  /** DELETE: no cycle after the last one created (the current one, and one already announced, run to their end). */
  remove(name: string): Promise<DropOutcome<DropView | null>> {
    return this.answer('stop', name, () => this.stopCycles(name));
  }

  /** GET: the drop with its current and next cycle (counts from the inventory). */
  view(name: string): Promise<DropOutcome<DropView | null>> {
    return this.answer('read', name, () => this.viewOf(name));
  }

  /** PostgreSQL failing under a request is a 503 the client may retry (every step is idempotent), never a hang. */
  private async answer<T>(what: string, name: string, fn: () => Promise<T>): Promise<DropOutcome<T>> {
    try {
      return { ok: true, value: await fn() };
    } catch (err) {
      this.log.error({ err, drop: name }, `drops: could not ${what} the drop`);
      return { ok: false, code: 'unavailable', detail: `could not ${what} drop ${name} now; retry` };
    }
  }

  private async define(name: string, definition: DropDefinition): Promise<{ created: boolean; view: DropView }> {
    const nowMs = this.options.nowMs();
    const token = randomUUID();
    const created = await this.transaction(async (client) => {
      await client.query(lockDropQuery(name));
      const previous = await selectDrop(client, name);
      const last = await selectLastCycle(client, name);
      const anchor = reanchor(definition, previous, last, nowMs);
      const drop: DropState = { ...definition, name, ...anchor, stoppedAfterCycle: null };
      const { rows } = await client.query<{ inserted: boolean }>(upsertDropQuery(drop, token, nowMs));
      // The job runs at once and schedules the rest itself.
      await this.sendJob(client, { name, token }, nowMs, nowMs);
      return rows[0]!.inserted;
    });
    this.wakeAt(nowMs);
    this.log.info({ drop: name, created }, 'drop defined');
    return { created, view: (await this.viewOf(name))! };
  }

  private async stopCycles(name: string): Promise<DropView | null> {
    const nowMs = this.options.nowMs();
    const found = await this.transaction(async (client) => {
      await client.query(lockDropQuery(name));
      if ((await selectDrop(client, name)) === null) return false;
      const last = await selectLastCycle(client, name);
      await client.query(stopDropQuery(name, last?.cycle ?? 0, nowMs));
      return true;
    });
    if (!found) return null;
    this.log.info({ drop: name }, 'drop stopped');
    return this.viewOf(name);
  }

  private async viewOf(name: string): Promise<DropView | null> {
    const nowMs = this.options.nowMs();
    const drop = await selectDrop(this.pool, name);
    if (drop === null) return null;
    const { rows } = await this.pool.query<CycleRow>(selectCyclesNotEndedQuery(name, nowMs, viewCyclesLimit));
    const lastCreated = (await selectLastCycle(this.pool, name))?.cycle ?? null;
    const { current, next } = currentAndNext(drop, rows.map(cycleFromRow), lastCreated, nowMs);
    return {
      name,
      everySeconds: drop.everySeconds,
      openSeconds: drop.openSeconds,
      stockPerCycle: drop.stockPerCycle,
      perShopperLimit: drop.perShopperLimit,
      current: current === null ? null : await this.cycleView(current),
      next: next === null ? null : await this.cycleView(next),
    };
  }

  private async cycleView({ plan, created }: ViewCycle): Promise<CycleView> {
    const base = { cycle: plan.cycle, sku: plan.sku, startsAt: new Date(plan.startsAtMs).toISOString(), endsAt: new Date(plan.endsAtMs).toISOString() };
    // Not created yet: what it will be.
    if (!created) return { ...base, available: plan.stockPerCycle, held: 0, sold: 0 };
    const sku = await this.inventory.getSku(plan.sku);
    if (!sku.ok) return { ...base, available: null, held: null, sold: null };
    return { ...base, available: sku.value.available, held: sku.value.held, sold: sku.value.sold };
  }

  // ------------------------------------------------------------- scheduler

  private track(run: Promise<void>): Promise<void> {
    const done = run.catch(() => undefined);
    this.running = Promise.all([this.running, done]).then(() => undefined);
    return run;
  }

  private async runBatch(jobs: PgBoss.Job<DropJob>[]): Promise<void> {
    for (const job of jobs) {
      try {
        if (this.stopped) throw new Error('shutting down: another process (or the next start) takes this run');
        await this.run(job.data);
      } catch (err) {
        this.log.warn({ err, drop: job.data.name }, 'drop scheduler run failed; pg-boss will retry');
        await this.boss.fail(dropQueue, job.id, { message: (err as Error).message }).catch((error: unknown) =>
          this.log.error({ err: error, jobId: job.id }, 'could not mark the drop job failed; it will expire and retry'),
        );
      }
    }
  }

  /** One scheduler run of one drop (see the class comment). Exposed for tests. */
  async run(job: DropJob): Promise<void> {
    const nowMs = this.options.nowMs();
    this.stats.runs += 1;
    const { created, nextRunAtMs } = await this.transaction(async (client) => {
      await client.query(lockDropQuery(job.name));
      const row = await client.query<DropRow>(selectDropQuery(job.name));
      if (row.rows[0]?.job_token !== job.token) return { created: [], nextRunAtMs: null };
      const drop = dropFromRow(row.rows[0]);
      const plan = schedulerRun(drop, (await selectLastCycle(client, job.name))?.cycle ?? null, nowMs);
      let inserted = new Set<number>();
      if (plan.create.length > 0) {
        const result = await client.query<{ cycle: number }>(insertCyclesQuery(job.name, plan.create, nowMs, this.options.claimLeaseMs));
        inserted = new Set(result.rows.map((r) => r.cycle));
      }
      const nextToken = plan.nextRunAtMs === null ? null : randomUUID();
      await client.query(setJobTokenQuery(job.name, nextToken));
      if (nextToken !== null) await this.sendJob(client, { name: job.name, token: nextToken }, plan.nextRunAtMs!, nowMs);
      return { created: plan.create.filter((c) => inserted.has(c.cycle)), nextRunAtMs: plan.nextRunAtMs };
    });
    this.stats.cyclesCreated += created.length;
    if (nextRunAtMs !== null) this.wakeAt(nextRunAtMs);
    for (const cycle of created) await this.configure(job.name, cycle);
    await this.repair(job.name);
  }

  /** Configure a claimed cycle's SKU unless it exists; then mark the row. */
  private async configure(name: string, cycle: CyclePlan): Promise<void> {
    const existing = await this.inventory.getSku(cycle.sku);
    if (!existing.ok && existing.code !== 'not_found') {
      await this.pool.query(releaseClaimQuery(name, cycle.cycle)).catch(() => undefined);
      throw new Error(`could not read ${cycle.sku}: ${existing.code}: ${existing.detail}`);
    }
    if (!existing.ok) {
      const outcome = await this.inventory.configureSku(cycle.sku, skuConfig(cycle));
      if (!outcome.ok) {
        await this.pool.query(releaseClaimQuery(name, cycle.cycle)).catch(() => undefined);
        throw new Error(`could not configure ${cycle.sku}: ${outcome.code}: ${outcome.detail}`);
      }
      this.stats.skusConfigured += 1;
      this.log.info({ drop: name, cycle: cycle.cycle, sku: cycle.sku, startsAt: new Date(cycle.startsAtMs).toISOString() }, 'drop cycle created');
    } else if (!sameTerms(existing.value, cycle)) {
      this.log.warn({ drop: name, sku: cycle.sku }, 'a SKU with this cycle\'s name already existed with other terms: kept as it is');
    }
    await this.pool.query(markConfiguredQuery(name, cycle.cycle, this.options.nowMs()));
  }

  /** Configure cycles whose creator died before configuring them (claim expired, window open). */
  private async repair(name: string | null): Promise<void> {
    const { rows } = await this.pool.query<ClaimedCycleRow>(claimUnconfiguredQuery(name, this.options.nowMs(), this.options.claimLeaseMs));
    for (const row of rows) {
      this.log.warn({ drop: row.name, cycle: row.cycle }, 'drop cycle was created but its SKU never configured: repairing');
      await this.configure(row.name, cycleFromRow(row));
      this.stats.repaired += 1;
    }
  }

  /** At start: hand every live schedule a fresh job (a job that exhausted its retries left none). */
  private async rearm(): Promise<void> {
    const nowMs = this.options.nowMs();
    let after = '';
    for (;;) {
      const { rows } = await this.pool.query<{ name: string }>(selectArmedDropsQuery(after, this.options.rearmPageSize));
      for (const { name } of rows) {
        await this.transaction(async (client) => {
          await client.query(lockDropQuery(name));
          if ((await selectDrop(client, name)) === null) return;
          const token = randomUUID();
          await client.query(setJobTokenQuery(name, token));
          await this.sendJob(client, { name, token }, nowMs, nowMs);
        });
        this.wakeAt(nowMs);
      }
      if (rows.length < this.options.rearmPageSize) return;
      after = rows[rows.length - 1]!.name;
    }
  }

  /**
   * The job starts `startAfterMs − nowMs` from now, a delay pg-boss adds to
   * PostgreSQL's now(): the same instant as `startAfterMs` on the real clock,
   * and on an injected clock (tests) a run after that wait, which creates what
   * is due by that clock then (or nothing, and hands on the schedule).
   */
  private async sendJob(client: pg.PoolClient, job: DropJob, startAfterMs: number, nowMs: number): Promise<void> {
    // pg-boss: a positive number is a delay in seconds (an interval); anything else starts at once.
    await this.boss.send(dropQueue, job, {
      startAfter: Math.max(0, startAfterMs - nowMs) / 1000,
      db: { executeSql: (text: string, values: unknown[]) => client.query(text, values) },
    });
  }

  /** Poll at once when `atMs` comes (this process sent the job; others find it at their next poll). */
  private wakeAt(atMs: number): void {
    if (this.stopped || atMs >= this.wakeAtMs) return;
    if (this.wakeTimer !== null) clearTimeout(this.wakeTimer);
    this.wakeAtMs = atMs;
    // +5 ms: pg-boss fetches jobs whose start_after < now().
    this.wakeTimer = setTimeout(() => {
      this.wakeTimer = null;
      this.wakeAtMs = Infinity;
      if (this.workerId !== null && !this.stopped) this.boss.notifyWorker(this.workerId);
    }, Math.max(0, atMs - this.options.nowMs() + 5));
    this.wakeTimer.unref();
  }

  private async transaction<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    const onError = (err: Error) => this.log.error({ err }, 'drops: PostgreSQL client error');
    client.on('error', onError);
    let broken: Error | undefined;
    try {
      await client.query('BEGIN');
      try {
        const result = await fn(client);
        await client.query('COMMIT');
        return result;
      } catch (error) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw error;
      }
    } catch (error) {
      if ((error as { code?: string }).code === undefined) broken = error as Error;
      throw error;
    } finally {
      client.off('error', onError);
      client.release(broken);
    }
  }
}

async function selectDrop(db: pg.Pool | pg.PoolClient, name: string): Promise<DropState | null> {
  const { rows } = await db.query<DropRow>(selectDropQuery(name));
  return rows[0] === undefined ? null : dropFromRow(rows[0]);
}

async function selectLastCycle(db: pg.Pool | pg.PoolClient, name: string): Promise<CyclePlan | null> {
  const { rows } = await db.query<CycleRow>(selectLastCycleQuery(name));
  return rows[0] === undefined ? null : cycleFromRow(rows[0]);
}

export function skuConfig(cycle: CyclePlan): SkuConfig {
  return {
    stock: cycle.stockPerCycle,
    perShopperLimit: cycle.perShopperLimit,
    holdSeconds: cycle.holdSeconds,
    priceCents: cycle.priceCents,
    currency: cycle.currency,
    startsAtMs: cycle.startsAtMs,
    endsAtMs: cycle.endsAtMs,
  };
}

function sameTerms(view: SkuView, cycle: CyclePlan): boolean {
  return (
    view.stock === cycle.stockPerCycle &&
    view.perShopperLimit === cycle.perShopperLimit &&
    view.holdSeconds === cycle.holdSeconds &&
    view.priceCents === cycle.priceCents &&
    view.currency === cycle.currency &&
    view.startsAt === new Date(cycle.startsAtMs).toISOString() &&
    view.endsAt === new Date(cycle.endsAtMs).toISOString()
  );
}
