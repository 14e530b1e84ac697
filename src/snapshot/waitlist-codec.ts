import { waitlistStatuses, type WaitlistEntry, type WaitlistState } from '../allocator/waitlist.js';
import type { SkuConfig } from '../allocator/types.js';

/** The parts of codec.ts's Writer and Reader this section uses (structural: no import back into codec.ts). */
interface Writer {
  u8(value: number): void;
  u32(value: number): void;
  f64(value: number): void;
  string(value: string): void;
  nullableF64(value: number | null): void;
  nullableString(value: string | null): void;
}

interface Reader {
  u8(): number;
  u32(): number;
  f64(): number;
  string(): string;
  nullableF64(): number | null;
  nullableString(): string | null;
  count(minBytes: number): number;
}

/**
 * The waitlist section of a snapshot (format 2, after the remembered keys):
 * the config's waitlistOfferSeconds (nullable f64), the entries in join order
 * (u32 count, then each), and the closed entries' indexes in close order.
 */

export function writeWaitlistSection(w: Writer, config: SkuConfig | null, state: WaitlistState | undefined): void {
  w.nullableF64(config?.waitlistOfferSeconds ?? null);
  const entries = state?.entries ?? [];
  w.u32(entries.length);
  for (const e of entries) {
    w.string(e.waitlistId);
    w.string(e.shopperId);
    w.string(e.idempotencyKey);
    w.f64(e.quantity);
    w.f64(e.joinedAtMs);
    w.u8(waitlistStatuses.indexOf(e.status));
    w.nullableString(e.reservationId);
    w.nullableF64(e.closedAtMs);
  }
  const closed = state?.closedOrder ?? [];
  w.u32(closed.length);
  for (const i of closed) w.u32(i);
}

/** The section back; sets the config's waitlistOfferSeconds. Entries are checked when the allocator restores them. */
export function readWaitlistSection(r: Reader, config: SkuConfig | null, invalid: (detail: string) => Error): WaitlistState {
  const offerSeconds = r.nullableF64();
  if (config !== null && offerSeconds !== null) config.waitlistOfferSeconds = offerSeconds;
  const entries: WaitlistEntry[] = [];
  for (let i = 0, n = r.count(36); i < n; i++) {
    const waitlistId = r.string();
    const shopperId = r.string();
    const idempotencyKey = r.string();
    const quantity = r.f64();
    const joinedAtMs = r.f64();
    const status = waitlistStatuses[r.u8()];
    if (status === undefined) throw invalid(`unknown waitlist status in ${waitlistId}`);
    const reservationId = r.nullableString();
    const closedAtMs = r.nullableF64();
    entries.push({ waitlistId, shopperId, idempotencyKey, quantity, joinedAtMs, status, reservationId, closedAtMs });
  }
  const closedOrder: number[] = [];
  for (let i = 0, n = r.count(4); i < n; i++) closedOrder.push(r.u32());
  return { entries, closedOrder };
}
