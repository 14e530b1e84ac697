import type { AdmissionTokens } from '../queue/admission.js';
import uWS from 'uWebSockets.js';
import type { Logger } from 'pino';
import type { ShopperAuth, ShopperVerifier } from '../auth/auth.js';
import type { Inventory, Outcome, ReservationView, StockState } from '../inventory/inventory.js';
import type { WaitlistView } from '../inventory/waitlist-view.js';
import { isUuid } from '../http/validation.js';
import { problem } from '../http/problem.js';
import { clientIp, type TrustedProxies } from '../ratelimit/client-ip.js';
import type { LimitExceeded, RateLimits } from '../ratelimit/rate-limits.js';
import { requestIdFor } from '../http/exchange.js';
import { parseCartBody } from '../carts/body.js';
import { Followers } from '../road/followers.js';
import type { CartsApi } from '../carts/coordinator.js';
import {
  cartMessage,
  errorMessage,
  helloMessage,
  maxStockFrameBytes,
  newBucket,
  parseClientMessage,
  reservationMessage,
  stockMessage,
  waitlistOfferMessage,
  takeToken,
  type ClientMessage,
  type ErrorFields,
  type TokenBucket,
} from './protocol.js';

/**
 * `GET /v1/stream`: the WebSocket shell. Live stock goes out through one uWS
 * topic per SKU (one publish per coalesced update, whatever the number of
 * subscribers); reserve/release go through the same Inventory calls as HTTP and
 * are answered only once durable.
 *
 * Backpressure. uWebSockets.js 20.30 has no "message dropped" callback and a
 * client that never reads produces no events at all, so this shell keeps the
 * bound itself: a socket whose send buffer passes `maxBackpressureBytes` is
 * unsubscribed from its topics ("lagging": it stops accumulating updates),
 * and once it has drained to half the bound it is re-subscribed and sent only
 * the latest state of each of its SKUs. A socket that has not drained to half
 * the bound `backpressureTimeoutMs` after passing it is closed (half, not the
 * bound: a buffer that the kernel drains a little at a time around the bound
 * is still lagging, and must not restart its clock). Because a socket never
 * reading gives no drain events, a sweep checks every socket's buffer a few
 * times a second; direct replies are checked as they are sent. uWS's own
 * `maxBackpressure` is set above our bound by the most the topics can add
 * between two sweeps, so it never drops an update we have not accounted for;
 * it is the hard memory cap.
 *
 * Reading, whatever the kernel buffers. uWS's buffer only fills once the
 * kernel's send and receive buffers are full (megabytes per socket), so a
 * client that stops reading can go unnoticed by the bound above for tens of
 * seconds. The sweep therefore also probes: a socket with no probe out gets a
 * WebSocket ping every `probeEveryMs`; the ping queues behind everything sent
 * before it, so its pong comes back only once the client has read all that.
 * A probe unanswered for `probeGraceMs` closes the socket. A client that stops
 * reading at T is sent its next probe by T + probeEveryMs + sweep and closed
 * by that + probeGraceMs + sweep: `backpressureTimeoutMs` in all (see
 * `probeTimings`). Pongs are sent by every RFC 6455 client (browsers, `ws`).
 */

export interface StreamOptions {
  maxMessageBytes: number;
  maxSubscriptions: number;
  idleTimeoutSeconds: number;
  maxBackpressureBytes: number;
  backpressureTimeoutMs: number;
  maxMessagesPerSecond: number;
  maxInvalidMessages: number;
  maxConnections: number;
  coalesceMs: number;
}

