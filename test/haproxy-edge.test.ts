import t, { type Test } from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { renderLocalHaproxyConfig } from '../src/cluster/haproxy-config.js';
import { adminToken, startTestService, type TestService } from './helpers/service.js';
import { freePort } from './helpers/net.js';
import { rawRequest, type RawResponse } from './helpers/raw-http.js';

/**
 * The shipped haproxy config (deploy/haproxy/haproxy.cfg, rendered for local
 * nodes as `npm run cluster` does) in front of a real service, over raw sockets:
 * - Idempotency-Key bytes as sent on the wire. uWebSockets.js trims bytes
 *   0x80-0xFF at either end of a header value before the service can read it
 *   (`order-é` arrives as `order-`), so two different keys would alias; the
 *   edge refuses every key that is not 1-200 visible ASCII characters.
 * - /metrics and /v1/admin are not on the public frontend; the admin frontend
 *   serves /v1/admin and nothing else.
 * Needs `haproxy` on PATH (Debian: apt-get install haproxy); skips loudly without it.
 */

const haproxy = spawnSync('haproxy', ['-v'], { encoding: 'utf8' });
if (haproxy.error !== undefined || haproxy.status !== 0) {
  t.comment('#'.repeat(72));
  t.comment('SKIPPED: haproxy is not on PATH, so the shipped haproxy config is not exercised (apt-get install haproxy)');
  t.comment('#'.repeat(72));
  t.pass('skipped loudly: no haproxy');
} else {
  t.test('the shipped haproxy config at the edge', run);
}

interface Edge {
  api: TestService;
  publicUrl: string;
  adminUrl: string;
}

async function startEdge(t: Test): Promise<Edge> {
  const api = await startTestService(t, { rateLimitShopperPerSecond: 100_000, rateLimitIpPerSecond: 100_000 });
  const [port, statsPort, adminPort] = [await freePort(), await freePort(), await freePort()];
  const template = await fs.readFile(new URL('../deploy/haproxy/haproxy.cfg', import.meta.url), 'utf8');
  const config = renderLocalHaproxyConfig(template, port, statsPort, [api.service.port], adminPort);
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'flashstock-haproxy-edge-'));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'haproxy.cfg');
  await fs.writeFile(file, config);
  const check = spawnSync('haproxy', ['-c', '-f', file], { encoding: 'utf8' });
  if (check.status !== 0) throw new Error(`haproxy -c refused the rendered config: ${check.stderr}`);
  const proxy = spawn('haproxy', ['-db', '-f', file], { stdio: 'ignore' });
  t.teardown(() => proxy.kill('SIGTERM'));
  const publicUrl = `http://127.0.0.1:${port}`;
  // Until haproxy listens and has checked the node, nothing answers 200: wait by the clock, not by tries.
  const startedMs = Date.now();
  while ((await rawRequest(publicUrl, 'GET', '/healthz', {}, '', 200).catch(() => null))?.status !== 200) {
    if (Date.now() - startedMs > 20_000) throw new Error('haproxy did not answer within 20 s');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return { api, publicUrl, adminUrl: `http://127.0.0.1:${adminPort}` };
}

function problemCode(res: RawResponse): unknown {
  try {
    return (JSON.parse(res.body.toString('utf8')) as { code?: unknown }).code;
  } catch {
    return res.body.toString('latin1');
  }
}

