import type { DropsApi, PaymentsApi } from '../http/dependencies.js';
import { verifyWebhookSignature } from '../payments/webhook.js';
import type { PortLink } from '../road/port-link.js';

type Result<K extends keyof PaymentsApi> = Awaited<ReturnType<PaymentsApi[K]>>;

/**
 * Payments as a front-end thread sees them: every call forwarded over the
 * thread's port to the main thread's Payments (its pool, pg-boss, provider and
 * audit workers stay there). Only the webhook signature is checked here, with
 * the secret the thread was started with: it is CPU work on the request's bytes.
 */
export class PaymentsClient implements PaymentsApi {
  constructor(
    private readonly channel: PortLink,
    private readonly webhookSecret: string | null,
  ) {}

  order(orderId: string, shopperId: string | null): Promise<Result<'order'>> {
    return this.channel.call('order', [orderId, shopperId]);
  }

  adminOrder(orderId: string): Promise<Result<'adminOrder'>> {
    return this.channel.call('adminOrder', [orderId]);
  }

  audit(): Promise<Result<'audit'>> {
    return this.channel.call('audit', []);
  }

  verifyWebhook(rawBody: Buffer, signature: string): boolean {
    return this.webhookSecret !== null && signature !== '' && verifyWebhookSignature(this.webhookSecret, rawBody, signature);
  }

  webhook(delivery: Parameters<PaymentsApi['webhook']>[0]): Promise<Result<'webhook'>> {
    return this.channel.call('webhook', [delivery]);
  }
}

type DropResult<K extends keyof DropsApi> = Awaited<ReturnType<DropsApi[K]>>;

/** Drops as a front-end thread sees them: forwarded to the main thread's Drops (its pool and pg-boss). */
export class DropsClient implements DropsApi {
  constructor(private readonly channel: PortLink) {}

  put(name: string, definition: Parameters<DropsApi['put']>[1]): Promise<DropResult<'put'>> {
    return this.channel.call('dropPut', [name, definition]);
  }

  remove(name: string): Promise<DropResult<'remove'>> {
    return this.channel.call('dropRemove', [name]);
  }

  view(name: string): Promise<DropResult<'view'>> {
    return this.channel.call('dropView', [name]);
  }
}