export interface StreamDependencies {
  inventory: Pick<Inventory, 'reserve' | 'release'>;
  /** Latest known state of a SKU (this node's or another's), null when unknown. */
  latest: (sku: string) => StockState | null;
  /**
   * Asks the SKU's owner for its counts (null: no such SKU), for a SKU no
   * socket here follows yet: `latest` may hold no copy of it, or a stale one.
   * Absent: `latest` is always current (every change reaches this node).
   */
  fetchLatest?: (sku: string) => Promise<Outcome<StockState | null>>;
  /** The first socket here follows a SKU (true), or the last one let it go (false). */
  onFollow?: (sku: string, following: boolean) => void;
  verifyShopper: ShopperVerifier;
  log: Logger;
  /** A fault no message should cause (an invariant broke): log and crash. */
  onFatal: (error: unknown) => void;
  nowMs?: () => number;
  /** Per-shopper / per-IP limits on upgrades and on reserve/release (429 `rate_limited`). */
  rateLimits?: RateLimits;
  trustProxy?: TrustedProxies;
  /** A reserve was answered: ok, or refused with a code (metrics). */
  onReservationAnswer?: (ok: boolean, code?: string) => void;
  /** Carts (the `cart` command; absent: refused), CART_MAX_LINES, and each answer's outcome (metrics). */
  carts?: Pick<CartsApi, 'create'>;
  cartMaxLines?: number;
  onCartAnswer?: (outcome: string) => void;
  /** Checks a reserve's `admissionToken` (a SKU with a waiting room); absent: tokens are not checked. */
  admission?: AdmissionTokens;
}

interface SocketState {
  /** Set by `open`, cleared by `close`: after close uWS forbids touching the socket, so all code goes through this. */
  ws: Socket | null;
  /** The `token` query parameter, re-verified on every reserve/release (tokens expire). */
  token: string | null;
  /** The SKUs this socket follows (also while lagging, when it is off their topics). */
  skus: Set<string>;
  bucket: TokenBucket;
  /** The client's address, for per-IP limits (null when they are off). */
  ip: string | null;
  invalidMessages: number;
  /**
   * Lagging since (null: not lagging): when its buffer passed the bound. Off its
   * topics until it drains to half the bound, which it must within
   * `backpressureTimeoutMs`.
   */
  laggingSinceMs: number | null;
  /** When the probe (ping) now out was sent; null: none out (its pong came back). */
  probeSentAtMs: number | null;
  /** When the last probe was sent (the next goes out `probeEveryMs` later). */
  lastProbeAtMs: number;
}

type Socket = uWS.WebSocket<SocketState>;

export interface StreamStats {
  connections: number;
  lagging: number;
  /** Largest send buffer seen on any socket by the sweep or after a send (bytes). */
  maxBufferedBytesSeen: number;
  /** uWS's hard cap per socket (bytes): our bound plus what topics can add between sweeps. */
  hardBackpressureCapBytes: number;
  closedSlow: number;
  closedPolicy: number;
  resyncs: number;
  /** Sweeps run so far (tests wait on it: the sweep is where the clock is read). */
  sweeps: number;
}

export const streamPath = '/v1/stream';

export function topicOf(sku: string): string {
  return `stock/${sku}`;
}

/** Every socket that connected with a shopper's token follows its shopper's topic (waitlist offers). */
export function shopperTopicOf(shopperId: string): string {
  return `shopper/${shopperId}`;
}

/** How often every socket's send buffer is checked. */
function sweepIntervalMs(options: StreamOptions): number {
  return Math.max(50, Math.min(250, Math.floor(options.backpressureTimeoutMs / 4)));
}

/**
 * The probe's timings within `backpressureTimeoutMs`: a ping every quarter of
 * it, and the grace for its pong is what is left after one probe period and two
 * sweeps, so a socket that stops reading is closed within backpressureTimeoutMs.
 */
export function probeTimings(options: Pick<StreamOptions, 'backpressureTimeoutMs'>): { sweepMs: number; probeEveryMs: number; probeGraceMs: number } {
  const sweepMs = sweepIntervalMs(options as StreamOptions);
  const probeEveryMs = Math.floor(options.backpressureTimeoutMs / 4);
  // Under ~1 s (tests) the sweep's own period no longer fits: at least one sweep of grace.
  return { sweepMs, probeEveryMs, probeGraceMs: Math.max(sweepMs, options.backpressureTimeoutMs - probeEveryMs - 2 * sweepMs) };
}

