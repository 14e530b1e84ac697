import t from 'tap';
import net from 'node:net';
import { AUTH_HEADER, signUpgrade, UpgradeVerifier } from '../src/cluster/auth.js';
import { defaultTransportLimits, ForwardClient, type ForwardHandler, type TransportLimits } from '../src/cluster/transport.js';
import type { SkuView } from '../src/inventory/inventory.js';
import type { ShardRequest } from '../src/shard/messages.js';
import { shardOf } from '../src/shard/placement.js';
import type { ForwardResult, PeerNotice } from '../src/shard/protocol.js';
import { testLog } from './helpers/db.js';
import { clusterUpgradeStatus as upgradeStatus, SHARDS, sleep, until } from './helpers/cluster.js';
import { CLUSTER_TEST_SECRET, startEndpoint } from './helpers/cluster-endpoint.js';

const SECRET = CLUSTER_TEST_SECRET;
const startServer = startEndpoint;

function client(peerUrl: string, limits: Partial<TransportLimits> = {}, secret = SECRET): ForwardClient {
  return new ForwardClient({ secret, selfNodeId: 'caller', peerUrl, limits: { ...defaultTransportLimits, ...limits }, log: testLog });
}

/** A shard's answer to get_sku: a view of that SKU whose `stock` is `n` (so a test can tell replies apart). */
function view(sku: string, n = 0): SkuView {
  return { sku, state: 'on_sale', stock: n, available: n, held: 0, sold: 0, perShopperLimit: 1, holdSeconds: 60, priceCents: 100, currency: 'EUR', startsAt: null, endsAt: null };
}

/** get_sku of `sku`, to forward to its shard. */
function getSku(sku: string): [number, ShardRequest] {
  return [shardOf(sku, SHARDS), { type: 'get_sku', sku }];
}

/** Every request answered with a view of its SKU; the SKU `n-<number>` gets that number as its stock. */
const echo: ForwardHandler = async (_shard, request) => {
  const sku = 'sku' in request ? request.sku : 'none';
  return { ok: true, payload: { ok: true, value: view(sku, Number(/^n-(\d+)$/.exec(sku)?.[1] ?? 0)) } };
};

/** A live-stock notice as it travels: `sku` at `v` (epoch and seq). */
function stockNotice(sku: string, v: number): PeerNotice {
  return { e: v, n: { type: 'stock', state: { sku, available: v, held: 0, sold: 0, seq: v } } };
}

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
  const refused = await bad.forward(...getSku('x'));
  t.same(refused.ok, false);
  t.equal((refused as { code: string }).code, 'unavailable', 'a client with the wrong secret gets unavailable, nothing executed');
});

