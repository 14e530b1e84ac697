import { isMainThread, threadId } from 'node:worker_threads';
import type { HttpRequest, HttpResponse } from 'uWebSockets.js';
import type { Logger } from 'pino';
import { problem, type ProblemCode } from './problem.js';
import type { Outcome } from '../inventory/inventory.js';
import { unmatchedRoute, type Metrics, type RouteMetrics } from '../metrics/metrics.js';
import { clientIp, type TrustedProxies } from '../ratelimit/client-ip.js';

/**
 * One request/response pair over uWebSockets.js, with its rules built in:
 * the abort handler is attached before anything async, nothing is written after
 * an abort, every write is corked, and exactly one response is sent.
 */

const statusLines: Record<number, string> = {
  200: '200 OK',
  201: '201 Created',
  202: '202 Accepted',
  400: '400 Bad Request',
  401: '401 Unauthorized',
  403: '403 Forbidden',
  404: '404 Not Found',
  405: '405 Method Not Allowed',
  426: '426 Upgrade Required',
  409: '409 Conflict',
  413: '413 Payload Too Large',
  415: '415 Unsupported Media Type',
  422: '422 Unprocessable Content',
  429: '429 Too Many Requests',
  500: '500 Internal Server Error',
  503: '503 Service Unavailable',
};

export interface ExchangeContext {
  log: Logger;
  retryAfterSeconds: number;
  maxBodyBytes: number;
  /** Called for an error the handler did not expect: log it, maybe crash. */
  onUnexpected: (error: unknown, exchange: Exchange) => void;
  /** Whom to believe in X-Forwarded-For (null: nobody, the TCP peer is the client). */
  trustProxy?: TrustedProxies;
  /** Per-route instruments (the router hands each Exchange its route's). */
  metrics?: Metrics;
}

/**
 * The response being written: `res.cork` runs its callback at once, so one
 * set of slots serves every response, where a closure per response cost ~80
 * heap bytes (of ~4.6 KB a reservation allocates: `npm run bench`, heap B /
 * op). Read and cleared before anything is written, so a write from inside a
 * write is safe.
 */
const corked: {
  exchange: Exchange | null;
  status: number;
  payload: string;
  contentType: string;
  headers: [string, string][] | undefined;
} = { exchange: null, status: 0, payload: '', contentType: '', headers: undefined };

let requestCounter = 0;
const requestIdPrefix = `${process.pid.toString(36)}-${Date.now().toString(36)}-`;
const requestIdPattern = /^[\x21-\x7e]{1,100}$/;
/** With front-end threads, which one answered (operators and tests see the spread); absent with one thread. */
const threadHeader: [string, string] | null = isMainThread ? null : ['x-flashstock-thread', String(threadId)];

/** The client's `X-Request-Id` when it is usable, else a new one (every response carries one). */
export function requestIdFor(given: string): string {
  return requestIdPattern.test(given) ? given : requestIdPrefix + (++requestCounter).toString(36);
}

export class Exchange {
  aborted = false;
  done = false;
  readonly requestId: string;
  readonly method: string;
  readonly url: string;
  private readonly startedMs = performance.now();
  /** Read now: uWS invalidates `req` when the handler returns. '' unless TRUST_PROXY is on. */
  private readonly forwardedFor: string;
  private ip: string | null = null;
  /** An answer that is routine even as a 5xx (a readiness poll while not ready): access log at debug. */
  private routine = false;
  /** What `readJson` hands the parsed body to: a field, not a closure per request. */
  private onJson: ((body: unknown) => void) | null = null;

  constructor(
    readonly res: HttpResponse,
    req: HttpRequest,
    readonly ctx: ExchangeContext,
    /** The route pattern's instruments (null: no route matched). */
    readonly route: RouteMetrics | null = null,
  ) {
    res.onAborted(() => {
      this.aborted = true;
    });
    this.requestId = requestIdFor(req.getHeader('x-request-id'));
    this.method = req.getCaseSensitiveMethod();
    this.url = req.getUrl();
    this.forwardedFor = ctx.trustProxy ? req.getHeader('x-forwarded-for') : '';
  }

  /** The client's address (see src/ratelimit/client-ip.ts); read from the socket, so only before the response ends. */
  get clientIp(): string {
    this.ip ??= clientIp(Buffer.from(this.res.getRemoteAddressAsText()).toString(), this.forwardedFor, this.ctx.trustProxy ?? null);
    return this.ip;
  }

  send(status: number, body: unknown, contentType = 'application/json', headers?: [string, string][]): void {
    if (this.aborted || this.done) return;
    this.done = true;
    this.write(status, JSON.stringify(body), contentType, headers);
  }

  /** A body that is already text (the Prometheus exposition format). */
  sendText(status: number, text: string, contentType: string): void {
    if (this.aborted || this.done) return;
    this.done = true;
    this.write(status, text, contentType);
  }

  private write(status: number, payload: string, contentType: string, headers?: [string, string][]): void {
    this.accessLog(status);
    corked.exchange = this;
    corked.status = status;
    corked.payload = payload;
    corked.contentType = contentType;
    corked.headers = headers;
    this.res.cork(Exchange.writeCorked);
  }