export class StockStream {
  /** Open sockets' states (the sweep's list). */
  private readonly states = new Set<SocketState>();
  private readonly sweepTimer: NodeJS.Timeout;
  private readonly now: () => number;
  private readonly hardCapBytes: number;
  private readonly probe: ReturnType<typeof probeTimings>;
  private readonly counters = { maxBufferedBytesSeen: 0, closedSlow: 0, closedPolicy: 0, resyncs: 0, sweeps: 0 };
  private closing = false;
  private readonly followers: Followers;
  /** Counts being asked of a SKU's owner: every socket that subscribes meanwhile waits for the same answer. */
  private readonly asking = new Map<string, Promise<Outcome<StockState | null>>>();

  constructor(
    private readonly app: uWS.TemplatedApp,
    private readonly deps: StreamDependencies,
    private readonly options: StreamOptions,
  ) {
    this.now = deps.nowMs ?? Date.now;
    this.followers = new Followers((sku, following) => deps.onFollow?.(sku, following));
    this.probe = probeTimings(options);
    const sweepMs = this.probe.sweepMs;
    // Between two sweeps a non-lagging socket can gain at most one update per
    // SKU per coalescing window from the topics (+1 for a window edge, +1 for
    // a subscribe reply that crossed the bound).
    const windowsPerSweep = Math.ceil(sweepMs / options.coalesceMs) + 2;
    this.hardCapBytes = options.maxBackpressureBytes + options.maxSubscriptions * maxStockFrameBytes * windowsPerSweep;

    app.ws<SocketState>(streamPath, {
      maxPayloadLength: options.maxMessageBytes,
      idleTimeout: options.idleTimeoutSeconds,
      sendPingsAutomatically: true,
      maxBackpressure: this.hardCapBytes,
      closeOnBackpressureLimit: 0,
      compression: uWS.DISABLED,
      upgrade: (res, req, context) => this.upgrade(res, req, context),
      open: (ws) => this.open(ws),
      message: (ws, data, isBinary) => this.message(ws.getUserData(), data, isBinary),
      drain: (ws) => this.checkBackpressure(ws.getUserData()),
      // A pong: the client has read everything sent before the probe.
      pong: (ws) => {
        ws.getUserData().probeSentAtMs = null;
      },
      close: (ws) => {
        const state = ws.getUserData();
        state.ws = null;
        this.states.delete(state);
        for (const sku of state.skus) this.followers.remove(sku);
        state.skus.clear();
      },
    });
    this.sweepTimer = setInterval(() => this.sweep(), sweepMs);
    this.sweepTimer.unref();
  }

  /** Whether a socket here is subscribed to the SKU's updates (a lagging one is not: it resyncs from the latest state). */
  watched(sku: string): boolean {
    return this.app.numSubscribers(topicOf(sku)) > 0;
  }

  /** One publish per SKU update: uWS copies it to every subscriber of the topic. */
  publish(state: StockState): void {
    if (this.closing) return;
    this.app.publish(topicOf(state.sku), stockMessage(state, this.now()), false, false);
  }

  /** A waitlist offer to the shopper's open sockets. */
  pushOffer(shopperId: string, entry: WaitlistView): void {
    if (this.closing) return;
    this.app.publish(shopperTopicOf(shopperId), waitlistOfferMessage(entry), false, false);
  }

  get stats(): StreamStats {
    let lagging = 0;
    for (const state of this.states) if (state.laggingSinceMs !== null) lagging += 1;
    return { connections: this.states.size, lagging, hardBackpressureCapBytes: this.hardCapBytes, ...this.counters };
  }

  /**
   * Stop the sweep, refuse new sockets and close the open ones with 1001
   * (uWS's app.close() leaves WebSockets open). Called once in-flight
   * reservations have been answered.
   */
  close(): void {
    this.closing = true;
    clearInterval(this.sweepTimer);
    for (const state of [...this.states]) state.ws?.end(1001, 'server shutting down');
  }

  // ------------------------------------------------------------ connection

