import type { SkuAllocator } from '../allocator/allocator.js';

/**
 * A waiting-room ticket as the shard answers it (join and poll). The front end
 * turns `admitted` into an admission token (src/queue/admission.ts); the shard
 * never holds the signing secret.
 */
export interface QueueView {
  ticket: string;
  sku: string;
  status: 'waiting' | 'admitted';
  /** 1 = next in line; null before the start (the pre-queue is drawn at the start) and once admitted. */
  position: number | null;
  /** Seconds until admission at the configured rate (until the start, before it); 0 once admitted. */
  estimatedWaitSeconds: number;
}

/** Tickets of the waiting rooms in memory (flashstock_queue_tickets). */
export interface QueueTicketCounts {
  waiting: number;
  admitted: number;
}

/** Ticket `index` of `allocator`'s waiting room at `nowMs`: one object, O(log n). */
export function queueView(allocator: SkuAllocator, index: number, nowMs: number): QueueView {
  const queue = allocator.queue;
  const at = queue.position(index, allocator.config!, nowMs);
  const ticket = queue.ticketAt(index);
  if (at.status === 'admitted') return { ticket, sku: allocator.sku, status: 'admitted', position: null, estimatedWaitSeconds: 0 };
  const estimatedWaitSeconds = Math.ceil((at.admitAtMs - nowMs) / 1000);
  return { ticket, sku: allocator.sku, status: 'waiting', position: at.position, estimatedWaitSeconds };
}
