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

/**
 * Successful group commits and the events they carried, summed over every node
 * (`flashstock_commit_batch_events`); on a cluster also the commands forwarded
 * to owners and the frames they went out in (0 on a single node).
 */
export interface CommitTotals {
  commits: number;
  events: number;
  forwarded: number;
  forwardFrames: number;
}

const commitCountPattern = /^flashstock_commit_batch_events_count(?:\{\})? (\S+)$/m;
const commitSumPattern = /^flashstock_commit_batch_events_sum(?:\{\})? (\S+)$/m;
const forwardedPattern = /^flashstock_cluster_forwarded_total\{outcome="sent"\} (\S+)$/m;
const forwardFramesPattern = /^flashstock_cluster_forward_frames_total(?:\{\})? (\S+)$/m;

/** Reads `/metrics` of every URL; null when one cannot be read (the figure is then left out, never guessed). */
export async function commitTotals(urls: readonly string[]): Promise<CommitTotals | null> {
  try {
    const totals = await Promise.all(
      urls.map(async (url) => {
        const res = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5_000) });
        const text = await res.text();
        const commits = commitCountPattern.exec(text)?.[1];
        const events = commitSumPattern.exec(text)?.[1];
        if (!res.ok || commits === undefined || events === undefined) throw new Error(`${url}/metrics: no commit histogram`);
        const forwarded = Number(forwardedPattern.exec(text)?.[1] ?? 0);
        return { commits: Number(commits), events: Number(events), forwarded, forwardFrames: Number(forwardFramesPattern.exec(text)?.[1] ?? 0) };
      }),
    );
    return totals.reduce((a, b) => ({
      commits: a.commits + b.commits,
      events: a.events + b.events,
      forwarded: a.forwarded + b.forwarded,
      forwardFrames: a.forwardFrames + b.forwardFrames,
    }));
  } catch {
    return null;
  }
}