  private upgrade(res: uWS.HttpResponse, req: uWS.HttpRequest, context: uWS.us_socket_context_t): void {
    if (this.closing || this.states.size >= this.options.maxConnections) {
      const body = problem('unavailable', 'too many stream connections; retry shortly', streamPath);
      const requestId = requestIdFor(req.getHeader('x-request-id'));
      res.cork(() => {
        res.writeStatus('503 Service Unavailable');
        res.writeHeader('content-type', 'application/problem+json');
        res.writeHeader('retry-after', '1');
        res.writeHeader('x-request-id', requestId);
        res.end(JSON.stringify(body));
      });
      return;
    }
    // uWS hands the query value percent-decoded; '' when absent.
    const token = req.getQuery('token') ?? '';
    const limits = this.deps.rateLimits;
    const ip = limits?.ipEnabled
      ? clientIp(Buffer.from(res.getRemoteAddressAsText()).toString(), req.getHeader('x-forwarded-for'), this.deps.trustProxy ?? null)
      : null;
    const state: SocketState = {
      ws: null,
      token: token === '' ? null : token,
      skus: new Set(),
      bucket: newBucket(this.options.maxMessagesPerSecond, this.now()),
      ip,
      invalidMessages: 0,
      laggingSinceMs: null,
      probeSentAtMs: null,
      lastProbeAtMs: this.now(),
    };
    const headers = [
      req.getHeader('sec-websocket-key'),
      // The stream speaks no subprotocol: agreeing to one a client offers would claim one we do not speak.
      '',
      req.getHeader('sec-websocket-extensions'),
    ] as const;
    const auth = limits?.enabled && state.token !== null ? this.auth(state) : null;
    const shopperId = auth?.ok ? auth.shopperId : null;
    if (limits === undefined || (shopperId === null && ip === null)) {
      // Nothing to count against (no limit, or an anonymous watcher with per-IP limits off).
      res.upgrade(state, ...headers, context);
      return;
    }
    // The budget check is asynchronous (Redis): uWS allows upgrading later, once the abort handler is on.
    let aborted = false;
    res.onAborted(() => {
      aborted = true;
    });
    limits.check(shopperId, ip).then((exceeded) => {
      if (aborted) return;
      res.cork(() => {
        if (exceeded === null) res.upgrade(state, ...headers, context);
        else this.refuseUpgrade(res, exceeded);
      });
    }, (error: unknown) => this.deps.log.error({ err: error }, 'stream upgrade rate check failed'));
  }

  private refuseUpgrade(res: uWS.HttpResponse, exceeded: LimitExceeded): void {
    const body = problem('rate_limited', 'too many stream connections; slow down', streamPath);
    res.writeStatus('429 Too Many Requests');
    res.writeHeader('content-type', 'application/problem+json');
    res.writeHeader('retry-after', String(exceeded.retryAfterSeconds));
    res.end(JSON.stringify(body));
  }

  private open(ws: Socket): void {
    const state = ws.getUserData();
    state.ws = ws;
    this.states.add(state);
    const auth = state.token === null ? null : this.auth(state);
    if (auth?.ok) ws.subscribe(shopperTopicOf(auth.shopperId));
    this.send(
      state,
      helloMessage({
        shopperId: auth?.ok ? auth.shopperId : null,
        ...(auth !== null && !auth.ok ? { tokenError: auth.detail } : {}),
        maxSubscriptions: this.options.maxSubscriptions,
        maxMessageBytes: this.options.maxMessageBytes,
        coalesceMs: this.options.coalesceMs,
      }),
    );
  }

  private auth(state: SocketState): ShopperAuth {
    if (state.token === null) return { ok: false, detail: 'connect with ?token=<shopper JWT> to reserve or release' };
    return this.deps.verifyShopper(`Bearer ${state.token}`);
  }

  // ------------------------------------------------------------ messages

  private message(state: SocketState, data: ArrayBuffer, isBinary: boolean): void {
    if (!takeToken(state.bucket, this.now(), this.options.maxMessagesPerSecond, this.options.maxMessagesPerSecond)) {
      this.policyClose(state, 'message rate exceeded');
      return;
    }
    const parsed = parseClientMessage(data, isBinary);
    if (!parsed.ok) {
      state.invalidMessages += 1;
      if (state.invalidMessages >= this.options.maxInvalidMessages) {
        this.policyClose(state, 'too many invalid messages');
        return;
      }
      this.error(state, { code: 'invalid_message', detail: parsed.detail, ...(parsed.id === undefined ? {} : { id: parsed.id }) });
      return;
    }
    try {
      this.handle(state, parsed.message);
    } catch (error) {
      this.unexpected(state, error, 'id' in parsed.message ? parsed.message.id : undefined);
    }
  }

