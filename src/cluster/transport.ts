import uWS from 'uWebSockets.js';
import WebSocket from 'ws';
import type { Logger } from '../log.js';
import type { ShardRequest } from '../shard/messages.js';
import {
  decodeEnvelope,
  decodeFrame,
  decodeNote,
  decodeReply,
  encodeFrame,
  isRefusal,
  maxMessagesPerFrame,
  messageId,
  newFrameRefusals,
  type Envelope,
  type ForwardResult,
  type FrameRefusals,
  type Note,
  type RefusalReason,
  type Reply,
} from '../shard/protocol.js';
import { Requester, type Pending as RequesterPending } from '../road/requester.js';
import { Responder } from '../road/responder.js';
import { AUTH_HEADER, signUpgrade, type VerifyResult } from './auth.js';

/**
 * Forwarding between nodes: one persistent WebSocket per peer, client `ws`,
 * server a route on the node's own uWebSockets.js app (so NODE_ADVERTISE_URL
 * is the service's URL). Why a WebSocket rather than HTTP/1.1 through undici:
 * one full-duplex connection carries any number of requests and replies in
 * both directions with no per-request HTTP head, no head-of-line blocking of
 * pipelining and no connection pool to size; authentication happens once, at
 * the upgrade; batching is natural (one frame = every envelope of an
 * event-loop turn) and uWS already serves WebSockets on the same port.
 *
 * Frames are JSON text: {"t":"req","m":[envelope…]} and {"t":"res","m":[reply…]},
 * and one-way {"t":"note","m":[notice…]}: what a node pushes without being
 * asked (live stock, src/cluster/live.ts). Every frame a peer sends is decoded
 * by src/shard/protocol.ts before any of it is used: a malformed or lying one
 * is refused and counted, never executed nor relayed. Notices are keyed (a SKU): while
 * the peer's socket is backpressured only the latest notice per key waits,
 * and past `maxPendingNotices` keys new ones are dropped and counted; they
 * never make the send buffer grow without bound.
 *
 * Outcomes: `ok` (the owner's reply, relayed), `unavailable` (certainly not
 * executed: never sent, queue full, no connection), `unknown_outcome` (sent,
 * then the connection dropped or the timeout passed: it may or may not have
 * been executed; an idempotent retry — same Idempotency-Key — is the way to
 * find out).
 */

export const CLUSTER_PATH = '/v1/cluster';
/** On a refused upgrade: why (the calling node puts it in its log line). */
export const REFUSAL_HEADER = 'x-flashstock-refusal';
/** A peer retrying a refused upgrade on every request would flood the log: one line per reason this often. */
export const REFUSAL_LOG_INTERVAL_MS = 60_000;
const REFUSAL_REASON_MAX_CHARS = 300;

export interface TransportLimits {
  /** Requests queued or awaiting a reply per connection; past it: `unavailable` at once. */
  maxInFlight: number;
  /** Envelopes per frame sent (at most protocol.ts's maxMessagesPerFrame, what a receiver accepts). */
  maxBatch: number;
  /** A reply later than this is `unknown_outcome`. */
  requestTimeoutMs: number;
  /** Largest frame either side accepts. */
  maxFrameBytes: number;
  connectTimeoutMs: number;
  /** Distinct notice keys waiting per peer (latest per key); a new key past it is dropped. */
  maxPendingNotices: number;
  /** Notices wait (coalescing per key) while the peer's socket has more than this unsent. */
  maxNoticeBufferedBytes: number;
  /** How soon notices held back by backpressure are tried again. */
  noticeRetryMs: number;
  /** Notices to a peer go out at most this often (the latest per SKU in each window). */
  noticeIntervalMs: number;
}

export const defaultTransportLimits: TransportLimits = {
  maxInFlight: 10_000,
  maxBatch: 1_000,
  requestTimeoutMs: 5_000,
  maxFrameBytes: 16 * 1024 * 1024,
  connectTimeoutMs: 2_000,
  maxPendingNotices: 50_000,
  maxNoticeBufferedBytes: 4 * 1024 * 1024,
  noticeRetryMs: 20,
  noticeIntervalMs: 25,
};

/** A frame of maxBatch messages must be one every receiver accepts. */
function assertBatchLimit(limits: TransportLimits): void {
  if (!(limits.maxBatch >= 1 && limits.maxBatch <= maxMessagesPerFrame)) {
    throw new Error(`maxBatch must be 1..${maxMessagesPerFrame} (got ${limits.maxBatch})`);
  }
}

