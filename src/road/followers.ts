/**
 * How many followers each SKU has here, told when the first comes and the last
 * goes: the sockets of one stream (src/ws/stream.ts), or the front ends of one
 * node (src/cluster/live.ts). Whoever sends a SKU's changes sends them only
 * to those that follow it (the main thread to its front-end threads, an owner
 * to the nodes), so the first follower starts from counts asked of the owner.
 */
export class Followers {
  private readonly counts = new Map<string, number>();

  constructor(private readonly changed: (sku: string, following: boolean) => void) {}

  has(sku: string): boolean {
    return this.counts.has(sku);
  }

  add(sku: string): void {
    const count = (this.counts.get(sku) ?? 0) + 1;
    this.counts.set(sku, count);
    if (count === 1) this.changed(sku, true);
  }

  remove(sku: string): void {
    const count = this.counts.get(sku);
    if (count === undefined) throw new Error(`a SKU nobody here follows was let go: ${sku}`);
    if (count > 1) {
      this.counts.set(sku, count - 1);
      return;
    }
    this.counts.delete(sku);
    this.changed(sku, false);
  }

  /** SKUs followed by at least one follower. */
  skus(): IterableIterator<string> {
    return this.counts.keys();
  }
}
