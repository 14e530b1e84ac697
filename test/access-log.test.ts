import t from 'tap';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { randomUUID } from 'node:crypto';
import { createTestDatabase } from './helpers/db.js';
import { adminToken, clientFor, jwtSecret } from './helpers/service.js';

/** The access log line: route pattern, method, status, duration, request id, client IP; debug, info for 5xx and 429. */

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Line = Record<string, any>;

async function startLogged(t: { teardown(fn: () => unknown): void }, logLevel: string) {
  const db = await createTestDatabase(t);
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    env: {
      ...process.env,
      DATABASE_URL: db.url,
      ADMIN_TOKEN: adminToken,
      JWT_SECRET: jwtSecret,
      PORT: '0',
      METRICS_PORT: '0',
      HOST: '127.0.0.1',
      LOG_LEVEL: logLevel,
      RATE_LIMIT_SHOPPER_PER_SECOND: '1',
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = once(child, 'exit');
  t.teardown(async () => {
    child.kill('SIGTERM');
    await exited;
  });
  const lines: Line[] = [];
  let ready: (url: string) => void = () => undefined;
  const url = new Promise<string>((resolve) => (ready = resolve));
  createInterface({ input: child.stdout! }).on('line', (text) => {
    try {
      const line = JSON.parse(text) as Line;
      lines.push(line);
      if (line.msg === 'ready') ready(line.url as string);
    } catch {
      /* not a log line */
    }
  });
  return { url: await url, lines };
}

const requestLines = (lines: Line[]) => lines.filter((l) => l.msg === 'request');

/** The child's log lines arrive when they arrive (a loaded machine): wait for them by content, not by a sleep. */
async function logged(lines: Line[], done: (logged: Line[]) => boolean, what: string): Promise<Line[]> {
  const deadline = Date.now() + 30_000;
  while (!done(requestLines(lines))) {
    if (Date.now() > deadline) throw new Error(`no ${what} in the access log after 30 s: ${JSON.stringify(requestLines(lines))}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return requestLines(lines);
}

t.test('LOG_LEVEL=info: only 5xx and 429 are logged, with route, status, duration, request id and IP', async (t) => {
  const { url, lines } = await startLogged(t, 'info');
  const api = clientFor(url);
  await api.putSku('AL-1', { stock: 100, perShopperLimit: 100 });
  // RATE_LIMIT_SHOPPER_PER_SECOND=1: a budget of 2 per 2-second window. Three at once land in one
  // window on any machine but the slowest; a burst that straddles two windows is simply sent again.
  const statuses: number[] = [];
  for (let burst = 0; burst < 10 && !statuses.includes(429); burst++) {
    const answers = await Promise.all([0, 1, 2].map(() => api.reserve('AL-1', 'al-shopper')));
    statuses.push(...answers.map((a) => a.status));
  }
  t.ok(statuses.includes(429), `a 429 within 10 bursts of 3: ${statuses.join(' ')}`);
  t.ok(statuses.every((s) => s === 201 || s === 429), `201 or 429 only: ${statuses.join(' ')}`);
  const limitedCount = statuses.filter((s) => s === 429).length;
  await logged(lines, (l) => l.length >= limitedCount, `${limitedCount} line(s)`);
  // Lines the 201s would have written were written before their answers: give the pipe a moment.
  await new Promise((resolve) => setTimeout(resolve, 200));
  const all = requestLines(lines);
  t.equal(all.length, limitedCount, `one line per 429 and none for the ${statuses.length - limitedCount} 201s`);
  t.ok(all.every((l) => l.status === 429), 'only the 429s');
  t.match(all[0], {
    level: 30,
    reqId: /\S/,
    method: 'POST',
    route: '/v1/skus/:sku/reservations',
    status: 429,
    ms: Number,
    ip: '127.0.0.1',
  });
  t.notMatch(JSON.stringify(all[0]), /AL-1/, 'the pattern, not the URL');
});

t.test('LOG_LEVEL=debug: every request, unknown routes as "unmatched", the client request id kept', async (t) => {
  const { url, lines } = await startLogged(t, 'debug');
  const api = clientFor(url);
  const id = `req-${randomUUID()}`;
  t.equal((await api.call('GET', '/healthz', { headers: { 'x-request-id': id } })).status, 200);
  t.equal((await api.call('GET', `/nope/${randomUUID()}`)).status, 404);
  const all = await logged(lines, (l) => l.some((x) => x.reqId === id) && l.some((x) => x.status === 404), 'healthz and 404 lines');
  t.match(all.find((l) => l.reqId === id), { level: 20, route: '/healthz', method: 'GET', status: 200 });
  t.match(all.find((l) => l.status === 404), { level: 20, route: 'unmatched', method: 'GET' });
});