// ------------------------------------------------------------------ server

/** Executes one forwarded command on this node (the shard host); never throws for a refusal. */
export type ForwardHandler = (shard: number, request: ShardRequest) => Promise<ForwardResult>;

export interface ClusterEndpointOptions {
  /**
   * Checks an upgrade's token (the AUTH_HEADER value): an UpgradeVerifier for
   * this node's URL. Async when the verifier lives on another thread (front-end
   * threads share the main thread's, so a token is good once per process).
   */
  verify: (token: string) => VerifyResult | Promise<VerifyResult>;
  handle: ForwardHandler;
  /** What a peer pushed (notices, what it follows), decoded: one call per frame, outside uWS callbacks; never throws. */
  onNotes?: (peer: string, notes: Note[]) => void;
  /** SHARD_COUNT: a request for any other shard number is refused. */
  shardCount: number;
  limits: TransportLimits;
  log: Logger;
}

interface PeerState {
  peer: string;
  ws: uWS.WebSocket<PeerState> | null;
  /** The road's one serving side: the in-flight bound and the turn's replies, sent in frames of at most maxBatch (from `open`). */
  responder: Responder<Reply> | null;
  /** A refusal on this connection was logged already (the counter has the rest). */
  warned: boolean;
}

export interface ClusterEndpoint {
  connections(): number;
  /** Frames and messages peers sent that were refused, by reason, since start. */
  refusals: FrameRefusals;
  close(): void;
}

/** What uWS says when a message passes maxPayloadLength (it closes the socket with 1006). */
const tooBigMessage = 'Received too big message';

export function attachClusterEndpoint(app: uWS.TemplatedApp, options: ClusterEndpointOptions): ClusterEndpoint {
  assertBatchLimit(options.limits);
  const peers = new Set<PeerState>();
  const upgradeRefusals = new RefusalLog(options.log);
  const refusals = newFrameRefusals();
  let closing = false;
  const isClosing = () => closing;
  const serve = frameServer(options, refusals);

  app.ws<PeerState>(CLUSTER_PATH, {
    maxPayloadLength: options.limits.maxFrameBytes,
    maxBackpressure: options.limits.maxFrameBytes * 4,
    idleTimeout: 60,
    sendPingsAutomatically: true,
    compression: uWS.DISABLED,
    upgrade: (res, req, context) => upgrade(res, req, context, options, isClosing, upgradeRefusals),
    open: (ws) => {
      const state = ws.getUserData();
      state.ws = ws;
      // uWS keeps its own copy of the upgrade's user data: the socket is known from here on.
      state.responder = replies(options.limits, ws);
      peers.add(state);
    },
    message: (ws, data, isBinary) => serve(ws.getUserData(), data, isBinary),
    close: (ws, code, message) => {
      const state = ws.getUserData();
      state.ws = null;
      state.responder?.close();
      peers.delete(state);
      if (code === 1006 && Buffer.from(message).toString('latin1') === tooBigMessage) {
        refusals.oversized += 1;
        options.log.warn({ peer: state.peer, maxFrameBytes: options.limits.maxFrameBytes }, 'cluster frame over the size limit: connection closed');
      }
    },
  });

  return {
    connections: () => peers.size,
    refusals,
    close: () => {
      closing = true;
      for (const state of [...peers]) state.ws?.end(1001, 'node shutting down');
    },
  };
}

