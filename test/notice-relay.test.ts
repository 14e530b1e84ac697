import t from 'tap';
import type { StockState } from '../src/inventory/inventory.js';
import { NoticeRelay } from '../src/threads/notice-relay.js';

/** src/threads/notice-relay.ts: a SKU's stock goes to the front-end threads that follow it; everything else to all. */

const state = (sku: string, seq: number): StockState => ({ sku, available: 10 - seq, held: seq, sold: 0, seq });

t.test('stock and passivation to the threads that follow the SKU, other notices to every thread', async (t) => {
  const latest = new Map<string, StockState>([['A', state('A', 3)]]);
  const relay = new NoticeRelay((sku) => latest.get(sku) ?? null);
  const stockA = { type: 'stock', state: state('A', 4) } as const;
  t.same([relay.relays(0, stockA), relay.relays(1, stockA)], [false, false], 'nobody follows A yet: no thread is sent its stock');

  t.same(relay.follow(1, 'A', true), { type: 'stock', state: state('A', 3) }, 'a thread that starts following A is sent the latest counts here');
  t.same([relay.relays(0, stockA), relay.relays(1, stockA)], [false, true], 'then only it gets A');
  t.same([relay.relays(0, { type: 'passivated', sku: 'A' }), relay.relays(1, { type: 'passivated', sku: 'A' })], [false, true]);
  t.equal(relay.follow(0, 'B', true), null, 'a SKU with no counts here: nothing to send at once');

  const offer = { type: 'checkout_durable', orderId: 'o-1' } as const;
  t.same([relay.relays(0, offer), relay.relays(1, offer)], [true, true], 'a checkout wake-up (and a waitlist offer) goes to every thread');

  t.equal(relay.follow(1, 'A', false), null);
  t.notOk(relay.relays(1, stockA), 'a SKU let go is no longer relayed');
  t.equal(relay.follow(5, 'Z', false), null, 'letting go of a SKU a thread never followed changes nothing');
  t.notOk(relay.relays(5, { type: 'stock', state: state('Z', 1) }));
});
