import type pg from 'pg';
import type { SkuConfig } from '../allocator/types.js';
import type {
  CheckoutRequest,
  CheckoutView,
  Inventory,
  Outcome,
  ReservationView,
  ReserveRequest,
  SettleRequest,
  SkuView,
  StockState,
} from '../inventory/inventory.js';
import type { Link } from '../road/link.js';
import type { ShardNotice } from './messages.js';
import { shardOf, shardOfReservationId } from './placement.js';
import { reservationSkuQuery } from './sql.js';

export interface RouterOptions {
  shardCount: number;
  /** Whether every shard behind the channel has recovered (readiness). */
  shardsReady: () => boolean;
  /** Resolves ids minted before shards (no SKU hash inside) through the log. */
  pool: pg.Pool | null;
  /** Instead of `pool`: where a front-end thread asks the main thread for an old id's SKU. */
  legacySku?: (reservationId: string) => Promise<string | null>;
}

/**
 * The front ends' Inventory: sends each command to the shard that owns its
 * SKU, through a Link (a routing table of links, or one link), in plain messages. A reservation id carries its
 * SKU's hash, so requests by id need no lookup table. The router keeps the
 * latest StockState each shard pushed (for the live feed and the audit); it
 * never reaches into an allocator.
 */
export class Router implements Inventory {
  private readonly latest = new Map<string, StockState>();
  private readonly stockListeners: ((state: StockState) => void)[] = [];
  private readonly checkoutListeners: ((orderId: string) => void)[] = [];
  private closing = false;

  constructor(
    private readonly channel: Link,
    private readonly options: RouterOptions,
  ) {
    channel.onNotice((notice) => this.onNotice(notice));
  }

  private onNotice(notice: ShardNotice): void {
    switch (notice.type) {
      case 'stock':
        this.latest.set(notice.state.sku, notice.state);
        for (const listener of this.stockListeners) listener(notice.state);
        break;
      case 'passivated':
        this.latest.delete(notice.sku);
        break;
      case 'checkout_durable':
        for (const listener of this.checkoutListeners) listener(notice.orderId);
        break;
    }
  }

  /** Every durable change of a SKU's counts, as pushed by its shard. */
  onStock(listener: (state: StockState) => void): void {
    this.stockListeners.push(listener);
  }

  onCheckoutDurable(listener: (orderId: string) => void): void {
    this.checkoutListeners.push(listener);
  }

  /** The latest counts a shard pushed for `sku` (null if none since start, or passivated). */
  stockState(sku: string): StockState | null {
    return this.latest.get(sku) ?? null;
  }

  isReady(): boolean {
    return !this.closing && this.options.shardsReady();
  }

  private shard(sku: string): number {
    return shardOf(sku, this.options.shardCount);
  }

  /** The shard of a reservation: from the id, or (older ids) from the log; null when it does not exist. */
  private async shardOfReservation(reservationId: string): Promise<number | null> {
    const fromId = shardOfReservationId(reservationId, this.options.shardCount);
    if (fromId !== null) return fromId;
    const sku = await this.legacySku(reservationId);
    return sku === null ? null : this.shard(sku);
  }

  /** The SKU of an id minted before shards, from the log (null: no such reservation). */
  async legacySku(reservationId: string): Promise<string | null> {
    if (this.options.legacySku !== undefined) return this.options.legacySku(reservationId);
    if (this.options.pool === null) throw new Error('router has neither a pool nor a legacySku lookup');
    const { rows } = await this.options.pool.query<{ sku: string }>(reservationSkuQuery(reservationId));
    return rows.length === 0 ? null : rows[0]!.sku;
  }

  configureSku(sku: string, config: SkuConfig): Promise<Outcome<{ created: boolean; view: SkuView }>> {
    return this.channel.request(this.shard(sku), { type: 'configure', sku, config });
  }

  archiveSku(sku: string): Promise<Outcome<SkuView>> {
    return this.channel.request(this.shard(sku), { type: 'archive', sku });
  }

  getSku(sku: string): Promise<Outcome<SkuView>> {
    return this.channel.request(this.shard(sku), { type: 'get_sku', sku });
  }

  reserve(request: ReserveRequest): Promise<Outcome<ReservationView>> {
    return this.channel.request(this.shard(request.sku), {
      type: 'reserve',
      sku: request.sku,
      shopperId: request.shopperId,
      quantity: request.quantity,
      idempotencyKey: request.idempotencyKey,
    });
  }

  async getReservation(reservationId: string, shopperId: string): Promise<Outcome<ReservationView>> {
    const shard = await this.shardOfReservation(reservationId);
    if (shard === null) return notFound(reservationId);
    return this.channel.request(shard, { type: 'get_reservation', reservationId, shopperId });
  }

  async release(reservationId: string, shopperId: string): Promise<Outcome<ReservationView>> {
    const shard = await this.shardOfReservation(reservationId);
    if (shard === null) return notFound(reservationId);
    return this.channel.request(shard, { type: 'release', reservationId, shopperId });
  }

  async checkout(request: CheckoutRequest): Promise<Outcome<CheckoutView>> {
    const shard = await this.shardOfReservation(request.reservationId);
    if (shard === null) return notFound(request.reservationId);
    return this.channel.request(shard, { type: 'checkout', ...request });
  }

  settle(request: SettleRequest): Promise<Outcome<{ changed: boolean }>> {
    return this.channel.request(this.shard(request.sku), { type: 'settle', ...request });
  }

  async close(): Promise<void> {
    this.closing = true;
  }
}

function notFound(reservationId: string): Outcome<never> {
  return { ok: false, code: 'not_found', detail: `reservation ${reservationId} does not exist` };
}
