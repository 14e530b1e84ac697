import type { MessagePort } from 'node:worker_threads';
import type { ShardChannel, ShardEndpoint, ShardNotice, ShardReply, ShardRequest } from '../shard/messages.js';

/**
 * A ShardChannel over a MessagePort: a front-end thread (PortChannel) talks to
 * the shard host on the main thread (PortEndpoint). Both sides batch: every
 * request (or reply, or notice) of one event-loop turn travels in one
 * postMessage, flushed by setImmediate (after the turn's I/O callbacks), so a
 * thread sends at most one message per turn whatever the number of requests
 * or shards. Besides shard requests the same port carries a few named calls
 * (payments, readiness, old-id lookups): plain arguments, plain results.
 */

/** What one request asks: a shard command, or a named call the main thread serves. */
export type PortCall =
  | { kind: 'shard'; shard: number; request: ShardRequest }
  | { kind: 'call'; method: string; args: unknown[] };

export type PortReply = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: string };

/** Thread → main: the turn's requests. */
export interface RequestBatch {
  requests: { id: number; call: PortCall }[];
}

/** Main → thread: the turn's replies and notices, and whether the shards are ready. */
export interface ReplyBatch {
  replies: PortReply[];
  notices: ShardNotice[];
  shardsReady: boolean;
}

/** Requests a thread may have waiting on the main thread; past it they are refused at once (503). */
export const portMaxInFlightDefault = 50_000;

/** The main thread's named calls a front-end thread may make (plain arguments and results). */
export type PortCalls = Record<string, (...args: never[]) => Promise<unknown>>;

/** Per-turn batching: `add` queues, one flush per turn hands the whole batch on. */
class TurnBatch<T> {
  private items: T[] = [];
  private scheduled = false;

  constructor(private readonly flush: (items: T[]) => void) {}

  add(item: T): void {
    this.items.push(item);
    this.schedule();
  }

  schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      const items = this.items;
      this.items = [];
      this.flush(items);
    });
  }
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  /** What a shard request answers when the transport fails (never a hang). */
  shard: boolean;
}

/** The front-end thread's side: a ShardChannel plus named calls, over one port. */
export class PortChannel implements ShardChannel {
  private readonly pending = new Map<number, Pending>();
  private readonly listeners: ((notice: ShardNotice) => void)[] = [];
  private readonly drainWaiters: (() => void)[] = [];
  private readonly outgoing: TurnBatch<{ id: number; call: PortCall }>;
  private nextId = 1;
  private closed = false;
  shardsReady: boolean;

  constructor(
    private readonly port: MessagePort,
    private readonly options: { maxInFlight: number; shardsReady: boolean },
  ) {
    this.shardsReady = options.shardsReady;
    this.outgoing = new TurnBatch((requests) => {
      if (!this.closed && requests.length > 0) this.port.postMessage({ requests } satisfies RequestBatch);
    });
    port.on('message', (batch: ReplyBatch) => this.receive(batch));
    port.on('close', () => this.fail('the shard host is gone'));
  }

  /** Requests sent and not yet answered. */
  get inFlight(): number {
    return this.pending.size;
  }

  request<R extends ShardRequest>(shard: number, request: R): Promise<ShardReply<R['type']>> {
    if (this.closed || this.pending.size >= this.options.maxInFlight) {
      const detail = this.closed ? 'the front end is shutting down' : 'too many requests in flight to the shards';
      return Promise.resolve({ ok: false, code: 'unavailable', detail } as ShardReply<R['type']>);
    }
    return this.send({ kind: 'shard', shard, request }, true) as Promise<ShardReply<R['type']>>;
  }

  /** A named call served by the main thread; rejects when the transport fails or the call threw. */
  call<T>(method: string, args: unknown[]): Promise<T> {
    if (this.closed) return Promise.reject(new Error('the front end is shutting down'));
    if (this.pending.size >= this.options.maxInFlight) return Promise.reject(new Error('too many requests in flight'));
    return this.send({ kind: 'call', method, args }, false) as Promise<T>;
  }