/** The upgrade of a peer's connection: let in once its token checks out (the check may be async). */
function upgrade(
  res: uWS.HttpResponse,
  req: uWS.HttpRequest,
  context: uWS.us_socket_context_t,
  options: ClusterEndpointOptions,
  closing: () => boolean,
  refusals: RefusalLog,
): void {
  // Read the request now (uWS invalidates it on return) and watch for an abort.
  const token = req.getHeader(AUTH_HEADER);
  const key = req.getHeader('sec-websocket-key');
  const protocol = req.getHeader('sec-websocket-protocol');
  const extensions = req.getHeader('sec-websocket-extensions');
  let aborted = false;
  res.onAborted(() => {
    aborted = true;
  });
  const refuse = (status: string, reason: string) => {
    refusals.note(reason);
    // The reason goes back to the caller, which logs it: both ends of a misconfigured pair say why.
    res.cork(() => res.writeStatus(status).writeHeader(REFUSAL_HEADER, headerSafe(reason)).end());
  };
  const answer = (verdict: VerifyResult) => {
    if (aborted) return;
    if (closing()) return refuse('503 Service Unavailable', 'shutting down');
    if (!verdict.ok) return refuse('401 Unauthorized', verdict.reason);
    const state: PeerState = { peer: verdict.nodeId, ws: null, responder: null, warned: false };
    res.cork(() => res.upgrade(state, key, protocol, extensions, context));
  };
  if (closing()) return refuse('503 Service Unavailable', 'shutting down');
  Promise.resolve()
    .then(() => options.verify(token))
    .then(answer, (err: unknown) => {
      if (!aborted) refuse('503 Service Unavailable', `the token could not be checked: ${String(err)}`);
    });
}

/**
 * What the endpoint does with a peer's frame: decoded (protocol.ts) before
 * anything runs. A frame that is not one (not JSON, binary, unknown type, a
 * reply: callers do not answer) closes the connection with 1008; a bad message
 * in a good frame is refused alone: answered `unavailable` (certainly not
 * executed) when it has an id, and counted; the others of the frame are served.
 */
function frameServer(options: ClusterEndpointOptions, refusals: FrameRefusals) {
  const { shardCount } = options;

  const refuse = (state: PeerState, reason: RefusalReason, id: number | null) => {
    refusals[reason] += 1;
    if (!state.warned) {
      state.warned = true;
      options.log.warn({ peer: state.peer, reason }, 'refused a message from a peer (further refusals on this connection are only counted)');
    }
    if (id !== null) reply(state, { id, ok: false, code: 'unavailable', detail: `the owner refused the request (${reason})` });
  };

  const onFrame = (state: PeerState, data: ArrayBuffer, isBinary: boolean): void => {
    const frame = isBinary ? 'malformed' : decodeFrame(Buffer.from(data).toString('utf8'));
    if (isRefusal(frame) || frame.t === 'res') {
      const reason = isRefusal(frame) ? frame : 'envelope';
      refusals[reason] += 1;
      options.log.warn({ peer: state.peer, reason }, 'malformed cluster frame: closing the connection');
      state.ws?.end(1008, 'malformed frame');
      return;
    }
    // Out of the uWS callback: work (and replies it triggers) never runs while uWS has this socket corked.
    if (frame.t === 'note') {
      const notes = decodeNotes(frame.m, (reason) => refuse(state, reason, null));
      if (notes.length > 0) setImmediate(() => receiveNotes(state.peer, notes));
      return;
    }
    const envelopes: Envelope[] = [];
    for (const value of frame.m) {
      const envelope = decodeEnvelope(value, shardCount);
      if (isRefusal(envelope)) refuse(state, envelope, messageId(value));
      else envelopes.push(envelope);
    }
    if (envelopes.length > 0) {
      setImmediate(() => {
        for (const envelope of envelopes) execute(state, envelope);
      });
    }
  };

  const receiveNotes = (peer: string, notes: Note[]): void => {
    try {
      options.onNotes?.(peer, notes);
    } catch (err) {
      options.log.error({ err, peer }, 'handling pushed notices failed');
    }
  };

  const execute = (state: PeerState, envelope: Envelope): void => {
    if (state.responder === null || !state.responder.admit()) {
      reply(state, { id: envelope.id, ok: false, code: 'unavailable', detail: 'owner overloaded' });
      return;
    }
    options.handle(envelope.shard, envelope.payload).then(
      (result) => replied(state, { id: envelope.id, ...result }),
      (err: unknown) => {
        options.log.error({ err, shard: envelope.shard }, 'forwarded command failed');
        replied(state, { id: envelope.id, ok: false, code: 'unknown_outcome', detail: 'owner failed while executing' });
      },
    );
  };

  return onFrame;
}

/** The entries of a note frame that decode; each one that does not is handed to `refuse`. */
function decodeNotes(values: unknown[], refuse: (reason: RefusalReason) => void): Note[] {
  const notes: Note[] = [];
  for (const value of values) {
    const note = decodeNote(value);
    if (isRefusal(note)) refuse(note);
    else notes.push(note);
  }
  return notes;
}