  /** Writes the response `corked` describes, inside `res.cork` (which runs it at once). */
  private static writeCorked(this: void): void {
    const { exchange, status, payload, contentType, headers } = corked;
    corked.exchange = null;
    corked.payload = '';
    corked.headers = undefined;
    const res = exchange!.res;
    res.writeStatus(statusLines[status] ?? String(status));
    res.writeHeader('content-type', contentType);
    res.writeHeader('x-request-id', exchange!.requestId);
    if (threadHeader !== null) res.writeHeader(threadHeader[0], threadHeader[1]);
    if (headers !== undefined) for (const [name, value] of headers) res.writeHeader(name, value);
    if (exchange!.method !== 'HEAD') {
      res.end(payload);
      return;
    }
    // HEAD: GET's headers, no body. uWS's own Content-Length would be 0 here,
    // and endWithoutBody(length) in this build leaves the response open (the
    // connection is then closed), so the length is written by hand.
    res.writeHeader('content-length', String(Buffer.byteLength(payload)));
    res.endWithoutBody();
  }

  /** Per-route metrics, and the access log line: debug, or info for 5xx and 429 (what an operator looks for). */
  private accessLog(status: number): void {
    const seconds = (performance.now() - this.startedMs) / 1000;
    this.route?.done(status, seconds);
    const log = this.ctx.log;
    const notable = (status >= 500 || status === 429) && !this.routine;
    if (!notable && !log.isLevelEnabled('debug')) return;
    const line = {
      reqId: this.requestId,
      method: this.method,
      route: this.route?.route ?? unmatchedRoute,
      status,
      ms: Math.round(seconds * 10_000) / 10,
      ip: this.clientIp,
    };
    if (notable) log.info(line, 'request');
    else log.debug(line, 'request');
  }

  problem(code: ProblemCode, detail: string, headers: [string, string][] = []): void {
    const body = problem(code, detail, this.url);
    if (body.status === 503) headers.push(['retry-after', String(this.ctx.retryAfterSeconds)]);
    // Not ready is an answer, not a failure: probes ask every few seconds during recovery, and the
    // readiness state logs its own changes (recovery start and end, PostgreSQL lost and back).
    this.routine = code === 'not_ready';
    if (body.status >= 500 && !this.routine) this.ctx.log.warn({ reqId: this.requestId, method: this.method, url: this.url, code, detail }, 'request failed');
    else this.ctx.log.debug({ reqId: this.requestId, method: this.method, url: this.url, code, detail }, 'request refused');
    this.send(body.status, body, 'application/problem+json', headers);
  }

  outcome<T>(outcome: Outcome<T>, status: number): void {
    if (outcome.ok) this.send(status, outcome.value);
    else this.problem(outcome.code, outcome.detail);
  }

  /** 200 with `value`, or 404 `not_found` saying `missing` when there is none. */
  found<T>(value: T | null, missing: string): void {
    if (value === null) this.problem('not_found', missing);
    else this.send(200, value);
  }

  /** Settle from a promise; an unexpected rejection becomes a 500, never a hang. */
  settle<T>(promise: Promise<T>, onValue: (value: T) => void): void {
    promise.then(onValue, (error: unknown) => this.ctx.onUnexpected(error, this));
  }

  /**
   * Read a JSON body with `onData`, enforcing the media type and the size
   * bound before anything is buffered past it. Calls `onBody` only with parsed JSON.
   */
  readJson(req: HttpRequest, onBody: (body: unknown) => void): void {
    this.onJson = onBody;
    this.receiveBody(req, null);
  }

  /** Parse a raw body; a 400 instead of `onBody` when it is not JSON. */
  parseJson(raw: Buffer, onBody: (body: unknown) => void): void {
    let body: unknown;
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch {
      this.problem('invalid_request', 'the body is not valid JSON');
      return;
    }
    onBody(body);
  }

  /** The raw JSON body (webhooks sign the exact bytes), a copy `onBody` may keep. */
  readBody(req: HttpRequest, onBody: (raw: Buffer) => void): void {
    this.receiveBody(req, onBody);
  }

  /**
   * The body to `onRaw`, or parsed to `onJson` when `onRaw` is null: then the
   * bytes are only parsed, so a body that arrives in one chunk is read where
   * uWS has it, not copied.
   */
  private receiveBody(req: HttpRequest, onRaw: ((raw: Buffer) => void) | null): void {
    const contentType = req.getHeader('content-type');
    const declaredLength = req.getHeader('content-length');
    const max = this.ctx.maxBodyBytes;
    if (declaredLength !== '' && Number(declaredLength) > max) {
      this.problem('payload_too_large', `the body may be at most ${max} bytes`);
      return;
    }
    if (!isJson(contentType)) {
      this.problem('unsupported_media_type', 'the body must be application/json');
      return;
    }
    // Made only for a body in several chunks (a small JSON body comes in one).
    let chunks: Buffer[] | null = null;
    let size = 0;
    this.res.onData((chunk, isLast) => {
      if (this.done) return;
      size += chunk.byteLength;
      if (size > max) {
        this.problem('payload_too_large', `the body may be at most ${max} bytes`);
        return;
      }
      let body: Buffer;
      if (isLast && onRaw === null && chunks === null) {
        body = Buffer.from(chunk);
      } else {
        // uWS reuses the chunk's memory after this callback returns: copy it.
        (chunks ??= []).push(Buffer.from(new Uint8Array(chunk)));
        if (!isLast) return;
        body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      }
      try {
        if (onRaw !== null) onRaw(body);
        else this.parseJson(body, this.onJson!);
      } catch (error) {
        this.ctx.onUnexpected(error, this);
      }
    });
  }
}

function isJson(contentType: string): boolean {
  if (contentType === 'application/json') return true;
  const mediaType = contentType.split(';', 1)[0]!.trim().toLowerCase();
  return mediaType === 'application/json' || (mediaType.startsWith('application/') && mediaType.endsWith('+json'));
}
