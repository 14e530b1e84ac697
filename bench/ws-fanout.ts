/**
 * Benchmark `ws-fanout`: 10,000 WebSocket subscribers on one SKU during a
 * sell-out. Measures, for every unit sold and every subscriber, the time from
 * the unit's commit (the outbox's durable callback, in the server process) to
 * that subscriber receiving a `stock` message that includes it — coalescing
 * delay included — and the server's RSS throughout.
 *
 *   node --import tsx bench/ws-fanout.ts [--subscribers 10000] [--units 10000] [--rate 2500] [--client-procs 2]
 *
 * With DATABASE_URL (a server where the user may CREATE DATABASE) the bench
 * uses a fresh database on it and drops it afterwards; without it, an embedded
 * PostgreSQL in a temporary directory. Three kinds of process:
 * this one (orchestration and the HTTP load), the service (`server` role), and
 * the WebSocket clients (`clients` role, several sockets each).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, cpus, totalmem } from 'node:os';
import path from 'node:path';
import http from 'node:http';
import { createInterface } from 'node:readline';
import { connect, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { createHmac, randomBytes } from 'node:crypto';

const self = fileURLToPath(import.meta.url);
const now = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const role = process.argv[2] === 'server' || process.argv[2] === 'clients' ? process.argv[2] : 'main';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const value = Number(process.argv[i + 1]);
  if (!Number.isInteger(value) || value <= 0) throw new Error(`--${name} needs a positive integer`);
  return value;
}

/** One JSON line per message between the processes, on stdin/stdout. */
function lines(stream: NodeJS.ReadableStream, onLine: (value: Record<string, unknown>) => void): void {
  createInterface({ input: stream }).on('line', (line) => {
    if (line.startsWith('{')) onLine(JSON.parse(line) as Record<string, unknown>);
  });
}

// ------------------------------------------------------------------ server role

async function server(): Promise<void> {
  const { startFlashstock } = await import('../src/app.js');
  const app = await startFlashstock({
    port: 0,
    metricsPort: 0,
    host: '127.0.0.1',
    logLevel: 'warn',
    databaseUrl: process.env.DATABASE_URL!,
    adminToken: process.env.ADMIN_TOKEN!,
    jwtSecret: process.env.JWT_SECRET!,
    wsMaxConnections: 50_000,
    // One front end on this thread: the bench hooks `app.live` (null with front-end threads).
    httpThreads: 1,
  });
  // Every durable change of the SKU reaches `live.changed` once, in seq order
  // (the outbox runs callbacks in log order): the n-th call after the
  // configure event is the commit of seq n + 1, i.e. of unit n.
  const commitMs: number[] = [];
  let calls = 0;
  const changed = app.live!.changed.bind(app.live!);
  app.live!.changed = (sku: string) => {
    calls += 1;
    if (calls > 1) commitMs.push(now());
    changed(sku);
  };
  process.stdout.write(`${JSON.stringify({ ready: true, url: app.url, pid: process.pid })}\n`);
  lines(process.stdin, (command) => {
    if (command.dump) {
      writeFileSync(String(command.dump), JSON.stringify(commitMs));
      process.stdout.write(`${JSON.stringify({ dumped: true, stream: app.live!.stats.stream })}\n`);
    }
  });
  process.once('SIGTERM', () => void app.stop().then(() => process.exit(0)));
}

// ------------------------------------------------------------------ clients role

/**
 * A minimal WebSocket client on raw TCP: 10,000 `ws` clients would cost the
 * two cores more than the server does, and the figures would measure the load
 * generator. Server frames are unmasked; ours are masked (RFC 6455).
 */
function maskedFrame(opcode: number, payload: Buffer): Buffer {
  const mask = randomBytes(4);
  const header = payload.length < 126 ? Buffer.from([0x80 | opcode, 0x80 | payload.length]) : Buffer.from([0x80 | opcode, 0x80 | 126, payload.length >> 8, payload.length & 0xff]);
  const body = Buffer.alloc(payload.length);
  for (let i = 0; i < payload.length; i += 1) body[i] = payload[i]! ^ mask[i % 4]!;
  return Buffer.concat([header, mask, body]);
}

const seqMarker = Buffer.from('"seq":');

