import net from 'node:net';

/**
 * One HTTP/1.1 request written byte for byte over TCP, for what fetch cannot
 * show or send: a HEAD response's (absent) body, paths that URL-normalising
 * clients rewrite (`/v1/skus/..`), raw upgrade handshakes. The request asks for
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
  headers: Record<string, string> = {},
  body = '',
  quietMs = 10_000,
): Promise<RawResponse> {
  const { hostname, port } = new URL(baseUrl);
  const lines = [`${method} ${path} HTTP/1.1`, `Host: ${hostname}:${port}`];
  const all: Record<string, string> = { connection: 'close', ...headers };
  if (body !== '') all['content-length'] = String(Buffer.byteLength(body));
  for (const [name, value] of Object.entries(all)) lines.push(`${name}: ${value}`);
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
      socket.write(`${lines.join('\r\n')}\r\n\r\n${body}`);
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
