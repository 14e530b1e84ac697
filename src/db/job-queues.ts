import { setTimeout as sleep } from 'node:timers/promises';
import type PgBoss from 'pg-boss';

/**
 * pg-boss queue creation that survives nodes starting together. Each new
 * queue is a partition of pg-boss's job table (CREATE TABLE, ATTACH PARTITION,
 * foreign keys), and two processes creating queues at the same moment can
 * deadlock on those locks: PostgreSQL then aborts one of them (40P01). The
 * function is idempotent (ON CONFLICT DO NOTHING), so the victim just tries
 * again, after a short random pause that breaks the tie.
 */

const deadlockDetected = '40P01';
/** Tries in all before a deadlock fails the start. */
export const queueCreateAttempts = 5;
/** Upper bound of the random pause before the next try, times the try's number. */
const queueCreateBackoffMs = 100;

export async function createJobQueue(boss: PgBoss, name: string, options: PgBoss.Queue): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await boss.createQueue(name, options);
      return;
    } catch (err) {
      if ((err as { code?: unknown }).code !== deadlockDetected || attempt >= queueCreateAttempts) throw err;
      await sleep(Math.ceil(Math.random() * queueCreateBackoffMs * attempt));
    }
  }
}
