import t from 'tap';
import { Writable } from 'node:stream';
import { defaultTransportLimits, ForwardClient } from '../src/cluster/transport.js';
import { createLogger } from '../src/log.js';
import { startEndpoint } from './helpers/cluster-endpoint.js';
import { freePort } from './helpers/net.js';

/**
 * A node that cannot reach a peer says why, once: not a line per forwarded
 * request. The refusal's reason travels back from the peer that refused.
 */

function capture() {
  const lines: { level: number; msg: string; reason?: string }[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n')) if (line !== '') lines.push(JSON.parse(line) as (typeof lines)[number]);
      done();
    },
  });
  return { lines, log: createLogger('info', 'unreachable-test', stream) };
}

async function forwardInTurns(client: ForwardClient, turns: number): Promise<string[]> {
  const details: string[] = [];
  for (let i = 0; i < turns; i++) {
    const results = await Promise.all([client.forward(0, { type: 'get_sku', sku: `a-${i}` }), client.forward(1, { type: 'get_sku', sku: `b-${i}` })]);
    for (const r of results) details.push(r.ok ? 'ok' : r.detail);
  }
  return details;
}

t.test('a peer refusing our token: one warning naming the reason the peer gave', async (t) => {
  const server = await startEndpoint(async () => ({ ok: true, payload: { ok: false, code: 'not_found', detail: 'no such SKU' } }));
  t.teardown(server.stop);
  const { lines, log } = capture();
  const client = new ForwardClient({ secret: 'a-different-cluster-secret', selfNodeId: '10.0.0.7:8080', peerUrl: server.url, limits: defaultTransportLimits, log });
  t.teardown(() => client.close());
  const details = await forwardInTurns(client, 10);
  t.ok(details.every((d) => d.startsWith('cannot reach the owner')), 'every request answered unavailable');
  const warnings = lines.filter((l) => l.level >= 40);
  t.equal(warnings.length, 1, `one warning for 20 requests (${warnings.length})`);
  t.match(warnings[0], {
    msg: new RegExp(`^cannot reach the peer ${server.url}: it refused the cluster connection: 401 bad signature \\(another CLUSTER_SECRET`),
  });
});

t.test('a peer that is down: one warning, not one per request', async (t) => {
  const port = await freePort();
  const { lines, log } = capture();
  const client = new ForwardClient({ secret: 'x', selfNodeId: 'a', peerUrl: `http://127.0.0.1:${port}`, limits: defaultTransportLimits, log });
  t.teardown(() => client.close());
  await forwardInTurns(client, 5);
  const warnings = lines.filter((l) => l.level >= 40);
  t.equal(warnings.length, 1, 'one warning for 10 requests');
  t.match(warnings[0], { msg: /cannot reach the peer http:\/\/127\.0\.0\.1:\d+: connect ECONNREFUSED/ });
});
