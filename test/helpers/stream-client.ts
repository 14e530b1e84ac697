/**
 * A real WebSocket client for `/v1/stream` tests, on the `ws` package (Node 20
 * has no global WebSocket). `ws` ships no types and is loaded with require, so
 * the few members used are typed here.
 */
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';

interface RawWebSocket {
  readyState: number;
  send(data: string | Buffer, options?: { binary?: boolean }, cb?: (error?: Error) => void): void;
  close(code?: number, reason?: string): void;
  terminate(): void;
  pause(): void;
  resume(): void;
  on(event: 'open', listener: () => void): void;
  on(event: 'message', listener: (data: Buffer, isBinary: boolean) => void): void;
  on(event: 'close', listener: (code: number, reason: Buffer) => void): void;
  on(event: 'error', listener: (error: Error) => void): void;
  on(event: 'unexpected-response', listener: (req: unknown, res: { statusCode: number }) => void): void;
  readonly _socket: Socket;
}
type WebSocketConstructor = new (url: string, options?: { maxPayload?: number }) => RawWebSocket;

const require = createRequire(import.meta.url);
const WebSocket = require('ws') as WebSocketConstructor;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Message = any;

export interface StreamClient {
  raw: RawWebSocket;
  /** Every message received so far, in order, with its receive time. */
  log: { at: number; message: Message }[];
  /** The `hello` the server sent on open. */
  hello: Message;
  send(message: unknown): void;
  /** The first not-yet-taken message matching `match` (waiting for it up to `timeoutMs`). */
  take(match: (message: Message) => boolean, timeoutMs?: number, what?: string): Promise<Message>;
  /** Send a request with `id` and take its reply. */
  request(message: Record<string, unknown> & { id: string }, timeoutMs?: number): Promise<Message>;
  /** Resolves with the close code and reason. */
  closed: Promise<{ code: number; reason: string }>;
  isClosed(): boolean;
  close(): void;
}

interface Teardown {
  teardown(fn: () => unknown): void;
}

/** HTTP status of a refused upgrade, or null if it was accepted. */
export async function upgradeStatus(url: string): Promise<number | null> {
  const raw = new WebSocket(url);
  return new Promise((resolve) => {
    raw.on('open', () => {
      raw.close();
      resolve(null);
    });
    raw.on('unexpected-response', (_req, res) => {
      resolve(res.statusCode);
      raw.terminate();
    });
    raw.on('error', () => undefined);
  });
}

export async function connectStream(t: Teardown, baseUrl: string, token?: string): Promise<StreamClient> {
  const url = new URL('/v1/stream', baseUrl.replace(/^http/, 'ws'));
  if (token !== undefined) url.searchParams.set('token', token);
  const raw = new WebSocket(url.toString(), { maxPayload: 1024 * 1024 });
  const log: StreamClient['log'] = [];
  const taken = new Set<number>();
  // Every pending take() waits here; a message or the close wakes them all to re-scan.
  const waiters = new Set<() => void>();
  const wakeAll = () => {
    for (const wake of [...waiters]) wake();
  };
  let isClosed = false;
  let resolveClosed!: (value: { code: number; reason: string }) => void;
  const closed = new Promise<{ code: number; reason: string }>((resolve) => (resolveClosed = resolve));
  raw.on('message', (data, isBinary) => {
    log.push({ at: Date.now(), message: isBinary ? data : JSON.parse(data.toString('utf8')) });
    wakeAll();
  });
  raw.on('close', (code, reason) => {
    isClosed = true;
    resolveClosed({ code, reason: reason.toString('utf8') });
    wakeAll();
  });
  raw.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    raw.on('open', resolve);
    raw.on('error', reject);
  });
  t.teardown(() => raw.terminate());

  const take = async (match: (message: Message) => boolean, timeoutMs = 5000, what = 'a message'): Promise<Message> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (let i = 0; i < log.length; i += 1) {
        if (!taken.has(i) && match(log[i]!.message)) {
          taken.add(i);
          return log[i]!.message;
        }
      }
      const left = deadline - Date.now();
      if (left <= 0 || isClosed) {
        throw new Error(`timed out waiting for ${what}${isClosed ? ' (socket closed)' : ''}; got ${JSON.stringify(log.map((l) => l.message)).slice(0, 2000)}`);
      }
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          waiters.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, left);
        waiters.add(wake);
      });
    }
  };
  const send = (message: unknown) => raw.send(typeof message === 'string' ? message : JSON.stringify(message));
  const hello = await take((m) => m.type === 'hello', 5000, 'hello');
  return {
    raw,
    log,
    hello,
    send,
    take,
    request: (message, timeoutMs) => {
      send(message);
      return take((m) => m.id === message.id && (m.type === 'reservation' || m.type === 'error'), timeoutMs, `reply to ${message.id}`);
    },
    closed,
    isClosed: () => isClosed,
    close: () => raw.close(),
  };
}