  private handle(state: SocketState, message: ClientMessage): void {
    switch (message.type) {
      case 'subscribe':
        this.subscribe(state, message.skus);
        return;
      case 'unsubscribe':
        for (const sku of message.skus) {
          if (!state.skus.has(sku)) continue;
          this.unfollow(state, sku);
          if (state.laggingSinceMs === null) state.ws?.unsubscribe(topicOf(sku));
        }
        return;
      case 'reserve': {
        const auth = this.auth(state);
        if (!auth.ok) {
          this.error(state, { code: 'unauthorized', detail: auth.detail, id: message.id });
          return;
        }
        const { id, sku, quantity, idempotencyKey } = message;
        const refusal = message.admissionToken === undefined ? null : this.deps.admission?.verify(message.admissionToken, auth.shopperId, sku) ?? null;
        if (refusal !== null) {
          this.error(state, { code: refusal, detail: 'the admissionToken does not admit this shopper to this SKU now', id });
          return;
        }
        const admitted = message.admissionToken !== undefined && this.deps.admission !== undefined;
        this.withinRateLimit(state, auth.shopperId, id, () =>
          this.settle(state, id, this.deps.inventory.reserve({ sku, shopperId: auth.shopperId, quantity, idempotencyKey, admitted }), true),
        );
        return;
      }
      case 'cart':
        this.cart(state, message);
        return;
      case 'release': {
        const auth = this.auth(state);
        if (!auth.ok) {
          this.error(state, { code: 'unauthorized', detail: auth.detail, id: message.id });
          return;
        }
        // As HTTP DELETE: anything that is not a reservation id is a reservation that does not exist.
        const reservationId = message.reservationId.toLowerCase();
        if (!isUuid(reservationId)) {
          this.error(state, { code: 'not_found', detail: `reservation ${reservationId} does not exist`, id: message.id });
          return;
        }
        this.withinRateLimit(state, auth.shopperId, message.id, () =>
          this.settle(state, message.id, this.deps.inventory.release(reservationId, auth.shopperId)),
        );
        return;
      }
    }
  }

  /** A cart, as POST /v1/carts: every line held or nothing; a refusal names its line. */
  private cart(state: SocketState, message: Extract<ClientMessage, { type: 'cart' }>): void {
    const auth = this.auth(state);
    const carts = this.deps.carts;
    if (!auth.ok || carts === undefined) {
      this.error(state, { code: auth.ok ? 'not_found' : 'unauthorized', detail: auth.ok ? 'carts are not served here' : auth.detail, id: message.id });
      return;
    }
    const { id, idempotencyKey } = message;
    const items = parseCartBody({ items: message.items }, this.deps.cartMaxLines ?? 20);
    if (!Array.isArray(items)) {
      this.deps.onCartAnswer?.('invalid_request');
      this.error(state, { code: 'invalid_message', id, ...items });
      return;
    }
    this.withinRateLimit(state, auth.shopperId, id, () =>
      carts.create(auth.shopperId, idempotencyKey, items).then(
        (outcome) => {
          this.deps.onCartAnswer?.(outcome.ok ? 'held' : outcome.code);
          if (outcome.ok) this.send(state, cartMessage(id, outcome.value));
          else this.error(state, { code: outcome.code, detail: outcome.detail, id, ...(outcome.line === undefined ? {} : { line: outcome.line, sku: outcome.sku! }) });
        },
        (error: unknown) => this.unexpected(state, error, id),
      ),
    );
  }

