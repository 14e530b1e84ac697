import net from 'node:net';

/**
 * One HTTP/1.1 request written byte for byte over TCP, for what fetch cannot
 * show or send: a HEAD response's (absent) body, paths that URL-normalising
 * clients rewrite (`/v1/skus/..`), raw upgrade handshakes, header values of
 * any bytes (a Buffer value is written as it is). The request asks for
 * `Connection: close`; the response ends at the end of its header block (HEAD,
 * 101), after `Content-Length` bytes of body, when the server closes, or after
 * `quietMs` without data, whichever comes first.
 */
export interface RawResponse {
  status: number;
  /** Lower-cased names; repeated headers keep every value. */
  headers: Map<string, string[]>;
  header(name: string): string | undefined;
  /** Bytes after the header block, exactly as sent. */
  body: Buffer;
}

export async function rawRequest(
  baseUrl: string,
  method: string,
  path: string,
  headers: Record<string, string | Buffer> = {},
  body = '',
  // Only a fallback for a response that never completes (each is recognised as
  // complete above): long enough for a machine at load 20 to answer an audit.
  quietMs = 60_000,
): Promise<RawResponse> {
  const { hostname, port } = new URL(baseUrl);
  const lines: Buffer[] = [Buffer.from(`${method} ${path} HTTP/1.1\r\nHost: ${hostname}:${port}\r\n`)];
  const all: Record<string, string | Buffer> = { connection: 'close', ...headers };
  if (body !== '') all['content-length'] = String(Buffer.byteLength(body));
  for (const [name, value] of Object.entries(all)) {
    // A string gets the usual `name: value`; a Buffer is every byte after the colon, as given.
    lines.push(typeof value === 'string' ? Buffer.from(`${name}: ${value}\r\n`) : Buffer.concat([Buffer.from(`${name}:`), value, Buffer.from('\r\n')]));
  }
  const head = Buffer.concat(lines);
  const raw = await new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = net.connect(Number(port), hostname);
    let timer: NodeJS.Timeout | undefined;
    const finish = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(Buffer.concat(chunks));
    };
    const quiet = () => {
      clearTimeout(timer);
      timer = setTimeout(finish, quietMs);
    };
    socket.on('connect', () => {
      socket.write(Buffer.concat([head, Buffer.from(`\r\n${body}`)]));
      quiet();
    });
    socket.on('data', (chunk) => {
      chunks.push(chunk);
      if (complete(Buffer.concat(chunks), method)) finish();
      else quiet();
    });
    socket.on('end', finish);
    socket.on('close', finish);
    socket.on('error', reject);
  });
  return parse(raw);
}

/** True once `raw` holds the whole response to `method`. */
function complete(raw: Buffer, method: string): boolean {
  const split = raw.indexOf('\r\n\r\n');
  if (split < 0) return false;
  const head = raw.subarray(0, split).toString('latin1');
  if (method === 'HEAD' || /^HTTP\/1\.1 1\d\d/.test(head)) return true;
  const length = /\r\ncontent-length:\s*(\d+)/i.exec(head);
  return length !== null && raw.byteLength - split - 4 >= Number(length[1]);
}

function parse(raw: Buffer): RawResponse {
  const split = raw.indexOf('\r\n\r\n');
  if (split < 0) throw new Error(`no complete response header: ${JSON.stringify(raw.toString('latin1'))}`);
  const [statusLine, ...headerLines] = raw.subarray(0, split).toString('latin1').split('\r\n');
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(statusLine!)?.[1]);
  const map = new Map<string, string[]>();
  for (const line of headerLines) {
    const colon = line.indexOf(':');
    const name = line.slice(0, colon).trim().toLowerCase();
    map.set(name, [...(map.get(name) ?? []), line.slice(colon + 1).trim()]);
  }
  return { status, headers: map, header: (name) => map.get(name)?.join(', '), body: raw.subarray(split + 4) };
}
