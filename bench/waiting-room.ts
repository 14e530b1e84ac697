/**
 * Benchmark `waiting-room`: SHOPPERS (100,000) take a ticket in one SKU's
 * waiting room admitting 1,000/s, then poll their tickets in a closed loop;
 * then, in the same run and the same service, a hot SKU takes reservations
 * from distinct shoppers. Reports per phase the requests/s, p50/p99/max
 * latency and the service process's CPU per request (µs, /proc), so the cost
 * of a poll stands beside the cost of a reservation measured on the same
 * machine at the same time.
 *
 *   npm run bench -- --scenario waiting-room [--shoppers 100000] [--duration 8] [--connections 64]
 *
 * The service runs in its own process (bench/lib/flashstock-child.ts) with one
 * front-end thread, on a fresh database of DATABASE_URL (dropped afterwards)
 * or, without it, an embedded Postgres in a temporary directory. The load is
 * HTTP/1.1 keep-alive from this process, one request in flight per connection.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { sampleCpu } from './lib/cpu.js';
import { mintShopperToken } from './lib/jwt.js';

const here = path.dirname(fileURLToPath(import.meta.url));

function arg(args: string[], name: string, fallback: number): number {
  const i = args.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const value = Number(args[i + 1]);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`--${name} needs a positive number`);
  return value;
}

interface Service {
  child: ChildProcess;
  url: URL;
  adminToken: string;
  jwtSecret: string;
}

/** The service in its own process; resolves once it prints its ready line. */
function startService(env: Record<string, string>): Promise<Service> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(here, 'lib/flashstock-child.ts')], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`service exited (${code}) before it was ready`)));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (!line.startsWith('{')) return;
      const ready = JSON.parse(line) as { ready?: boolean; url: string; adminToken: string; jwtSecret: string };
      if (ready.ready !== true) return;
      resolve({ child, url: new URL(ready.url), adminToken: ready.adminToken, jwtSecret: ready.jwtSecret });
    });
  });
}

/** One keep-alive connection, one request in flight: send, read one whole response (Content-Length framed). */
class Connection {
  private buffer = '';
  private waiting: ((response: { status: number; body: string }) => void) | null = null;
  private readonly socket: Socket;

  constructor(port: number) {
    this.socket = connect(port, '127.0.0.1');
    this.socket.setNoDelay(true);
    this.socket.setEncoding('latin1');
    this.socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      this.parse();
    });
  }

  request(text: string): Promise<{ status: number; body: string }> {
    return new Promise((resolve) => {
      this.waiting = resolve;
      this.socket.write(text, 'latin1');
    });
  }

  private parse(): void {
    const end = this.buffer.indexOf('\r\n\r\n');
    if (end < 0 || this.waiting === null) return;
    const head = this.buffer.slice(0, end);
    const length = Number(/content-length: *(\d+)/i.exec(head)?.[1] ?? 0);
    if (this.buffer.length < end + 4 + length) return;
    const body = this.buffer.slice(end + 4, end + 4 + length);
    this.buffer = this.buffer.slice(end + 4 + length);
    const done = this.waiting;
    this.waiting = null;
    done({ status: Number(head.slice(9, 12)), body });
  }

  close(): void {
    this.socket.destroy();
  }
}

function httpRequest(method: string, target: string, headers: Record<string, string>, body = ''): string {
  let text = `${method} ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\n`;
  for (const [name, value] of Object.entries(headers)) text += `${name}: ${value}\r\n`;
  if (body !== '') text += `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n`;
  return `${text}\r\n${body}`;
}

interface PhaseResult {
  requests: number;
  seconds: number;
  statuses: Record<string, number>;
  latenciesMs: Float64Array;
  serverCpuSeconds: number;
}

/** Closed loop: every connection sends `next(i)` until `until()` says stop (or `total` requests were sent). */
async function phase(
  service: Service,
  connections: number,
  next: (i: number) => string,
  options: { durationMs?: number; total?: number; onBody?: (i: number, body: string) => void },
): Promise<PhaseResult> {
  const conns = Array.from({ length: connections }, () => new Connection(Number(service.url.port)));
  const latencies: number[] = [];
  const statuses: Record<string, number> = {};
  let sent = 0;
  const startMs = performance.now();
  const stopAt = options.durationMs === undefined ? Infinity : startMs + options.durationMs;
  const cpuBefore = sampleCpu({ server: service.child.pid! });
  await Promise.all(
    conns.map(async (conn) => {
      while (performance.now() < stopAt && (options.total === undefined || sent < options.total)) {
        const i = sent++;
        const t0 = performance.now();
        const response = await conn.request(next(i));
        latencies.push(performance.now() - t0);
        statuses[response.status] = (statuses[response.status] ?? 0) + 1;
        options.onBody?.(i, response.body);
      }
    }),
  );
  const seconds = (performance.now() - startMs) / 1000;
  const cpuAfter = sampleCpu({ server: service.child.pid! });
  for (const conn of conns) conn.close();
  const sorted = Float64Array.from(latencies).sort();
  return { requests: latencies.length, seconds, statuses, latenciesMs: sorted, serverCpuSeconds: (cpuAfter.server ?? 0) - (cpuBefore.server ?? 0) };
}

