import type { StockState } from '../inventory/inventory.js';
import type { ShardNotice } from '../shard/messages.js';

/**
 * Which front-end threads follow which SKUs, so a thread that sends notices to
 * them (the main thread, or a shard thread over its direct ports) sends a
 * SKU's stock to the threads whose sockets follow it and no others: with many
 * SKUs and many threads, every reservation's notice cloned to every thread is
 * garbage on all of them. A thread's first subscriber asks the shard for the
 * counts (get_stock), so it needs no copy of a SKU it does not follow. Other
 * notices (waitlist offers, checkout wake-ups) go to every thread, as before.
 */
export class NoticeRelay {
  /** By front-end thread (its index among the ports this side sends notices to). */
  private readonly followed = new Map<number, Set<string>>();

  constructor(
    /** The latest counts of a SKU on this side (the main thread's router, a shard thread's allocators). */
    private readonly latest: (sku: string) => StockState | null,
  ) {}

  /**
   * A thread's first socket follows `sku` (true), or its last one let it go.
   * On follow, the notice to send it now: the latest counts here, since a
   * change made before this call and after the thread's own get_stock was
   * answered would otherwise never reach it.
   */
  follow(thread: number, sku: string, following: boolean): ShardNotice | null {
    let skus = this.followed.get(thread);
    if (!following) {
      skus?.delete(sku);
      return null;
    }
    if (skus === undefined) {
      skus = new Set();
      this.followed.set(thread, skus);
    }
    skus.add(sku);
    const state = this.latest(sku);
    return state === null ? null : { type: 'stock', state };
  }

  /** Whether `thread` is sent `notice`. */
  relays(thread: number, notice: ShardNotice): boolean {
    if (notice.type === 'stock') return this.followed.get(thread)?.has(notice.state.sku) === true;
    if (notice.type === 'passivated') return this.followed.get(thread)?.has(notice.sku) === true;
    return true;
  }
}
