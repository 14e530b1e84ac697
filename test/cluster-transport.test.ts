import t from 'tap';
import uWS from 'uWebSockets.js';
import { AUTH_HEADER, signUpgrade, UpgradeVerifier } from '../src/cluster/auth.js';
import {
  attachClusterEndpoint,
  defaultTransportLimits,
  ForwardClient,
  type ForwardHandler,
  type ForwardResult,
  type TransportLimits,
} from '../src/cluster/transport.js';
import { testLog } from './helpers/db.js';
import { clusterUpgradeStatus as upgradeStatus } from './helpers/cluster.js';

const SECRET = 'cluster-secret-for-tests';

interface Server {
  url: string;
  endpoint: ReturnType<typeof attachClusterEndpoint>;
  stop(): void;
}

/** How the server checks a token, given its verifier (default: at once, as on a node's main thread). */
type Check = (verifier: UpgradeVerifier, token: string) => ReturnType<UpgradeVerifier['verify']> | Promise<ReturnType<UpgradeVerifier['verify']>>;

async function startServer(handle: ForwardHandler, limits: Partial<TransportLimits> = {}, check?: Check): Promise<Server> {
  const app = uWS.App();
  let url = '';
  const verifier = new UpgradeVerifier(SECRET, () => url, 30_000, 10_000);
  const endpoint = attachClusterEndpoint(app, {
    verify: (token) => (check === undefined ? verifier.verify(token, Date.now()) : check(verifier, token)),
    handle,
    limits: { ...defaultTransportLimits, ...limits },
    log: testLog,
  });
  const socket = await new Promise<uWS.us_listen_socket>((resolve, reject) =>
    app.listen('127.0.0.1', 0, (s) => (s ? resolve(s) : reject(new Error('listen failed')))),
  );
  url = `http://127.0.0.1:${uWS.us_socket_local_port(socket)}`;
  let stopped = false;
  return {
    url,
    endpoint,
    // Idempotent: a test may stop the server itself and teardown stops it again; closing a
    // uWS listen socket or app twice can crash the process (the plan then never completes).
    stop: () => {
      if (stopped) return;
      stopped = true;
      endpoint.close();
      uWS.us_listen_socket_close(socket);
      (app as unknown as { close(): void }).close();
    },
  };
}

function client(peerUrl: string, limits: Partial<TransportLimits> = {}, secret = SECRET): ForwardClient {
  return new ForwardClient({ secret, selfNodeId: 'caller', peerUrl, limits: { ...defaultTransportLimits, ...limits }, log: testLog });
}

const echo: ForwardHandler = async (shard, payload) => ({ ok: true, payload: { shard, payload } });

t.test('authentication on the upgrade', async (t) => {
  const server = await startServer(echo);
  t.teardown(server.stop);

  t.equal(await upgradeStatus(server.url, {}), 401, 'no token: refused');
  t.equal(await upgradeStatus(server.url, { [AUTH_HEADER]: signUpgrade('wrong', 'n1', server.url, Date.now()) }), 401, 'wrong secret');
  t.equal(
    await upgradeStatus(server.url, { [AUTH_HEADER]: signUpgrade(SECRET, 'n1', 'http://10.0.0.9:8080', Date.now()) }),
    401,
    'signed for another node',
  );
  t.equal(await upgradeStatus(server.url, { [AUTH_HEADER]: signUpgrade(SECRET, 'n1', server.url, Date.now() - 60_000) }), 401, 'too old');
  const token = signUpgrade(SECRET, 'n1', server.url, Date.now());
  t.equal(await upgradeStatus(server.url, { [AUTH_HEADER]: token }), 101, 'a good token is accepted');
  t.equal(await upgradeStatus(server.url, { [AUTH_HEADER]: token }), 401, 'the same token twice: replay refused');

  const bad = client(server.url, {}, 'not-the-secret');
  t.teardown(() => bad.close());
  const refused = await bad.forward(1, 'x');
  t.same(refused.ok, false);
  t.equal((refused as { code: string }).code, 'unavailable', 'a client with the wrong secret gets unavailable, nothing executed');
});

