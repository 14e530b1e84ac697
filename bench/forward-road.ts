/**
 * What the road to another node costs, alone: a ForwardClient and a cluster
 * endpoint (src/cluster/transport.ts) in one process over a real loopback
 * WebSocket, the endpoint answering every reservation at once with a
 * constant reply. CPU time and V8 heap bytes per forwarded request, both
 * ends summed (the caller's and the owner's share of one forwarded
 * reservation), closed loop with `--in-flight` requests outstanding.
 *
 *   node --import tsx bench/forward-road.ts [--requests 300000] [--in-flight 256] [--rounds 3]
 *
 * No HTTP, allocator or Postgres: what is measured is what forwarding adds
 * (encode, socket writes and reads, decode and checks on both sides, the
 * pending map, promises). The full cluster figure is `npm run bench --
 * --scenario many-skus --nodes 2 --to-owner --to-others` (bench/README.md).
 */
import { parseArgs } from 'node:util';
import { allocationCounter } from './lib/allocation.js';
import uWS from 'uWebSockets.js';
import { UpgradeVerifier } from '../src/cluster/auth.js';
import { attachClusterEndpoint, defaultTransportLimits, ForwardClient, type ForwardHandler } from '../src/cluster/transport.js';
import { newReservationId, shardOf } from '../src/shard/placement.js';
import type { ShardRequest } from '../src/shard/messages.js';
import type { ForwardResult } from '../src/shard/protocol.js';
import { createLogger } from '../src/log.js';

const { values } = parseArgs({
  options: {
    requests: { type: 'string', default: '300000' },
    'in-flight': { type: 'string', default: '256' },
    rounds: { type: 'string', default: '3' },
  },
});
const requests = Number(values.requests);
const inFlight = Number(values['in-flight']);
const rounds = Number(values.rounds);
const shardCount = 64;
const secret = 'forward-road-bench-secret';
const log = createLogger('silent');

/** The owner's answer to a reservation: a held view of the requested SKU (constant but for the SKU). */
const handle: ForwardHandler = async (_shard, request) => {
  const r = request as Extract<ShardRequest, { type: 'reserve' }>;
  return { ok: true, payload: { ok: true, value: { reservationId: ids[r.sku]!, sku: r.sku, quantity: r.quantity, status: 'held', expiresAt: '2026-12-07T08:00:00.000Z' } } };
};

const skus = Array.from({ length: 64 }, (_, i) => `SKU-${i}`);
const ids: Record<string, string> = Object.fromEntries(skus.map((sku) => [sku, newReservationId(sku)]));
const work = Array.from({ length: 4096 }, (_, i): [number, ShardRequest] => {
  const sku = skus[i % skus.length]!;
  return [shardOf(sku, shardCount), { type: 'reserve', sku, shopperId: `shopper-${i}`, quantity: 1, idempotencyKey: `6c9f1f1e-2b5c-4a53-9d1e-${String(i).padStart(12, '0')}` }];
});

async function start(): Promise<{ url: string; stop: () => void }> {
  const app = uWS.App();
  let url = '';
  const verifier = new UpgradeVerifier(secret, () => url, 30_000, 10_000);
  const endpoint = attachClusterEndpoint(app, {
    verify: (token) => verifier.verify(token, Date.now()),
    handle,
    shardCount,
    limits: { ...defaultTransportLimits, maxInFlight: Math.max(defaultTransportLimits.maxInFlight, inFlight) },
    log,
  });
  const socket = await new Promise<uWS.us_listen_socket>((resolve, reject) => app.listen('127.0.0.1', 0, (s) => (s ? resolve(s) : reject(new Error('listen failed')))));
  url = `http://127.0.0.1:${uWS.us_socket_local_port(socket)}`;
  return {
    url,
    stop: () => {
      endpoint.close();
      uWS.us_listen_socket_close(socket);
    },
  };
}

/** `count` reservations through the road, `inFlight` at a time; resolves when all are answered. */
function drive(client: ForwardClient, count: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let sent = 0;
    let answered = 0;
    const next = (): void => {
      if (sent >= count) return;
      const [shard, request] = work[sent++ % work.length]!;
      client.forward(shard, request).then(onAnswer, reject);
    };
    const onAnswer = (result: ForwardResult): void => {
      if (!result.ok) {
        reject(new Error(`forwarded request failed: ${result.code} ${result.detail}`));
        return;
      }
      answered += 1;
      if (answered === count) resolve();
      else next();
    };
    for (let i = 0; i < Math.min(inFlight, count); i++) next();
  });
}

const server = await start();
const client = new ForwardClient({
  secret,
  selfNodeId: 'bench-caller',
  peerUrl: server.url,
  limits: { ...defaultTransportLimits, maxInFlight: Math.max(defaultTransportLimits.maxInFlight, inFlight) },
  log,
});
const allocated = allocationCounter();
await drive(client, Math.min(requests, 50_000)); // warm-up: connection, JIT
console.log(`forward road: ${requests} reservations per round, ${inFlight} in flight, caller and owner in one process (Node ${process.version})`);
for (let round = 1; round <= rounds; round++) {
  const cpu0 = process.cpuUsage();
  const heap0 = allocated();
  const t0 = performance.now();
  await drive(client, requests);
  const wallMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const heap = allocated() - heap0;
  const cpuUs = (cpu.user + cpu.system) / requests;
  console.log(
    `round ${round}: ${cpuUs.toFixed(2)} µs CPU per forwarded request (user ${(cpu.user / requests).toFixed(2)}, system ${(cpu.system / requests).toFixed(2)}), ` +
      `${Math.round(heap / requests)} heap B per request, ${Math.round(requests / (wallMs / 1000))} requests/s, frames ${client.stats.frames}`,
  );
}
client.close();
server.stop();
