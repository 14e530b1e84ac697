import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../log.js';

/**
 * `GET /metrics` on its own listener (METRICS_HOST:METRICS_PORT, by default
 * 127.0.0.1:9464), never on the public port: the registry tells anyone who can
 * read it reservations by outcome, live holds, the SKU count and payment
 * outcomes. One per process, on the main thread, whatever HTTP_THREADS is: the
 * registry's `text()` is already every front-end thread's aggregate. A scrape
 * every few seconds is no load, so this is node:http rather than a second
 * uWebSockets.js app on the main thread.
 */
export interface MetricsListener {
  /** http://host:port (127.0.0.1 for a wildcard host); `${url}/metrics` is the scrape target. */
  url: string;
  port: number;
  close(): Promise<void>;
}

export interface MetricsSource {
  text(): Promise<string>;
  contentType(): string;
}

export async function listenMetrics(host: string, port: number, source: MetricsSource, log: Logger): Promise<MetricsListener> {
  const server = http.createServer((req, res) => answer(req, res, source, log));
  server.on('clientError', (_error, socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = (server.address() as AddressInfo).port;
  const shown = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  return {
    url: `http://${shown}:${bound}`,
    port: bound,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function answer(req: http.IncomingMessage, res: http.ServerResponse, source: MetricsSource, log: Logger): void {
  const path = (req.url ?? '').split('?')[0];
  if (path !== '/metrics') return plain(res, 404, 'not found: the metrics listener serves GET /metrics only\n');
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('allow', 'GET, HEAD');
    return plain(res, 405, 'method not allowed\n');
  }
  source.text().then(
    (text) => {
      res.writeHead(200, { 'content-type': source.contentType(), 'content-length': Buffer.byteLength(text) });
      res.end(req.method === 'HEAD' ? undefined : text);
    },
    (error: unknown) => {
      log.error({ err: error }, 'metrics: the registry could not be read');
      plain(res, 500, 'metrics unavailable\n');
    },
  );
}

function plain(res: http.ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