/** A reply that needs no serving slot (a refusal). The caller is gone (no socket): it reports unknown_outcome itself. */
function reply(state: PeerState, message: Reply): void {
  if (state.ws !== null) state.responder?.add(message);
}

/** The reply of a served request: its serving slot is free again. */
function replied(state: PeerState, message: Reply): void {
  if (state.ws !== null) state.responder?.done(message);
}

/** Replies to a peer: the ones of an event-loop turn go out together, in frames of at most maxBatch. */
function replies(limits: TransportLimits, ws: uWS.WebSocket<PeerState>): Responder<Reply> {
  // Closed with the socket (`close` above): nothing is sent to a socket that is gone.
  return new Responder<Reply>(limits.maxInFlight, (batch) => {
    if (batch.length === 0) return;
    for (let i = 0; i < batch.length; i += limits.maxBatch) {
      ws.send(encodeFrame({ t: 'res', m: batch.slice(i, i + limits.maxBatch) }), false, false);
    }
  });
}

/** Refused upgrades: a warning the first time a reason is seen, then at most once per interval with the count. */
class RefusalLog {
  private readonly last = new Map<string, { loggedAtMs: number; since: number }>();

  constructor(private readonly log: Logger) {}

  note(reason: string): void {
    const nowMs = Date.now();
    const entry = this.last.get(reason);
    if (entry !== undefined && nowMs - entry.loggedAtMs < REFUSAL_LOG_INTERVAL_MS) {
      entry.since += 1;
      return;
    }
    const repeated = entry?.since ?? 0;
    if (this.last.size >= 100) this.last.clear(); // reasons are few; a bound all the same
    this.last.set(reason, { loggedAtMs: nowMs, since: 0 });
    this.log.warn({ reason, repeated }, 'cluster connection refused');
  }
}

/** A refusal reason as one printable header line. */
function headerSafe(reason: string): string {
  return reason.replace(/[^\x20-\x7e]/g, '?').slice(0, REFUSAL_REASON_MAX_CHARS);
}

// ------------------------------------------------------------------ client

/** A forwarded request waiting for its owner's reply (decoded against its envelope's payload: the same SKU or reservation, the kind of value it gets). */
type Pending = RequesterPending<Envelope, ForwardResult>;

export interface ForwardClientOptions {
  secret: string;
  selfNodeId: string;
  /** The owner's advertised URL (http://host:port). */
  peerUrl: string;
  limits: TransportLimits;
  log: Logger;
  /** Every time a connection to the peer opens (what the peer missed while there was none can be pushed again). */
  onOpen?: (peerUrl: string) => void;
}

export interface NoticeStats {
  /** Notices written to the socket. */
  sent: number;
  /** Notices replaced by a later one of the same key before they were sent. */
  coalesced: number;
  /** Notices dropped: too many keys waiting, no connection, or the client closed. */
  dropped: number;
  /** Flushes held back because the socket was backpressured. */
  heldBack: number;
}

/** One persistent, lazily (re)connected connection to one peer. */
export class ForwardClient {
  private ws: WebSocket | null = null;
  private connecting: Promise<WebSocket> | null = null;
  /** The road's one request side: ids, pending map, in-flight bound, per-turn batch, timeouts, fail-all. */
  private readonly requester: Requester<Envelope, ForwardResult>;
  private frames = 0;
  private replies = 0;
  private closed = false;
  /** Notices waiting, latest per key (insertion order: first changed, first sent). */
  private notices = new Map<string, Note>();
  /** A flush is coming (this turn's, or a retry after backpressure): pushes only add to the map. */
  private noticeFlushScheduled = false;
  private noticeRetry: NodeJS.Timeout | null = null;
  private warnedDropping = false;
  /** Why the peer cannot be reached, once logged (null while it can): one warning per episode and reason. */
  private unreachable: string | null = null;
  readonly noticeStats: NoticeStats = { sent: 0, coalesced: 0, dropped: 0, heldBack: 0 };
  /** Frames and replies from the peer that were refused, by reason. */
  readonly refusals: FrameRefusals = newFrameRefusals();
  /** A refused reply was logged on the current connection (the counter has the rest). */
  private warnedRefusal = false;

  constructor(private readonly options: ForwardClientOptions) {
    assertBatchLimit(options.limits);
    this.requester = new Requester<Envelope, ForwardResult>({
      maxInFlight: options.limits.maxInFlight,
      timeoutMs: options.limits.requestTimeoutMs,
      failed: (_envelope, detail, sent) => (sent ? unknown(detail) : unavailable(detail)),
      flush: (envelopes) => void this.flush(envelopes),
    });
  }

