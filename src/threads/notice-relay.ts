import type { StockState } from '../inventory/inventory.js';
import type { ShardNotice } from '../shard/messages.js';

/**
 * Which front-end threads follow which SKUs, so the main thread relays a SKU's
 * stock to the threads whose sockets follow it and no others: with many SKUs
 * and many threads, every reservation's notice cloned to every thread is
 * garbage on all of them. A thread's first subscriber asks the shard for the
 * counts (get_stock), so it needs no copy of a SKU it does not follow. Other
 * notices (waitlist offers, checkout wake-ups) go to every thread, as before.
 */
export class NoticeRelay {
  private readonly followed: Set<string>[];

  constructor(
    threads: number,
    /** The main thread's latest counts of a SKU (its router hears every notice). */
    private readonly latest: (sku: string) => StockState | null,
  ) {
    this.followed = Array.from({ length: threads }, () => new Set<string>());
  }

  /**
   * A thread's first socket follows `sku` (true), or its last one let it go.
   * On follow, the notice to send it now: the latest counts here, since a
   * change made before this call and after the thread's own get_stock was
   * answered would otherwise never reach it.
   */
  follow(thread: number, sku: string, following: boolean): ShardNotice | null {
    const skus = this.followed[thread];
    if (skus === undefined) throw new Error(`no front-end thread ${thread}`);
    if (!following) {
      skus.delete(sku);
      return null;
    }
    skus.add(sku);
    const state = this.latest(sku);
    return state === null ? null : { type: 'stock', state };
  }

  /** Whether `thread` is sent `notice`. */
  relays(thread: number, notice: ShardNotice): boolean {
    if (notice.type === 'stock') return this.followed[thread]!.has(notice.state.sku);
    if (notice.type === 'passivated') return this.followed[thread]!.has(notice.sku);
    return true;
  }
}
