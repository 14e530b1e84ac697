/**
 * What flashstock needs from a payment provider. Every charge carries an
 * idempotency key (the order id): a provider must return the first charge for a
 * key instead of charging again, which is what makes retries safe.
 */
export interface ChargeRequest {
  idempotencyKey: string;
  amountCents: number;
  currency: string;
  paymentMethod: string;
}

export type ChargeOutcome =
  | { status: 'succeeded'; chargeId: string }
  | { status: 'declined'; chargeId: string; reason: string };

/** The provider's own record of a charge, as it reports it. */
export interface ProviderCharge {
  id: string;
  amountCents: number;
  status: 'succeeded' | 'declined';
  idempotencyKey: string;
}

/** Try again later: timeouts, 5xx, "provider down". Anything else is a bug. */
export class TransientPaymentError extends Error {
  override name = 'TransientPaymentError';
}

export interface PaymentProvider {
  readonly name: string;
  charge(request: ChargeRequest): Promise<ChargeOutcome>;
  /** Charges the provider holds for one idempotency key (normally 0 or 1). */
  chargesFor(idempotencyKey: string): Promise<ProviderCharge[]>;
  /** Every successful charge, for the ledger audit. */
  successfulCharges(): Promise<ProviderCharge[]>;
}
