import t from 'tap';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createTestDatabase } from './helpers/db.js';
import { adminToken, jwtSecret } from './helpers/service.js';

/**
 * A front-end thread that fails takes its process down cleanly: one fatal log
 * line, exit code 70, and no native abort ("uv_loop_close() while having open
 * handles", which a worker thread exiting with its uWS app open causes).
 * FAULT_THREAD_FAILURE=front_end makes thread 0 throw an uncaught error as
 * soon as it listens.
 */

t.setTimeout(180_000);

t.test('a front-end thread throws: one fatal line, exit 70, no abort', async (t) => {
  const db = await createTestDatabase(t);
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    env: {
      ...process.env,
      DATABASE_URL: db.url,
      ADMIN_TOKEN: adminToken,
      JWT_SECRET: jwtSecret,
      PORT: '0',
      HOST: '127.0.0.1',
      LOG_LEVEL: 'info',
      AUDIT_CRON: '',
      HTTP_THREADS: '2',
      FAULT_THREAD_FAILURE: 'front_end',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];

  t.equal(signal, null, 'not ended by a signal (an abort is SIGABRT)');
  t.equal(code, 70, 'exit code 70');
  t.notMatch(stderr, /uv_loop_close|Assertion failed|Native stack trace/, 'no native abort on stderr');
  const fatal = stdout.split('\n').filter((line) => line.includes('"level":60'));
  t.equal(fatal.length, 1, 'one fatal log line');
  t.match(fatal[0] ?? '', /front-end thread 0: Error: FAULT_THREAD_FAILURE/, 'it names the thread and its error');
});
