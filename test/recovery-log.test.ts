import t from 'tap';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import pg from 'pg';
import { startChild } from './helpers/child.js';
import { createTestDatabase } from './helpers/db.js';
import { adminToken, clientFor, jwtSecret } from './helpers/service.js';

/**
 * A node's start-up log: probes poll /readyz every few seconds while the
 * allocators recover, and each of those answers (503 not_ready) is routine,
 * not a warning. Recovery says when it starts and when it ends, with what it
 * loaded and how long it took. Recovery is held up for real: a transaction
 * keeps the event log locked until the polls are done.
 */

t.setTimeout(120_000);

interface Line {
  level: number;
  msg: string;
  [field: string]: unknown;
}

t.test('readiness polls during recovery log no warnings; one line at its start, one at its end', async (t) => {
  const db = await createTestDatabase(t);
  // History to recover: one SKU, configured then two reservations (3 events).
  const first = await startChild(db.url);
  const api = clientFor(first.url);
  t.equal((await api.putSku('LOGGED', { stock: 5 })).status, 201);
  for (const shopper of ['s1', 's2']) t.equal((await api.reserve('LOGGED', shopper)).status, 201);
  first.child.kill('SIGTERM');
  t.equal(await first.exited, 0, 'the first run stopped cleanly');

  const locker = new pg.Client({ connectionString: db.url });
  await locker.connect();
  t.teardown(() => locker.end());
  await locker.query('BEGIN');
  await locker.query('LOCK TABLE stock_events IN ACCESS EXCLUSIVE MODE');

  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    env: { ...process.env, DATABASE_URL: db.url, ADMIN_TOKEN: adminToken, JWT_SECRET: jwtSecret, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info',
      PAYMENT_WEBHOOK_SECRET: 'test-webhook-secret-0123456789abcdef' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  const exited = once(child, 'exit');
  const lines: Line[] = [];
  let listening: (url: string) => void;
  const listeningUrl = new Promise<string>((resolve) => (listening = resolve));
  let ready: () => void;
  const readyLogged = new Promise<void>((resolve) => (ready = resolve));
  createInterface({ input: child.stdout! }).on('line', (text) => {
    let line: Line;
    try {
      line = JSON.parse(text) as Line;
    } catch {
      return;
    }
    lines.push(line);
    if (line.msg.startsWith('listening') && typeof line.url === 'string') listening(line.url);
    if (line.msg === 'ready') ready();
  });
  void exited.then(() => {
    listening('');
    ready();
  });

  const url = await listeningUrl;
  t.not(url, '', 'the node listens while it recovers');
  const node = clientFor(url);
  for (let i = 0; i < 10; i++) {
    const res = await node.call('GET', '/readyz');
    t.match([res.status, res.body.code], [503, 'not_ready'], `poll ${i + 1}: not ready yet`);
  }
  await locker.query('ROLLBACK');
  await readyLogged;
  t.equal((await node.call('GET', '/readyz')).status, 200, 'ready once recovered');
  child.kill('SIGTERM');
  await exited;

  const warnings = lines.filter((l) => l.level >= 40);
  t.same(warnings, [], 'no warnings or errors in the start-up log');
  t.same(lines.filter((l) => l.route === '/readyz' || String(l.url ?? '').startsWith('/readyz')), [], 'no line per readiness poll at info');
  const started = lines.filter((l) => /recovering/.test(l.msg));
  t.equal(started.length, 1, 'one line when recovery starts');
  t.equal(started[0]?.level, 30, 'at info');
  const ended = lines.filter((l) => l.msg === 'shards recovered from the event log');
  t.equal(ended.length, 1, 'one line when recovery ends');
  t.match(ended[0], { level: 30, skus: 1, events: 3, ms: Number }, 'at info, with the SKUs, the events behind them and the time');
  t.ok(lines.indexOf(started[0]!) < lines.indexOf(ended[0]!), 'in that order');
});
