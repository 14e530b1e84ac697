import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import type { Config } from '../config.js';
import { createLogger } from '../log.js';
import { startFrontEnd } from '../services/front-end.js';
import { Router } from '../shard/router.js';
import { Metrics } from '../metrics/metrics.js';
import { DropsClient, PaymentsClient } from './payments-client.js';
import { PortChannel } from './port-channel.js';

/**
 * One front-end thread: a uWebSockets.js app on the shared HOST:PORT (the
 * kernel spreads connections over the threads with SO_REUSEPORT) running all
 * of src/http and src/ws, with a Router whose channel is a MessagePort to the
 * shard host on the main thread. Everything it knows came in `workerData` as
 * plain data.
 */
export interface FrontEndThreadData {
  index: number;
  /** The process's configuration, `port` already resolved (PORT=0: the port the first thread got). */
  config: Config;
  adminToken: string;
  jwtSecret: string;
  webhookSecret: string | null;
  /** The shard channel's port (transferred). */
  channelPort: MessagePort;
  shardsReady: boolean;
  maxInFlight: number;
}

/** Main → thread. */
export type ThreadCommand = { type: 'stop_listening' } | { type: 'stop' };
/** Thread → main. */
export type ThreadEvent =
  | { type: 'listening'; port: number }
  | { type: 'fatal'; error: string }
  | { type: 'stopped' };

async function run(): Promise<void> {
  const data = workerData as FrontEndThreadData;
  const control = parentPort!;
  const { config } = data;
  const log = createLogger(config.logLevel).child({ thread: data.index });
  const channel = new PortChannel(data.channelPort, { maxInFlight: data.maxInFlight, shardsReady: data.shardsReady });
  const router = new Router(channel, {
    shardCount: config.shardCount,
    shardsReady: () => channel.shardsReady,
    pool: null,
    legacySku: (reservationId) => channel.call<string | null>('legacySku', [reservationId]),
  });
  const post = (event: ThreadEvent) => control.postMessage(event);
  // This thread's own registry: its routes, rate limits, WebSocket and event loop (README: Front-end threads).
  const metrics = new Metrics();
  const frontEnd = await startFrontEnd({
    config,
    log,
    databaseAlive: () => channel.call<boolean>('databaseAlive', []),
    inventory: router,
    payments: new PaymentsClient(channel, data.webhookSecret),
    drops: new DropsClient(channel),
    metrics,
    adminToken: data.adminToken,
    jwtSecret: data.jwtSecret,
    sharedPort: true,
    // process.exit here would end this thread only: the main thread decides.
    onFatal: (error) => post({ type: 'fatal', error: error instanceof Error ? (error.stack ?? error.message) : String(error) }),
  });
  metrics.provide({ live: () => frontEnd.live!.stats, ready: () => frontEnd.ready() });
  control.on('message', (command: ThreadCommand) => {
    if (command.type === 'stop_listening') frontEnd.stopListening();
    else void stop();
  });
  const stop = async () => {
    frontEnd.stopListening();
    // The shard host has committed and answered (or refused) everything: wait
    // for those replies to reach their sockets before closing them.
    await channel.drained();
    await router.close();
    await frontEnd.stop();
    await channel.close();
    post({ type: 'stopped' });
  };
  post({ type: 'listening', port: frontEnd.port });
}

run().catch((error: unknown) => {
  // Reported to the main thread through the worker's 'error' event.
  throw error;
});
