import t from 'tap';
import { randomUUID } from 'node:crypto';
import type { Child } from './helpers/child.js';
import { createTestDatabase } from './helpers/db.js';
import { clientFor, type CallResult } from './helpers/service.js';
import { balanced, ownerUrl, reapNodes, sleep, startNode, until } from './helpers/cluster.js';
import { isConnectionLost } from './helpers/fault-load.js';
import { cartIdFor, lineIdFor } from '../src/carts/ids.js';

/**
 * Carts on a 3-node cluster (src/main.ts with CLUSTER_SECRET): lines owned by
 * three different nodes, carts racing through every node, a cart against
 * single reservations for the last unit, then the owner of one line killed
 * mid-cart: after the takeover no half cart, stock conserved, the same answer
 * on retry.
 */

t.setTimeout(300_000);

type Client = ReturnType<typeof clientFor>;
interface Attempt { shopper: string; key: string; items: { sku: string; quantity: number }[]; status: number; body: unknown }

const post = (c: Client, a: Attempt) => c.call('POST', '/v1/carts', { shopper: a.shopper, body: { items: a.items }, headers: { 'idempotency-key': a.key } });

/** One SKU per node: names whose shard each node owns. */
async function skusOnEveryNode(url: string, urls: string[], prefix: string): Promise<string[]> {
  const found = new Map<string, string>();
  for (let i = 0; found.size < urls.length && i < 200; i++) {
    const owner = await ownerUrl(url, `${prefix}${i}`);
    if (owner !== null && !found.has(owner)) found.set(owner, `${prefix}${i}`);
  }
  return urls.map((u) => found.get(u)!);
}

async function linesOf(c: Client, a: Attempt): Promise<string[]> {
  const cartId = cartIdFor(a.shopper, a.key);
  return Promise.all(
    a.items.map(async (item) => {
      const res = await c.call('GET', `/v1/reservations/${lineIdFor(cartId, item.sku)}`, { shopper: a.shopper });
      return res.status === 404 ? 'none' : (res.body.status as string);
    }),
  );
}

