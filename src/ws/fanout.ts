import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { StockState } from '../inventory/inventory.js';
import { CoalescingPublisher } from './coalescer.js';
import { decodeStockState, isRefusal } from '../shard/protocol.js';

/**
 * Where stock changes go: to this node's subscribers, and with Redis to every
 * other node's. The node that writes a SKU coalesces its changes, delivers them
 * to its own sockets at once (Redis or not), and publishes the same coalesced
 * states on one Redis pub/sub channel; other nodes deliver what they receive
 * through their own coalescer, so a socket sees at most one update per SKU per
 * window wherever the writer is.
 *
 * Redis is an accelerator, never on the reservation path: while it is away
 * cross-node updates pause (a warning is logged), local ones continue, and when
 * both connections are back every node republishes the latest state of the
 * SKUs it writes, so subscribers everywhere end on the latest state again.
 */
export interface StockFeed {
  /** A durable change of a SKU written by this node (LocalInventory's `onSkuChanged`). */
  changed(sku: string): void;
  /** The latest known state of a SKU, from this node's inventory or another node; null if unknown. */
  latest(sku: string): StockState | null;
  readonly stats: FeedStats;
  close(): Promise<void>;
}

export interface FeedStats {
  redis: 'none' | 'up' | 'down';
  publishedToRedis: number;
  redisPublishFailures: number;
  receivedFromRedis: number;
  remoteSkus: number;
}

export interface FeedOptions {
  /** This node's own view of a SKU (null: unknown here, or written elsewhere). */
  readLocal: (sku: string) => StockState | null;
  /** Hand a state to this node's subscribers (StockStream.publish). */
  deliver: (state: StockState) => void;
  /**
   * Whether a socket here follows the SKU (StockStream.watched). A change nobody
   * follows is not coalesced or encoded: a socket that subscribes later gets the
   * latest state then. Unset: every change is delivered.
   */
  watched?: (sku: string) => boolean;
  coalesceMs: number;
  log: Logger;
  /** Unset: in-process only. */
  redisUrl?: string | null;
  /** Redis channel (tests isolate runs with it). */
  channel?: string;
  /** Most SKUs whose remote state is remembered (for new subscribers); oldest forgotten first. */
  maxRemoteSkus?: number;
}

export const defaultChannel = 'flashstock:stock:v1';
const maxTrackedSkus = 200_000;

/**
 * What travels on the Redis channel: states from node `o` (the states of one
 * event-loop turn in one message: `s`, then `more`), or node `o` asking
 * everyone to republish. A node that only knows `s` (an earlier version, during
 * a rolling upgrade) reads the first state of a message and ignores the rest.
 */
type Envelope = { o: string; s: StockState; more?: StockState[] } | { o: string; resync: true };

/** States in one message at most: a turn that changed more SKUs sends several (~100 bytes a state). */
export const maxStatesPerMessage = 500;

export function createStockFeed(options: FeedOptions): StockFeed {
  return new Feed(options);
}

class Feed implements StockFeed {
  private readonly nodeId = randomUUID();
  /** How JSON.stringify begins an envelope of this node's with a state in it. */
  private readonly ownStatePrefix = `{"o":${JSON.stringify(this.nodeId)},"s":`;
  private readonly channel: string;
  private readonly maxRemoteSkus: number;
  /** To this node's sockets: local and remote changes share it, so the window holds per SKU. */
  private readonly toSockets: CoalescingPublisher;
  /** To Redis: the writer's coalesced states. */
  private readonly toRedis: CoalescingPublisher | null = null;
  /** States other nodes published, by SKU (bounded, oldest first). */
  private readonly remote = new Map<string, StockState>();
  /** Per SKU, the state last handed to the sockets (to skip repeats). */
  private readonly delivered = new Map<string, string>();
  /** SKUs this node has published changes of: what it republishes when someone asks (bounded by its SKUs). */
  private readonly written = new Set<string>();
  /** SKUs whose states go out at the end of this event-loop turn (sendOutgoing). */
  private readonly outgoing = new Set<string>();
  private outgoingScheduled = false;
  private readonly pub: Redis | null = null;
  private readonly sub: Redis | null = null;
  private pubReady = false;
  private subReady = false;
  private redisUp = false;
  private everUp = false;
  private warnedDown = false;
  private readonly counters = { publishedToRedis: 0, redisPublishFailures: 0, receivedFromRedis: 0 };
  private closed = false;

