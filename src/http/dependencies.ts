import type { Logger } from 'pino';
import type { ShopperVerifier } from '../auth/auth.js';
import type { Inventory } from '../inventory/inventory.js';
import type { Payments } from '../payments/payments.js';
import type { Metrics } from '../metrics/metrics.js';
import type { TrustedProxies } from '../ratelimit/client-ip.js';
import type { RateLimits } from '../ratelimit/rate-limits.js';
import type { Drops } from '../drops/drops.js';
import type { ClusterSnapshot } from '../cluster/membership.js';
import type { CartsApi } from '../carts/coordinator.js';
import type { AdmissionTokens } from '../queue/admission.js';

/**
 * What the HTTP layer asks of payments. The Payments class implements it on the
 * main thread; a front-end thread gets a client that forwards each call over
 * its MessagePort (src/threads/payments-client.ts).
 */
export type PaymentsApi = Pick<Payments, 'order' | 'adminOrder' | 'audit' | 'verifyWebhook' | 'webhook'>;

/** What the HTTP layer asks of drops (forwarded the same way from a front-end thread). */
export type DropsApi = Pick<Drops, 'put' | 'remove' | 'view'>;

/** What the HTTP front end needs, as plain fields (route modules take what they use). */
export interface HttpDependencies {
  inventory: Inventory;
  payments: PaymentsApi;
  /** Recurring sale cycles (src/drops). */
  drops: DropsApi;
  log: Logger;
  verifyShopper: ShopperVerifier;
  isAdmin: (authorization: string | undefined) => boolean;
  /** Postgres answers (for /readyz). */
  databaseAlive: () => Promise<boolean>;
  maxBodyBytes: number;
  retryAfterSeconds: number;
  /** A fault no request should cause (an invariant broke): log and crash. */
  onFatal: (error: unknown) => void;
  /** Per-route metrics (`GET /metrics` is served by the metrics listener, src/metrics/listener.ts). */
  metrics: Metrics;
  /** 429 `rate_limited` on reserve, release and checkout (absent: no limits). */
  rateLimits?: RateLimits;
  /** Signs and checks waiting-room admission tokens (src/queue/admission.ts). */
  admission: AdmissionTokens;
  /** Whom to believe in X-Forwarded-For (null: nobody). */
  trustProxy?: TrustedProxies;
  /** A cluster node's membership view (absent: a node alone; no cluster routes); a port call on a front-end thread. */
  cluster?: () => Promise<ClusterSnapshot>;
  /** Carts (absent: no cart routes), and CART_MAX_LINES. */
  carts?: CartsApi;
  cartMaxLines?: number;
}
