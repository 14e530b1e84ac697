import type { MessagePort } from 'node:worker_threads';
import type { ShardEndpoint, ShardNotice, ShardReply, ShardRequest } from '../shard/messages.js';
import { unavailableReply, unknownOutcomeReply, type Link } from './link.js';
import { Listeners } from './listeners.js';
import { Requester } from './requester.js';
import { Responder } from './responder.js';

/**
 * The link over a MessagePort, between two threads of this process: PortLink
 * on the calling side, PortServer on the side that holds the shards. Both
 * sides batch through the road's one Requester and Responder: every request
 * (or reply, or notice) of one event-loop turn travels in one postMessage.
 * Frames are structured-clone data from this very process, so they are not
 * decoded again. Besides shard requests a port may carry a few named calls
 * (payments, readiness, old-id lookups): plain arguments, plain results.
 */

/** A shard request, or a named call the serving thread offers. */
export type PortEnvelope = { id: number; shard: number; payload: ShardRequest } | { id: number; call: string; args: unknown[] };

export type PortReply = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: string };

/** Caller → server: the turn's requests. */
export interface RequestBatch {
  requests: PortEnvelope[];
}

/** Server → caller: the turn's replies and notices, and whether the server's shards are ready. */
export interface ReplyBatch {
  replies: PortReply[];
  notices: ShardNotice[];
  shardsReady: boolean;
}

/** One end of a port straight to a shard thread, with the shards that thread serves (a front-end thread routes them to it). */
export interface ShardPort {
  port: MessagePort;
  shards: number[];
}

/** Requests a thread may have waiting on one port; past it they are refused at once (503). */
export const portMaxInFlightDefault = 50_000;

/** The named calls a port's server offers (plain arguments and results). */
export type PortCalls = Record<string, (...args: never[]) => Promise<unknown>>;

/** How a named call fails when its road does (the caller's promise rejects with it). */
class CallFailure {
  constructor(readonly detail: string) {}
}

/** The calling side: a Link plus named calls, over one port. */
export class PortLink implements Link {
  private readonly requester: Requester<PortEnvelope, unknown>;
  private readonly listeners = new Listeners<ShardNotice>();
  shardsReady: boolean;
  /** Shard requests sent since start (named calls not counted). */
  requests = 0;

  constructor(
    private readonly port: MessagePort,
    options: { maxInFlight: number; shardsReady: boolean },
  ) {
    this.shardsReady = options.shardsReady;
    this.requester = new Requester<PortEnvelope, unknown>({
      maxInFlight: options.maxInFlight,
      timeoutMs: null,
      failed: (envelope, detail, sent) => ('call' in envelope ? new CallFailure(detail) : sent ? unknownOutcomeReply(detail) : unavailableReply(detail)),
      flush: (requests) => {
        for (const envelope of requests) this.requester.markSent(envelope.id);
        this.port.postMessage({ requests } satisfies RequestBatch);
      },
    });
    port.on('message', (batch: ReplyBatch) => this.receive(batch));
    port.on('close', () => this.requester.close('the shard host is gone'));
  }

  /** Requests sent and not yet answered. */
  get inFlight(): number {
    return this.requester.inFlight;
  }

  request<R extends ShardRequest>(shard: number, request: R): Promise<ShardReply<R['type']>> {
    const refusal = this.requester.refusal();
    if (refusal !== null) return Promise.resolve(unavailableReply(refusal));
    this.requests += 1;
    return this.requester.send({ id: this.requester.nextId(), shard, payload: request }) as Promise<ShardReply<R['type']>>;
  }

  /** A named call served by the other side; rejects when the road fails or the call threw. */
  async call<T>(method: string, args: unknown[]): Promise<T> {
    const refusal = this.requester.refusal();
    if (refusal !== null) throw new Error(refusal);
    const value = await this.requester.send({ id: this.requester.nextId(), call: method, args });
    if (value instanceof CallFailure) throw new Error(value.detail);
    return value as T;
  }

  private receive(batch: ReplyBatch): void {
    this.shardsReady = batch.shardsReady;
    for (const reply of batch.replies) {
      const entry = this.requester.take(reply.id);
      if (entry === undefined) continue;
      if (reply.ok) this.requester.answer(entry, reply.value);
      else if ('call' in entry.envelope) this.requester.answer(entry, new CallFailure(reply.error));
      else this.requester.answer(entry, unavailableReply(reply.error));
    }
    for (const notice of batch.notices) this.listeners.emit(notice);
  }

  /** Resolves once no request waits on the other side (shutdown: answer before closing sockets). */
  drained(): Promise<void> {
    return this.requester.drained();
  }

  onNotice(listener: (notice: ShardNotice) => void): void {
    this.listeners.add(listener);
  }

  async close(): Promise<void> {
    this.requester.close('shutting down');
    this.port.close();
  }
}

/**
 * The serving side of one port: shard requests go to the ShardEndpoint (a
 * ShardHost, or a routing table), named calls to `calls`; the replies and
 * notices of each turn go back in one message.
 */
export class PortServer {
  private readonly responder: Responder<PortReply | ShardNotice>;

  constructor(
    private readonly port: MessagePort,
    private readonly endpoint: ShardEndpoint,
    private readonly calls: PortCalls,
    private readonly shardsReady: () => boolean,
  ) {
    this.responder = new Responder(portMaxInFlightDefault, (items) => this.flush(items));
    port.on('message', (batch: RequestBatch) => {
      for (const envelope of batch.requests) this.serve(envelope);
    });
  }

  /** A notice for the other side (sent with the turn's replies). */
  notify(notice: ShardNotice): void {
    this.responder.add(notice);
  }

  /**
   * Once every request this side took is answered, posts the replies at once.
   * A thread about to end calls it before it says so: the thread that ends it
   * could otherwise terminate it between two flushes of one turn, and a reply
   * committed but not yet posted would be lost (its caller hears "unknown").
   */
  async answerAll(): Promise<void> {
    await this.responder.idle();
    this.responder.flushNow();
  }

  /** Sends the readiness now, even with nothing else to say (after recovery). */
  pushReadiness(): void {
    this.responder.schedule();
  }

  private serve(envelope: PortEnvelope): void {
    const { id } = envelope;
    if (!this.responder.admit()) {
      this.responder.add({ id, ok: false, error: 'too many requests in flight' });
      return;
    }
    const answer = 'call' in envelope ? this.invoke(envelope.call, envelope.args) : this.endpoint.handle(envelope.shard, envelope.payload);
    answer.then(
      (value) => this.responder.done({ id, ok: true, value }),
      (error: unknown) => this.responder.done({ id, ok: false, error: error instanceof Error ? error.message : String(error) }),
    );
  }

  private invoke(method: string, args: unknown[]): Promise<unknown> {
    const fn = Object.hasOwn(this.calls, method) ? this.calls[method] : undefined;
    if (fn === undefined) return Promise.reject(new Error(`no such call: ${method}`));
    return (fn as (...args: unknown[]) => Promise<unknown>)(...args);
  }

  private flush(items: (PortReply | ShardNotice)[]): void {
    const batch: ReplyBatch = { replies: [], notices: [], shardsReady: this.shardsReady() };
    for (const item of items) {
      if ('id' in item) batch.replies.push(item);
      else batch.notices.push(item);
    }
    this.port.postMessage(batch);
  }

  close(): void {
    this.responder.close();
    this.port.close();
  }
}
