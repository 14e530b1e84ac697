import t from 'tap';
import net from 'node:net';
import { randomUUID } from 'node:crypto';
import pino from 'pino';
import { Redis } from 'ioredis';
import { spawnRedis } from './helpers/redis.js';
import { freePort } from './helpers/net.js';
import { skipBecause } from './helpers/skip.js';
import { waitUntil } from './helpers/waits.js';
import { createStockFeed } from '../src/ws/fanout.js';
import type { StockState } from '../src/inventory/inventory.js';

/**
 * The feed subscribes itself on every reconnect (ioredis 5's own re-subscribe
 * has no rejection handler). A proxy between the feed and a real redis-server
 * swallows SUBSCRIBEs on demand and cuts connections: a re-SUBSCRIBE lost with
 * its connection must not lose the subscription.
 */

interface Proxy {
  url: string;
  swallowSubscribe: boolean;
  /** SUBSCRIBEs swallowed so far. */
  swallowed: number;
  cutAll(): void;
  close(): Promise<void>;
}

async function startProxy(target: number): Promise<Proxy> {
  const port = await freePort();
  const sockets = new Set<net.Socket>();
  const proxy: Proxy = {
    url: `redis://127.0.0.1:${port}`,
    swallowSubscribe: false,
    swallowed: 0,
    cutAll: () => {
      for (const socket of sockets) socket.destroy();
      sockets.clear();
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
  const server = net.createServer((client) => {
    const upstream = net.connect(target, '127.0.0.1');
    sockets.add(client).add(upstream);
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.on('data', (chunk: Buffer) => {
      if (proxy.swallowSubscribe && /subscribe/i.test(chunk.toString('latin1'))) {
        proxy.swallowed += 1;
        return;
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => client.write(chunk));
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', () => resolve()));
  return proxy;
}

t.test('a subscriber dropped again during its re-SUBSCRIBE: the subscription comes back', async (t) => {
  const redis = await spawnRedis(t);
  if (redis === null) {
    skipBecause(t, 'no redis-server on PATH: the reconnect path was not tested');
    return;
  }
  const proxy = await startProxy(Number(new URL(redis.url).port));
  t.teardown(() => proxy.close());
  const channel = `flashstock:test:${randomUUID()}`;
  const delivered: StockState[] = [];
  const feed = createStockFeed({
    readLocal: () => null,
    deliver: (state) => delivered.push(state),
    coalesceMs: 10,
    log: pino({ level: 'silent' }),
    redisUrl: proxy.url,
    channel,
  });
  t.teardown(() => feed.close());
  await waitUntil(t, 'the feed connected', () => feed.stats.redis === 'up');

  // The connections drop; their re-SUBSCRIBE is swallowed (in flight forever) and they drop again.
  proxy.swallowSubscribe = true;
  proxy.cutAll();
  await waitUntil(t, 'the feed saw the drop', () => feed.stats.redis === 'down');
  // Reconnected, its re-SUBSCRIBE in flight (and the feed not up: up means subscribed).
  await waitUntil(t, 'the re-SUBSCRIBE reached the proxy', () => proxy.swallowed > 0);
  t.equal(feed.stats.redis, 'down', 'not up before the SUBSCRIBE is answered');
  proxy.cutAll();
  proxy.swallowSubscribe = false;
  await waitUntil(t, 'the feed reconnected again', () => feed.stats.redis === 'up');

  // Subscribed again: a state another node publishes is delivered here.
  const other = new Redis(redis.url);
  t.teardown(() => other.disconnect());
  const state: StockState = { sku: 'RESUB', available: 3, held: 0, sold: 0, seq: 7 };
  await waitUntil(t, 'a published state arrives', async () => {
    await other.publish(channel, JSON.stringify({ o: 'other-node', s: state }));
    await new Promise((resolve) => setTimeout(resolve, 50));
    return delivered.some((d) => d.sku === 'RESUB');
  });
  t.match(delivered.find((d) => d.sku === 'RESUB'), state);
});
