import { FencedError, type LeaseView } from './lease.js';
import type { OwnershipProof } from './sql.js';

/**
 * A shard thread's view of its node's lease. The lease lives on the node's
 * main thread (one node, one lease session); it writes every shard's epoch
 * (0: not held) into a SharedArrayBuffer in the same synchronous step as its
 * own bookkeeping, and clears them all the moment the session is lost
 * (lease.ts). A thread builds every proof from that memory, so after the loss
 * its next commit fails before it is sent, with no message to wait for:
 * nothing more is acknowledged, exactly as on the main thread.
 */
export class SharedLease implements LeaseView {
  private readonly epochs: Int32Array;

  constructor(
    buffer: SharedArrayBuffer,
    /** The node whose lease this is (the proof names it). */
    readonly nodeId: string,
  ) {
    this.epochs = new Int32Array(buffer);
  }

  /** The shared memory for `shardCount` shards, all not held. */
  static buffer(shardCount: number): SharedArrayBuffer {
    return new SharedArrayBuffer(shardCount * Int32Array.BYTES_PER_ELEMENT);
  }

  epochOf(shard: number): number | undefined {
    const epoch = Atomics.load(this.epochs, shard);
    return epoch === 0 ? undefined : epoch;
  }

  proof(shards: Iterable<number>): OwnershipProof {
    const unique = [...new Set(shards)];
    const epochs: number[] = [];
    for (const shard of unique) {
      const epoch = this.epochOf(shard);
      if (epoch === undefined) throw new FencedError(`node ${this.nodeId} does not hold shard ${shard}`);
      epochs.push(epoch);
    }
    return { nodeId: this.nodeId, shards: unique, epochs };
  }
}