  private subscribe(state: SocketState, requested: string[]): void {
    const skus = [...new Set(requested)];
    const added = skus.filter((sku) => !state.skus.has(sku));
    if (state.skus.size + added.length > this.options.maxSubscriptions) {
      this.error(state, {
        code: 'too_many_subscriptions',
        detail: `a socket may follow at most ${this.options.maxSubscriptions} SKUs; it follows ${state.skus.size}`,
      });
      return;
    }
    // Followed here already, with a copy, and not still being asked for: its latest counts are current.
    const fetch = this.deps.fetchLatest !== undefined;
    const unknown = fetch ? skus.filter((sku) => this.asking.has(sku) || !this.followers.has(sku) || this.deps.latest(sku) === null) : [];
    // Followed before the owner is asked, so no change after its answer is missed.
    for (const sku of added) {
      state.skus.add(sku);
      this.followers.add(sku);
    }
    if (unknown.length === 0) {
      this.subscribed(state, skus, null);
      return;
    }
    void Promise.all(unknown.map((sku) => this.ask(sku))).then((outcomes) =>
      this.subscribed(state, skus, new Map(unknown.map((sku, i) => [sku, outcomes[i]!]))),
    );
  }

  /** The owner's counts of a SKU, asked once however many sockets subscribe meanwhile; never rejects. */
  private ask(sku: string): Promise<Outcome<StockState | null>> {
    let asking = this.asking.get(sku);
    if (asking === undefined) {
      asking = this.deps.fetchLatest!(sku)
        .catch((error: unknown): Outcome<StockState | null> => {
          this.deps.log.warn({ err: error, sku }, 'the counts of a SKU could not be asked for');
          return { ok: false, code: 'unavailable', detail: 'the SKU owner could not be asked for its counts' };
        })
        .finally(() => this.asking.delete(sku));
      this.asking.set(sku, asking);
    }
    return asking;
  }

  /** A subscribe's replies, in its order, once the counts of every SKU in it are known. */
  private subscribed(state: SocketState, skus: string[], asked: Map<string, Outcome<StockState | null>> | null): void {
    const ws = state.ws;
    if (ws === null) return;
    const texts: string[] = [];
    for (const sku of skus) {
      // Unsubscribed while its counts were asked for.
      if (!state.skus.has(sku)) continue;
      const answer = asked?.get(sku);
      // A copy here may have moved on since the owner answered (its changes are pushed): the later of the two.
      const current = answer === undefined || !answer.ok ? this.deps.latest(sku) : answer.value === null ? null : (this.deps.latest(sku) ?? answer.value);
      if (current === null) {
        this.unfollow(state, sku);
        texts.push(
          answer?.ok === false
            ? errorMessage({ code: 'unavailable', sku, detail: answer.detail })
            : errorMessage({ code: 'not_found', sku, detail: `SKU ${sku} does not exist` }),
        );
        continue;
      }
      // A lagging socket gets its states when it has drained (resync), not now.
      if (state.laggingSinceMs !== null) continue;
      ws.subscribe(topicOf(sku));
      texts.push(stockMessage(current, this.now()));
    }
    this.sendAll(state, texts);
  }

  private unfollow(state: SocketState, sku: string): void {
    state.skus.delete(sku);
    this.followers.remove(sku);
  }

  /** Run `then` within the shopper's (and address's) budget, else answer 429 `rate_limited`. */
  private withinRateLimit(state: SocketState, shopperId: string, id: string, then: () => void): void {
    const limits = this.deps.rateLimits;
    if (limits === undefined || !limits.enabled) {
      then();
      return;
    }
    limits.check(shopperId, state.ip).then(
      (exceeded) => {
        if (exceeded === null) then();
        else this.error(state, { code: 'rate_limited', detail: `too many requests; retry in ${exceeded.retryAfterSeconds} s`, id });
      },
      (error: unknown) => this.unexpected(state, error, id),
    );
  }

  /** Reply once the inventory has decided (and made it durable); never to a closed socket. */
  private settle(state: SocketState, id: string, promise: Promise<Outcome<ReservationView>>, reserve = false): void {
    promise.then(
      (outcome) => {
        if (reserve) this.deps.onReservationAnswer?.(outcome.ok, outcome.ok ? undefined : outcome.code);
        if (outcome.ok) this.send(state, reservationMessage(id, outcome.value));
        else this.error(state, { code: outcome.code, detail: outcome.detail, id });
      },
      (error: unknown) => this.unexpected(state, error, id),
    );
  }

