/**
 * Carts against single reservations in the same run, on one shard thread:
 * carts of 2–5 lines over hot SKUs, alternated with single reservations of
 * the same SKUs (reservations, carts, reservations, carts), each phase
 * closed-loop for --seconds with --connections in flight. Reports per phase
 * the answers per second, and the service's CPU (from /proc, every thread of
 * the process) per reservation and per cart line; the Postgres server is not
 * the service's child here, so its CPU is not counted.
 *
 *   npx tsx bench/carts.ts [--seconds 8] [--connections 32] [--database-url postgres://…]
 */
import { randomUUID } from 'node:crypto';
import { signShopperToken } from '../src/auth/auth.js';
import { sampleCpu } from './lib/cpu.js';
import { freshDatabase, loadAverage, numberArg, secrets, startProbedService } from './lib/service.js';

const seconds = numberArg('seconds', 8);
const connections = numberArg('connections', 32);
const hotSkus = Array.from({ length: 5 }, (_, i) => `HOT${i}`);

interface Phase {
  name: string;
  answers: number;
  ok: number;
  units: number;
  refused: Record<string, number>;
  cpuSeconds: number;
  elapsedMs: number;
}

type Request = (shopper: string) => { path: string; body: string; units: number };

const reservation: Request = () => {
  const sku = hotSkus[Math.floor(Math.random() * hotSkus.length)]!;
  return { path: `/v1/skus/${sku}/reservations`, body: '{"quantity":1}', units: 1 };
};

const cart: Request = () => {
  const lines = 2 + Math.floor(Math.random() * 4);
  const skus = [...hotSkus].sort(() => Math.random() - 0.5).slice(0, lines);
  return { path: '/v1/carts', body: JSON.stringify({ items: skus.map((sku) => ({ sku, quantity: 1 })) }), units: lines };
};

async function phase(url: string, pid: number, name: string, request: Request): Promise<Phase> {
  const result: Phase = { name, answers: 0, ok: 0, units: 0, refused: {}, cpuSeconds: 0, elapsedMs: 0 };
  const before = sampleCpu({ server: pid }).server ?? 0;
  const started = performance.now();
  const deadline = started + seconds * 1000;
  await Promise.all(
    Array.from({ length: connections }, async (_, c) => {
      for (let n = 0; performance.now() < deadline; n++) {
        const shopper = `${name}-${c}-${n}`;
        const { path, body, units } = request(shopper);
        const res = await fetch(url + path, {
          method: 'POST',
          headers: { authorization: `Bearer ${signShopperToken(secrets.jwtSecret, shopper, 3600)}`, 'idempotency-key': randomUUID(), 'content-type': 'application/json' },
          body,
        });
        const text = await res.text();
        result.answers += 1;
        if (res.status === 201) {
          result.ok += 1;
          result.units += units;
        } else {
          const code = (JSON.parse(text) as { code?: string }).code ?? String(res.status);
          result.refused[code] = (result.refused[code] ?? 0) + 1;
        }
      }
    }),
  );
  result.elapsedMs = performance.now() - started;
  result.cpuSeconds = (sampleCpu({ server: pid }).server ?? 0) - before;
  return result;
}

function line(p: Phase): string {
  const perSecond = (p.ok / p.elapsedMs) * 1000;
  const usPerOp = (p.cpuSeconds * 1e6) / p.ok;
  const usPerUnit = (p.cpuSeconds * 1e6) / p.units;
  return `| ${p.name} | ${perSecond.toFixed(0)} | ${p.units} | ${usPerOp.toFixed(0)} | ${usPerUnit.toFixed(0)} | ${JSON.stringify(p.refused)} |`;
}

const db = await freshDatabase('carts');
const svc = await startProbedService(db.url, { shardThreads: 1, httpThreads: 1, rateLimitShopperPerSecond: 0, rateLimitIpPerSecond: 0 });
try {
  for (const sku of hotSkus) {
    const res = await fetch(`${svc.url}/v1/admin/skus/${sku}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${secrets.adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ stock: 1_000_000_000, perShopperLimit: 1000, holdSeconds: 3600, priceCents: 1999, currency: 'USD' }),
    });
    if (res.status !== 201) throw new Error(`PUT ${sku}: ${res.status} ${await res.text()}`);
  }
  const pid = svc.child.pid!;
  await phase(svc.url, pid, 'warm-up', reservation);
  const phases: Phase[] = [];
  for (const round of [1, 2]) {
    phases.push(await phase(svc.url, pid, `reservations ${round}`, reservation));
    phases.push(await phase(svc.url, pid, `carts ${round}`, cart));
  }
  console.log(`carts bench: ${seconds} s per phase, ${connections} in flight, 1 shard thread, 1 HTTP thread; load ${loadAverage()}`);
  console.log('| phase | 201/s | units held | service CPU µs per 201 | service CPU µs per unit (line) | refusals |');
  console.log('|---|---|---|---|---|---|');
  for (const p of phases) console.log(line(p));
  const sum = (prefix: string) => phases.filter((p) => p.name.startsWith(prefix)).reduce((a, p) => ({ ok: a.ok + p.ok, units: a.units + p.units, cpu: a.cpu + p.cpuSeconds, ms: a.ms + p.elapsedMs }), { ok: 0, units: 0, cpu: 0, ms: 0 });
  const r = sum('reservations');
  const c = sum('carts');
  console.log(`carts/s ÷ reservations/s = ${((c.ok / c.ms) / (r.ok / r.ms)).toFixed(3)}; cart CPU per line ÷ reservation CPU = ${((c.cpu / c.units) / (r.cpu / r.units)).toFixed(2)} (target ≤ 3)`);
} finally {
  await svc.stop();
  await db.drop();
}
