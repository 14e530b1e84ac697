import { EventEmitter } from 'node:events';
import CircuitBreaker from 'opossum';
import type { Logger } from 'pino';
import { TransientPaymentError, type ChargeOutcome, type ChargeRequest, type PaymentProvider } from './provider.js';

/**
 * The provider's charge call behind a circuit breaker (opossum).
 *
 * Closed: calls go through. When, within the rolling window, at least
 * `volumeThreshold` calls were made and more than `errorPercent` % of them failed
 * transiently (TransientPaymentError, or no answer within `timeoutMs`), it opens:
 * calls fail at once with BreakerOpenError and never reach the provider. After
 * `resetSeconds` it is half-open: ONE call (the probe) goes through, and the calls
 * that arrive meanwhile wait for the probe's outcome instead of being refused; a
 * successful probe closes it, a failed one opens it again for another
 * `resetSeconds`. Declines are answers, not failures; other errors (bugs) are
 * not the provider's health either, so they do not count.
 *
 * A probe is a real call, so a failed probe spends its job's retry like any
 * transient failure. Deliberately: if a failed probe deferred its job instead,
 * one payment that fails on its own (the oldest job is first in every fetch,
 * so it is the probe every time) would hold the breaker open for everyone.
 * During a long outage the oldest jobs therefore reach the dead letter one by
 * one, one per retry limit + 1 probes; all the others wait without spending.
 *
 * A timed-out call may still charge at the provider: that is safe because every
 * charge carries the order id as its idempotency key, so the retry finds it.
 */

export type BreakerState = 'closed' | 'open' | 'half_open';

/** For a gauge: 0 closed, 1 half-open, 2 open (flashstock_payment_breaker_state). */
export const breakerStateValue: Record<BreakerState, number> = { closed: 0, half_open: 1, open: 2 };

export interface BreakerOptions {
  volumeThreshold: number;
  errorPercent: number;
  windowSeconds: number;
  resetSeconds: number;
  timeoutMs: number;
}

/** The breaker refused the call: the provider was not called. Retry after `retryAfterMs`. */
export class BreakerOpenError extends Error {
  override name = 'BreakerOpenError';
  constructor(readonly retryAfterMs: number) {
    super(`payment provider circuit breaker is open: not calling the provider for ${retryAfterMs} ms`);
  }
}

const windowBuckets = 10;

export class PaymentBreaker {
  private readonly breaker: CircuitBreaker<[ChargeRequest], ChargeOutcome>;
  private readonly events = new EventEmitter();
  private current: BreakerState = 'closed';
  private openedAtMs = 0;
  /** The half-open probe in flight; other calls wait for it. */
  private probe: Promise<unknown> | null = null;
  readonly stats = { opened: 0, rejected: 0, probes: 0 };

  constructor(
    provider: PaymentProvider,
    private readonly options: BreakerOptions,
    private readonly log: Logger,
  ) {
    this.breaker = new CircuitBreaker((request: ChargeRequest) => provider.charge(request), {
      name: `payment-provider-${provider.name}`,
      timeout: options.timeoutMs,
      errorThresholdPercentage: options.errorPercent,
      volumeThreshold: options.volumeThreshold,
      resetTimeout: options.resetSeconds * 1000,
      rollingCountTimeout: options.windowSeconds * 1000,
      rollingCountBuckets: windowBuckets,
      // true = "not the provider's fault": only transient failures and timeouts count.
      errorFilter: (error: unknown) => !isProviderFailure(error),
    });
    this.breaker.on('open', () => this.transition('open'));
    this.breaker.on('halfOpen', () => this.transition('half_open'));
    this.breaker.on('close', () => this.transition('closed'));
  }

  get state(): BreakerState {
    return this.current;
  }

  /** Called with every state change (the metrics gauge, logs). */
  onStateChange(listener: (state: BreakerState) => void): () => void {
    this.events.on('state', listener);
    return () => this.events.off('state', listener);
  }

  /** Charge through the breaker. Throws BreakerOpenError without calling the provider when open. */
  async charge(request: ChargeRequest): Promise<ChargeOutcome> {
    while (this.probe !== null) await this.probe.catch(() => undefined);
    const isProbe = this.breaker.halfOpen;
    const call = this.breaker.fire(request);
    if (isProbe) {
      this.stats.probes += 1;
      const probe = call.finally(() => {
        if (this.probe === probe) this.probe = null;
      });
      this.probe = probe;
      probe.catch(() => undefined);
    }
    try {
      return await call;
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      if (code === 'EOPENBREAKER') {
        this.stats.rejected += 1;
        throw new BreakerOpenError(this.retryAfterMs());
      }
      if (code === 'ETIMEDOUT') throw new TransientPaymentError(`payment provider did not answer within ${this.options.timeoutMs} ms`);
      throw error;
    }
  }

  /** Time left until the breaker lets a probe through (at least a little, so deferred jobs do not spin). */
  retryAfterMs(nowMs = Date.now()): number {
    const left = this.openedAtMs + this.options.resetSeconds * 1000 - nowMs;
    return Math.max(250, left);
  }

  /** Stop its timers (shutdown). */
  shutdown(): void {
    this.breaker.shutdown();
    this.events.removeAllListeners();
  }

  private transition(state: BreakerState): void {
    if (state === this.current) return;
    const from = this.current;
    this.current = state;
    if (state === 'open') {
      this.openedAtMs = Date.now();
      this.stats.opened += 1;
      const { failures, fires } = this.breaker.stats;
      this.log.warn(
        { breaker: this.breaker.name, from, to: state, failures, calls: fires, resetSeconds: this.options.resetSeconds },
        'payment circuit breaker opened: not calling the provider; jobs wait without spending retries',
      );
    } else if (state === 'half_open') {
      this.log.info({ breaker: this.breaker.name, from, to: state }, 'payment circuit breaker half-open: the next charge probes the provider');
    } else {
      this.log.info({ breaker: this.breaker.name, from, to: state }, 'payment circuit breaker closed: the provider answers again');
    }
    this.events.emit('state', state);
  }
}

function isProviderFailure(error: unknown): boolean {
  return error instanceof TransientPaymentError || (error as { code?: unknown } | null)?.code === 'ETIMEDOUT';
}
