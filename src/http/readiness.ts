import type { Logger } from '../log.js';

/**
 * PostgreSQL's part of `/readyz`, steady under a slow `SELECT 1`.
 *
 * One probe at a time (concurrent `/readyz` share it), each bounded by
 * `timeoutMs`. A probe that fails or times out counts; only `failureThreshold`
 * consecutive failures make the service unready, and one success makes it ready
 * again. A caller waits for the probe at most `answerWithinMs` and otherwise gets
 * the current verdict while the probe goes on, so `/readyz` answers within a
 * Kubernetes probe's 1 s timeout even while PostgreSQL is slow.
 */
export interface ReadinessOptions {
  failureThreshold: number;
  timeoutMs: number;
  /** Longest a `/readyz` waits for the probe it started or joined. */
  answerWithinMs?: number;
}

const defaultAnswerWithinMs = 500;

export function databaseReadiness(probe: () => Promise<unknown>, options: ReadinessOptions, log: Logger): () => Promise<boolean> {
  let failures = 0;
  let inFlight: Promise<void> | null = null;
  const verdict = () => failures < options.failureThreshold;

  const run = async (): Promise<void> => {
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${options.timeoutMs} ms`)), options.timeoutMs);
    });
    try {
      await Promise.race([probe(), deadline]);
      if (!verdict()) log.info({ failures }, 'readiness: PostgreSQL answers again');
      failures = 0;
    } catch (err) {
      failures += 1;
      if (failures === options.failureThreshold) log.warn({ err, failures }, 'readiness: PostgreSQL probes keep failing: not ready');
    } finally {
      clearTimeout(timer);
    }
  };

  return async () => {
    if (inFlight === null) {
      const started = run().finally(() => {
        if (inFlight === started) inFlight = null;
      });
      inFlight = started;
    }
    let timer: NodeJS.Timeout | undefined;
    const answerBy = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, options.answerWithinMs ?? defaultAnswerWithinMs);
    });
    await Promise.race([inFlight, answerBy]);
    clearTimeout(timer);
    return verdict();
  };
}
