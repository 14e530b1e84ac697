import t from 'tap';
import WebSocket from 'ws';
import { AUTH_HEADER, signUpgrade } from '../src/cluster/auth.js';
import { CLUSTER_PATH } from '../src/cluster/transport.js';
import { shardOf } from '../src/shard/placement.js';
import type { Child } from './helpers/child.js';
import { createTestDatabase } from './helpers/db.js';
import { clientFor } from './helpers/service.js';
import { balanced, clusterEnv, reapNodes, SHARDS, startNode, until } from './helpers/cluster.js';

/**
 * A peer that holds the cluster secret but sends what it should not: a real
 * node process (src/main.ts, two front-end threads, so frames reach the
 * threads' endpoints) gets hostile frames on its cluster socket, one
 * connection each. Every one is refused and counted
 * (flashstock_cluster_frames_refused_total{reason}); a request with a usable
 * id is answered `unavailable`; a frame that is not one closes its connection;
 * the node stays up and a reservation through it succeeds afterwards.
 */

t.setTimeout(180_000);

const SKU = 'HOSTILE';
const shard = shardOf(SKU, SHARDS);

interface Sent {
  /** Replies the node sent back on this connection. */
  replies: { id: number; ok: boolean; code?: string }[];
  /** The close code, or null when the connection was still open after the probe's reply. */
  closed: number | null;
}

/** A peer's connection to the node: signed for it, as a node would be. */
function connect(url: string): Promise<WebSocket> {
  const ws = new WebSocket(`${url.replace('http', 'ws')}${CLUSTER_PATH}`, {
    headers: { [AUTH_HEADER]: signUpgrade(clusterEnv.CLUSTER_SECRET, 'evil-peer', url, Date.now()) },
    maxPayload: 64 * 1024 * 1024,
  });
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
  });
}

const probeId = 1_000_000;
/** A good request sent after the hostile frame: its reply says the hostile one was handled (one connection is in order). */
const probe = JSON.stringify({ t: 'req', m: [{ id: probeId, shard, payload: { type: 'get_sku', sku: SKU } }] });

/** Sends one hostile frame on a fresh connection, then the probe; resolves once the probe is answered or the node closed the socket. */
async function send(url: string, frame: string | Buffer, binary = false): Promise<Sent> {
  const ws = await connect(url);
  const sent: Sent = { replies: [], closed: null };
  return new Promise((resolve, reject) => {
    ws.on('message', (data) => {
      const reply = JSON.parse(String(data)) as { t: string; m: Sent['replies'] };
      for (const entry of reply.m) {
        if (entry.id === probeId) {
          ws.close();
          resolve(sent);
          return;
        }
        sent.replies.push(entry);
      }
    });
    ws.once('close', (code) => {
      sent.closed = code;
      resolve(sent);
    });
    ws.once('error', reject);
    ws.send(frame, { binary }, () => ws.send(probe));
  });
}

const reserve = (id: number, fields: Record<string, unknown>, toShard: unknown = shard) =>
  JSON.stringify({ t: 'req', m: [{ id, shard: toShard, payload: { type: 'reserve', sku: SKU, shopperId: 'evil', quantity: 1, idempotencyKey: `k-${id}`, ...fields } }] });

function nested(depth: number): string {
  return '['.repeat(depth) + ']'.repeat(depth);
}