  constructor(private readonly options: FeedOptions) {
    this.channel = options.channel ?? defaultChannel;
    this.maxRemoteSkus = options.maxRemoteSkus ?? 100_000;
    const onError = (error: unknown) => options.log.error({ err: error }, 'stock fan-out failed');
    this.toSockets = new CoalescingPublisher(options.coalesceMs, (sku) => this.deliver(sku), onError);
    if (options.redisUrl) {
      this.toRedis = new CoalescingPublisher(options.coalesceMs, (sku) => this.publishToRedis(sku), onError);
      const common = {
        // Reconnect forever, at most every 2 s: Redis coming back must resume updates on its own.
        retryStrategy: (times: number) => Math.min(100 * times, 2000),
        connectTimeout: 2000,
        lazyConnect: false,
      };
      // Publishing never queues while disconnected: the queue would grow without
      // bound during an outage, and the resync on reconnect replaces it.
      // Auto-pipelined: the PUBLISHes of an event-loop turn go in one write.
      this.pub = new Redis(options.redisUrl, { ...common, enableOfflineQueue: false, maxRetriesPerRequest: 0, enableAutoPipelining: true });
      // The subscriber subscribes on every 'ready' itself: ioredis 5's own re-subscribe after a
      // reconnect is fire-and-forget, and its rejection (the connection dropping again, or
      // closing) is an unhandled rejection that would end the process (redis/ioredis#2187).
      this.sub = new Redis(options.redisUrl, { ...common, maxRetriesPerRequest: null, autoResubscribe: false });
      this.watch(this.pub, (ready) => (this.pubReady = ready));
      // The subscriber counts as up once its SUBSCRIBE is answered, not at 'ready': the resync this
      // node asks for on the way up must find it subscribed, or the republished states pass it by.
      this.watch(this.sub, (ready) => {
        if (!ready) this.subReady = false;
      });
      this.sub.on('ready', () => this.subscribe());
      this.sub.on('message', (channel: string, text: string) => {
        if (channel === this.channel) this.received(text);
      });
    }
  }

  changed(sku: string): void {
    this.toSocketsIfWatched(sku);
    if (this.toRedis !== null) {
      this.written.add(sku);
      this.toRedis.changed(sku);
    }
  }

  /** Many SKUs change and few are watched: no window, timer or message for one that nobody here follows. */
  private toSocketsIfWatched(sku: string): void {
    if (this.options.watched?.(sku) === false) return;
    this.toSockets.changed(sku);
  }

  /**
   * Hand the latest state to the sockets, unless it is the one they have:
   * states are read live (they may already include the decisions whose
   * commits notify us next), so a window's trailing publish can find nothing new.
   */
  private deliver(sku: string): void {
    const state = this.latest(sku);
    if (state === null) return;
    const key = `${state.seq}:${state.available}:${state.held}:${state.sold}`;
    if (this.delivered.get(sku) === key) return;
    // Bounded: forgetting everything costs at most one repeated message per SKU.
    if (this.delivered.size >= maxTrackedSkus) this.delivered.clear();
    this.delivered.set(sku, key);
    this.options.deliver(state);
  }

  latest(sku: string): StockState | null {
    const local = this.options.readLocal(sku);
    const remote = this.remote.get(sku);
    if (remote === undefined) return local;
    if (local === null) return remote;
    // Only one node writes a SKU; a copy that is further along its log is the fresher one.
    return remote.seq > local.seq ? remote : local;
  }

  get stats(): FeedStats {
    const redis = this.pub === null ? 'none' : this.pubReady && this.subReady ? 'up' : 'down';
    return { redis, remoteSkus: this.remote.size, ...this.counters };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.toSockets.close();
    this.toRedis?.close();
    // quit() waits for a reply Redis may never send while it is away: disconnect then.
    await Promise.all(
      [this.pub, this.sub].map(async (client) => {
        if (client === null) return;
        if (client.status === 'ready') await client.quit().catch(() => client.disconnect());
        else client.disconnect();
      }),
    );
  }

  // ------------------------------------------------------------ Redis

  private subscribe(): void {
    this.sub?.subscribe(this.channel).then(
      () => {
        this.subReady = true;
        this.redisStateChanged();
      },
      (error: unknown) => {
        if (!this.closed) this.options.log.warn({ err: error }, 'Redis SUBSCRIBE failed; retried on the next reconnect');
      },
    );
  }

  private watch(client: Redis, setReady: (ready: boolean) => void): void {
    client.on('ready', () => {
      setReady(true);
      this.redisStateChanged();
    });
    client.on('close', () => {
      setReady(false);
      this.redisStateChanged();
    });
    // ioredis reports every failed reconnect as an error event; the state change is logged once instead.
    client.on('error', (error: unknown) => {
      this.options.log.debug({ err: error }, 'Redis connection error');
      if (!this.redisUp) this.warnDown();
    });
  }

