import t from 'tap';
import { once } from 'node:events';
import { randomUUID } from 'node:crypto';
import { createTestDatabase } from './helpers/db.js';
import { clientFor } from './helpers/service.js';
import { startChild } from './helpers/child.js';
import { isConnectionLost, waitUntilServing } from './helpers/fault-load.js';
import { cartIdFor, lineIdFor } from '../src/carts/ids.js';
import { shardOf } from '../src/shard/placement.js';
import { shardThreadOf } from '../src/threads/shard-threads.js';

/**
 * The real entry point (src/main.ts) with two shard threads is killed with
 * SIGKILL while carts whose lines span both threads are in flight. After the
 * restart: no half cart (every cart's lines are all held or none is), stock
 * conserved, nothing tentative left, and every shopper's retry with the same
 * key and body gets the same answer (the one they got before the kill, if any).
 */

t.setTimeout(300_000);

const db = await createTestDatabase(t);
const env = { SHARD_THREADS: '2', SHARD_COUNT: '64', HTTP_THREADS: '1', RATE_LIMIT_SHOPPER_PER_SECOND: '100000', RATE_LIMIT_IP_PER_SECOND: '1000000' };
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// SKUs on both shard threads: each cart takes one of each thread, and a third line.
const skus = Array.from({ length: 40 }, (_, i) => `K${i}`);
const byThread = [skus.filter((s) => shardThreadOf(shardOf(s, 64), 2) === 0).slice(0, 3), skus.filter((s) => shardThreadOf(shardOf(s, 64), 2) === 1).slice(0, 3)];
const used = [...byThread[0]!, ...byThread[1]!];
const stock = 60;

interface Attempt {
  shopper: string;
  key: string;
  items: { sku: string; quantity: number }[];
  status: number;
  body: unknown;
}

function itemsFor(i: number) {
  const a = byThread[0]![i % 3]!;
  const b = byThread[1]![(i >> 1) % 3]!;
  const c = i % 2 === 0 ? byThread[0]![((i % 3) + 1) % 3]! : byThread[1]![(((i >> 1) % 3) + 1) % 3]!;
  return [{ sku: a, quantity: 1 }, { sku: b, quantity: 1 + (i % 2) }, { sku: c, quantity: 1 }];
}

t.test('SIGKILL mid-cart with two shard threads: no half cart, stock conserved, the same answer on retry', async (t) => {
  const first = await startChild(db.url, env);
  let api = clientFor(first.url);
  for (const sku of [...used, 'PROBE']) t.equal((await api.putSku(sku, { stock: sku === 'PROBE' ? 1000 : stock, perShopperLimit: 1000 })).status, 201);

  const attempts: Attempt[] = [];
  let acknowledged = 0;
  let stop = false;
  const worker = async (w: number) => {
    for (let n = 0; !stop; n++) {
      const i = w * 10_000 + n;
      const attempt: Attempt = { shopper: `shopper${i % 50}`, key: randomUUID(), items: itemsFor(i), status: 0, body: null };
      attempts.push(attempt);
      try {
        const res = await api.call('POST', '/v1/carts', { shopper: attempt.shopper, body: { items: attempt.items }, headers: { 'idempotency-key': attempt.key } });
        attempt.status = res.status;
        attempt.body = res.body;
        if (res.status === 201) acknowledged += 1;
      } catch (error) {
        if (!isConnectionLost(error)) throw error;
        return; // the process died under this request: no answer
      }
    }
  };
  const workers = Array.from({ length: 24 }, (_, w) => worker(w));
  while (acknowledged < 40) await sleep(5);
  first.child.kill('SIGKILL');
  await once(first.child, 'exit').catch(() => undefined);
  stop = true;
  await Promise.all(workers);
  const unanswered = attempts.filter((a) => a.status === 0).length;
  const tentative = await db.pool.query(
    `SELECT count(*)::int AS n FROM stock_events p WHERE kind = 'cart_prepared'
       AND NOT EXISTS (SELECT 1 FROM stock_events r WHERE r.reservation_id = p.reservation_id AND r.kind IN ('cart_committed', 'cart_aborted'))`,
  );
  t.comment(`killed with ${acknowledged} carts held, ${unanswered} unanswered, ${tentative.rows[0].n} lines tentative in the log`);
  for (const a of attempts) if (a.status !== 0) t.ok([201, 409].includes(a.status), `answered 201 or 409 (${a.status} ${JSON.stringify(a.body)})`);

  const second = await startChild(db.url, env);
  t.teardown(() => second.child.kill('SIGKILL'));
  api = clientFor(second.url);
  await waitUntilServing(api, 'PROBE', 30_000);

  // Every cart again, with the same key and body: the answer it had, or (none) one that stays.
  const heldBy = new Map(used.map((sku) => [sku, 0]));
  for (const a of attempts) {
    const retry = await api.call('POST', '/v1/carts', { shopper: a.shopper, body: { items: a.items }, headers: { 'idempotency-key': a.key } });
    if (a.status !== 0) t.same({ status: retry.status, body: retry.body }, { status: a.status, body: a.body }, 'the same answer on retry');
    else t.ok([201, 409].includes(retry.status), `an unanswered cart is decided: ${retry.status} ${JSON.stringify(retry.body)}`);
    const again = await api.call('POST', '/v1/carts', { shopper: a.shopper, body: { items: a.items }, headers: { 'idempotency-key': a.key } });
    t.same(again.body, retry.body, 'and again the same');
    const cartId = cartIdFor(a.shopper, a.key);
    const statuses = await Promise.all(
      a.items.map(async (item) => {
        const line = await api.call('GET', `/v1/reservations/${lineIdFor(cartId, item.sku)}`, { shopper: a.shopper });
        return line.status === 404 ? 'none' : (line.body.status as string);
      }),
    );
    const won = retry.status === 201;
    t.ok(statuses.every((s) => (won ? s === 'held' : s === 'none' || s === 'released')), `no half cart: ${won ? 'held' : 'refused'} cart's lines are ${statuses.join(', ')}`);
    if (won) for (const item of a.items) heldBy.set(item.sku, heldBy.get(item.sku)! + item.quantity);
  }
  const left = await db.pool.query(
    `SELECT count(*)::int AS n FROM stock_events p WHERE kind = 'cart_prepared'
       AND NOT EXISTS (SELECT 1 FROM stock_events r WHERE r.reservation_id = p.reservation_id AND r.kind IN ('cart_committed', 'cart_aborted'))`,
  );
  t.equal(left.rows[0].n, 0, 'every tentative line is resolved');
  for (const sku of used) {
    const view = (await api.call('GET', `/v1/skus/${sku}`)).body;
    t.equal(view.available + view.held + view.sold, stock, `${sku}: stock conserved`);
    t.equal(view.held, heldBy.get(sku), `${sku}: held = the held carts' lines`);
  }
  second.child.kill('SIGTERM');
  t.equal((await once(second.child, 'exit'))[0], 0, 'clean shutdown');
});