t.test('an asynchronous token check (a front-end thread asks its main thread): accepted, refused, failed', async (t) => {
  let failing = false;
  const server = await startServer(echo, {}, {
    check: async (verifier, token) => {
      await sleep(20);
      if (failing) throw new Error('the main thread is gone');
      return verifier.verify(token, Date.now());
    },
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
  t.same(await good.forward(...getSku('x')), { ok: true, payload: { ok: true, value: view('x') } }, 'commands flow over a connection let in asynchronously');
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
  const refusedShard = shardOf('REFUSED', SHARDS);
  const server = await startServer(async (shard, request) =>
    'sku' in request && request.sku === 'REFUSED' ? { ok: false, code: 'unavailable', detail: `not the owner of shard ${shard}` } : echo(shard, request),
  );
  t.teardown(server.stop);
  const c = client(server.url, { maxBatch: 100 });
  t.teardown(() => c.close());

  const results = await Promise.all(Array.from({ length: 500 }, (_, i) => c.forward(...getSku(`n-${i}`))));
  const bad = results.findIndex((r, i) => !(r.ok && JSON.stringify(r.payload) === JSON.stringify({ ok: true, value: view(`n-${i}`, i) })));
  if (bad >= 0) t.comment(JSON.stringify(results[bad]), bad);
  t.ok(bad === -1,
    'every reply went back to its caller');
  t.equal(c.stats.sent, 500);
  t.equal(c.stats.frames, 5, '500 requests of one turn went in 5 frames of 100');
  t.equal(c.inFlight, 0);

  const refused = await c.forward(...getSku('REFUSED'));
  t.same(refused, { ok: false, code: 'unavailable', detail: `not the owner of shard ${refusedShard}` }, "the owner's refusal is relayed as is");
  t.equal(server.endpoint.connections(), 1, 'one persistent connection');
});

t.test('bounded in flight, timeouts and dropped connections', async (t) => {
  const held: (() => void)[] = [];
  const server = await startServer(
    (shard, request) =>
      new Promise<ForwardResult>((resolve) => {
        const sku = 'sku' in request ? request.sku : '';
        if (sku.startsWith('now')) return resolve(echo(shard, request));
        if (sku.startsWith('held')) held.push(() => resolve(echo(shard, request)));
        // 'hang…': never answers
      }),
  );
  t.teardown(server.stop);
  const c = client(server.url, { maxInFlight: 4, requestTimeoutMs: 300 });
  t.teardown(() => c.close());

  const slow = [1, 2, 3, 4].map((n) => c.forward(...getSku(`held-${n}`)));
  const over = await c.forward(...getSku('held-5'));
  t.same(over, { ok: false, code: 'unavailable', detail: 'too many forwarded requests in flight' }, 'past the bound: refused at once');
  await new Promise((r) => setTimeout(r, 50));
  for (const release of held.splice(0)) release();
  t.same((await Promise.all(slow)).map((r) => r.ok), [true, true, true, true]);

  const started = Date.now();
  const hung = await c.forward(...getSku('hang-x'));
  t.equal((hung as { code: string }).code, 'unknown_outcome', 'a sent request past its timeout: outcome unknown');
  t.ok(Date.now() - started >= 300 && Date.now() - started < 2_000, 'answered about the timeout');

  const inFlight = c.forward(...getSku('hang-y'));
  await new Promise((r) => setTimeout(r, 50));
  server.endpoint.close();
  t.same(await inFlight, { ok: false, code: 'unknown_outcome', detail: 'connection to the owner closed before it replied' });
  server.stop();
  const unreachable = await c.forward(...getSku('now-z'));
  t.equal((unreachable as { code: string }).code, 'unavailable', 'no connection: unavailable, certainly not executed');
});

/** A TCP relay in front of a server that can stop reading from its clients, so their sockets back up. */
async function relay(target: string): Promise<{ url: string; pause(): void; resume(): void; close(): void }> {
  const port = Number(new URL(target).port);
  const links: { client: net.Socket; upstream: net.Socket }[] = [];
  let paused = false;
  const server = net.createServer((client) => {
    const upstream = net.connect(port, '127.0.0.1');
    upstream.pipe(client);
    if (!paused) client.pipe(upstream);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
    links.push({ client, upstream });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    pause: () => {
      paused = true;
      for (const { client, upstream } of links) {
        client.unpipe(upstream);
        client.pause();
      }
    },
    resume: () => {
      paused = false;
      for (const { client, upstream } of links) client.pipe(upstream);
    },
    close: () => {
      for (const { client, upstream } of links) {
        client.destroy();
        upstream.destroy();
      }
      server.close();
    },
  };
}

t.test('notices: one frame per turn, latest per key while the peer is backpressured, bounded', async (t) => {
  const received: { k: string; v: number }[] = [];
  let frames = 0;
  let relayUrl = '';
  const server = await startServer(echo, {}, {
    selfUrl: () => relayUrl,
    onNotes: (_peer, notices) => {
      frames += 1;
      for (const notice of notices) if ('n' in notice) received.push({ k: notice.n.type === 'stock' ? notice.n.state.sku : '?', v: notice.e });
    },
  });
  t.teardown(server.stop);
  const proxy = await relay(server.url);
  relayUrl = proxy.url;
  t.teardown(proxy.close);
  const c = client(proxy.url, { maxPendingNotices: 50, maxNoticeBufferedBytes: 256 * 1024, noticeRetryMs: 10 });
  t.teardown(() => c.close());

  c.push('a', stockNotice('a', 1));
  c.push('b', stockNotice('b', 1));
  c.push('a', stockNotice('a', 2));
  await until('the first frame', async () => (frames >= 1 ? true : null));
  t.same(received, [{ k: 'b', v: 1 }, { k: 'a', v: 2 }], 'one frame; a key pushed twice in a turn travels once, latest');
  t.equal(c.noticeStats.coalesced, 1);

  // The peer stops reading: push big notices until the socket's buffer passes the bound.
  proxy.pause();
  const big = 'x'.repeat(64 * 1024);
  for (let round = 0; c.noticeStats.heldBack === 0; round++) {
    if (round > 2_000) throw new Error('the socket never backed up');
    // `big` is not part of a notice: it fills the socket, and the peer's decoder leaves it out.
    for (let k = 0; k < 10; k++) c.push(`k${k}`, { ...stockNotice(`k${k}`, round), big } as PeerNotice);
    await sleep(5);
  }
  const sentBefore = c.noticeStats.sent;
  for (let v = 1_000; v < 1_100; v++) for (let k = 0; k < 10; k++) c.push(`k${k}`, stockNotice(`k${k}`, v));
  await sleep(50);
  t.equal(c.noticeStats.sent, sentBefore, 'nothing more is written to a backpressured socket');
  t.ok(c.pendingNotices <= 10, `1,000 notices of 10 keys wait as at most 10 (${c.pendingNotices})`);
  const droppedBefore = c.noticeStats.dropped;
  for (let n = 0; n < 100; n++) c.push(`new${n}`, stockNotice(`new${n}`, n));
  t.equal(c.pendingNotices, 50, 'at most maxPendingNotices keys wait');
  t.equal(c.noticeStats.dropped - droppedBefore, 100 - (50 - 10), 'new keys past the bound are dropped and counted');

  proxy.resume();
  await until('every waiting notice sent', async () => (c.pendingNotices === 0 && received.some((m) => m.k === 'new39') ? true : null));
  for (let k = 0; k < 10; k++) {
    const last = received.filter((m) => m.k === `k${k}`).at(-1);
    t.equal(last?.v, 1_099, `the peer ends on the latest notice of k${k}`);
  }
  t.notOk(received.some((m) => m.k === 'new40'), 'a dropped notice never arrives');

  const nowhere = client('http://127.0.0.1:1', { connectTimeoutMs: 500 });
  t.teardown(() => nowhere.close());
  nowhere.push('x', stockNotice('x', 1));
  await until('the notice to an unreachable peer is dropped', async () => (nowhere.noticeStats.dropped === 1 ? true : null));
  t.equal(nowhere.pendingNotices, 0, 'no connection: nothing waits');
});
