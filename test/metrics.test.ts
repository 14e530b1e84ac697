import t from 'tap';
import { randomUUID } from 'node:crypto';
import { startTestService } from './helpers/service.js';
import { connectStream } from './helpers/stream-client.js';

/** `GET /metrics`: names, bounded labels, and the numbers following what the service did. */

const api = await startTestService(t, { rateLimitShopperPerSecond: 1000 });
const { call, putSku, reserve } = api;

/** One sample's value from the exposition text, or null when absent. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | null {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/.exec(line);
    if (match === null || match[1] !== name) continue;
    const got = Object.fromEntries([...(match[3] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(match[4]);
  }
  return null;
}

async function scrape(): Promise<string> {
  const res = await fetch(`${api.metricsUrl}/metrics`);
  t.equal(res.status, 200);
  t.match(res.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
  return res.text();
}

t.test('exposition: default Node metrics and every flashstock metric', async (t) => {
  const text = await scrape();
  for (const name of [
    'nodejs_eventloop_lag_seconds',
    'nodejs_heap_size_used_bytes',
    'process_cpu_seconds_total',
    'flashstock_pending_events',
    'flashstock_pg_pool_connections',
    'flashstock_pg_pool_idle_connections',
    'flashstock_pg_pool_waiting_clients',
    'flashstock_ws_connections',
    'flashstock_ws_lagging_connections',
    'flashstock_ready',
  ]) {
    t.not(sample(text, name), null, `${name} has a sample`);
  }
  t.equal(sample(text, 'flashstock_payment_breaker_state', { state: 'closed' }), 1, 'breaker closed by default');
  t.equal(sample(text, 'flashstock_payment_breaker_state', { state: 'open' }), 0);
  t.equal(sample(text, 'flashstock_ready'), 1);
  t.not(sample(text, 'flashstock_payment_queue_jobs', { queue: 'payment-finalize' }), null, 'queue depth sampled');
  t.equal(sample(text, 'flashstock_ws_redis_up'), null, 'no Redis fan-out: no sample');
  t.equal(sample(text, 'flashstock_cluster_forward_frames_total'), null, 'a node running alone forwards nothing: no sample, as for the other cluster metrics');
  t.not(sample(text, 'flashstock_live_holds'), null, 'live holds are reported by the shards');
  t.not(sample(text, 'flashstock_snapshots_written'), null, 'snapshots written are reported by the shards');
  for (const line of text.split('\n').filter((l) => l.startsWith('# TYPE flashstock_'))) {
    const [, , name, type] = line.split(' ');
    if (type === 'counter') t.match(name, /_total$/, `${name}: counters end in _total`);
  }
});

t.test('reservations, commits and HTTP requests are counted with bounded labels', async (t) => {
  t.equal((await putSku('MET-1', { stock: 2, perShopperLimit: 5 })).status, 201);
  const key = randomUUID();
  t.equal((await reserve('MET-1', 'met-a', 1, key)).status, 201);
  t.equal((await reserve('MET-1', 'met-a', 1, key)).status, 201, 'replay');
  t.equal((await reserve('MET-1', 'met-b', 1)).status, 201);
  t.equal((await reserve('MET-1', 'met-c', 1)).status, 409, 'sold out');
  t.equal((await reserve('NOPE', 'met-c', 1)).status, 404);
  // Raw URLs never become labels: many unknown paths share one series.
  for (let i = 0; i < 5; i++) t.equal((await call('GET', `/no/such/${randomUUID()}`)).status, 404);
  t.equal((await call('PATCH', '/v1/skus/MET-1')).status, 405);

  const text = await scrape();
  t.ok((sample(text, 'flashstock_allocators') ?? 0) >= 1, 'allocators in memory (from the shard host)');
  t.equal(sample(text, 'flashstock_live_holds'), 2, 'live holds over every SKU in memory');
  t.equal(sample(text, 'flashstock_reservations_total', { outcome: 'created' }), 2);
  t.equal(sample(text, 'flashstock_reservations_total', { outcome: 'replayed' }), 1);
  t.equal(sample(text, 'flashstock_reservations_total', { outcome: 'sold_out' }), 1);
  t.equal(sample(text, 'flashstock_reservations_total', { outcome: 'not_found' }), 1);
  t.equal(
    sample(text, 'flashstock_http_requests_total', { route: '/v1/skus/:sku/reservations', method: 'POST', status: '201' }),
    3,
  );
  t.equal(sample(text, 'flashstock_http_requests_total', { route: 'unmatched', method: 'GET', status: '404' }), 5);
  t.equal(sample(text, 'flashstock_http_requests_total', { route: '/v1/skus/:sku', method: 'PATCH', status: '405' }), 1);
  t.notMatch(text, /no\/such/, 'no raw URL in any label');
  t.ok(
    (sample(text, 'flashstock_http_request_duration_seconds_count', { route: '/v1/skus/:sku/reservations', method: 'POST' }) ?? 0) >= 5,
  );
  t.ok((sample(text, 'flashstock_commit_duration_seconds_count') ?? 0) >= 3, 'commits observed');
  t.ok((sample(text, 'flashstock_commit_batch_events_sum') ?? 0) >= 3, 'batch sizes observed');
});

t.test('stream reservations count too; stream sockets are gauged', async (t) => {
  const client = await connectStream(t, api.url, api.token('met-ws'));
  await putSku('MET-WS', { stock: 5 });
  const reply = await client.request({ type: 'reserve', id: 'r1', sku: 'MET-WS', quantity: 1, idempotencyKey: randomUUID() });
  t.equal(reply.type, 'reservation');
  const text = await scrape();
  t.equal(sample(text, 'flashstock_reservations_total', { outcome: 'created' }), 3);
  t.equal(sample(text, 'flashstock_ws_connections'), 1);
  client.close();
});

t.test('payment jobs by outcome', async (t) => {
  await putSku('MET-PAY', { stock: 5 });
  const held = await reserve('MET-PAY', 'met-pay', 1);
  const checkout = await call('POST', `/v1/reservations/${held.body.reservationId}/checkout`, {
    shopper: 'met-pay',
    body: { paymentMethod: 'pm_ok' },
    headers: { 'idempotency-key': randomUUID() },
  });
  t.equal(checkout.status, 202);
  for (let i = 0; i < 100; i++) {
    const order = await call('GET', `/v1/orders/${checkout.body.orderId}`, { shopper: 'met-pay' });
    if (order.body.status === 'paid') break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  t.equal(sample(await scrape(), 'flashstock_payment_jobs_total', { outcome: 'paid' }), 1);
});

t.test('/metrics has its own listener (METRICS_HOST, default 127.0.0.1), never the public port', async (t) => {
  t.match(api.metricsUrl, /^http:\/\/127\.0\.0\.1:\d+$/, 'bound to 127.0.0.1');
  t.not(new URL(api.metricsUrl).port, new URL(api.url).port);
  const publicAnswer = await fetch(`${api.url}/metrics`);
  t.equal(publicAnswer.status, 404, 'the public port has no /metrics');
  t.notMatch(await publicAnswer.text(), /flashstock_/, 'and shows no sample');
  t.equal((await fetch(`${api.metricsUrl}/v1/skus/MET-1`)).status, 404, 'the metrics listener serves /metrics only');
  t.equal((await fetch(`${api.metricsUrl}/metrics`, { method: 'POST' })).status, 405);
  const head = await fetch(`${api.metricsUrl}/metrics`, { method: 'HEAD' });
  t.equal(head.status, 200, 'HEAD /metrics');
});

t.test('with front-end threads: one listener in the process, every thread summed', async (t) => {
  const threaded = await startTestService(t, { httpThreads: 2, rateLimitShopperPerSecond: 1000 });
  t.equal((await threaded.putSku('MET-T', { stock: 10, perShopperLimit: 10 })).status, 201);
  for (let i = 0; i < 6; i++) t.equal((await threaded.reserve('MET-T', `met-t-${i}`, 1)).status, 201);
  t.equal((await fetch(`${threaded.url}/metrics`)).status, 404, 'no thread serves /metrics on the public port');
  const text = await (await fetch(`${threaded.metricsUrl}/metrics`)).text();
  t.equal(sample(text, 'flashstock_reservations_total', { outcome: 'created' }), 6, 'reservations answered on either thread');
  t.equal(
    sample(text, 'flashstock_http_requests_total', { route: '/v1/skus/:sku/reservations', method: 'POST', status: '201' }),
    6,
    'both threads\' route counters, summed',
  );
});
