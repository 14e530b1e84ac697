/**
 * How many sockets of one stream follow each SKU. In a cluster a node keeps a
 * current copy of another node's SKU only while someone here follows it (the
 * owner pushes changes to the nodes that follow, src/cluster/live.ts), so the
 * stream tells when the first follower comes and the last one goes, and the
 * first one starts from counts asked of the owner.
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
    if (count === undefined) throw new Error(`a SKU no socket follows was let go: ${sku}`);
    if (count > 1) {
      this.counts.set(sku, count - 1);
      return;
    }
    this.counts.delete(sku);
    this.changed(sku, false);
  }

  /** SKUs followed by at least one socket. */
  get size(): number {
    return this.counts.size;
  }
}
