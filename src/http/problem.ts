import type { FailureCode } from '../inventory/inventory.js';

/**
 * RFC 9457 problem details. Every error a client can see has a stable `code`;
 * this table is the one place that maps a code to its HTTP status and title.
 */
export type ProblemCode =
  | FailureCode
  | 'invalid_request'
  | 'unauthorized'
  | 'upgrade_required'
  | 'forbidden'
  | 'payload_too_large'
  | 'unsupported_media_type'
  | 'method_not_allowed'
  | 'not_ready'
  | 'provider_mismatch'
  | 'drop_never_runs'
  | 'rate_limited'
  | 'internal'
  | 'admission_invalid'
  | 'admission_expired'
  | 'admission_mismatch';

interface ProblemType {
  status: number;
  title: string;
}

export const problemTypes: Record<ProblemCode, ProblemType> = {
  invalid_request: { status: 400, title: 'Invalid request' },
  quantity_too_large: { status: 400, title: 'Quantity too large' },
  unauthorized: { status: 401, title: 'Unauthorized' },
  forbidden: { status: 403, title: 'Forbidden' },
  not_found: { status: 404, title: 'Not found' },
  method_not_allowed: { status: 405, title: 'Method not allowed' },
  upgrade_required: { status: 426, title: 'Upgrade required' },
  sold_out: { status: 409, title: 'Sold out' },
  limit_exceeded: { status: 409, title: 'Per-shopper limit exceeded' },
  sale_not_open: { status: 409, title: 'Sale not open' },
  stock_below_committed: { status: 409, title: 'Stock below held and sold units' },
  reservation_not_held: { status: 409, title: 'Reservation not held' },
  waitlist_not_enabled: { status: 409, title: 'No waitlist' },
  not_sold_out: { status: 409, title: 'Not sold out' },
  waitlist_full: { status: 409, title: 'Waitlist full' },
  already_waitlisted: { status: 409, title: 'Already on the waitlist' },
  waitlist_entry_closed: { status: 409, title: 'Waitlist entry closed' },
  provider_mismatch: { status: 409, title: 'Contradicts the payment provider' },
  payload_too_large: { status: 413, title: 'Payload too large' },
  unsupported_media_type: { status: 415, title: 'Unsupported media type' },
  idempotency_key_reused: { status: 422, title: 'Idempotency key reused' },
  drop_never_runs: { status: 422, title: 'Drop never runs' },
  rate_limited: { status: 429, title: 'Too many requests' },
  internal: { status: 500, title: 'Internal error' },
  unavailable: { status: 503, title: 'Service unavailable' },
  too_many_holds: { status: 503, title: 'Too many live holds' },
  not_ready: { status: 503, title: 'Not ready' },
  reservation_in_cart: { status: 409, title: 'Reservation is a cart line' },
  cart_aborted: { status: 409, title: 'Cart aborted' },
  mixed_currencies: { status: 409, title: 'Lines in different currencies' },
  admission_required: { status: 403, title: 'Admission token required' },
  admission_invalid: { status: 403, title: 'Admission token invalid' },
  admission_expired: { status: 403, title: 'Admission token expired' },
  admission_mismatch: { status: 403, title: 'Admission token for another shopper or SKU' },
  no_waiting_room: { status: 409, title: 'No waiting room' },
  waiting_room_in_use: { status: 409, title: 'Waiting room in use' },
  queue_full: { status: 503, title: 'Waiting room full' },
};

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: ProblemCode;
  instance?: string;
}

export function problem(code: ProblemCode, detail: string, instance?: string): Problem {
  const { status, title } = problemTypes[code];
  const body: Problem = { type: `https://flashstock.dev/problems/${code.replace(/_/g, '-')}`, title, status, detail, code };
  if (instance !== undefined) body.instance = instance;
  return body;
}

/** Statuses whose problems tell the client when to come back. */
export function isRetryable(status: number): boolean {
  return status === 503;
}