t.test('three nodes: racing carts, a cart against singles, the owner of a line killed mid-cart', async (t) => {
  const db = await createTestDatabase(t);
  const nodes: Child[] = [];
  reapNodes(t, nodes);
  for (let i = 0; i < 3; i++) nodes.push(await startNode(db.url, `node${i}`, { RATE_LIMIT_SHOPPER_PER_SECOND: '100000', CART_DECISION_TIMEOUT_MS: '2000' }));
  const urls = nodes.map((n) => n.url);
  const clients = urls.map((url) => clientFor(url));
  await until('three balanced nodes', () => balanced(urls[0]!, 3));

  // Racing carts over SKUs owned by three nodes, sent through all three.
  const race = await skusOnEveryNode(urls[0]!, urls, 'RACE');
  for (const sku of race) t.equal((await clients[0]!.putSku(sku, { stock: 4, perShopperLimit: 100 })).status, 201);
  const attempts: Attempt[] = Array.from({ length: 18 }, (_, i) => ({
    shopper: `racer${i}`, key: randomUUID(), status: 0, body: null,
    items: (i % 3 === 0 ? race : race.filter((_, j) => j !== i % 3)).map((sku) => ({ sku, quantity: 1 + (i % 2) })),
  }));
  const answers = await Promise.all(attempts.map((a, i) => post(clients[i % 3]!, a)));
  const held = new Map(race.map((sku) => [sku, 0]));
  for (const [i, res] of answers.entries()) {
    t.ok(res.status === 201 || (res.status === 409 && res.body.code === 'sold_out'), `201 or 409 sold_out, never 503 (${res.status} ${res.body.code ?? ''})`);
    if (res.status === 201) for (const item of attempts[i]!.items) held.set(item.sku, held.get(item.sku)! + item.quantity);
    const lines = await linesOf(clients[(i + 1) % 3]!, attempts[i]!);
    t.ok(lines.every((s) => (res.status === 201 ? s === 'held' : s === 'none' || s === 'released')), `all or nothing: ${lines.join(', ')}`);
  }
  for (const sku of race) {
    const view = (await clients[1]!.call('GET', `/v1/skus/${sku}`)).body;
    t.equal(view.held, held.get(sku), `${sku}: held = the winning carts' lines`);
    t.equal(view.available + view.held, 4);
  }

  // A cart and single reservations for the last unit, through different nodes.
  const [lastOwner, plenty] = await skusOnEveryNode(urls[0]!, urls, 'LAST');
  await clients[0]!.putSku(lastOwner!, { stock: 1 });
  await clients[0]!.putSku(plenty!, { stock: 100 });
  const contest = await Promise.all([
    post(clients[2]!, { shopper: 'cartshopper', key: randomUUID(), items: [{ sku: plenty!, quantity: 1 }, { sku: lastOwner!, quantity: 1 }], status: 0, body: null }),
    ...[0, 1, 2, 0].map((n, i) => clients[n]!.reserve(lastOwner!, `single${i}`)),
  ]);
  t.equal(contest.filter((r) => r.status === 201).length, 1, 'exactly one winner for the last unit');

  // The owner of one line killed mid-cart; carts go through the two other nodes.
  const kill = await skusOnEveryNode(urls[0]!, urls, 'KILL');
  const stock = 50;
  for (const sku of kill) t.equal((await clients[0]!.putSku(sku, { stock, perShopperLimit: 1000 })).status, 201);
  const victim = nodes[0]!;
  const survivors = [clients[1]!, clients[2]!];
  const flight: Attempt[] = [];
  let stop = false;
  let acknowledged = 0;
  const worker = async (w: number) => {
    for (let n = 0; !stop; n++) {
      const a: Attempt = { shopper: `k${w}-${n}`, key: randomUUID(), items: kill.map((sku) => ({ sku, quantity: 1 })), status: 0, body: null };
      flight.push(a);
      try {
        const res = await post(survivors[n % 2]!, a);
        a.status = res.status;
        a.body = res.body;
        if (res.status === 201) acknowledged += 1;
      } catch (error) {
        if (!isConnectionLost(error)) throw error;
      }
      if (a.status === 503) await sleep(50);
    }
  };
  const workers = Array.from({ length: 6 }, (_, w) => worker(w));
  while (acknowledged < 5) await sleep(5);
  victim.child.kill('SIGKILL');
  await sleep(3_000);
  stop = true;
  await Promise.all(workers);
  t.comment(`${acknowledged} carts held; ${flight.filter((a) => a.status === 503).length} answered 503 during the takeover`);
  for (const a of flight) t.ok([201, 409, 503].includes(a.status), `answered (${a.status})`);

  // Every cart again through a survivor: the same answer (a 503 meant "unknown": now it is decided), and again the same.
  const heldBy = new Map(kill.map((sku) => [sku, 0]));
  for (const a of flight) {
    let retry: CallResult;
    const deadline = Date.now() + 30_000;
    do retry = await post(survivors[0]!, a);
    while (retry.status === 503 && Date.now() < deadline && (await sleep(100), true));
    if (a.status === 201 || a.status === 409) t.same([retry.status, retry.body], [a.status, a.body], 'the same answer on retry');
    else t.ok([201, 409].includes(retry.status), `decided on retry: ${retry.status}`);
    t.same((await post(survivors[1]!, a)).body, retry.body, 'and again the same, through the other node');
    const lines = await linesOf(survivors[1]!, a);
    t.ok(lines.every((s) => (retry.status === 201 ? s === 'held' : s === 'none' || s === 'released')), `no half cart: ${lines.join(', ')}`);
    if (retry.status === 201) for (const sku of kill) heldBy.set(sku, heldBy.get(sku)! + 1);
  }
  for (const sku of kill) {
    const view = (await survivors[0]!.call('GET', `/v1/skus/${sku}`)).body;
    t.equal(view.available + view.held + view.sold, stock, `${sku}: stock conserved`);
    t.equal(view.held, heldBy.get(sku), `${sku}: held = the held carts' lines`);
  }
});
