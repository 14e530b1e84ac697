import t from 'tap';
import { startTestService } from './helpers/service.js';
import { connectStream, type Message, type StreamClient } from './helpers/stream-client.js';
import { manualClock } from './helpers/clock.js';

/**
 * Slow consumers: a socket that stops reading must not grow the server's
 * memory, must be closed if it stays behind, and must not slow anyone else; one
 * that catches up gets just the latest state of each SKU.
 *
 * The stream's clock is the test's (frontEndNowMs) and stands still unless the
 * test moves it: the slow-consumer timeout passes exactly when the test says,
 * however slow the machine. (The message rate is set far above anything a
 * client here sends, above WS_MAX_MESSAGES_PER_SECOND's range: a clock standing
 * still refills no token bucket, and none may run dry.)
 */

const boundBytes = 16 * 1024;
const timeoutMs = 2500;
const clock = manualClock();
const api = await startTestService(
  t,
  {
    wsMaxBackpressureBytes: boundBytes,
    wsBackpressureTimeoutMs: timeoutMs,
    wsMaxSubscriptions: 50,
    wsMaxMessagesPerSecond: 1_000_000,
  },
  { frontEndNowMs: clock.nowMs },
);
const live = api.service.live!;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Poll `done` until it holds or 30 s pass (the machine may be loaded); whether it held. */
async function eventually(done: () => boolean | Promise<boolean>): Promise<boolean> {
  const deadline = Date.now() + 30_000;
  while (!(await done())) {
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

/** The last stock message `client` got for `sku`. */
const lastStock = (client: StreamClient, sku: string) =>
  client.log.filter((l) => l.message.type === 'stock' && l.message.sku === sku).at(-1)?.message;

/** Whether `client`'s last stock message of each SKU is the state the service serves now. */
async function current(client: StreamClient, some: string[]): Promise<boolean> {
  for (const sku of some) {
    const view = (await api.call('GET', `/v1/skus/${sku}`)).body;
    const last = lastStock(client, sku);
    if (last === undefined || last.available !== view.available || last.held !== view.held) return false;
  }
  return true;
}

// Long names make each stock frame ~170 bytes, so buffers fill in seconds.
const skus = Array.from({ length: 50 }, (_, i) => `SLOW-${String(i).padStart(2, '0')}-${'x'.repeat(52)}`);
await Promise.all(skus.map((sku) => api.putSku(sku, { stock: 100_000, perShopperLimit: 100_000 })));

/**
 * Stop reading, and keep the server writing to us (re-subscribing answers with
 * every SKU's state, ~8.5 KB a time) until the kernel buffers are full and the
 * server marks the socket lagging. Loopback buffers may grow to tens of MB
 * (net.ipv4.tcp_rmem): asked in batches, so a loaded machine fills them too.
 */
async function stopReadingUntilLagging(client: StreamClient, lagging: number): Promise<number> {
  client.raw.pause();
  const started = Date.now();
  while (live.stats.stream.lagging < lagging) {
    if (Date.now() - started > 60_000) throw new Error(`never lagging: ${JSON.stringify(live.stats.stream)}`);
    for (let i = 0; i < 20; i++) client.send({ type: 'subscribe', skus });
    await sleep(5);
  }
  return Date.now() - started;
}

/** Changes on every SKU, over HTTP, while `run` is true. */
function churn(state: { run: boolean }): Promise<void> {
  return (async () => {
    let n = 0;
    while (state.run) {
      await Promise.all(skus.slice(0, 10).map((sku) => api.reserve(sku, `churn-${n++ % 50}`)));
      await sleep(20);
    }
  })();
}

const stockOf = (sku: string) => (m: Message) => m.type === 'stock' && m.sku === sku;

t.test('a consumer that never reads stays bounded and is closed; others are unaffected', async (t) => {
  const healthy = await connectStream(t, api.url, api.token('healthy'));
  healthy.send({ type: 'subscribe', skus });
  for (const sku of skus) await healthy.take(stockOf(sku));
  const dead = await connectStream(t, api.url);
  dead.send({ type: 'subscribe', skus });
  await sleep(100);

  const churning = { run: true };
  const churned = churn(churning);
  const fillMs = await stopReadingUntilLagging(dead, 1);
  t.comment(`the dead reader went over ${boundBytes} bytes after ${fillMs} ms of traffic`);
  const closedBefore = live.stats.stream.closedSlow;

  // It keeps asking; the server keeps refusing to buffer for it, and the healthy socket keeps working.
  // Real time passes (several sweeps) but the stream's clock does not: nobody is closed yet.
  let reserved = 0;
  const keepAsking = async (rounds: number) => {
    for (let i = 0; i < rounds; i++) {
      dead.send({ type: 'subscribe', skus });
      const reply = await healthy.request({ type: 'reserve', id: `h${reserved}`, sku: skus[0]!, quantity: 1, idempotencyKey: `h${reserved}` }, 30_000);
      t.equal(reply.type, 'reservation', 'the healthy socket reserves meanwhile');
      reserved += 1;
      await sleep(100);
    }
  };
  await keepAsking(10);
  t.equal(live.stats.stream.closedSlow, closedBefore, 'over the bound, but not for WS_BACKPRESSURE_TIMEOUT_MS yet');
  clock.advance(timeoutMs - 1);
  await keepAsking(5);
  t.equal(live.stats.stream.closedSlow, closedBefore, `still open ${timeoutMs - 1} ms after going over the bound`);
  clock.advance(1);
  t.ok(await eventually(() => live.stats.stream.closedSlow !== closedBefore), 'closed by a sweep once WS_BACKPRESSURE_TIMEOUT_MS has passed');
  t.equal(live.stats.stream.closedSlow, closedBefore + 1, 'that one socket');
  const stats = live.stats.stream;
  t.ok(stats.maxBufferedBytesSeen <= stats.hardBackpressureCapBytes, `largest send buffer ${stats.maxBufferedBytesSeen} B ≤ cap ${stats.hardBackpressureCapBytes} B`);
  t.ok(stats.hardBackpressureCapBytes < 1024 * 1024, 'and the cap is small');
  t.ok(await eventually(() => live.stats.stream.connections === 1), 'only the healthy socket is left');

  churning.run = false;
  await churned;
  // The healthy socket ends on the latest state of every SKU.
  t.ok(await eventually(() => current(healthy, skus.slice(0, 10))), 'the healthy socket is current on every churned SKU');
  t.equal(healthy.log.filter((l) => l.message.type === 'error').length, 0, 'and saw no errors');
  dead.raw.resume();
  t.match(await dead.closed, { code: 1006 }, 'the dead reader finds its socket closed');
});

t.test('a consumer that falls behind and catches up gets only the latest state per SKU', async (t) => {
  const slow = await connectStream(t, api.url);
  slow.send({ type: 'subscribe', skus });
  for (const sku of skus) await slow.take(stockOf(sku));
  const resyncsBefore = live.stats.stream.resyncs;
  const churning = { run: true };
  const churned = churn(churning);
  await stopReadingUntilLagging(slow, 1);
  // Everything the socket has buffered was published before this point.
  const seqAtLagging = skus.map((sku) => api.service.inventory.stockState(sku)!.seq);
  // Changes it does not get while lagging: at least four on each churned SKU (by count, not by time).
  t.ok(
    await eventually(() => skus.slice(0, 10).every((sku, i) => api.service.inventory.stockState(sku)!.seq > seqAtLagging[i]! + 3)),
    'every churned SKU changed at least four times while it lagged',
  );
  churning.run = false;
  await churned;
  // Read again (the stream's clock stands still: the timeout cannot pass meanwhile): the backlog drains, then one state per SKU.
  slow.raw.resume();
  t.ok(await eventually(() => live.stats.stream.resyncs > resyncsBefore), 'the server resynced it once drained');
  t.ok(await eventually(() => current(slow, skus.slice(0, 10))), 'it ends on the latest state of every churned SKU');
  t.notOk(slow.isClosed(), 'caught up in time: still open');
  // What it missed while lagging never arrives: after the backlog comes the latest state, nothing in between.
  for (const [i, sku] of skus.slice(0, 10).entries()) {
    const finalSeq = api.service.inventory.stockState(sku)!.seq;
    const between = slow.log.filter((l) => l.message.type === 'stock' && l.message.sku === sku && l.message.seq > seqAtLagging[i]! && l.message.seq < finalSeq);
    t.equal(between.length, 0, `${sku.slice(0, 8)}: none of the ${finalSeq - seqAtLagging[i]! - 1} intermediate states were sent`);
  }
  t.equal(live.stats.stream.lagging, 0, 'no socket lagging any more');
});