  private redisStateChanged(): void {
    if (this.closed) return;
    const up = this.pubReady && this.subReady;
    if (up === this.redisUp) return;
    this.redisUp = up;
    if (!up) {
      this.warnDown();
      return;
    }
    this.warnedDown = false;
    this.options.log.info(this.everUp ? 'Redis reachable again: cross-node stock updates resumed' : 'Redis connected: stock updates fan out across nodes');
    this.everUp = true;
    // Whatever was published while a connection was down is lost: ask every node (this one too) to republish.
    this.sendEnvelope({ o: this.nodeId, resync: true });
  }

  /** Once per outage (ioredis reports every failed reconnect). */
  private warnDown(): void {
    if (this.warnedDown || this.closed) return;
    this.warnedDown = true;
    this.options.log.warn(
      'Redis unreachable: stock updates across nodes paused until it is back; reservations and local updates continue',
    );
  }

  /** The coalescer's publish: the SKU goes out with the other SKUs of this event-loop turn, in one message. */
  private publishToRedis(sku: string): void {
    this.outgoing.add(sku);
    if (this.outgoingScheduled) return;
    this.outgoingScheduled = true;
    setImmediate(this.sendOutgoing);
  }

  /** One PUBLISH for the turn's SKUs (their states read now, so the latest), not one per SKU. */
  private readonly sendOutgoing = (): void => {
    this.outgoingScheduled = false;
    const states: StockState[] = [];
    for (const sku of this.outgoing) {
      const state = this.options.readLocal(sku);
      if (state !== null) states.push(state);
    }
    this.outgoing.clear();
    if (this.closed) return;
    for (let i = 0; i < states.length; i += maxStatesPerMessage) {
      const [first, ...more] = states.slice(i, i + maxStatesPerMessage);
      this.sendEnvelope(more.length === 0 ? { o: this.nodeId, s: first! } : { o: this.nodeId, s: first!, more });
    }
  };

  private sendEnvelope(envelope: Envelope): void {
    const pub = this.pub;
    if (pub === null) return;
    if (!this.pubReady) {
      this.counters.redisPublishFailures += 1;
      return;
    }
    pub.publish(this.channel, JSON.stringify(envelope)).then(
      () => (this.counters.publishedToRedis += 1),
      (error: unknown) => {
        // The resync after reconnecting makes up for it.
        this.counters.redisPublishFailures += 1;
        this.options.log.debug({ err: error }, 'Redis PUBLISH failed');
      },
    );
  }

  private received(text: string): void {
    this.counters.receivedFromRedis += 1;
    // This node's own states come back on the channel: known by their first bytes (sendEnvelope writes
    // `o` first), so they are not parsed at all. Its own resync request is still read below.
    if (text.startsWith(this.ownStatePrefix)) return;
    const envelope = parseEnvelope(text);
    if (envelope === null) {
      this.options.log.warn({ bytes: text.length }, 'ignoring a malformed message on the stock channel');
      return;
    }
    if ('resync' in envelope) {
      for (const sku of this.written) this.toRedis?.changed(sku);
      return;
    }
    // This node delivered its own states already, without the round trip.
    if (envelope.o === this.nodeId) return;
    this.receivedState(envelope.s);
    if (envelope.more !== undefined) for (const state of envelope.more) this.receivedState(state);
  }

  private receivedState(state: StockState): void {
    this.remote.delete(state.sku);
    this.remote.set(state.sku, state);
    if (this.remote.size > this.maxRemoteSkus) {
      const oldest = this.remote.keys().next().value;
      if (oldest !== undefined) this.remote.delete(oldest);
    }
    this.toSocketsIfWatched(state.sku);
  }
}

/** The channel is ours, but a bad message must not reach subscribers or crash the node. */
export function parseEnvelope(text: string): Envelope | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof value !== 'object' || value === null) return null;
  const { o, s, more, resync } = value as { o?: unknown; s?: unknown; more?: unknown; resync?: unknown };
  if (typeof o !== 'string' || o.length === 0 || o.length > 100) return null;
  if (resync === true) return { o, resync: true };
  // The one decoder of a StockState from outside the process (threads and cluster peers use it too).
  const state = decodeStockState(s);
  if (isRefusal(state)) return null;
  if (more === undefined) return { o, s: state };
  if (!Array.isArray(more) || more.length === 0 || more.length >= maxStatesPerMessage) return null;
  const states: StockState[] = [];
  for (const item of more) {
    const decoded = decodeStockState(item);
    if (isRefusal(decoded)) return null;
    states.push(decoded);
  }
  return { o, s: state, more: states };
}

