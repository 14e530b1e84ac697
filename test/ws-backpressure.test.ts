import t, { type Test } from 'tap';
import { startTestService } from './helpers/service.js';
import { connectStream, type Message, type StreamClient } from './helpers/stream-client.js';
import { probeTimings } from '../src/ws/stream.js';
import { waitUntil } from './helpers/waits.js';

/**
 * Slow consumers: a socket that stops reading must not grow the server's
 * memory, must be closed if it stays behind, and must not slow anyone else; one
 * that catches up gets just the latest state of each SKU.
 */

const boundBytes = 16 * 1024;
const timeoutMs = 2500;
// The stream's clock (its slow-consumer bound): it moves only when a test moves it.
let streamNowMs = Date.parse('2031-01-01T00:00:00Z');
const api = await startTestService(
  t,
  // The message rate is far above anything a client here sends: a clock standing still refills no token bucket.
  // So is the per-shopper rate limit (its windows are on the same clock): the churn must keep changing stock.
  {
    wsMaxBackpressureBytes: boundBytes,
    wsBackpressureTimeoutMs: timeoutMs,
    wsMaxSubscriptions: 50,
    wsMaxMessagesPerSecond: 1_000_000,
    rateLimitShopperPerSecond: 0,
  },
  { frontEndNowMs: () => streamNowMs },
);
const live = api.service.live!;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves once `n` more sweeps have run (each reads the clock once, at its start). */
async function sweeps(n: number): Promise<void> {
  const target = live.stats.stream.sweeps + n;
  const started = Date.now();
  while (live.stats.stream.sweeps < target) {
    if (Date.now() - started > 20_000) throw new Error('the sweep did not run');
    await sleep(10);
  }
}

// Long names make each stock frame ~170 bytes, so buffers fill in seconds.
const skus = Array.from({ length: 50 }, (_, i) => `SLOW-${String(i).padStart(2, '0')}-${'x'.repeat(52)}`);
for (const sku of skus) await api.putSku(sku, { stock: 100_000, perShopperLimit: 100_000 });

/**
 * Stop reading, and keep the server writing to us (re-subscribing answers with
 * every SKU's state, ~8.5 KB a time) until the kernel buffers are full and the
 * server marks the socket lagging. Full means it stays lagging, without a
 * resync, for `settleMs`: on a loaded machine the kernel can still be moving
 * bytes to the reader when uWS first buffers past the bound, and a buffer that
 * then drains to half is resynced and must be filled again.
 */
async function stopReadingUntilLagging(client: StreamClient, lagging: number): Promise<number> {
  const settleMs = 500;
  client.raw.pause();
  const started = Date.now();
  for (;;) {
    while (live.stats.stream.lagging < lagging) {
      if (Date.now() - started > 30_000) throw new Error(`never lagging: ${JSON.stringify(live.stats.stream)}`);
      client.send({ type: 'subscribe', skus });
      await sleep(5);
    }
    const resyncs = live.stats.stream.resyncs;
    await sleep(settleMs);
    await sweeps(1);
    if (live.stats.stream.lagging >= lagging && live.stats.stream.resyncs === resyncs) return Date.now() - started;
  }
}