async function clients(): Promise<void> {
  const [, , , url = '', sku = '', countText = '0'] = process.argv;
  const count = Number(countText);
  const { port, hostname } = new URL(url);
  // Per socket: the seq and receive time of each stock message (a few dozen per socket and second).
  const seqs: number[][] = Array.from({ length: count }, () => []);
  const times: number[][] = Array.from({ length: count }, () => []);
  const sockets: Socket[] = [];
  let closedEarly = 0;
  const subscribe = maskedFrame(1, Buffer.from(JSON.stringify({ type: 'subscribe', skus: [sku] })));
  const open = (i: number) =>
    new Promise<void>((resolve, reject) => {
      const socket = connect({ host: hostname, port: Number(port), noDelay: true });
      sockets.push(socket);
      let upgraded = false;
      let pending: Buffer = Buffer.alloc(0);
      socket.on('connect', () =>
        socket.write(
          `GET /v1/stream HTTP/1.1\r\nHost: ${hostname}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
            `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
        ),
      );
      socket.on('data', (chunk: Buffer) => {
        const at = now();
        let data = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
        if (!upgraded) {
          const end = data.indexOf('\r\n\r\n');
          if (end < 0) {
            pending = data;
            return;
          }
          if (!data.subarray(0, 12).toString().includes('101')) {
            reject(new Error(`upgrade refused: ${data.subarray(0, end).toString()}`));
            return;
          }
          upgraded = true;
          socket.write(subscribe);
          data = data.subarray(end + 4);
        }
        let offset = 0;
        while (data.length - offset >= 2) {
          const opcode = data[offset]! & 0x0f;
          let length = data[offset + 1]! & 0x7f;
          let headerBytes = 2;
          if (length === 126) {
            if (data.length - offset < 4) break;
            length = data.readUInt16BE(offset + 2);
            headerBytes = 4;
          } else if (length === 127) {
            if (data.length - offset < 10) break;
            length = Number(data.readBigUInt64BE(offset + 2));
            headerBytes = 10;
          }
          if (data.length - offset < headerBytes + length) break;
          const payload = data.subarray(offset + headerBytes, offset + headerBytes + length);
          offset += headerBytes + length;
          if (opcode === 9) socket.write(maskedFrame(10, payload));
          else if (opcode === 8) socket.end();
          else if (opcode === 1 && payload[9] === 0x73 /* {"type":"s(tock)" */) {
            const at2 = payload.indexOf(seqMarker);
            const seq = Number(payload.subarray(at2 + seqMarker.length, payload.length - 1).toString());
            if (seqs[i]!.length === 0) resolve();
            seqs[i]!.push(seq);
            times[i]!.push(at);
          }
        }
        pending = offset === data.length ? Buffer.alloc(0) : Buffer.from(data.subarray(offset));
      });
      socket.on('error', reject);
      socket.on('close', () => (closedEarly += 1));
    });
  for (let start = 0; start < count; start += 250) {
    await Promise.all(Array.from({ length: Math.min(250, count - start) }, (_, k) => open(start + k)));
  }
  process.stdout.write(`${JSON.stringify({ connected: count })}\n`);
  lines(process.stdin, (command) => {
    if (!command.commits) return;
    const commitMs = JSON.parse(readFileSync(String(command.commits), 'utf8')) as number[];
    // Histogram in 0.1 ms buckets up to 10 s; a unit seen before its commit reached us counts as 0.
    const buckets = new Uint32Array(100_001);
    let samples = 0;
    let missing = 0;
    for (let i = 0; i < count; i += 1) {
      const s = seqs[i]!;
      const t = times[i]!;
      // Unit n is seq n + 1. The first message (the subscribe reply) covers what was sold before.
      let covered = s[0]! - 1;
      for (let m = 1; m < s.length; m += 1) {
        const upTo = Math.min(s[m]! - 1, commitMs.length);
        for (let unit = covered + 1; unit <= upTo; unit += 1) {
          const latency = t[m]! - commitMs[unit - 1]!;
          buckets[Math.min(100_000, Math.max(0, Math.round(latency * 10)))]! += 1;
          samples += 1;
        }
        if (upTo > covered) covered = upTo;
      }
      missing += commitMs.length - covered;
    }
    const messages = seqs.reduce((sum, s) => sum + s.length, 0);
    process.stdout.write(`${JSON.stringify({ buckets: Array.from(buckets), samples, missing, messages, closedEarly })}\n`);
    for (const socket of sockets) socket.destroy();
    setTimeout(() => process.exit(0), 100);
  });
}

