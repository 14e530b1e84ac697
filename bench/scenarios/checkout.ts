import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { readViews } from '../lib/admin.js';
import type { Check } from '../lib/checker.js';
import { coresUsed, sampleCpu } from '../lib/cpu.js';
import { encodeHistogram, newHistogram, recordMs, summarize } from '../lib/histogram.js';
import { IdList, IdSet } from '../lib/ids.js';
import type { CheckoutFigures } from '../lib/report.js';
import type { RequestSpec } from '../lib/types.js';
import { keyMaker, reservationRequest, ShopperPool, skuName, type AfterRunContext, type AfterRunOutcome, type Scenario } from './common.js';

/**
 * reserve → checkout → paid. Each shopper reserves 1 unit, then checks out on
 * the same connection with `pm_ok` (the simulated provider at zero latency);
 * the service's pg-boss worker charges and settles. Without --rate it applies
 * two loads: a closed loop (finalized payments/s: how fast the payment pipeline
 * drains the queue the checkouts fill) and an open loop at 1,000 shoppers/s
 * (queue lag: settled_at − created_at per order); with --rate, only the open
 * loop at that rate. After each load it waits (bounded) for every order to
 * settle, reads the figures from Postgres and checks orders, charges, the log
 * and the ledger audit.
 */

interface Params {
  sku: string;
  shoppersPerThread: number;
  paymentMethod: string;
  drainTimeoutMs: number;
}

/** The open loop's arrival rate without --rate: issue 3's "at 1,000 checkouts/s". */
export const defaultCheckoutRate = 1_000;
/** How long to wait after the load for the queue to drain (CHECKOUT_DRAIN_TIMEOUT_SEC). */
const drainTimeoutSec = Number(process.env.CHECKOUT_DRAIN_TIMEOUT_SEC ?? 180);

const reservationIdPattern = /"reservationId"\s*:\s*"([0-9a-fA-F-]{36})"/;
const orderIdPattern = /"orderId"\s*:\s*"/;

export function checkoutRequest(host: string, reservationId: string, token: string, idempotencyKey: string, paymentMethod: string): string {
  const body = `{"paymentMethod":"${paymentMethod}"}`;
  return (
    `POST /v1/reservations/${reservationId}/checkout HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${token}\r\n` +
    `Idempotency-Key: ${idempotencyKey}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`
  );
}

export const checkout: Scenario<Params> = {
  name: 'checkout',
  description: 'reserve 1 unit, check out with pm_ok on the same connection; finalized payments/s (closed loop) and queue lag (open loop, 1,000/s)',
  defaults: { connections: 256, durationSec: 10 },
  systems: ['flashstock'],
  serviceOverrides: { simulatedPaymentLatencyMs: 0, auditCron: null },
  shapes: (rate) => (rate === null ? [{ mode: 'closed', rate: 0 }, { mode: 'open', rate: defaultCheckoutRate }] : [{ mode: 'open', rate }]),
  plan({ runId, stock, shoppers }) {
    const sku = skuName(runId, 'checkout', 0);
    return {
      skus: [{ sku, stock: stock ?? 1_000_000_000, perShopperLimit: 1000, holdSeconds: 3600, priceCents: 1999, currency: 'USD' }],
      params: { sku, shoppersPerThread: shoppers ?? 50_000, paymentMethod: 'pm_ok', drainTimeoutMs: drainTimeoutSec * 1000 },
      finite: false,
    };
  },
  createWorkload(context) {
    const { sku, shoppersPerThread, paymentMethod } = context.params;
    const pool = new ShopperPool(context, shoppersPerThread, 'c');
    const key = keyMaker(context);
    const orderIds = new IdList(64 * 1024);
    const m = { checkoutsSent: 0, checkoutsAccepted: 0, checkoutsRefused: 0, checkoutsUnanswered: 0, checkoutBadBodies: 0, reservedWithoutId: 0 };
    let shopper = 0;
    return {
      next(): RequestSpec {
        const s = shopper;
        shopper = shopper + 1 === shoppersPerThread ? 0 : shopper + 1;
        return { op: 'reserve', data: reservationRequest(context.hostHeader, sku, pool.tokens[s]!, key(), 1), quantity: 1, tag: s };
      },
      finished: () => false,
      onResponse(request, status) {
        if (request.op === 'checkout' && status === 0) m.checkoutsUnanswered++;
      },
      followUp(request, status, body) {
        if (request.op === 'reserve') {
          if (status !== 201) return null;
          const match = reservationIdPattern.exec(body);
          if (match === null) {
            m.reservedWithoutId++;
            return null;
          }
          m.checkoutsSent++;
          return { op: 'checkout', data: checkoutRequest(context.hostHeader, match[1]!, pool.tokens[request.tag]!, key(), paymentMethod), quantity: 1, tag: request.tag };
        }
        if (request.op === 'checkout') {
          if (status === 202) {
            m.checkoutsAccepted++;
            const match = orderIdPattern.exec(body);
            if (match === null || !orderIds.pushUuid(body, match.index + match[0].length)) m.checkoutBadBodies++;
          } else m.checkoutsRefused++;
        }
        return null;
      },
      transfer: () => ({ orderIds: orderIds.toArrayBuffer() }),
      metrics: () => ({ ...m }),
    };
  },
  afterRun: settleAndCheck,
};

