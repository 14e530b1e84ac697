import * as hdr from 'hdr-histogram-js';

/** Latencies are recorded in microseconds, up to 10 minutes, 3 significant digits. */
export const histogramOptions = {
  lowestDiscernibleValue: 1,
  highestTrackableValue: 600_000_000,
  numberOfSignificantValueDigits: 3 as const,
  bitBucketSize: 64 as const,
  useWebAssembly: false,
};

export type Histogram = hdr.Histogram;

export function newHistogram(): Histogram {
  return hdr.build(histogramOptions);
}

/** Records a latency in milliseconds (fractional) as whole microseconds, clamped to the trackable range. */
export function recordMs(h: Histogram, ms: number): void {
  let us = Math.round(ms * 1000);
  if (us < 1) us = 1;
  else if (us > histogramOptions.highestTrackableValue) us = histogramOptions.highestTrackableValue;
  h.recordValue(us);
}

/** Histograms cross threads as compressed base64 (the HdrHistogram wire format). */
export function encodeHistogram(h: Histogram): string {
  return hdr.encodeIntoCompressedBase64(h);
}

export function decodeHistogram(encoded: string): Histogram {
  return hdr.decodeFromCompressedBase64(encoded, 64, false);
}

/** Merges encoded per-thread histograms into one. */
export function mergeEncoded(encoded: readonly string[]): Histogram {
  const total = newHistogram();
  for (const e of encoded) {
    if (e === '') continue;
    total.add(decodeHistogram(e));
  }
  return total;
}

export interface LatencySummary {
  count: number;
  /** All in milliseconds. */
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
}

export function summarize(h: Histogram): LatencySummary {
  const ms = (us: number): number => Math.round(us) / 1000;
  if (h.totalCount === 0) return { count: 0, mean: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0 };
  return {
    count: h.totalCount,
    mean: ms(h.mean),
    p50: ms(h.getValueAtPercentile(50)),
    p90: ms(h.getValueAtPercentile(90)),
    p99: ms(h.getValueAtPercentile(99)),
    p999: ms(h.getValueAtPercentile(99.9)),
    max: ms(h.maxValue),
  };
}
