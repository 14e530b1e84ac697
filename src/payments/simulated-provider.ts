import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import { TransientPaymentError, type ChargeOutcome, type ChargeRequest, type PaymentProvider, type ProviderCharge } from './provider.js';

/**
 * A payment sandbox that keeps its own records (tables simulated_charges and
 * simulated_charge_attempts), so tests and operators can count what was really
 * charged. Behaviour follows the payment method, like a provider's test cards:
 *
 *   pm_ok             succeeds
 *   pm_declined       declines (card_declined)
 *   pm_flaky          fails transiently twice, then succeeds
 *   pm_lost_response  charges, then times out on the first call; a retry finds the charge
 *   pm_down           always fails transiently
 *   anything else     declines (unsupported_payment_method)
 *
 * Like a real sandbox it can also have an outage: between startOutage() and
 * endOutage() every charge, whatever the method, fails transiently (and counts
 * as an attempt), as a provider that is down does.
 */
export class SimulatedPaymentProvider implements PaymentProvider {
  readonly name = 'simulated';
  private down = false;

  constructor(
    private readonly pool: pg.Pool,
    private readonly latencyMs: number,
  ) {}

  /** The provider goes down: every charge fails transiently until endOutage(). */
  startOutage(): void {
    this.down = true;
  }

  endOutage(): void {
    this.down = false;
  }

  get inOutage(): boolean {
    return this.down;
  }

  async charge(request: ChargeRequest): Promise<ChargeOutcome> {
    if (this.latencyMs > 0) await sleep(this.latencyMs);
    if (this.down) {
      await this.attempt(request.idempotencyKey);
      throw new TransientPaymentError('simulated provider: outage');
    }
    switch (request.paymentMethod) {
      case 'pm_ok':
        return this.record(request, 'succeeded', null);
      case 'pm_declined':
        return this.record(request, 'declined', 'card_declined');
      case 'pm_flaky': {
        if ((await this.attempt(request.idempotencyKey)) <= 2) {
          throw new TransientPaymentError('simulated provider: temporarily unavailable (pm_flaky)');
        }
        return this.record(request, 'succeeded', null);
      }
      case 'pm_lost_response': {
        const attempt = await this.attempt(request.idempotencyKey);
        const outcome = await this.record(request, 'succeeded', null);
        if (attempt === 1) throw new TransientPaymentError('simulated provider: timed out waiting for the response');
        return outcome;
      }
      case 'pm_down':
        await this.attempt(request.idempotencyKey);
        throw new TransientPaymentError('simulated provider: down (pm_down)');
      default:
        return this.record(request, 'declined', 'unsupported_payment_method');
    }
  }

  /** Insert the charge unless this key already has one; either way return the key's charge. */
  private async record(request: ChargeRequest, status: 'succeeded' | 'declined', reason: string | null): Promise<ChargeOutcome> {
    const result = await this.pool.query<{ charge_id: string; status: 'succeeded' | 'declined'; decline_reason: string | null }>({
      name: 'simulated-charge',
      text: `WITH inserted AS (
               INSERT INTO simulated_charges (charge_id, idempotency_key, amount_cents, currency, payment_method, status, decline_reason)
               VALUES ($1, $2, $3, $4, $5, $6, $7)
               ON CONFLICT (idempotency_key) DO NOTHING
               RETURNING charge_id, status, decline_reason)
             SELECT charge_id, status, decline_reason FROM inserted
             UNION ALL
             SELECT charge_id, status, decline_reason FROM simulated_charges WHERE idempotency_key = $2
             LIMIT 1`,
      values: [randomUUID(), request.idempotencyKey, request.amountCents, request.currency, request.paymentMethod, status, reason],
    });
    const row = result.rows[0]!;
    return row.status === 'succeeded'
      ? { status: 'succeeded', chargeId: row.charge_id }
      : { status: 'declined', chargeId: row.charge_id, reason: row.decline_reason ?? 'declined' };
  }

  private async attempt(idempotencyKey: string): Promise<number> {
    const result = await this.pool.query<{ attempts: number }>({
      name: 'simulated-attempt',
      text: `INSERT INTO simulated_charge_attempts (idempotency_key, attempts) VALUES ($1, 1)
             ON CONFLICT (idempotency_key) DO UPDATE SET attempts = simulated_charge_attempts.attempts + 1
             RETURNING attempts`,
      values: [idempotencyKey],
    });
    return result.rows[0]!.attempts;
  }

  async chargesFor(idempotencyKey: string): Promise<ProviderCharge[]> {
    const result = await this.pool.query<ChargeRow>({
      text: `SELECT ${chargeColumns} FROM simulated_charges WHERE idempotency_key = $1 ORDER BY created_at`,
      values: [idempotencyKey],
    });
    return result.rows.map(toCharge);
  }

  async successfulCharges(): Promise<ProviderCharge[]> {
    const result = await this.pool.query<ChargeRow>(`SELECT ${chargeColumns} FROM simulated_charges WHERE status = 'succeeded'`);
    return result.rows.map(toCharge);
  }
}

const chargeColumns = 'charge_id, amount_cents, status, idempotency_key';

interface ChargeRow {
  charge_id: string;
  amount_cents: string;
  status: 'succeeded' | 'declined';
  idempotency_key: string;
}

function toCharge(row: ChargeRow): ProviderCharge {
  return { id: row.charge_id, amountCents: Number(row.amount_cents), status: row.status, idempotencyKey: row.idempotency_key };
}
