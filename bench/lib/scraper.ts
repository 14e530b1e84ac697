/**
 * `--scrape-metrics`: a Prometheus-like scraper on the bench's main thread (the
 * load runs in worker threads) that GETs `/metrics` every second during a
 * measured run, so the cost of metrics shows next to a run without it.
 */
export interface Scraper {
  stop(): { scrapes: number; failures: number; meanMs: number; bytes: number };
}

export function startScraper(url: string, intervalMs = 1000): Scraper {
  let scrapes = 0;
  let failures = 0;
  let totalMs = 0;
  let bytes = 0;
  const scrape = async () => {
    const started = performance.now();
    try {
      const res = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(intervalMs) });
      const text = await res.text();
      if (!res.ok) throw new Error(`status ${res.status}`);
      scrapes += 1;
      totalMs += performance.now() - started;
      bytes = text.length;
    } catch {
      failures += 1;
    }
  };
  const timer = setInterval(() => void scrape(), intervalMs);
  return {
    stop() {
      clearInterval(timer);
      return { scrapes, failures, meanMs: scrapes === 0 ? 0 : Math.round((totalMs / scrapes) * 10) / 10, bytes };
    },
  };
}
