/**
 * A value read on scrape that may be slow to get (a database query): reuse one
 * younger than `maxAgeMs`, run at most one read at a time, and wait at most
 * `timeoutMs` for it; past that the scrape gets the last value (or null), so a
 * scrape never hangs on the database.
 */
export function sampled<T>(timeoutMs: number, maxAgeMs: number, read: () => Promise<T>): () => Promise<T | null> {
  let last: T | null = null;
  let readAtMs = -Infinity;
  let inFlight: Promise<void> | null = null;
  return async () => {
    if (Date.now() - readAtMs < maxAgeMs) return last;
    inFlight ??= read().then(
      (value) => {
        last = value;
        readAtMs = Date.now();
        inFlight = null;
      },
      () => {
        // A failed read is reported as unknown rather than stale.
        last = null;
        inFlight = null;
      },
    );
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
    });
    await Promise.race([inFlight, timeout]);
    clearTimeout(timer);
    return last;
  };
}