t.test('an asynchronous token check (a front-end thread asks its main thread): accepted, refused, failed', async (t) => {
  let failing = false;
  const server = await startServer(echo, {}, async (verifier, token) => {
    await new Promise((resolve) => setTimeout(resolve, 20));
    if (failing) throw new Error('the main thread is gone');
    return verifier.verify(token, Date.now());
  });
  t.teardown(server.stop);
  const token = signUpgrade(SECRET, 'n1', server.url, Date.now());
  t.equal(await upgradeStatus(server.url, { [AUTH_HEADER]: token }), 101, 'a good token is accepted after the check');
  t.equal(await upgradeStatus(server.url, { [AUTH_HEADER]: token }), 401, 'replayed: refused');
  t.equal(await upgradeStatus(server.url, {}), 401, 'no token: refused');
  failing = true;
  t.equal(await upgradeStatus(server.url, { [AUTH_HEADER]: signUpgrade(SECRET, 'n1', server.url, Date.now()) }), 503, 'a check that fails: 503, not let in');
  failing = false;
  const good = client(server.url);
  t.teardown(() => good.close());
  t.same(await good.forward(3, 'x'), { ok: true, payload: { shard: 3, payload: 'x' } }, 'commands flow over a connection let in asynchronously');
});

t.test('UpgradeVerifier: malformed tokens and the nonce bound', async (t) => {
  const verifier = new UpgradeVerifier(SECRET, 'http://a', 1_000, 2);
  for (const header of ['', 'v1', 'v2.a.1.b.c', 'v1.%E0%A4%A.1.00000000000000000000000000000000.' + '0'.repeat(64)]) {
    t.equal(verifier.verify(header, 0).ok, false, `refused: ${JSON.stringify(header).slice(0, 40)}`);
  }
  t.same(verifier.verify(signUpgrade(SECRET, 'node/é', 'http://a', 10), 10), { ok: true, nodeId: 'node/é' });
  t.equal(verifier.verify(signUpgrade(SECRET, 'n', 'http://a', 10), 10).ok, true);
  t.same(verifier.verify(signUpgrade(SECRET, 'n', 'http://a', 10), 10), { ok: false, reason: 'too many upgrades in the window' });
  t.equal(verifier.verify(signUpgrade(SECRET, 'n', 'http://a', 5_000), 5_000).ok, true, 'old nonces are pruned after the window');
});

t.test('batching and reply relay', async (t) => {
  const server = await startServer(async (shard, payload) =>
    shard === 13 ? { ok: false, code: 'unavailable', detail: 'not the owner of shard 13' } : { ok: true, payload: { shard, payload } },
  );
  t.teardown(server.stop);
  const c = client(server.url, { maxBatch: 100 });
  t.teardown(() => c.close());

  const results = await Promise.all(Array.from({ length: 500 }, (_, i) => c.forward(i % 13, { n: i, text: 'ünïcødé' })));
  t.ok(results.every((r, i) => r.ok && JSON.stringify(r.payload) === JSON.stringify({ shard: i % 13, payload: { n: i, text: 'ünïcødé' } })),
    'every reply went back to its caller');
  t.equal(c.stats.sent, 500);
  t.equal(c.stats.frames, 5, '500 requests of one turn went in 5 frames of 100');
  t.equal(c.inFlight, 0);

  const refused = await c.forward(13, null);
  t.same(refused, { ok: false, code: 'unavailable', detail: 'not the owner of shard 13' }, "the owner's refusal is relayed as is");
  t.equal(server.endpoint.connections(), 1, 'one persistent connection');
});

t.test('bounded in flight, timeouts and dropped connections', async (t) => {
  const held: (() => void)[] = [];
  const server = await startServer(
    (shard, payload) =>
      new Promise<ForwardResult>((resolve) => {
        if (shard === 0) return resolve({ ok: true, payload });
        if (shard === 1) held.push(() => resolve({ ok: true, payload }));
        // shard 2: never answers
      }),
  );
  t.teardown(server.stop);
  const c = client(server.url, { maxInFlight: 4, requestTimeoutMs: 300 });
  t.teardown(() => c.close());

  const slow = [1, 2, 3, 4].map((n) => c.forward(1, n));
  const over = await c.forward(1, 5);
  t.same(over, { ok: false, code: 'unavailable', detail: 'too many forwarded requests in flight' }, 'past the bound: refused at once');
  await new Promise((r) => setTimeout(r, 50));
  for (const release of held.splice(0)) release();
  t.same((await Promise.all(slow)).map((r) => r.ok), [true, true, true, true]);

  const started = Date.now();
  const hung = await c.forward(2, 'x');
  t.equal((hung as { code: string }).code, 'unknown_outcome', 'a sent request past its timeout: outcome unknown');
  t.ok(Date.now() - started >= 300 && Date.now() - started < 2_000, 'answered about the timeout');

  const inFlight = c.forward(2, 'y');
  await new Promise((r) => setTimeout(r, 50));
  server.endpoint.close();
  t.same(await inFlight, { ok: false, code: 'unknown_outcome', detail: 'connection to the owner closed before it replied' });
  server.stop();
  const unreachable = await c.forward(0, 'z');
  t.equal((unreachable as { code: string }).code, 'unavailable', 'no connection: unavailable, certainly not executed');
});
