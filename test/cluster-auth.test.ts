import t from 'tap';
import fc from 'fast-check';
import { encodeNodeId, signUpgrade, UpgradeVerifier } from '../src/cluster/auth.js';

/**
 * The cluster upgrade token `v1.<node>.<time>.<nonce>.<mac>` with node ids an
 * operator (or an attacker) may pick: the default id is the advertised
 * host:port, so dots, colons and IPv6 brackets are the common case.
 */

const SECRET = 'Zq3vN8xR2pL7tY5wK1mJ9cH4bF6gD0sAe8Wn5Lq2Vx7Rt4Yp';
const AUDIENCE = 'http://10.0.0.7:8080';

const hostile = [
  '127.0.0.1:8080',
  '[::1]:8080',
  '[fe80::1%25eth0]:8080',
  'node-0.flashstock.default.svc.cluster.local:8080',
  'a.b.c.d.e.f',
  '.',
  '..',
  'v1.x.1.2.3',
  '%2E',
  '%',
  '%%41',
  'a b\tc',
  'line\nbreak',
  '/slash/?query=1&x#hash',
  "quote'\"`!()*~",
  'ünïcødé',
  '节点一',
  '🚀.🚀',
  'x'.repeat(1_000),
];

t.test('ids with dots, colons, brackets and any printable characters round-trip', async (t) => {
  const verifier = new UpgradeVerifier(SECRET, AUDIENCE, 30_000, 1_000);
  for (const id of hostile) {
    const token = signUpgrade(SECRET, id, AUDIENCE, 1_000);
    t.equal(token.split('.').length, 5, `five fields for ${JSON.stringify(id).slice(0, 40)}`);
    t.same(verifier.verify(token, 1_000), { ok: true, nodeId: id }, `let in as itself: ${JSON.stringify(id).slice(0, 40)}`);
  }
});

t.test('property: every well-formed id is let in as itself, once', async (t) => {
  const verifier = new UpgradeVerifier(SECRET, AUDIENCE, 30_000, 100_000);
  fc.assert(
    fc.property(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 40 }), (id) => {
      const token = signUpgrade(SECRET, id, AUDIENCE, 5_000);
      const first = verifier.verify(token, 5_000);
      const again = verifier.verify(token, 5_000);
      return first.ok && first.nodeId === id && !again.ok && again.reason === 'token replayed';
    }),
    { numRuns: 500 },
  );
  t.pass('500 random ids round-tripped');
});

t.test('an id cannot be swapped for another under the same signature', async (t) => {
  const verifier = new UpgradeVerifier(SECRET, AUDIENCE, 30_000, 1_000);
  const [version, , time, nonce, mac] = signUpgrade(SECRET, '127.0.0.1:8080', AUDIENCE, 1_000).split('.');
  for (const other of ['127.0.0.1:8081', '127.0.0.1', 'evil']) {
    const forged = [version, encodeNodeId(other), time, nonce, mac].join('.');
    t.match(verifier.verify(forged, 1_000), { ok: false, reason: /bad signature/ }, `not let in as ${other}`);
  }
  t.match(verifier.verify(['v1', '', time, nonce, mac].join('.'), 1_000), { ok: false, reason: 'malformed node id' }, 'an empty id');
});

t.test('ids without special characters encode as before (older nodes agree)', async (t) => {
  for (const id of ['node0', 'node-1_a', 'Node~2']) t.equal(encodeNodeId(id), encodeURIComponent(id));
  t.equal(encodeNodeId('10.0.0.7:8080'), '10%2E0%2E0%2E7%3A8080', 'a dotted id is still percent-encoding an older node decodes');
  t.equal(decodeURIComponent(encodeNodeId('[::1]:80')), '[::1]:80');
});