  private unexpected(state: SocketState, error: unknown, id: string | undefined): void {
    this.deps.log.error({ err: error }, 'unexpected error on the stream');
    this.error(state, { code: 'internal', detail: 'an unexpected error occurred; nothing was acknowledged', ...(id === undefined ? {} : { id }) });
    if (error instanceof Error && error.name === 'InvariantViolation') this.deps.onFatal(error);
  }

  private error(state: SocketState, fields: ErrorFields): void {
    this.send(state, errorMessage(fields));
  }

  // ------------------------------------------------------------ sending and backpressure

  private send(state: SocketState, text: string): void {
    this.sendAll(state, [text]);
  }

  /**
   * One corked write of `texts`, then the backpressure check. A message uWS
   * refuses (over the hard cap) must not be lost silently: the socket is
   * closed, the client reconnects and repeats (same Idempotency-Key, so
   * nothing is reserved twice).
   */
  private sendAll(state: SocketState, texts: string[]): void {
    const ws = state.ws;
    if (ws === null || texts.length === 0) return;
    let dropped = false;
    ws.cork(() => {
      for (const text of texts) {
        if (ws.send(text, false, false) === 2) {
          dropped = true;
          return;
        }
      }
    });
    if (dropped) {
      // Closed outside the cork: uncorking a socket closed inside it is not allowed.
      this.counters.closedSlow += 1;
      this.deps.log.warn('stream message dropped at the backpressure cap: closing the socket');
      ws.close();
      return;
    }
    this.checkBackpressure(state);
  }

  private checkBackpressure(state: SocketState): void {
    const ws = state.ws;
    if (ws === null) return;
    const buffered = ws.getBufferedAmount();
    if (buffered > this.counters.maxBufferedBytesSeen) this.counters.maxBufferedBytesSeen = buffered;
    if (buffered > this.options.maxBackpressureBytes) {
      if (state.laggingSinceMs === null) {
        state.laggingSinceMs = this.now();
        for (const sku of state.skus) ws.unsubscribe(topicOf(sku));
      }
    } else if (state.laggingSinceMs !== null && buffered <= this.options.maxBackpressureBytes / 2) {
      this.resync(state);
    }
  }

  /** Drained enough: back on the topics, and only the latest state of each SKU. */
  private resync(state: SocketState): void {
    const ws = state.ws;
    if (ws === null) return;
    state.laggingSinceMs = null;
    this.counters.resyncs += 1;
    const texts: string[] = [];
    for (const sku of state.skus) {
      ws.subscribe(topicOf(sku));
      const current = this.deps.latest(sku);
      if (current !== null) texts.push(stockMessage(current, this.now()));
    }
    this.sendAll(state, texts);
  }

  private sweep(): void {
    this.counters.sweeps += 1;
    const now = this.now();
    for (const state of this.states) {
      this.checkBackpressure(state);
      const ws = state.ws;
      if (ws === null) continue;
      const laggingTooLong = state.laggingSinceMs !== null && now - state.laggingSinceMs >= this.options.backpressureTimeoutMs;
      const probeUnanswered = state.probeSentAtMs !== null && now - state.probeSentAtMs >= this.probe.probeGraceMs;
      if (laggingTooLong || probeUnanswered) {
        this.counters.closedSlow += 1;
        this.deps.log.info(
          { bufferedBytes: ws.getBufferedAmount(), unansweredProbeMs: state.probeSentAtMs === null ? null : now - state.probeSentAtMs },
          'stream consumer too slow for too long: closing it',
        );
        // Forceful: a close frame would queue behind the full buffer it never reads.
        ws.close();
      } else if (state.probeSentAtMs === null && now - state.lastProbeAtMs >= this.probe.probeEveryMs) {
        state.probeSentAtMs = now;
        state.lastProbeAtMs = now;
        ws.ping();
      }
    }
  }

  private policyClose(state: SocketState, reason: string): void {
    this.counters.closedPolicy += 1;
    this.deps.log.info({ reason }, 'stream socket closed (policy)');
    state.ws?.end(1008, reason);
  }
}
