import t, { type Test } from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { startTestService } from './helpers/service.js';
import { freePort, commandPath } from './helpers/net.js';
import { skipBecause } from './helpers/skip.js';

/**
 * Issue 9, finding 10: uWebSockets.js closes a connection with pipelined
 * requests behind an asynchronous answer, hangs on HTTP/1.0 and on many
 * headers, and accepts conflicting Content-Length. The documented haproxy
 * settings (the ```haproxy block of docs/operations.md, "haproxy in front", used
 * here as written apart from the addresses) must normalise each case. Needs `haproxy`
 * on PATH (Debian: apt-get install haproxy); skips loudly without it.
 */

const haproxyPath = commandPath('haproxy');
const haproxy = haproxyPath === null ? null : spawnSync(haproxyPath, ['-v'], { encoding: 'utf8' });
if (haproxyPath === null || haproxy === null || haproxy.error !== undefined || haproxy.status !== 0) {
  skipBecause(t, `haproxy ${haproxyPath === null ? 'is not on PATH' : 'does not run'} (apt-get install haproxy): the haproxy settings were not checked`);
} else {
  t.comment(haproxy.stdout.split('\n')[0]!);
  t.test('the documented haproxy settings normalise what uWebSockets.js cannot take', run);
}


/**
 * Writes `data` on a fresh connection; returns the statuses answered before the connection closed,
 * `expected` of them arrived, or `waitMs` passed.
 */
function exchange(port: number, data: string, expected = 1, waitMs = 5000): Promise<string[]> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(data));
    let out = '';
    const statuses = () => [...out.matchAll(/HTTP\/1\.[01] (\d{3})/g)].map((m) => m[1]!);
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(statuses());
    };
    const timer = setTimeout(done, waitMs);
    socket.on('data', (chunk) => {
      out += chunk;
      if (statuses().length >= expected) setTimeout(done, 50); // let a wrongly extra answer show up
    });
    socket.on('close', done);
    socket.on('error', () => undefined);
  });
}

async function run(t: Test): Promise<void> {
  const api = await startTestService(t);
  await api.putSku('PIPE', { stock: 100, perShopperLimit: 100 });
  const doc = await fs.readFile(new URL('../docs/operations.md', import.meta.url), 'utf8');
  const block = /```haproxy\n([\s\S]*?)```/.exec(doc)?.[1];
  if (block === undefined) throw new Error('docs/operations.md has no ```haproxy block');
  const port = await freePort();
  const config = block
    .replace(/^(\s*)bind .*$/m, `$1bind 127.0.0.1:${port}`)
    .replace(/^(\s*)server .*$/m, `$1server app1 127.0.0.1:${api.service.port}`);
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'flashstock-haproxy-'));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'haproxy.cfg');
  await fs.writeFile(file, config);
  const check = spawnSync(haproxyPath!, ['-c', '-f', file], { encoding: 'utf8' });
  t.equal(check.status, 0, `haproxy -c accepts the documented settings ${check.stderr}`);
  const proxy = spawn(haproxyPath!, ['-db', '-f', file], { stdio: 'ignore' });
  t.teardown(() => proxy.kill('SIGTERM'));
  // Until haproxy listens, connections are refused at once: wait by the clock, not by tries.
  const startedMs = Date.now();
  while ((await exchange(port, 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n', 1, 200)).length === 0) {
    if (Date.now() - startedMs > 20_000) throw new Error('haproxy did not answer within 20 s');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  t.comment(`haproxy answered after ${Date.now() - startedMs} ms`);

  const body = '{"quantity":1}';
  const token = api.token('piper');
  const reserve = (key: string, extra = '') =>
    `POST /v1/skus/PIPE/reservations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nIdempotency-Key: ${key}\r\n` +
    `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n${extra}\r\n${body}`;
  const headers = (n: number) => Array.from({ length: n }, (_, i) => `X-H${i}: v\r\n`).join('');

  t.same(
    await exchange(port, reserve('p1') + reserve('p2') + 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n', 3),
    ['201', '201', '200'],
    'pipelined requests behind asynchronous answers are all answered, in order',
  );
  t.same(await exchange(port, 'GET /healthz HTTP/1.0\r\n\r\n'), ['505'], 'HTTP/1.0: 505 at once, no hang');
  t.same(await exchange(port, `GET /healthz HTTP/1.1\r\nHost: x\r\n${headers(39)}\r\n`), ['200'], '40 header lines pass');
  t.same(await exchange(port, `GET /healthz HTTP/1.1\r\nHost: x\r\n${headers(60)}\r\n`), ['431'], '61 header lines: 431, no hang');
  t.same(await exchange(port, `GET /healthz HTTP/1.1\r\nHost: x\r\n${headers(120)}\r\n`), ['400'], 'past tune.http.maxhdr: 400');
  t.same(await exchange(port, reserve('cl', 'Content-Length: 3\r\n')), ['400'], 'conflicting Content-Length: 400');
  t.same(await exchange(port, `GET /v1/skus/${'a'.repeat(3000)} HTTP/1.1\r\nHost: x\r\n\r\n`), ['414'], 'a 3 kB URI: 414');
  const logged = await api.service.pool.query("SELECT count(*)::int AS n FROM stock_events WHERE sku = 'PIPE' AND kind = 'reserved'");
  t.equal(logged.rows[0].n, 2, 'only the two pipelined reservations were made');
}
