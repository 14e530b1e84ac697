import type { AdmissionTokens } from '../queue/admission.js';
import type uWS from 'uWebSockets.js';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { ShopperVerifier } from '../auth/auth.js';
import type { Inventory, Outcome, StockState } from '../inventory/inventory.js';
import type { WaitlistView } from '../inventory/waitlist-view.js';
import { createStockFeed, type FeedStats } from './fanout.js';
import { servePage } from './page.js';
import { StockStream, type StreamDependencies, type StreamStats } from './stream.js';
import type { TrustedProxies } from '../ratelimit/client-ip.js';
import type { RateLimits } from '../ratelimit/rate-limits.js';

/**
 * The live side of flashstock on the HTTP app: `/v1/stream` (StockStream), the
 * fan-out of stock changes (in process, or across nodes through Redis; a
 * cluster without Redis feeds other nodes' changes to the router instead,
 * src/cluster/live.ts), and the page at `/`. app.ts wires `changed` to LocalInventory's `onSkuChanged`.
 */
export interface LiveStock {
  /** A durable change of a SKU this node writes. */
  changed(sku: string): void;
  /** A durable waitlist offer: pushed to the shopper's sockets on this front end. */
  offered(shopperId: string, entry: WaitlistView): void;
  readonly stats: { stream: StreamStats; feed: FeedStats };
  /** Idempotent. */
  close(): Promise<void>;
}

export interface LiveStockDependencies {
  config: Pick<
    Config,
    | 'redisUrl'
    | 'redisStockChannel'
    | 'wsMaxMessageBytes'
    | 'wsMaxSubscriptions'
    | 'wsIdleTimeoutSeconds'
    | 'wsMaxBackpressureBytes'
    | 'wsBackpressureTimeoutMs'
    | 'wsMaxMessagesPerSecond'
    | 'wsMaxInvalidMessages'
    | 'wsMaxConnections'
    | 'wsCoalesceMs'
  >;
  inventory: Pick<Inventory, 'reserve' | 'release'> & {
    stockState(sku: string): StockState | null;
    /** The counts of a SKU asked of its owner (Router.fetchStock); absent: stockState is always current. */
    fetchStock?(sku: string): Promise<Outcome<StockState | null>>;
  };
  /** The first socket here follows a SKU, or the last one let it go (a cluster node tells the owners). */
  onFollow?: (sku: string, following: boolean) => void;
  verifyShopper: ShopperVerifier;
  log: Logger;
  onFatal: (error: unknown) => void;
  rateLimits?: RateLimits;
  trustProxy?: TrustedProxies;
  onReservationAnswer?: (ok: boolean, code?: string) => void;
  /** The `cart` command (absent: refused). */
  carts?: StreamDependencies['carts'];
  cartMaxLines?: number;
  onCartAnswer?: (outcome: string) => void;
  admission?: AdmissionTokens;
  /** The stream's clock: message rates and the slow-consumer timeout (default Date.now). */
  nowMs?: () => number;
}

export function attachLiveStock(app: uWS.TemplatedApp, deps: LiveStockDependencies): LiveStock {
  const { config, log } = deps;
  // The stream asks the feed for states and the feed hands states to the stream.
  let stream: StockStream | null = null;
  const feed = createStockFeed({
    readLocal: (sku) => deps.inventory.stockState(sku),
    deliver: (state) => stream?.publish(state),
    watched: (sku) => stream?.watched(sku) ?? false,
    coalesceMs: config.wsCoalesceMs,
    log,
    redisUrl: config.redisUrl,
    channel: config.redisStockChannel,
  });
  stream = new StockStream(
    app,
    {
      inventory: deps.inventory,
      latest: (sku) => feed.latest(sku),
      // The stream reads the feed's latest after the answer (with Redis a copy further along may have come).
      ...(deps.inventory.fetchStock === undefined ? {} : { fetchLatest: deps.inventory.fetchStock.bind(deps.inventory) }),
      ...(deps.onFollow === undefined ? {} : { onFollow: deps.onFollow }),
      verifyShopper: deps.verifyShopper,
      log,
      onFatal: deps.onFatal,
      ...(deps.rateLimits === undefined ? {} : { rateLimits: deps.rateLimits }),
      ...(deps.trustProxy === undefined ? {} : { trustProxy: deps.trustProxy }),
      ...(deps.onReservationAnswer === undefined ? {} : { onReservationAnswer: deps.onReservationAnswer }),
      ...(deps.carts === undefined ? {} : { carts: deps.carts, cartMaxLines: deps.cartMaxLines ?? 20 }),
      ...(deps.onCartAnswer === undefined ? {} : { onCartAnswer: deps.onCartAnswer }),
      ...(deps.nowMs === undefined ? {} : { nowMs: deps.nowMs }),
      ...(deps.admission === undefined ? {} : { admission: deps.admission }),
    },
    {
      maxMessageBytes: config.wsMaxMessageBytes,
      maxSubscriptions: config.wsMaxSubscriptions,
      idleTimeoutSeconds: config.wsIdleTimeoutSeconds,
      maxBackpressureBytes: config.wsMaxBackpressureBytes,
      backpressureTimeoutMs: config.wsBackpressureTimeoutMs,
      maxMessagesPerSecond: config.wsMaxMessagesPerSecond,
      maxInvalidMessages: config.wsMaxInvalidMessages,
      maxConnections: config.wsMaxConnections,
      coalesceMs: config.wsCoalesceMs,
    },
  );
  servePage(app);
  const live = stream;
  let closed: Promise<void> | null = null;
  return {
    changed: (sku) => feed.changed(sku),
    offered: (shopperId, entry) => live.pushOffer(shopperId, entry),
    get stats() {
      return { stream: live.stats, feed: feed.stats };
    },
    close: () => {
      closed ??= (async () => {
        live.close();
        await feed.close();
      })();
      return closed;
    },
  };
}