  private send(call: PortCall, shard: boolean): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, shard });
      this.outgoing.add({ id, call });
    });
  }

  private receive(batch: ReplyBatch): void {
    this.shardsReady = batch.shardsReady;
    for (const reply of batch.replies) {
      const pending = this.pending.get(reply.id);
      if (pending === undefined) continue;
      this.pending.delete(reply.id);
      if (reply.ok) pending.resolve(reply.value);
      else if (pending.shard) pending.resolve({ ok: false, code: 'unavailable', detail: reply.error });
      else pending.reject(new Error(reply.error));
    }
    for (const notice of batch.notices) for (const listener of this.listeners) listener(notice);
    this.checkDrained();
  }

  /** Every pending request answered as unavailable (shard) or rejected (calls): nothing hangs. */
  private fail(reason: string): void {
    this.closed = true;
    for (const [id, pending] of this.pending) {
      this.pending.delete(id);
      if (pending.shard) pending.resolve({ ok: false, code: 'unavailable', detail: reason });
      else pending.reject(new Error(reason));
    }
    this.checkDrained();
  }

  /** Resolves once no request waits on the main thread (shutdown: answer before closing sockets). */
  drained(): Promise<void> {
    if (this.pending.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  private checkDrained(): void {
    if (this.pending.size > 0) return;
    for (const waiter of this.drainWaiters.splice(0)) waiter();
  }

  onNotice(listener: (notice: ShardNotice) => void): void {
    this.listeners.push(listener);
  }

  async close(): Promise<void> {
    this.fail('the front end is shutting down');
    this.port.close();
  }
}

/**
 * The main thread's side of one front-end thread's port: serves its shard
 * requests through the ShardEndpoint (the ShardHost) and its named calls,
 * and sends the replies and notices of each turn in one message.
 */
export class PortEndpoint {
  private readonly outgoing: TurnBatch<PortReply | ShardNotice>;
  private closed = false;

  constructor(
    private readonly port: MessagePort,
    private readonly endpoint: ShardEndpoint,
    private readonly calls: PortCalls,
    private readonly shardsReady: () => boolean,
  ) {
    this.outgoing = new TurnBatch((items) => this.flush(items));
    port.on('message', (batch: RequestBatch) => {
      for (const { id, call } of batch.requests) this.serve(id, call);
    });
  }

  /** A notice for this thread's front end (sent with the turn's replies). */
  notify(notice: ShardNotice): void {
    if (!this.closed) this.outgoing.add(notice);
  }

  /** Sends the readiness now, even with nothing else to say (after recovery). */
  pushReadiness(): void {
    if (!this.closed) this.outgoing.schedule();
  }

  private serve(id: number, call: PortCall): void {
    const answer =
      call.kind === 'shard' ? this.endpoint.handle(call.shard, call.request) : this.invoke(call.method, call.args);
    answer.then(
      (value) => this.reply({ id, ok: true, value }),
      (error: unknown) => this.reply({ id, ok: false, error: error instanceof Error ? error.message : String(error) }),
    );
  }

  private invoke(method: string, args: unknown[]): Promise<unknown> {
    const fn = Object.hasOwn(this.calls, method) ? this.calls[method] : undefined;
    if (fn === undefined) return Promise.reject(new Error(`no such call: ${method}`));
    return (fn as (...args: unknown[]) => Promise<unknown>)(...args);
  }

  private reply(reply: PortReply): void {
    if (!this.closed) this.outgoing.add(reply);
  }

  private flush(items: (PortReply | ShardNotice)[]): void {
    if (this.closed) return;
    const batch: ReplyBatch = { replies: [], notices: [], shardsReady: this.shardsReady() };
    for (const item of items) {
      if ('id' in item) batch.replies.push(item);
      else batch.notices.push(item);
    }
    this.port.postMessage(batch);
  }

  close(): void {
    this.closed = true;
    this.port.close();
  }
}