t.test('hostile frames from a peer: refused, counted, never executed; the node keeps serving', async (t) => {
  const db = await createTestDatabase(t);
  const nodes: Child[] = [];
  reapNodes(t, nodes);
  const node = await startNode(db.url, 'target', { HTTP_THREADS: '2' });
  nodes.push(node);
  const client = clientFor(node.url);
  await until('the node owns every shard', () => balanced(node.url, 1));
  t.equal((await client.putSku(SKU, { stock: 10, perShopperLimit: 10 })).status, 201);

  const expected: Record<string, number> = {};
  const count = (reason: string) => (expected[reason] = (expected[reason] ?? 0) + 1);

  // The frame of the defect: an envelope that is null. Counted; the rest of the connection goes on.
  let sent = await send(node.url, '{"t":"req","m":[null]}');
  t.same(sent, { replies: [], closed: null }, 'a null envelope: refused, the connection serves the next request');
  count('envelope');

  for (const [what, frame] of [
    ['null', 'null'],
    ['a number', '42'],
    ['a string', '"req"'],
    ['an array', '[{"t":"req","m":[]}]'],
    ['an unknown frame type', '{"t":"exec","m":[]}'],
    ['m not an array', '{"t":"req","m":{"0":{}}}'],
    ['a reply (callers do not answer)', '{"t":"res","m":[{"id":1,"ok":true,"payload":{"ok":true,"value":{}}}]}'],
    ['deeply nested', nested(100_000)],
  ] as const) {
    sent = await send(node.url, frame);
    t.equal(sent.closed, 1008, `${what}: not a frame, the connection is closed (1008)`);
    count('envelope');
  }
  for (const [what, frame, binary] of [
    ['truncated JSON', '{"t":"req","m":[{"id":1,"shard":', false],
    ['a binary frame', Buffer.from(probe), true],
  ] as const) {
    sent = await send(node.url, frame, binary);
    t.equal(sent.closed, 1008, `${what}: malformed, the connection is closed (1008)`);
    count('malformed');
  }
  sent = await send(node.url, JSON.stringify({ t: 'req', m: new Array(10_001).fill(null) }));
  t.equal(sent.closed, 1008, 'more messages than a frame may carry: closed');
  count('oversized');
  sent = await send(node.url, JSON.stringify({ t: 'note', m: [], pad: 'x'.repeat(16 * 1024 * 1024) }));
  t.not(sent.closed, null, 'a frame over 16 MiB: the connection is closed');
  count('oversized');

  // Requests with an id: each refused alone and answered unavailable (certainly not executed).
  for (const [what, frame, reason] of [
    ['quantity of the wrong type', reserve(1, { quantity: '1' }), 'bad_field'],
    ['a negative quantity', reserve(2, { quantity: -5 }), 'bad_field'],
    ['a SKU that is an object', reserve(3, { sku: { $ne: null } }), 'bad_field'],
    ['a SKU of 10,000 characters', reserve(4, { sku: 'A'.repeat(10_000) }), 'bad_field'],
    ['a SKU nested 100,000 arrays deep', reserve(5, { sku: '$nested' }).replace('"$nested"', nested(100_000)), 'bad_field'],
    ['a shard that does not exist', reserve(6, {}, SHARDS + 3), 'unknown_shard'],
    ['a shard number of the wrong type', reserve(7, {}, String(shard)), 'unknown_shard'],
    ['a SKU of another shard', reserve(8, {}, (shard + 1) % SHARDS), 'wrong_shard'],
    ['an unknown message kind', reserve(9, { type: 'drop_everything' }), 'unknown_kind'],
    ['a payload that is null', JSON.stringify({ t: 'req', m: [{ id: 10, shard, payload: null }] }), 'bad_field'],
  ] as const) {
    sent = await send(node.url, frame);
    t.match(sent, { replies: [{ ok: false, code: 'unavailable' }], closed: null }, `${what}: refused (${reason}), answered unavailable`);
    count(reason);
  }
  sent = await send(node.url, JSON.stringify({ t: 'req', m: [{ id: -1, shard, payload: { type: 'get_sku', sku: SKU } }] }));
  t.same(sent, { replies: [], closed: null }, 'an envelope with no usable id: refused, nothing to answer');
  count('envelope');

  // Notices: bad states and kinds that never travel are refused; a good one in the same frame is delivered.
  const stock = (state: Record<string, unknown>) => ({ e: 1, n: { type: 'stock', state: { sku: SKU, available: 1, held: 0, sold: 0, seq: 1, ...state } } });
  sent = await send(
    node.url,
    JSON.stringify({
      t: 'note',
      m: [
        stock({ available: -5 }),
        stock({ seq: 'one' }),
        stock({ sku: '../etc' }),
        { e: 1, n: { type: 'checkout_durable', orderId: 'x' } },
        { e: -1, n: { type: 'passivated', sku: SKU } },
        null,
      ],
    }),
  );
  t.same(sent, { replies: [], closed: null }, 'bad notices: refused one by one, the connection goes on');
  count('bad_field');
  count('bad_field');
  count('bad_field');
  count('unknown_kind');
  count('bad_field');
  count('envelope');

  t.equal(node.child.exitCode, null, 'the node is still running');
  const reservation = await client.reserve(SKU, 'shopper-after', 2);
  t.equal(reservation.status, 201, 'a reservation through the node succeeds afterwards');
  const logged = await db.pool.query<{ n: string }>(`SELECT count(*) AS n FROM stock_events WHERE sku = $1 AND kind = 'reserved'`, [SKU]);
  t.equal(Number(logged.rows[0]!.n), 1, 'no hostile request was executed: only the shopper reserved');

  const text = await (await fetch(`${node.metricsUrl}/metrics`)).text();
  const refused: Record<string, number> = {};
  for (const match of text.matchAll(/^flashstock_cluster_frames_refused_total\{reason="(\w+)"\} (\d+)$/gm)) {
    if (Number(match[2]) > 0) refused[match[1]!] = Number(match[2]);
  }
  t.same(refused, expected, 'every refusal is counted by its reason (summed over both threads)');
});
