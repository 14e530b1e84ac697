import { randomUUID } from 'node:crypto';
import { startFlashstock, type Flashstock, type StartOptions } from '../../src/app.js';
import { signShopperToken } from '../../src/auth/auth.js';
import type { Config } from '../../src/config.js';
import { assertContract } from './contract.js';
import { createTestDatabase } from './db.js';

// At least 32 bytes: the service refuses shorter secrets (src/config.ts).
export const adminToken = 'test-admin-token-0123456789abcdef';
export const jwtSecret = 'test-jwt-secret-0123456789abcdef';

export interface TestService {
  service: Flashstock;
  url: string;
  /** The metrics listener: `${metricsUrl}/metrics` (never on `url`). */
  metricsUrl: string;
  databaseUrl: string;
  token(shopperId: string): string;
  call(method: string, path: string, options?: CallOptions): Promise<CallResult>;
  putSku(sku: string, body?: Record<string, unknown>): Promise<CallResult>;
  reserve(sku: string, shopperId: string, quantity?: number, key?: string): Promise<CallResult>;
}

export interface CallOptions {
  body?: unknown;
  rawBody?: string;
  token?: string;
  shopper?: string;
  admin?: boolean;
  headers?: Record<string, string>;
  /**
   * Every response is checked against the OpenAPI document (helpers/contract.ts);
   * a test that must see an undocumented answer says why here, and only then is it not checked.
   */
  unchecked?: string;
}

export interface CallResult {
  status: number;
  headers: Headers;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  body: any;
}

interface Teardown {
  teardown(fn: () => unknown): void;
}

export const skuDefaults = { stock: 10, perShopperLimit: 5, holdSeconds: 300, priceCents: 1999, currency: 'USD' };

export function clientFor(url: string): Pick<TestService, 'token' | 'call' | 'putSku' | 'reserve'> {
  const token = (shopperId: string) => signShopperToken(jwtSecret, shopperId, 3600);
  const call = async (method: string, path: string, options: CallOptions = {}): Promise<CallResult> => {
    const headers: Record<string, string> = { ...options.headers };
    if (options.admin) headers.authorization = `Bearer ${adminToken}`;
    if (options.shopper !== undefined) headers.authorization = `Bearer ${token(options.shopper)}`;
    if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
    let body: string | undefined = options.rawBody;
    if (options.body !== undefined) {
      body = JSON.stringify(options.body);
      headers['content-type'] ??= 'application/json';
    }
    const response = await fetch(url + path, { method, headers, body });
    const text = await response.text();
    if (options.unchecked === undefined) assertContract({ method, path, status: response.status, headers: response.headers, text });
    else if (options.unchecked.trim() === '') throw new Error('unchecked needs the reason the response is not checked');
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      /* not JSON: keep the text */
    }
    return { status: response.status, headers: response.headers, body: parsed };
  };
  return {
    token,
    call,
    putSku: (sku, body = {}) => call('PUT', `/v1/admin/skus/${sku}`, { admin: true, body: { ...skuDefaults, ...body } }),
    reserve: (sku, shopperId, quantity = 1, key = randomUUID()) =>
      call('POST', `/v1/skus/${sku}/reservations`, {
        shopper: shopperId,
        body: { quantity },
        headers: { 'idempotency-key': key },
      }),
  };
}

/**
 * TEST_HTTP_THREADS=N runs every test service with N front-end threads, and
 * TEST_SHARD_THREADS=N with N shard threads (the whole contract under threads).
 * HTTP threads unset: 1, not the service's default (the cores): tests read
 * `service.live` and count on the main-thread front end.
 */
function testThreads(): Partial<Config> {
  const threads: Partial<Config> = { httpThreads: 1 };
  const http = process.env.TEST_HTTP_THREADS;
  const shards = process.env.TEST_SHARD_THREADS;
  if (http !== undefined && http !== '') threads.httpThreads = Number(http);
  if (shards !== undefined && shards !== '') threads.shardThreads = Number(shards);
  return threads;
}

/** A real service on a fresh database, stopped (and the database dropped) at teardown. */
export async function startTestService(
  t: Teardown,
  overrides: Partial<Config> = {},
  options: StartOptions = {},
  databaseUrl?: string,
): Promise<TestService> {
  const url = databaseUrl ?? (await createTestDatabase(t)).url;
  const service = await startFlashstock(
    { databaseUrl: url, adminToken, jwtSecret, port: 0, metricsPort: 0, host: '127.0.0.1', logLevel: 'silent', ...testThreads(), ...overrides },
    { onFatal: (error) => { throw error; }, cloneMessages: true, ...options },
  );
  t.teardown(() => service.stop());
  return { service, url: service.url, metricsUrl: service.metricsUrl, databaseUrl: url, ...clientFor(service.url) };
}
