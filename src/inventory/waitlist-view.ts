import type { WaitlistEntry, WaitlistStatus } from '../allocator/waitlist.js';

/**
 * What shoppers see of a waitlist entry (Inventory's waitlist calls answer it).
 */
export interface WaitlistView {
  waitlistId: string;
  sku: string;
  quantity: number;
  status: WaitlistStatus;
  /** 1 = first in line; null unless waiting. */
  position: number | null;
  /** The offer's reservation (check it out like any), once offered; null before. */
  reservationId: string | null;
  /** When the offer lapses (`offered`), or lapsed; null before an offer. */
  offerExpiresAt: string | null;
}

export interface WaitlistJoinRequest {
  sku: string;
  shopperId: string;
  quantity: number;
  idempotencyKey: string;
}

/** The notice a durable offer sends toward its shopper's live streams. */
export interface WaitlistOfferNotice {
  type: 'waitlist_offer';
  shopperId: string;
  view: WaitlistView;
}

export function waitlistView(
  sku: string,
  entry: WaitlistEntry,
  position: number | null,
  offerExpiresAtMs: number | null,
  status: WaitlistStatus = entry.status,
): WaitlistView {
  return {
    waitlistId: entry.waitlistId,
    sku,
    quantity: entry.quantity,
    status,
    position,
    reservationId: entry.reservationId,
    offerExpiresAt: offerExpiresAtMs === null ? null : new Date(offerExpiresAtMs).toISOString(),
  };
}