async function settleAndCheck(ctx: AfterRunContext<Params>): Promise<AfterRunOutcome> {
  const { plan, result, log } = ctx;
  const { sku } = plan.params;
  if (ctx.databaseUrl === null) {
    return { checks: [], notes: ['checkout: no database to read: payments/s, queue lag and the payment checks were SKIPPED'] };
  }
  const db = new pg.Client({ connectionString: ctx.databaseUrl, application_name: 'flashstock-bench' });
  await db.connect();
  try {
    const loadEnd = (result.startedAt ?? Date.now() - result.elapsedMs) + result.elapsedMs;

    // 1. Wait (bounded) until no order of this run is pending.
    const pendingNow = async (): Promise<number> =>
      Number((await db.query<{ n: string }>(`SELECT count(*) AS n FROM orders WHERE sku = $1 AND status = 'pending'`, [sku])).rows[0]!.n);
    const cpuBefore = sampleCpu(ctx.cpuRoots ?? {});
    const waitStart = Date.now();
    let pending = await pendingNow();
    let lastLog = waitStart;
    while (pending > 0 && Date.now() - waitStart < plan.params.drainTimeoutMs) {
      await sleep(250);
      pending = await pendingNow();
      if (Date.now() - lastLog >= 5000) {
        lastLog = Date.now();
        log(`checkout: ${pending.toLocaleString('en-US')} order(s) still pending ${((Date.now() - loadEnd) / 1000).toFixed(0)} s after the load`);
      }
    }
    const drained = pending === 0;
    const waitedMs = Date.now() - waitStart;
    // (A wait of a few polls says nothing about where the cores went.)
    const drainCpu = waitedMs >= 1000 ? coresUsed(cpuBefore, sampleCpu(ctx.cpuRoots ?? {}), waitedMs) : undefined;

    // 2. Figures from the orders table.
    const s = (
      await db.query<{ orders: string; paid: string; failed: string; pending: string; paid_quantity: string; first_settled: string | null; last_settled: string | null; paid_by_load_end: string }>(
        `SELECT count(*) AS orders,
                count(*) FILTER (WHERE status = 'paid') AS paid,
                count(*) FILTER (WHERE status = 'failed') AS failed,
                count(*) FILTER (WHERE status = 'pending') AS pending,
                coalesce(sum(quantity) FILTER (WHERE status = 'paid'), 0) AS paid_quantity,
                extract(epoch FROM min(settled_at) FILTER (WHERE status = 'paid')) * 1000 AS first_settled,
                extract(epoch FROM max(settled_at) FILTER (WHERE status = 'paid')) * 1000 AS last_settled,
                count(*) FILTER (WHERE status = 'paid' AND settled_at <= to_timestamp($2::float8 / 1000)) AS paid_by_load_end
         FROM orders WHERE sku = $1`,
        [sku, loadEnd],
      )
    ).rows[0]!;
    const orders = Number(s.orders);
    const paid = Number(s.paid);
    const failed = Number(s.failed);
    const paidQuantity = Number(s.paid_quantity);
    const firstSettled = s.first_settled === null ? null : Number(s.first_settled);
    const lastSettled = s.last_settled === null ? null : Number(s.last_settled);
    const span = firstSettled !== null && lastSettled !== null ? (lastSettled - firstSettled) / 1000 : 0;
    const paymentsPerSec = span > 0 ? paid / span : paid;
    const paidByLoadEnd = Number(s.paid_by_load_end);
    const duringSpan = firstSettled !== null ? (loadEnd - firstSettled) / 1000 : 0;

    const buckets = (
      await db.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM orders WHERE sku = $1 AND status = 'paid' GROUP BY floor(extract(epoch FROM settled_at)) ORDER BY floor(extract(epoch FROM settled_at))`,
        [sku],
      )
    ).rows.map((r) => r.n);
    const whole = buckets.length > 2 ? buckets.slice(1, -1) : buckets;
    const sorted = [...whole].sort((a, b) => a - b);

    // Queue lag: checkout transaction (created_at) → settle transaction (settled_at).
    const lagHistogram = newHistogram();
    const lags = await db.query<{ us: string }>(
      `SELECT (extract(epoch FROM settled_at - created_at) * 1000000)::bigint AS us FROM orders WHERE sku = $1 AND settled_at IS NOT NULL`,
      [sku],
    );
    for (const row of lags.rows) recordMs(lagHistogram, Number(row.us) / 1000);

    const accepted = result.metrics.checkoutsAccepted ?? 0;
    const figures: CheckoutFigures = {
      checkoutsAccepted: accepted,
      checkoutsPerSec: result.elapsedMs > 0 ? (accepted * 1000) / result.elapsedMs : 0,
      orders,
      paid,
      failed,
      pending: Number(s.pending),
      paymentsPerSec,
      paymentsPerSecDuringLoad: paidByLoadEnd > 0 && duringSpan > 0 ? paidByLoadEnd / duringSpan : null,
      bestSecond: sorted.length > 0 ? sorted[sorted.length - 1]! : 0,
      medianSecond: sorted.length > 0 ? sorted[Math.floor(sorted.length / 2)]! : 0,
      perSecond: buckets,
      lag: summarize(lagHistogram),
      lagHistogram: encodeHistogram(lagHistogram),
      drainMs: drained ? Math.max(0, (lastSettled ?? loadEnd) - loadEnd) : Date.now() - loadEnd,
      drained,
      ...(drainCpu !== undefined ? { drainCpu } : {}),
      ...(result.ops.checkout !== undefined ? { checkoutLatency: result.ops.checkout.latency } : {}),
      ...(ctx.serviceConfig !== undefined ? { service: ctx.serviceConfig } : {}),
    };
    log(
      `checkout: ${paid.toLocaleString('en-US')} of ${orders.toLocaleString('en-US')} orders paid, ${Math.round(paymentsPerSec).toLocaleString('en-US')} payments/s, ` +
        `lag p50 ${figures.lag.p50} ms p99 ${figures.lag.p99} ms max ${figures.lag.max} ms; checking…`,
    );

    // 3. Checks.
    const checks: Check[] = [];
    const acknowledged = new IdList(Math.max(16, accepted));
    for (const t of result.transfers ?? []) {
      const bytes = t.orderIds;
      if (bytes !== undefined) acknowledged.pushBytes(new Uint8Array(bytes), bytes.byteLength / 16);
    }
    const ackSet = new IdSet(acknowledged);
    const ids = await db.query<{ order_id: string }>(`SELECT order_id FROM orders WHERE sku = $1`, [sku]);
    for (const row of ids.rows) ackSet.mark(row.order_id);
    const missing = ackSet.unmarked(5);
    const unansweredCheckouts = result.metrics.checkoutsUnanswered ?? 0;
    const bad = result.metrics.checkoutBadBodies ?? 0;
    const extra = orders - ackSet.size;
    const ordersOk = missing.count === 0 && bad === 0 && extra >= 0 && extra <= unansweredCheckouts;
    checks.push({
      name: 'every 202 checkout has its order',
      ok: ordersOk,
      detail: ordersOk
        ? `${ackSet.size} accepted checkout(s), ${orders} order(s), ${unansweredCheckouts} unanswered`
        : [
            missing.count > 0 ? `${missing.count} 202'd order(s) missing (e.g. ${missing.sample.join(', ')})` : '',
            bad > 0 ? `${bad} 202(s) without a readable orderId` : '',
            extra < 0 || extra > unansweredCheckouts ? `${orders} order(s) for ${ackSet.size} distinct 202(s) and ${unansweredCheckouts} unanswered checkout(s)` : '',
          ]
            .filter((x) => x !== '')
            .join('; '),
    });
    checks.push({
      name: 'every order paid (pm_ok)',
      ok: paid === orders,
      detail: paid === orders ? `${paid} paid` : `${orders} order(s): ${paid} paid, ${failed} failed, ${figures.pending} still pending${drained ? '' : ` after waiting ${(plan.params.drainTimeoutMs / 1000).toFixed(0)} s`}`,
    });

    const c = (
      await db.query<{ wrong: string; declined: string; charges: string }>(
        `SELECT count(*) FILTER (WHERE n_ok <> 1) AS wrong, count(*) FILTER (WHERE n_declined > 0) AS declined, coalesce(sum(n_ok), 0) AS charges
         FROM (SELECT o.order_id, count(*) FILTER (WHERE ch.status = 'succeeded') AS n_ok, count(*) FILTER (WHERE ch.status = 'declined') AS n_declined
               FROM orders o LEFT JOIN simulated_charges ch ON ch.idempotency_key = o.order_id::text
               WHERE o.sku = $1 AND o.status = 'paid' GROUP BY o.order_id) per_order`,
        [sku],
      )
    ).rows[0]!;
    const wrong = Number(c.wrong);
    const declined = Number(c.declined);
    checks.push({
      name: 'exactly one succeeded charge per paid order',
      ok: wrong === 0 && declined === 0,
      detail: wrong === 0 && declined === 0 ? `${c.charges} succeeded charge(s) for ${paid} paid order(s)` : `${wrong} paid order(s) without exactly one succeeded charge, ${declined} with a declined one`,
    });
    const orphans = Number(
      (
        await db.query<{ n: string }>(
          `SELECT count(*) AS n FROM simulated_charges ch LEFT JOIN orders o ON o.order_id::text = ch.idempotency_key
           WHERE ch.status = 'succeeded' AND (o.order_id IS NULL OR o.status <> 'paid')`,
        )
      ).rows[0]!.n,
    );
    checks.push({
      name: 'no succeeded charge without a paid order',
      ok: orphans === 0,
      detail: orphans === 0 ? 'none in the whole database' : `${orphans} succeeded charge(s) whose order is missing or not paid`,
    });

    // One pass over the SKU's log, per reservation (a self-join on reservation_id has no index to use).
    const sold = (
      await db.query<{ committed: string; units: string; failed_events: string }>(
        `SELECT count(*) FILTER (WHERE committed) AS committed,
                coalesce(sum(quantity) FILTER (WHERE committed), 0) AS units,
                count(*) FILTER (WHERE failed) AS failed_events
         FROM (SELECT max(quantity) FILTER (WHERE kind = 'reserved') AS quantity,
                      bool_or(kind = 'committed') AS committed,
                      bool_or(kind = 'payment_failed') AS failed
               FROM stock_events WHERE sku = $1 AND reservation_id IS NOT NULL GROUP BY reservation_id) per_reservation`,
        [sku],
      )
    ).rows[0]!;
    const view = (await readViews(ctx.url, [sku]))[sku] ?? null;
    const soldOk = Number(sold.committed) === paid && Number(sold.units) === paidQuantity && Number(sold.failed_events) === failed && view !== null && view.sold === paidQuantity;
    checks.push({
      name: 'sold units in the log = paid orders',
      ok: soldOk,
      detail: `log: ${sold.committed} committed (${sold.units} units), ${sold.failed_events} payment_failed; orders: ${paid} paid (${paidQuantity} units), ${failed} failed; SKU view sold ${view === null ? 'unreadable' : view.sold}`,
    });

    checks.push(await auditCheck(ctx.url, ctx.adminToken));
    return { checks, record: { checkout: figures } };
  } finally {
    await db.end();
  }
}

/** GET /v1/admin/audit must say ok: the log, the orders and the provider's records tell one story. */
async function auditCheck(url: string, adminToken: string): Promise<Check> {
  const name = 'ledger audit (GET /v1/admin/audit) ok';
  try {
    const r = await fetch(`${url}/v1/admin/audit`, { headers: { authorization: `Bearer ${adminToken}` }, signal: AbortSignal.timeout(300_000) });
    const body = (await r.json()) as { ok?: boolean; orders?: number; successfulCharges?: number; skus?: number; violations?: Array<{ kind: string; detail: string }> };
    const violations = body.violations ?? [];
    const ok = r.status === 200 && body.ok === true;
    return {
      name,
      ok,
      detail:
        `${r.status}: ok ${String(body.ok)}, ${body.skus ?? '?'} SKU(s), ${body.orders ?? '?'} order(s), ${body.successfulCharges ?? '?'} successful charge(s), ${violations.length} violation(s)` +
        (violations.length > 0 ? ` (e.g. ${violations.slice(0, 3).map((v) => `${v.kind}: ${v.detail}`).join('; ')})` : ''),
    };
  } catch (error) {
    return { name, ok: false, detail: `could not run the audit: ${(error as Error).message}` };
  }
}
