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

t.test('LOG_LEVEL=info: only 5xx and 429 are logged, with route, status, duration, request id and IP', async (t) => {
  const { url, lines } = await startLogged(t, 'info');
  const api = clientFor(url);
  await api.putSku('AL-1', { stock: 10, perShopperLimit: 10 });
  const statuses = [];
  for (let i = 0; i < 3; i++) statuses.push((await api.reserve('AL-1', 'al-shopper')).status);
  t.same(statuses, [201, 201, 429]);
  await new Promise((resolve) => setTimeout(resolve, 200));
  const logged = requestLines(lines);
  t.equal(logged.length, 1, 'one line: the 429');
  t.match(logged[0], {
    level: 30,
    reqId: /\S/,
    method: 'POST',
    route: '/v1/skus/:sku/reservations',
    status: 429,
    ms: Number,
    ip: '127.0.0.1',
  });
  t.notMatch(JSON.stringify(logged[0]), /AL-1/, 'the pattern, not the URL');
});

t.test('LOG_LEVEL=debug: every request, unknown routes as "unmatched", the client request id kept', async (t) => {
  const { url, lines } = await startLogged(t, 'debug');
  const api = clientFor(url);
  const id = `req-${randomUUID()}`;
  t.equal((await api.call('GET', '/healthz', { headers: { 'x-request-id': id } })).status, 200);
  t.equal((await api.call('GET', `/nope/${randomUUID()}`)).status, 404);
  await new Promise((resolve) => setTimeout(resolve, 200));
  const logged = requestLines(lines);
  t.match(logged.find((l) => l.reqId === id), { level: 20, route: '/healthz', method: 'GET', status: 200 });
  t.match(logged.find((l) => l.status === 404), { level: 20, route: 'unmatched', method: 'GET' });
});