async function run(t: Test): Promise<void> {
  const { api, publicUrl, adminUrl } = await startEdge(t);
  t.equal((await api.putSku('EDGE', { stock: 1000, perShopperLimit: 1000 })).status, 201);
  const token = api.token('edge-shopper');
  const body = '{"quantity":1}';
  const reserve = (key: string | Buffer | null, extra: Record<string, string | Buffer> = {}) =>
    rawRequest(
      publicUrl,
      'POST',
      '/v1/skus/EDGE/reservations',
      { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...(key === null ? {} : { 'idempotency-key': key }), ...extra },
      body,
    );
  const bytes = (...parts: (string | number)[]) => Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : Buffer.from([p]))));

  const plain = await reserve('order-');
  t.equal(plain.status, 201, 'a plain key reserves');

  t.test('every byte 0x80-0xFF before or after a key is a 400, never an alias of the key without it', async (t) => {
    const wrong: string[] = [];
    for (let byte = 0x80; byte <= 0xff; byte++) {
      for (const [where, key] of [['leading', bytes(byte, 'order-')], ['trailing', bytes('order-', byte)]] as const) {
        const res = await reserve(key);
        if (res.status !== 400 || problemCode(res) !== 'invalid_request') wrong.push(`${where} 0x${byte.toString(16)}: ${res.status} ${String(problemCode(res))}`);
      }
    }
    t.same(wrong, [], '256 keys, each refused');
    const accented = await reserve(Buffer.from('order-é', 'utf8'));
    t.equal(accented.status, 400, '`order-é` (UTF-8) is refused, not stored as `order-`');
    t.equal(problemCode(accented), 'invalid_request');
    t.equal((await reserve(Buffer.from('café', 'utf8'))).status, 400, '`café` is refused, not stored as `caf`');
    t.equal((await reserve(bytes('or', 0xa0, 'der'))).status, 400, 'a byte 0x80-0xFF inside the key too');
  });

  t.test('other keys that are not the documented characters', async (t) => {
    t.equal((await reserve(bytes('or', 0x09, 'der'))).status, 400, 'a tab inside the key');
    t.equal((await reserve('or der')).status, 400, 'a space inside the key');
    t.equal((await reserve('k'.repeat(201))).status, 400, '201 characters');
    t.equal((await reserve('k'.repeat(200))).status, 201, '200 characters pass');
    t.equal((await reserve(null, { 'Idempotency-Key': 'dup-a', 'idempotency-key': 'dup-b' })).status, 400, 'two Idempotency-Key lines');
    const missing = await reserve(null);
    t.equal(missing.status, 400, 'no key: the service answers its own 400');
  });

  t.test('spaces and tabs around a key are not part of it (RFC 9110 5.5): the same key, the same reservation', async (t) => {
    const first = await reserve('around');
    t.equal(first.status, 201);
    const id = (JSON.parse(first.body.toString()) as { reservationId: string }).reservationId;
    for (const padded of [bytes(0x20, 'around'), bytes('around', 0x20), bytes(0x09, 'around', 0x09), bytes(0x20, 0x09, 'around', 0x09, 0x20)]) {
      const res = await reserve(padded);
      t.equal(res.status, 201, `${JSON.stringify(padded.toString('latin1'))}: replayed`);
      t.equal((JSON.parse(res.body.toString()) as { reservationId: string }).reservationId, id, 'the reservation of `around`');
    }
  });

  t.test('/metrics and /v1/admin are not on the public frontend', async (t) => {
    for (const p of ['/metrics', '/metrics/', '/v1/admin/skus/EDGE', '/v1/admin/cluster', '/v1/admin']) {
      const res = await rawRequest(publicUrl, 'GET', p, { authorization: `Bearer ${api.token('x')}` });
      t.equal(res.status, 404, `GET ${p}: 404 at the edge`);
    }
    const put = await rawRequest(publicUrl, 'PUT', '/v1/admin/skus/EDGE2', { 'content-type': 'application/json' }, '{"stock":1}');
    t.equal(put.status, 404, 'PUT /v1/admin/skus: 404 at the edge');
    t.equal((await rawRequest(publicUrl, 'GET', '/v1/skus/EDGE')).status, 200, 'the public API still passes');
  });

  t.test('the admin frontend serves /v1/admin only', async (t) => {
    const sku = JSON.stringify({ stock: 1, perShopperLimit: 1, holdSeconds: 60, priceCents: 100, currency: 'USD' });
    const json = { 'content-type': 'application/json' };
    const admin = await rawRequest(adminUrl, 'PUT', '/v1/admin/skus/EDGE-ADMIN', { ...json, authorization: `Bearer ${adminToken}` }, sku);
    t.equal(admin.status, 201, 'PUT /v1/admin/skus/EDGE-ADMIN reaches the service');
    t.equal((await rawRequest(adminUrl, 'PUT', '/v1/admin/skus/EDGE-ADMIN', json, sku)).status, 401, 'which still wants the admin token');
    t.equal((await rawRequest(adminUrl, 'GET', '/v1/skus/EDGE')).status, 404, 'the public API is not served there');
    t.equal((await rawRequest(adminUrl, 'GET', '/metrics')).status, 404, 'nor /metrics');
  });
}