function quantile(sorted: Float64Array, q: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

function row(name: string, r: PhaseResult): string {
  const cpuUs = (r.serverCpuSeconds * 1e6) / r.requests;
  const fmt = (ms: number) => ms.toFixed(2);
  return `| ${name} | ${r.requests} | ${Math.round(r.requests / r.seconds)} | ${fmt(quantile(r.latenciesMs, 0.5))} | ${fmt(quantile(r.latenciesMs, 0.99))} | ${fmt(r.latenciesMs[r.latenciesMs.length - 1] ?? NaN)} | ${cpuUs.toFixed(1)} | ${(r.serverCpuSeconds / r.seconds).toFixed(2)} | ${JSON.stringify(r.statuses)} |`;
}

/** A fresh database on DATABASE_URL (dropped by the returned cleanup), or none (embedded Postgres). */
async function database(): Promise<{ env: Record<string, string>; cleanup(): Promise<void> }> {
  const base = process.env.DATABASE_URL;
  if (base === undefined || base === '') {
    const dir = mkdtempSync(path.join(tmpdir(), 'flashstock-wr-'));
    return { env: { BENCH_DATA_DIR: dir }, cleanup: async () => rmSync(dir, { recursive: true, force: true }) };
  }
  const name = `bench_wr_${randomUUID().replace(/-/g, '').slice(0, 12)}`;
  const admin = new pg.Client({ connectionString: base });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(base);
  url.pathname = `/${name}`;
  return {
    env: { DATABASE_URL: url.toString() },
    cleanup: async () => {
      const again = new pg.Client({ connectionString: base });
      await again.connect();
      await again.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await again.end();
    },
  };
}

export async function runWaitingRoomBench(args: string[]): Promise<void> {
  const shoppers = arg(args, 'shoppers', 100_000);
  const durationMs = arg(args, 'duration', 8) * 1000;
  const connections = arg(args, 'connections', 64);
  const db = await database();
  const secrets = { adminToken: `bench-admin-${randomUUID()}`, jwtSecret: `bench-jwt-${randomUUID()}` };
  const overrides = { ...secrets, httpThreads: 1, queueMaxTickets: Math.max(shoppers, 1), rateLimitShopperPerSecond: 0, rateLimitIpPerSecond: 0 };
  let service: Service | null = null;
  try {
    service = await startService({ ...db.env, BENCH_OVERRIDES: JSON.stringify(overrides), LOG_LEVEL: 'warn' });
    await measure(service, shoppers, durationMs, connections);
  } finally {
    if (service !== null && service.child.exitCode === null) {
      const exited = new Promise((resolve) => service!.child.once('exit', resolve));
      service.child.kill('SIGTERM');
      await exited;
    }
    await db.cleanup();
  }
}

async function measure(service: Service, shoppers: number, durationMs: number, connections: number): Promise<void> {
  const run = randomUUID().slice(0, 8);
  const admin = { Authorization: `Bearer ${service.adminToken}` };
  const sku = { stock: 1_000_000_000, perShopperLimit: 1000, holdSeconds: 3600, priceCents: 100, currency: 'USD' };
  const setup = new Connection(Number(service.url.port));
  for (const [name, extra] of [[`wr-${run}`, { waitingRoom: { admitPerSecond: 1000 } }], [`hot-${run}`, {}]] as const) {
    const put = await setup.request(httpRequest('PUT', `/v1/admin/skus/${name}`, admin, JSON.stringify({ ...sku, ...extra })));
    if (put.status !== 201) throw new Error(`PUT ${name}: ${put.status} ${put.body}`);
  }
  setup.close();
  const nowSeconds = Math.floor(Date.now() / 1000);
  const auth = Array.from({ length: shoppers }, (_, i) => `Bearer ${mintShopperToken(service.jwtSecret, `q-${run}-${i}`, nowSeconds, 3600)}`);
  const tickets = new Array<string>(shoppers);
  // Joins are group-committed: many in flight fill the batches (the setup, not the measurement).
  const joins = await phase(service, Math.max(connections, 512), (i) => httpRequest('POST', `/v1/skus/wr-${run}/queue`, { Authorization: auth[i]! }), {
    total: shoppers,
    onBody: (i, body) => (tickets[i] = (JSON.parse(body) as { ticket: string }).ticket),
  });
  let admitted = 0;
  // A prime stride over the shoppers: polls reach admitted and waiting tickets alike, in no join order.
  const polled = (i: number) => (i * 7919) % shoppers;
  const polls = await phase(service, connections, (i) => httpRequest('GET', `/v1/queue/${tickets[polled(i)]}`, { Authorization: auth[polled(i)]! }), {
    durationMs,
    onBody: (_, body) => (admitted += body.includes('"status":"admitted"') ? 1 : 0),
  });
  const reserve = (i: number) =>
    httpRequest('POST', `/v1/skus/hot-${run}/reservations`, { Authorization: auth[i % shoppers]!, 'Idempotency-Key': `${run}-${i}` }, '{"quantity":1}');
  const reservations = await phase(service, connections, reserve, { durationMs });
  process.stdout.write(`polls answered admitted: ${admitted} of ${polls.requests} (the rest waiting)\n`);
  report(shoppers, connections, [['join (POST queue)', joins], ['poll (GET queue/{ticket})', polls], ['hot-SKU reservation', reservations]]);
}

function report(shoppers: number, connections: number, phases: [string, PhaseResult][]): void {
  const lines = [
    `## waiting-room: ${shoppers} queued shoppers, admission 1,000/s, ${connections} connections, 1 front-end thread`,
    '',
    '| phase | requests | req/s | p50 ms | p99 ms | max ms | service CPU µs/request | service cores | statuses |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...phases.map(([name, r]) => row(name, r)),
    '',
    'Service CPU is the service process only (/proc utime+stime, all its threads); a reservation also costs Postgres CPU, a poll none.',
  ];
  const text = lines.join('\n');
  process.stdout.write(`${text}\n`);
  const dir = path.join(here, 'results');
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${new Date().toISOString().replace(/[:.]/g, '-')}-waiting-room.md`);
  writeFileSync(file, `${text}\n`);
  process.stderr.write(`wrote ${file}\n`);
}