  get inFlight(): number {
    return this.requester.inFlight;
  }

  /** Frames and commands sent, replies received, replies that did not come in time. */
  get stats(): { frames: number; sent: number; replies: number; timeouts: number } {
    const { sent, timedOut } = this.requester.stats;
    return { frames: this.frames, sent, replies: this.replies, timeouts: timedOut };
  }

  /** Send a command to the peer; resolves with its reply, `unavailable` or `unknown_outcome`, never rejects. */
  forward(shard: number, request: ShardRequest): Promise<ForwardResult> {
    if (this.closed) return Promise.resolve(unavailable('forwarding client closed'));
    if (this.requester.refusal() !== null) return Promise.resolve(unavailable('too many forwarded requests in flight'));
    return this.requester.send({ id: this.requester.nextId(), shard, payload: request });
  }

  /** Open the connection now if there is none (a peer that joined); failures are only logged. */
  connectNow(): void {
    if (this.closed) return;
    this.connection().catch((err: unknown) => this.noteUnreachable(err));
  }

  /** Notices waiting to be sent. */
  get pendingNotices(): number {
    return this.notices.size;
  }

  /**
   * Push a one-way notice, sent with the others of this event-loop turn; a
   * waiting notice of the same key is replaced (only the latest matters).
   * False when it was dropped (bound reached, or closed).
   */
  push(key: string, notice: Note): boolean {
    if (this.closed) {
      this.noticeStats.dropped += 1;
      return false;
    }
    if (this.notices.delete(key)) this.noticeStats.coalesced += 1;
    else if (this.notices.size >= this.options.limits.maxPendingNotices) {
      this.noticeStats.dropped += 1;
      this.warnDropping('too many notices waiting for a backpressured peer');
      return false;
    }
    this.notices.set(key, notice);
    if (!this.noticeFlushScheduled) {
      this.noticeFlushScheduled = true;
      // A short window rather than the turn: a hot SKU's many changes go as one notice (subscribers
      // coalesce over WS_COALESCE_MS anyway), and a frame carries more SKUs.
      const timer = setTimeout(() => void this.flushNotices(), this.options.limits.noticeIntervalMs);
      timer.unref();
    }
    return true;
  }

  close(): void {
    this.closed = true;
    this.dropNotices();
    this.ws?.close(1001, 'node shutting down');
    this.requester.close('forwarding client closed');
  }

  private async flushNotices(): Promise<void> {
    if (this.closed) return;
    let ws: WebSocket;
    try {
      ws = await this.connection();
    } catch (err) {
      this.noteUnreachable(err);
      this.dropNotices();
      return;
    }
    if (this.closed) return;
    const { maxBatch, maxNoticeBufferedBytes, noticeRetryMs } = this.options.limits;
    // The peer reads slower than we write: keep only the latest per key, and look again shortly.
    if (ws.bufferedAmount > maxNoticeBufferedBytes) {
      this.noticeStats.heldBack += 1;
      this.noticeRetry = setTimeout(() => {
        this.noticeRetry = null;
        void this.flushNotices();
      }, noticeRetryMs);
      return;
    }
    this.noticeFlushScheduled = false;
    this.warnedDropping = false;
    const notices = [...this.notices.values()];
    this.notices = new Map();
    for (let i = 0; i < notices.length; i += maxBatch) {
      const m = notices.slice(i, i + maxBatch);
      ws.send(encodeFrame({ t: 'note', m }));
      this.noticeStats.sent += m.length;
    }
  }

  private dropNotices(): void {
    if (this.noticeRetry !== null) clearTimeout(this.noticeRetry);
    this.noticeRetry = null;
    this.noticeFlushScheduled = false;
    if (this.notices.size > 0 && !this.closed) this.warnDropping('no connection to the peer');
    this.noticeStats.dropped += this.notices.size;
    this.notices.clear();
  }

  /** Once per episode (until notices flow again): the counter has the numbers. */
  private warnDropping(reason: string): void {
    if (this.warnedDropping) return;
    this.warnedDropping = true;
    this.options.log.warn({ peer: this.options.peerUrl, reason, dropped: this.noticeStats.dropped }, 'dropping live-stock notices to a peer');
  }

