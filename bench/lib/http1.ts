import net from 'node:net';

/**
 * A minimal keep-alive HTTP/1.1 client connection for the load generator: one
 * request in flight at a time (no pipelining), requests written as
 * pre-serialized strings or buffers, responses parsed for the status line and
 * Content-Length only (every server here answers small bodies with a length).
 */

const headerEnd = Buffer.from('\r\n\r\n');
const contentLengthPattern = /\r\ncontent-length:[ \t]*(\d+)/i;
const chunkedPattern = /\r\ntransfer-encoding:[ \t]*chunked/i;

export interface ParsedResponse {
  status: number;
  /** The body as latin1 text (bodies are small JSON). */
  body: string;
}

/**
 * Incremental parser: feed it chunks, it returns a response once a whole one
 * has arrived. Throws on anything it does not understand.
 */
export class ResponseParser {
  private pending: Buffer | null = null;

  reset(): void {
    this.pending = null;
  }

  /** Returns the completed response, or null when more bytes are needed. */
  feed(chunk: Buffer): ParsedResponse | null {
    // `chunk` may be a view of a reused read buffer: anything kept is copied.
    const buf = this.pending === null ? chunk : Buffer.concat([this.pending, chunk]);
    const end = buf.indexOf(headerEnd);
    if (end < 0) {
      if (buf.length > 64 * 1024) throw new Error('response header too large');
      this.pending = buf === chunk ? Buffer.from(chunk) : buf;
      return null;
    }
    if (buf[0] !== 0x48 /* H */ || buf[8] !== 0x20) throw new Error(`malformed status line: ${JSON.stringify(buf.toString('latin1', 0, Math.min(40, buf.length)))}`);
    const status = (buf[9]! - 48) * 100 + (buf[10]! - 48) * 10 + (buf[11]! - 48);
    const head = buf.toString('latin1', 0, end);
    const match = contentLengthPattern.exec(head);
    let length = 0;
    if (match !== null) length = Number(match[1]);
    else if (chunkedPattern.test(head)) throw new Error('chunked responses are not supported by the bench client');
    else if (!(status === 204 || status === 304 || (status >= 100 && status < 200))) {
      throw new Error(`response ${status} without Content-Length`);
    }
    const bodyStart = end + 4;
    const total = bodyStart + length;
    if (buf.length < total) {
      this.pending = buf === chunk ? Buffer.from(chunk) : buf;
      return null;
    }
    if (buf.length > total) throw new Error('unexpected bytes after the response (the client does not pipeline)');
    this.pending = null;
    return { status, body: length === 0 ? '' : buf.toString('latin1', bodyStart, total) };
  }
}

export interface ConnectionEvents {
  onResponse(conn: Http1Connection, response: ParsedResponse): void;
  /** The socket failed or closed; an in-flight request's outcome is unknown. */
  onFailure(conn: Http1Connection, error: Error, requestLost: boolean): void;
}

const readBuffer = Buffer.allocUnsafe(64 * 1024);

export class Http1Connection {
  readonly id: number;
  socket: net.Socket | null = null;
  private readonly parser = new ResponseParser();
  /** Set while a request is in flight. */
  inFlight = false;
  /** Free for the workload's use (the request in flight, its send time...). */
  sentAt = 0;
  intendedAt = 0;
  request: unknown = null;
  private closedByUs = false;

  constructor(
    id: number,
    private readonly host: string,
    private readonly port: number,
    private readonly events: ConnectionEvents,
  ) {
    this.id = id;
  }

  connect(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.parser.reset();
      this.closedByUs = false;
      // Reads land in one buffer per thread (no allocation per read, no stream machinery);
      // the parser copies whatever it has to keep.
      const socket = net.connect({
        host: this.host,
        port: this.port,
        noDelay: true,
        onread: {
          buffer: readBuffer,
          callback: (n: number, buf: Uint8Array): boolean => {
            this.onData(Buffer.from(buf.buffer, buf.byteOffset, n));
            return true;
          },
        },
      });
      this.socket = socket;
      let connected = false;
      socket.on('connect', () => {
        connected = true;
        resolve();
      });
      socket.on('error', (error) => {
        if (!connected) reject(error);
        else this.fail(error);
      });
      socket.on('close', () => {
        if (connected && !this.closedByUs) this.fail(new Error('connection closed by the server'));
      });
    });
  }

  private onData(chunk: Buffer): void {
    let response: ParsedResponse | null;
    try {
      response = this.parser.feed(chunk);
    } catch (error) {
      this.fail(error as Error);
      return;
    }
    if (response === null) return;
    if (!this.inFlight) {
      this.fail(new Error(`unsolicited response ${response.status}`));
      return;
    }
    this.inFlight = false;
    this.events.onResponse(this, response);
  }

  send(data: string | Buffer): void {
    this.inFlight = true;
    if (typeof data === 'string') this.socket!.write(data, 'latin1');
    else this.socket!.write(data);
  }

  private fail(error: Error): void {
    if (this.closedByUs) return;
    this.closedByUs = true;
    this.socket?.destroy();
    this.socket = null;
    const lost = this.inFlight;
    this.inFlight = false;
    this.events.onFailure(this, error, lost);
  }

  /** Drops the connection (e.g. a request timed out); reports a failure. */
  abort(reason: string): void {
    this.fail(new Error(reason));
  }

  close(): void {
    this.closedByUs = true;
    this.socket?.destroy();
    this.socket = null;
  }
}
