import t from 'tap';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { createPool } from '../src/db/pool.js';
import { createLogger, serializeError } from '../src/log.js';
import { createTestDatabase } from './helpers/db.js';

/** Error log lines stay small: no pg client, socket or pool objects, bounded causes and stacks. */

function capture() {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      lines.push(...String(chunk).split('\n').filter((l) => l !== ''));
      done();
    },
  });
  return { lines, log: createLogger('info', 'logging-test', stream) };
}

t.test('the pool error line about a terminated idle connection is under 1 KB', async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  const { lines, log } = capture();
  const pool = createPool(db.url, 2, log);
  t.teardown(() => pool.end().catch(() => undefined));
  const pid = (await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
  t.equal(pool.idleCount, 1, 'one idle client in the pool');

  const admin = new pg.Client({ connectionString: db.url });
  await admin.connect();
  t.teardown(() => admin.end());
  await admin.query('SELECT pg_terminate_backend($1)', [pid]);
  const deadline = Date.now() + 10_000;
  while (!lines.some((l) => l.includes('idle client error')) && Date.now() < deadline) await sleep(20);

  const line = lines.find((l) => l.includes('idle client error'));
  if (line === undefined) throw new Error(`no idle-client error logged: ${JSON.stringify(lines)}`);
  const bytes = Buffer.byteLength(line);
  t.ok(bytes < 1024, `the line is ${bytes} bytes`);
  const entry = JSON.parse(line) as { level: number; err: Record<string, unknown> };
  t.equal(entry.level, 50, 'logged as an error');
  t.match(entry.err, { type: String, message: /terminat/ }, 'says what happened');
  t.equal(entry.err.code, '57P01', "keeps PostgreSQL's code (admin_shutdown)");
  t.match(entry.err.stack, /at /, 'with a stack');
  for (const noise of ['client', 'socket', '_events', 'pool', 'connection', 'connectionParameters', '_types']) {
    t.notOk(line.includes(`"${noise}"`), `no ${noise}`);
  }
});

t.test('the serializer bounds the cause chain, the stack and long fields, and drops attached objects', async (t) => {
  let error: Error = new Error('root cause');
  for (let i = 0; i < 10; i++) error = new Error(`level ${i}`, { cause: error });
  Object.assign(error, { code: 'E_DEEP', client: { huge: 'x'.repeat(10_000) }, socket: { a: 1 }, detail: 'd'.repeat(5000) });
  const out = serializeError(error) as Record<string, unknown>;
  const text = JSON.stringify(out);
  t.ok(text.length < 4096, `serialized: ${text.length} characters`);
  t.equal(out.code, 'E_DEEP');
  t.notOk('client' in out || 'socket' in out, 'attached objects dropped');
  t.ok((out.detail as string).length <= 301, 'long fields clipped');
  let depth = 0;
  for (let c = out.cause; typeof c === 'object' && c !== null; c = (c as { cause?: unknown }).cause) depth += 1;
  t.equal(depth, 3, 'three causes deep, then cut');
  t.match(text, /cause chain truncated/);

  const deepStack = new Error('deep');
  deepStack.stack = `Error: deep\n${Array.from({ length: 50 }, (_, i) => `    at f${i} (file.js:${i}:1)`).join('\n')}`;
  const stack = (serializeError(deepStack) as { stack: string }).stack;
  t.equal(stack.split('\n').length, 9, 'eight frames and a count of the rest');
  t.match(stack, /… 42 more frames$/);

  t.same(serializeError('plain string'), 'plain string');
  t.match(serializeError(new AggregateError([new Error('a'), new Error('b')], 'both')), { type: 'AggregateError', errors: [{ message: 'a' }, { message: 'b' }] });
});