  /** One warning when the peer becomes unreachable (or the reason changes), one info line when it is reached again. */
  private noteUnreachable(err: unknown): void {
    const reason = err instanceof Error ? err.message : String(err);
    if (this.unreachable === reason) return;
    this.unreachable = reason;
    this.options.log.warn({ peer: this.options.peerUrl, reason }, `cannot reach the peer ${this.options.peerUrl}: ${reason}`);
  }

  /** One turn's envelopes, once connected, in frames of at most maxBatch (each marked sent as it goes out). */
  private async flush(batch: Envelope[]): Promise<void> {
    let ws: WebSocket;
    try {
      ws = await this.connection();
    } catch (err) {
      this.noteUnreachable(err);
      this.requester.failAll(`cannot reach the owner at ${this.options.peerUrl}`);
      return;
    }
    for (let i = 0; i < batch.length; i += this.options.limits.maxBatch) {
      const envelopes = batch.slice(i, i + this.options.limits.maxBatch).filter((e) => this.requester.markSent(e.id));
      if (envelopes.length === 0) continue;
      ws.send(encodeFrame({ t: 'req', m: envelopes }));
      this.frames += 1;
    }
  }

  private connection(): Promise<WebSocket> {
    if (this.ws !== null && this.ws.readyState === WebSocket.OPEN) return Promise.resolve(this.ws);
    this.connecting ??= this.connect().finally(() => {
      this.connecting = null;
    });
    return this.connecting;
  }

  private connect(): Promise<WebSocket> {
    const { secret, selfNodeId, peerUrl, limits } = this.options;
    const url = `${peerUrl.replace(/^http/, 'ws').replace(/\/$/, '')}${CLUSTER_PATH}`;
    const ws = new WebSocket(url, {
      headers: { [AUTH_HEADER]: signUpgrade(secret, selfNodeId, peerUrl, Date.now()) },
      perMessageDeflate: false,
      maxPayload: limits.maxFrameBytes,
      handshakeTimeout: limits.connectTimeoutMs,
    });
    return new Promise<WebSocket>((resolve, reject) => {
      ws.once('open', () => {
        if (this.closed) {
          // Closed while connecting: close() could not reach this socket.
          ws.close(1001, 'node shutting down');
          reject(new Error('forwarding client closed'));
          return;
        }
        this.ws = ws;
        if (this.unreachable !== null) this.options.log.info({ peer: peerUrl }, 'reached the peer again');
        this.unreachable = null;
        this.warnedRefusal = false;
        resolve(ws);
        this.options.onOpen?.(peerUrl);
      });
      ws.once('unexpected-response', (_req, res) => {
        const why = res.headers[REFUSAL_HEADER];
        reject(new Error(`it refused the cluster connection: ${res.statusCode}${typeof why === 'string' ? ` ${why}` : ''}`));
        ws.terminate();
      });
      ws.on('error', (err: Error & { code?: string }) => {
        // Past maxPayload ws closes the socket (1009) and says so here.
        if (err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') this.refused('oversized', null, 'the frame is over the size limit');
        reject(err);
      });
      ws.on('message', (data, isBinary) => this.onReplyFrame(data as Buffer, isBinary));
      ws.on('close', () => {
        if (this.ws === ws) this.ws = null;
        this.requester.failSent('connection to the owner closed before it replied');
      });
    });
  }

  /**
   * A frame from the owner: only replies, each to a request this client sent
   * and still waits for, of the kind that request gets. A frame that is not one
   * drops the connection (what was sent becomes `unknown_outcome`); a reply that
   * is refused makes its request's outcome unknown at once (the owner may have
   * executed it), never a shopper's answer.
   */
  private onReplyFrame(data: Buffer, isBinary: boolean): void {
    const frame = isBinary ? 'malformed' : decodeFrame(data.toString('utf8'));
    if (isRefusal(frame) || frame.t !== 'res') {
      const reason = isRefusal(frame) ? frame : 'envelope';
      this.refusals[reason] += 1;
      this.options.log.error({ peer: this.options.peerUrl, reason }, 'malformed reply frame: dropping the connection');
      this.ws?.terminate();
      return;
    }
    for (const value of frame.m) {
      const id = messageId(value);
      const entry = id === null ? undefined : this.requester.take(id);
      if (id === null || entry === undefined) {
        // Ids are handed out in order: one issued already was sent and answered (or timed out).
        this.refused(id === null ? 'envelope' : this.requester.issued(id) ? 'late_reply' : 'unsent_reply', null, 'a reply to no waiting request');
        continue;
      }
      const reply = decodeReply(value, id, entry.envelope.payload);
      if (isRefusal(reply)) {
        this.refused(reply, entry, "the owner's reply was refused");
        continue;
      }
      this.replies += 1;
      const { id: _id, ...result } = reply;
      this.requester.answer(entry, result);
    }
  }

  /** Counts a refusal, logs the first of a connection, and makes a refused reply's request `unknown_outcome`. */
  private refused(reason: RefusalReason, entry: Pending | null, what: string): void {
    this.refusals[reason] += 1;
    if (!this.warnedRefusal && reason !== 'late_reply') {
      this.warnedRefusal = true;
      this.options.log.warn({ peer: this.options.peerUrl, reason }, `${what} (further refusals on this connection are only counted)`);
    }
    if (entry !== null) this.requester.answer(entry, unknown(`${what} (${reason}): the outcome is unknown`));
  }
}

function unavailable(detail: string): ForwardResult {
  return { ok: false, code: 'unavailable', detail };
}

function unknown(detail: string): ForwardResult {
  return { ok: false, code: 'unknown_outcome', detail };
}

/** What a node's forwarding clients did, over its life (forgotten peers' included). */
export interface ForwardTotals {
  /** Commands sent to owners, replies received, replies that did not come in time. */
  forwarded: { sent: number; replied: number; timed_out: number };
  /** Frames those commands went out in (a turn's commands to one owner share a frame, up to maxBatch). */
  forwardFrames: number;
  notices: NoticeStats;
  /** Owners' frames and replies refused, by reason. */
  refusals: FrameRefusals;
}

/** One ForwardClient per peer URL, created on first use. */
export class ForwardPool {
  private readonly clients = new Map<string, ForwardClient>();
  /** Counts of clients already closed, so the totals only ever grow (metrics counters). */
  private readonly retired: ForwardTotals = {
    forwarded: { sent: 0, replied: 0, timed_out: 0 },
    forwardFrames: 0,
    notices: { sent: 0, coalesced: 0, dropped: 0, heldBack: 0 },
    refusals: newFrameRefusals(),
  };

