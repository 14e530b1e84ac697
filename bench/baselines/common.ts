import { timingSafeEqual, createHash } from 'node:crypto';
import uWS from 'uWebSockets.js';
import { verifyShopperToken } from '../lib/jwt.js';

/**
 * The HTTP shell the baselines share (uWebSockets.js, like the service), so a
 * comparison measures the design behind the endpoint and not the HTTP stack.
 * Each baseline runs as its own process: `PORT` (0 = any free one) and prints
 * one JSON line `{"ready":true,"port":N}` on stdout once it listens.
 */

export type Res = uWS.HttpResponse;

const statusText: Record<number, string> = {
  200: '200 OK',
  201: '201 Created',
  400: '400 Bad Request',
  401: '401 Unauthorized',
  404: '404 Not Found',
  409: '409 Conflict',
  422: '422 Unprocessable Entity',
  500: '500 Internal Server Error',
  503: '503 Service Unavailable',
};

export interface Answer {
  status: number;
  body: unknown;
}

export function send(res: Res, answer: Answer): void {
  const problem = answer.status >= 400;
  const body = JSON.stringify(answer.body);
  res.cork(() => {
    res
      .writeStatus(statusText[answer.status] ?? String(answer.status))
      .writeHeader('Content-Type', problem ? 'application/problem+json' : 'application/json')
      .end(body);
  });
}

export function problem(status: number, code: string, detail: string): Answer {
  return { status, body: { type: 'about:blank', title: code.replace(/_/g, ' '), status, detail, code } };
}

/** Reads the whole body; resolves null if the client went away. */
export function readBody(res: Res, limit = 16 * 1024): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    res.onAborted(() => {
      (res as { aborted?: boolean }).aborted = true;
      resolve(null);
    });
    res.onData((chunk, isLast) => {
      size += chunk.byteLength;
      if (size <= limit) chunks.push(Buffer.from(chunk.slice(0)));
      if (isLast) resolve(size > limit ? Buffer.alloc(0) : Buffer.concat(chunks));
    });
  });
}

export function reply(res: Res, answer: Answer): void {
  if ((res as { aborted?: boolean }).aborted) return;
  send(res, answer);
}

export function adminCheck(adminToken: string): (authorization: string) => boolean {
  const expected = createHash('sha256').update(adminToken).digest();
  return (authorization) => {
    const token = authorization.startsWith('Bearer ') ? authorization.slice(7) : '';
    return timingSafeEqual(createHash('sha256').update(token).digest(), expected);
  };
}

export interface SkuInput {
  stock: number;
  perShopperLimit: number;
  holdSeconds: number;
  priceCents: number;
  currency: string;
}

export function parseSkuInput(body: Buffer): SkuInput | null {
  try {
    const v = JSON.parse(body.toString()) as Partial<SkuInput>;
    const int = (x: unknown, min: number): x is number => Number.isInteger(x) && (x as number) >= min;
    if (!int(v.stock, 0) || !int(v.perShopperLimit, 1) || !int(v.holdSeconds, 1) || !int(v.priceCents, 0)) return null;
    return { stock: v.stock, perShopperLimit: v.perShopperLimit, holdSeconds: v.holdSeconds, priceCents: v.priceCents, currency: String(v.currency ?? 'USD') };
  } catch {
    return null;
  }
}

export function parseQuantity(body: Buffer): number | null {
  try {
    const v = JSON.parse(body.toString()) as { quantity?: unknown };
    return Number.isInteger(v.quantity) && (v.quantity as number) >= 1 && (v.quantity as number) <= 100 ? (v.quantity as number) : null;
  } catch {
    return null;
  }
}

/** Listens, announces the port on stdout, and exits cleanly on SIGTERM/SIGINT after `cleanup`. */
export function serve(app: uWS.TemplatedApp, cleanup: () => Promise<void> = async () => {}): void {
  const port = Number(process.env.PORT ?? 0);
  app.listen('127.0.0.1', port, (token) => {
    if (!token) {
      console.error(`cannot listen on port ${port}`);
      process.exit(1);
    }
    const actual = uWS.us_socket_local_port(token);
    process.stdout.write(`${JSON.stringify({ ready: true, port: actual })}\n`);
    const stop = (): void => {
      uWS.us_listen_socket_close(token);
      (app as { close?: () => void }).close?.();
      cleanup().then(
        () => process.exit(0),
        (error: unknown) => {
          console.error(error);
          process.exit(1);
        },
      );
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
}

export function env(name: string, fallback?: string): string {
  const v = process.env[name] ?? fallback;
  if (v === undefined || v === '') throw new Error(`${name} is required`);
  return v;
}

export interface ReservationRequest {
  sku: string;
  shopperId: string;
  idempotencyKey: string;
  quantity: number;
}

/**
 * The reservation route every baseline shares: read the headers while `req` is
 * valid, the body, the JWT and the quantity, answer 401/400 itself, and hand
 * a well-formed request to `decide`.
 */
export function reservationRoute(jwtSecret: string, decide: (request: ReservationRequest) => Promise<Answer>) {
  return (res: Res, req: uWS.HttpRequest): void => {
    const sku = req.getParameter(0) ?? '';
    const auth = req.getHeader('authorization');
    const key = req.getHeader('idempotency-key');
    void readBody(res).then(async (body) => {
      if (body === null) return;
      const token = auth.startsWith('Bearer ') ? verifyShopperToken(jwtSecret, auth.slice(7)) : null;
      if (token === null) return reply(res, problem(401, 'unauthorized', 'bad token'));
      const quantity = parseQuantity(body);
      if (quantity === null || key === '') return reply(res, problem(400, 'invalid_request', 'quantity and Idempotency-Key required'));
      reply(res, await decide({ sku, shopperId: token.sub, idempotencyKey: key, quantity }));
    });
  };
}

/**
 * The admin `PUT /v1/admin/skus/:sku` route every baseline shares: headers,
 * body, admin token and SKU body checked here, the store's own upsert in `apply`.
 */
export function adminSkuRoute(adminToken: string, apply: (sku: string, input: SkuInput) => Promise<Answer>) {
  const isAdmin = adminCheck(adminToken);
  return (res: Res, req: uWS.HttpRequest): void => {
    const sku = req.getParameter(0) ?? '';
    const auth = req.getHeader('authorization');
    void readBody(res).then(async (body) => {
      if (body === null) return;
      if (!isAdmin(auth)) return reply(res, problem(401, 'unauthorized', 'admin token required'));
      const input = parseSkuInput(body);
      if (input === null) return reply(res, problem(400, 'invalid_request', 'bad SKU body'));
      reply(res, await apply(sku, input));
    });
  };
}