// ------------------------------------------------------------------ main role

function startChild(args: string[], env: Record<string, string>): { child: ChildProcess; next: (key: string) => Promise<Record<string, unknown>> } {
  const child = spawn(process.execPath, ['--import', 'tsx', self, ...args], {
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const inbox: Record<string, unknown>[] = [];
  const waiting: (() => void)[] = [];
  lines(child.stdout!, (value) => {
    inbox.push(value);
    for (const wake of waiting.splice(0)) wake();
  });
  const next = async (key: string): Promise<Record<string, unknown>> => {
    for (;;) {
      const i = inbox.findIndex((value) => key in value);
      if (i >= 0) return inbox.splice(i, 1)[0]!;
      if (child.exitCode !== null) throw new Error(`child ${args[0]} exited (${child.exitCode})`);
      await new Promise<void>((resolve) => waiting.push(resolve));
    }
  };
  child.once('exit', () => {
    for (const wake of waiting.splice(0)) wake();
  });
  return { child, next };
}

function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = /VmRSS:\s+(\d+) kB/.exec(status);
  return kb ? Number(kb[1]) * 1024 : 0;
}

function token(secret: string, sub: string): string {
  const encode = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const input = `${encode({ alg: 'HS256', typ: 'JWT' })}.${encode({ sub, exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

function request(agent: http.Agent, base: string, method: string, pathname: string, headers: Record<string, string>, body: unknown): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request(new URL(pathname, base), { method, agent, headers: { 'content-type': 'application/json', ...headers } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

function percentile(buckets: Uint32Array, total: number, p: number): number {
  const rank = Math.ceil((p / 100) * total);
  let seen = 0;
  for (let i = 0; i < buckets.length; i += 1) {
    seen += buckets[i]!;
    if (seen >= rank) return i / 10;
  }
  return buckets.length / 10;
}

async function main(): Promise<void> {
  const subscribers = arg('subscribers', 10_000);
  const units = arg('units', 10_000);
  const ratePerSecond = arg('rate', 2500);
  const clientProcs = arg('client-procs', 2);
  // Without DATABASE_URL: an embedded PostgreSQL in a temporary directory, stopped at the end.
  let embedded: { url: string; stop(): Promise<void> } | null = null;
  let serverUrl = process.env.DATABASE_URL;
  if (!serverUrl) {
    const { startEmbeddedPostgres } = await import('../src/db/embedded.js');
    const { createLogger } = await import('../src/log.js');
    embedded = await startEmbeddedPostgres({ dataDir: mkdtempSync(path.join(tmpdir(), 'ws-fanout-pg-')), log: createLogger('warn') });
    serverUrl = embedded.url;
  }

  const pg = (await import('pg')).default;
  const dbName = `flashstock_bench_ws_${Date.now().toString(36)}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${dbName}`);
  const dbUrl = new URL(serverUrl);
  dbUrl.pathname = `/${dbName}`;
  const tmp = mkdtempSync(path.join(tmpdir(), 'ws-fanout-'));
  const adminToken = randomBytes(16).toString('hex');
  const jwtSecret = randomBytes(32).toString('hex');
  const children: ChildProcess[] = [];
  try {
    const srv = startChild(['server'], { DATABASE_URL: dbUrl.toString(), ADMIN_TOKEN: adminToken, JWT_SECRET: jwtSecret });
    children.push(srv.child);
    const ready = await srv.next('ready');
    const base = String(ready.url);
    const pid = Number(ready.pid);
    const sku = 'DROP-1';
    const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
    const put = await request(agent, base, 'PUT', `/v1/admin/skus/${sku}`, { authorization: `Bearer ${adminToken}` }, {
      stock: units, perShopperLimit: 1, holdSeconds: 600, priceCents: 100, currency: 'USD',
    });
    if (put !== 201) throw new Error(`PUT sku: ${put}`);
    const rssIdle = rssBytes(pid);

    // Subscribers.
    const connectStarted = Date.now();
    const perProc = Math.ceil(subscribers / clientProcs);
    const procs = Array.from({ length: clientProcs }, (_, i) =>
      startChild(['clients', base, sku, String(Math.min(perProc, subscribers - i * perProc))], {}),
    );
    children.push(...procs.map((p) => p.child));
    await Promise.all(procs.map((p) => p.next('connected')));
    const connectMs = Date.now() - connectStarted;
    await sleep(500);
    const rssConnected = rssBytes(pid);

    // The sell-out: distinct shoppers at `ratePerSecond`, 20% more requests than units.
    let rssPeak = rssConnected;
    const rssTimer = setInterval(() => (rssPeak = Math.max(rssPeak, rssBytes(pid))), 50);
    const requests = Math.ceil(units * 1.2);
    const tokens = Array.from({ length: requests }, (_, i) => token(jwtSecret, `shopper-${i}`));
    const statuses = new Map<number, number>();
    const sellStarted = Date.now();
    const inFlight = new Set<Promise<void>>();
    // Paced in 5 ms ticks (a timer per request would be late under load): every request due by now goes out.
    let sent = 0;
    while (sent < requests) {
      const due = Math.min(requests, Math.floor(((Date.now() - sellStarted) * ratePerSecond) / 1000) + 1);
      while (sent < due && inFlight.size < 512) {
        const i = sent++;
        const p: Promise<void> = request(agent, base, 'POST', `/v1/skus/${sku}/reservations`, { authorization: `Bearer ${tokens[i]}`, 'idempotency-key': `k${i}` }, { quantity: 1 })
          .then((status) => void statuses.set(status, (statuses.get(status) ?? 0) + 1))
          .finally(() => inFlight.delete(p));
        inFlight.add(p);
      }
      await (inFlight.size >= 512 ? Promise.race(inFlight) : sleep(5));
    }
    await Promise.all(inFlight);
    const sellMs = Date.now() - sellStarted;
    await sleep(1000); // the last coalesced updates
    clearInterval(rssTimer);
    const rssAfter = rssBytes(pid);

    const commitsFile = path.join(tmp, 'commits.json');
    srv.child.stdin!.write(`${JSON.stringify({ dump: commitsFile })}\n`);
    const dumped = await srv.next('dumped');
    const commits = JSON.parse(readFileSync(commitsFile, 'utf8')) as number[];
    for (const p of procs) p.child.stdin!.write(`${JSON.stringify({ commits: commitsFile })}\n`);
    const results = await Promise.all(procs.map((p) => p.next('buckets')));
    const buckets = new Uint32Array(100_001);
    let samples = 0;
    let missing = 0;
    let messages = 0;
    let closedEarly = 0;
    for (const r of results) {
      (r.buckets as number[]).forEach((n, i) => (buckets[i]! += n));
      samples += Number(r.samples);
      missing += Number(r.missing);
      messages += Number(r.messages);
      closedEarly += Number(r.closedEarly);
    }
    const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(0)} MiB`;
    const p99 = percentile(buckets, samples, 99);
    const report = {
      machine: `${cpus().length} × ${cpus()[0]?.model ?? '?'}, ${mib(totalmem())} RAM, Node ${process.version}`,
      subscribers,
      units,
      sold: commits.length,
      statuses: Object.fromEntries(statuses),
      targetRatePerSecond: ratePerSecond,
      achievedRatePerSecond: Math.round((requests / sellMs) * 1000),
      sellOutMs: sellMs,
      connectMs,
      stockMessagesReceived: messages,
      messagesPerSubscriber: +(messages / subscribers).toFixed(1),
      deliveryLatencyMs: {
        samples,
        p50: percentile(buckets, samples, 50),
        p90: percentile(buckets, samples, 90),
        p99,
        p999: percentile(buckets, samples, 99.9),
        max: percentile(buckets, samples, 100),
      },
      unitsNeverSeen: missing,
      socketsClosedEarly: closedEarly,
      serverRss: { idle: mib(rssIdle), with10kSockets: mib(rssConnected), peakDuringSellOut: mib(rssPeak), after: mib(rssAfter) },
      serverStream: dumped.stream,
      verdict: p99 <= 250 && missing === 0 && closedEarly === 0 ? 'PASS (p99 ≤ 250 ms, every unit seen by every subscriber)' : 'FAIL',
    };
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    agent.destroy();
  } finally {
    for (const child of children) if (child.exitCode === null) child.kill('SIGTERM');
    await sleep(500);
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
    await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).catch(() => undefined);
    await admin.end();
    await embedded?.stop();
    rmSync(tmp, { recursive: true, force: true });
  }
}

if (role === 'server') await server();
else if (role === 'clients') await clients();
else await main();