  constructor(private readonly base: Omit<ForwardClientOptions, 'peerUrl'>) {}

  forward(peerUrl: string, shard: number, request: ShardRequest): Promise<ForwardResult> {
    return this.client(peerUrl).forward(shard, request);
  }

  /** The client of a peer, created (not yet connected) on first use. */
  client(peerUrl: string): ForwardClient {
    let client = this.clients.get(peerUrl);
    if (client === undefined) {
      client = new ForwardClient({ ...this.base, peerUrl });
      this.clients.set(peerUrl, client);
    }
    return client;
  }

  /** Peers with a client now. */
  peers(): string[] {
    return [...this.clients.keys()];
  }

  /** A peer that left or died: close its connection (a later use starts a new one). */
  forget(peerUrl: string): void {
    const client = this.clients.get(peerUrl);
    if (client === undefined) return;
    client.close();
    this.clients.delete(peerUrl);
    addTotals(this.retired, client);
  }

  totals(): ForwardTotals {
    const totals = structuredClone(this.retired);
    for (const client of this.clients.values()) addTotals(totals, client);
    return totals;
  }

  close(): void {
    for (const client of this.clients.values()) {
      client.close();
      addTotals(this.retired, client);
    }
    this.clients.clear();
  }
}

function addTotals(totals: ForwardTotals, client: ForwardClient): void {
  totals.forwarded.sent += client.stats.sent;
  totals.forwarded.replied += client.stats.replies;
  totals.forwarded.timed_out += client.stats.timeouts;
  totals.forwardFrames += client.stats.frames;
  for (const key of Object.keys(totals.notices) as (keyof NoticeStats)[]) totals.notices[key] += client.noticeStats[key];
  addRefusals(totals.refusals, client.refusals);
}

/** Adds refusal counts (metrics sum the endpoint's and the clients'). */
export function addRefusals(into: FrameRefusals, from: FrameRefusals): void {
  for (const key of Object.keys(into) as (keyof FrameRefusals)[]) into[key] += from[key];
}
