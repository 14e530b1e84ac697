import type { ReservationStatus } from '../allocator/types.js';

/**
 * What the snapshot's encoder (codec.ts) and decoder (decoder.ts) agree on.
 *
 * Layout (little-endian): magic "FSNP", u32 format version, u32 body length,
 * then the body: numbers as f64, strings as u32 byte length + UTF-8, flags as
 * u8, remembered keys as raw Uint32 arrays. A buffer of another magic or
 * version, shorter or longer than its header says, or whose parts disagree
 * (totals against reservations) throws SnapshotFormatError: never half-read.
 */

/**
 * 2 added, after the remembered keys, the waiting-room section and then the waitlist section (and the
 * config's waitingRoom and waitlistOfferSeconds). Version 1 is still read: it has neither section.
 */
export const snapshotFormatVersion = 2;
export const oldestReadableVersion = 1;
export const magic = 0x504e5346; // "FSNP" read as a little-endian u32
export const headerBytes = 12;

export class SnapshotFormatError extends Error {
  override name = 'SnapshotFormatError';
}

// Appended to, never reordered: the index is the encoding.
export const statuses: readonly ReservationStatus[] = ['held', 'released', 'expired', 'checking_out', 'paid', 'payment_failed', 'tentative'];