/** Resumes reading and checks the server closed the socket (code 1006); bounded: a socket left open fails, never hangs the file. */
async function closedByServer(t: Test, client: StreamClient, what: string): Promise<void> {
  client.raw.resume();
  await waitUntil(t, `${what}: socket closed`, () => client.isClosed(), 10_000);
  t.match(client.isClosed() ? await client.closed : 'still open', { code: 1006 }, what);
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

/**
 * A reader that stops reading, over the bound for one millisecond less than
 * WS_BACKPRESSURE_TIMEOUT_MS on the stream's clock: still open; one more: closed.
 * The reader must stay over the bound through both steps. On a loaded machine
 * the kernel can still take its bytes and drain it to half; the resync then
 * restarts its time over the bound, and such a try shows nothing either way. It
 * is tried again on a fresh socket (the old one left a ping unanswered, which
 * would close it early); at most three tries, and the last one is checked
 * whatever happened.
 */
async function closedWhenLaggingTooLong(t: Test, healthy: StreamClient): Promise<StreamClient> {
  const tries = 3;
  for (let attempt = 1; ; attempt++) {
    const dead = await connectStream(t, api.url);
    dead.send({ type: 'subscribe', skus });
    await sleep(100);
    const fillMs = await stopReadingUntilLagging(dead, 1);
    t.comment(`the dead reader went over ${boundBytes} bytes after ${fillMs} ms of traffic`);
    const closedBefore = live.stats.stream.closedSlow;
    const resyncsBefore = live.stats.stream.resyncs;
    // It keeps asking; the server keeps refusing to buffer for it, and the healthy socket keeps working.
    for (let reserved = 0; reserved < 5; reserved++) {
      dead.send({ type: 'subscribe', skus });
      const id = `h${attempt}-${reserved}`;
      const reply = await healthy.request({ type: 'reserve', id, sku: skus[0]!, quantity: 1, idempotencyKey: id }, 1000);
      t.equal(reply.type, 'reservation', 'the healthy socket reserves meanwhile');
      await sleep(50);
    }
    streamNowMs += timeoutMs - 1;
    await sweeps(2);
    const openBefore = live.stats.stream.closedSlow === closedBefore;
    streamNowMs += 1;
    await sweeps(2);
    if (live.stats.stream.resyncs !== resyncsBefore && attempt < tries) {
      t.comment(`try ${attempt}: the reader drained below half the bound meanwhile; again on a fresh socket`);
      dead.raw.terminate();
      await dead.closed;
      continue;
    }
    t.ok(openBefore, 'not closed before WS_BACKPRESSURE_TIMEOUT_MS');
    t.equal(live.stats.stream.closedSlow, closedBefore + 1, 'closed at WS_BACKPRESSURE_TIMEOUT_MS over the bound');
    return dead;
  }
}

const stockOf = (sku: string) => (m: Message) => m.type === 'stock' && m.sku === sku;

t.test('a consumer that never reads stays bounded and is closed; others are unaffected', async (t) => {
  const healthy = await connectStream(t, api.url, api.token('healthy'));
  healthy.send({ type: 'subscribe', skus });
  for (const sku of skus) await healthy.take(stockOf(sku));
  const churning = { run: true };
  const churned = churn(churning);
  const dead = await closedWhenLaggingTooLong(t, healthy);
  const stats = live.stats.stream;
  t.ok(stats.maxBufferedBytesSeen <= stats.hardBackpressureCapBytes, `largest send buffer ${stats.maxBufferedBytesSeen} B ≤ cap ${stats.hardBackpressureCapBytes} B`);
  t.ok(stats.hardBackpressureCapBytes < 1024 * 1024, 'and the cap is small');
  t.equal(stats.connections, 1, 'only the healthy socket is left');

  churning.run = false;
  await churned;
  // The healthy socket ends on the latest state of every SKU.
  await sleep(300);
  for (const sku of skus.slice(0, 10)) {
    const view = (await api.call('GET', `/v1/skus/${sku}`)).body;
    const last = healthy.log.filter((l) => l.message.type === 'stock' && l.message.sku === sku).at(-1)!.message;
    t.match(last, { available: view.available, held: view.held }, `healthy socket is current on ${sku.slice(0, 8)}`);
  }
  t.equal(healthy.log.filter((l) => l.message.type === 'error').length, 0, 'and saw no errors');
  await closedByServer(t, dead, 'the dead reader finds its socket closed');
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
  // Changes it does not get while lagging.
  await sleep(Math.floor(timeoutMs / 3));
  churning.run = false;
  await churned;
  const skippedChanges = await Promise.all(skus.slice(0, 10).map((sku) => api.call('GET', `/v1/skus/${sku}`)));
  // Read again before the timeout: the backlog drains, then one state per SKU.
  slow.raw.resume();
  // The stream's clock stands still: only the drain's speed is waited for (generously: a loaded machine is slow).
  const deadline = Date.now() + 30_000;
  while (live.stats.stream.resyncs === resyncsBefore && Date.now() < deadline) await sleep(20);
  t.ok(live.stats.stream.resyncs > resyncsBefore, 'the server resynced it once drained');
  await sleep(300);
  t.notOk(slow.isClosed(), 'caught up in time: still open');
  for (const [i, sku] of skus.slice(0, 10).entries()) {
    const last = slow.log.filter((l) => l.message.type === 'stock' && l.message.sku === sku).at(-1)!.message;
    t.match(last, { available: skippedChanges[i]!.body.available, held: skippedChanges[i]!.body.held }, `ends on the latest state of ${sku.slice(0, 8)}`);
  }
  // What it missed while lagging never arrives: after the backlog comes the latest state, nothing in between.
  for (const [i, sku] of skus.slice(0, 10).entries()) {
    const finalSeq = api.service.inventory.stockState(sku)!.seq;
    t.ok(finalSeq > seqAtLagging[i]! + 3, `${sku.slice(0, 8)} changed ${finalSeq - seqAtLagging[i]!} times while lagging`);
    const between = slow.log.filter((l) => l.message.type === 'stock' && l.message.sku === sku && l.message.seq > seqAtLagging[i]! && l.message.seq < finalSeq);
    t.equal(between.length, 0, `${sku.slice(0, 8)}: none of the intermediate states were sent`);
  }
  t.equal(live.stats.stream.lagging, 0, 'no socket lagging any more');
});

t.test('a consumer that stops reading is closed within WS_BACKPRESSURE_TIMEOUT_MS, long before the kernel buffers fill', async (t) => {
  const healthy = await connectStream(t, api.url, api.token('healthy-2'));
  healthy.send({ type: 'subscribe', skus: skus.slice(0, 10) });
  for (const sku of skus.slice(0, 10)) await healthy.take(stockOf(sku));
  const dead = await connectStream(t, api.url);
  dead.send({ type: 'subscribe', skus: skus.slice(0, 10) });
  for (const sku of skus.slice(0, 10)) await dead.take(stockOf(sku));
  const closedBefore = live.stats.stream.closedSlow;
  dead.raw.pause();
  const stoppedAtMs = streamNowMs;
  const { sweepMs } = probeTimings({ backpressureTimeoutMs: timeoutMs });
  // One sweep period of the stream's clock per sweep, a few updates each: kilobytes, nowhere near the kernel's buffers.
  let step = 0;
  while (live.stats.stream.closedSlow === closedBefore && streamNowMs - stoppedAtMs <= 3 * timeoutMs) {
    t.equal((await api.reserve(skus[step % 10]!, `reader-${step % 40}`)).status, 201);
    streamNowMs += sweepMs;
    await sweeps(1);
    step += 1;
  }
  const closedAfterMs = streamNowMs - stoppedAtMs;
  t.equal(live.stats.stream.closedSlow, closedBefore + 1, `the reader that stopped was closed after ${closedAfterMs} ms on the stream's clock`);
  t.ok(closedAfterMs <= timeoutMs, `within WS_BACKPRESSURE_TIMEOUT_MS (${timeoutMs} ms) of its last read`);
  t.equal(live.stats.stream.lagging, 0, 'closed without ever passing the buffer bound: the kernel buffers did not matter');
  t.notOk(healthy.isClosed(), 'the socket that reads (and so answers the probes) is still open');
  const reply = await healthy.request({ type: 'reserve', id: 'after', sku: skus[1]!, quantity: 1, idempotencyKey: 'after-probe' }, 2000);
  t.equal(reply.type, 'reservation', 'and still served');
  await closedByServer(t, dead, 'the reader that stopped finds its socket closed');
});
