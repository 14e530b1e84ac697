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
import { shardOf, shardOfReservationId, shardOfWaitlistId } from './placement.js';
import { reservationSkuQuery } from './sql.js';
import { CartCoordinator } from '../carts/coordinator.js';
import type { QueueView } from '../queue/view.js';
import type { WaitlistJoinRequest, WaitlistOfferNotice, WaitlistView } from '../inventory/waitlist-view.js';

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
  private readonly offerListeners: ((notice: WaitlistOfferNotice) => void)[] = [];
  private closing = false;
  /** Carts over the same channel: lines on any shard, thread or node (src/carts). */
  readonly carts: CartCoordinator;

  constructor(
    private readonly channel: Link,
    private readonly options: RouterOptions,
  ) {
    this.carts = new CartCoordinator(channel, options.shardCount);
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
      case 'waitlist_offer':
        for (const listener of this.offerListeners) listener(notice);
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

  /** Durable waitlist offers of this node's shards (for their shoppers' live streams). */
  onWaitlistOffer(listener: (notice: WaitlistOfferNotice) => void): void {
    this.offerListeners.push(listener);
  }

  /** The latest counts a shard pushed for `sku` (null if none since start, or passivated). */
  stockState(sku: string): StockState | null {
    return this.latest.get(sku) ?? null;
  }

  /**
   * The counts a new subscriber starts from, asked of the SKU's shard (here,
   * on another thread or node), kept as the latest unless a state further
   * along the SKU's log came first (the owner pushes changes too). Null when
   * the SKU does not exist; the owner's refusal when it cannot be asked.
   */
  async fetchStock(sku: string): Promise<Outcome<StockState | null>> {
    const outcome = await this.channel.request(this.shard(sku), { type: 'get_stock', sku });
    if (!outcome.ok) return outcome.code === 'not_found' ? { ok: true, value: null } : outcome;
    const fetched = outcome.value;
    const known = this.latest.get(sku);
    if (known !== undefined && known.seq >= fetched.seq) return { ok: true, value: known };
    this.latest.set(sku, fetched);
    return { ok: true, value: fetched };
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
    const { sku, shopperId, quantity, idempotencyKey } = request;
    // `admitted` travels only when set (a SKU with a waiting room needs it).
    const message = request.admitted === true
      ? { type: 'reserve' as const, sku, shopperId, quantity, idempotencyKey, admitted: true }
      : { type: 'reserve' as const, sku, shopperId, quantity, idempotencyKey };
    return this.channel.request(this.shard(sku), message);
  }

  /** Take (or get back) the shopper's ticket in the SKU's waiting room. */
  joinQueue(sku: string, shopperId: string): Promise<Outcome<QueueView>> {
    return this.channel.request(this.shard(sku), { type: 'queue_join', sku, shopperId });
  }

  /** Where a ticket stands; the ticket's SKU hash names its shard (not_found for any other id). */
  pollQueue(ticket: string, shopperId: string): Promise<Outcome<QueueView>> {
    const shard = shardOfReservationId(ticket, this.options.shardCount);
    if (shard === null) return Promise.resolve({ ok: false, code: 'not_found', detail: `ticket ${ticket} does not exist` });
    return this.channel.request(shard, { type: 'queue_poll', ticket, shopperId });
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

  joinWaitlist(request: WaitlistJoinRequest): Promise<Outcome<WaitlistView>> {
    return this.channel.request(this.shard(request.sku), { type: 'join_waitlist', ...request });
  }

  getWaitlistEntry(waitlistId: string, shopperId: string): Promise<Outcome<WaitlistView>> {
    const shard = shardOfWaitlistId(waitlistId, this.options.shardCount);
    if (shard === null) return Promise.resolve(waitlistNotFound(waitlistId));
    return this.channel.request(shard, { type: 'get_waitlist', waitlistId, shopperId });
  }

  leaveWaitlist(waitlistId: string, shopperId: string): Promise<Outcome<WaitlistView>> {
    const shard = shardOfWaitlistId(waitlistId, this.options.shardCount);
    if (shard === null) return Promise.resolve(waitlistNotFound(waitlistId));
    return this.channel.request(shard, { type: 'leave_waitlist', waitlistId, shopperId });
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

function waitlistNotFound(waitlistId: string): Outcome<never> {
  return { ok: false, code: 'not_found', detail: `waitlist entry ${waitlistId} does not exist` };
}
