import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';

/**
 * A bench-only window into the service process (bench/lib/flashstock-child.ts with
 * BENCH_PROBE=1): a plain node:http server on its own loopback port, so reading
 * it does not go through the service's front end.
 *
 *   GET /stats          memory (process.memoryUsage) and what the shards hold
 *   GET /stats?gc=1     the same after two full collections (needs node --expose-gc)
 *   GET /loop           this thread's event-loop delay since start or the last reset (ms)
 *   GET /loop?reset=1   the same, then starts a fresh histogram
 *
 * The loop histogram is perf_hooks.monitorEventLoopDelay at 1 ms resolution on
 * the thread that runs the allocators (the only thread they run on today).
 */

/** What flashstock-child hands over: the ShardHost (app.shards), read through its public getters. */
interface ShardsView {
  allocatorCount: number;
  reservationsInMemory: number;
  liveHolds: number;
  pendingEvents: number;
  stats?: { snapshotsWritten: number; snapshotsFailed: number; passivated: number };
}

export interface Probe {
  port: number;
  attach(shards: unknown): void;
  close(): void;
}

const mib = (bytes: number): number => Math.round((bytes / 1048576) * 10) / 10;

/** Remembered idempotency keys over every allocator; reaches past ShardHost's private map (bench only). */
function rememberedKeys(shards: unknown): number | null {
  const map = (shards as { shards?: Map<number, { allAllocators?(): Iterable<{ rememberedKeys?: { size: number } }> }> }).shards;
  if (!(map instanceof Map)) return null;
  let n = 0;
  for (const shard of map.values()) for (const a of shard.allAllocators?.() ?? []) n += a.rememberedKeys?.size ?? 0;
  return n;
}

/** Linux: RSS split into anonymous memory (heaps, malloc) and file-backed pages (code, libraries); null elsewhere. */
function rssParts(): { rssAnonMiB: number | null; rssFileMiB: number | null } {
  try {
    const status = readFileSync('/proc/self/status', 'utf8');
    const kib = (name: string): number | null => {
      const m = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status);
      return m === null ? null : Math.round((Number(m[1]) / 1024) * 10) / 10;
    };
    return { rssAnonMiB: kib('RssAnon'), rssFileMiB: kib('RssFile') };
  } catch {
    return { rssAnonMiB: null, rssFileMiB: null };
  }
}

function loopFigures(h: IntervalHistogram): Record<string, number> {
  const ms = (ns: number): number => Math.round((ns / 1e6) * 100) / 100;
  return { count: h.count, p50Ms: ms(h.percentile(50)), p90Ms: ms(h.percentile(90)), p99Ms: ms(h.percentile(99)), p999Ms: ms(h.percentile(99.9)), maxMs: ms(h.max), meanMs: ms(h.mean) };
}

export async function startProbe(): Promise<Probe> {
  let loop = monitorEventLoopDelay({ resolution: 1 });
  loop.enable();
  let shards: ShardsView | null = null;
  const gc = (globalThis as { gc?: () => void }).gc;

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://probe');
    let body: unknown;
    if (url.pathname === '/stats') {
      if (url.searchParams.get('gc') === '1' && gc !== undefined) {
        gc();
        gc();
      }
      const m = process.memoryUsage();
      body = {
        atMs: Date.now(),
        gc: url.searchParams.get('gc') === '1' && gc !== undefined,
        rssMiB: mib(m.rss),
        heapUsedMiB: mib(m.heapUsed),
        heapTotalMiB: mib(m.heapTotal),
        externalMiB: mib(m.external),
        arrayBuffersMiB: mib(m.arrayBuffers),
        ...rssParts(),
        rssBytes: m.rss,
        heapUsedBytes: m.heapUsed,
        allocators: shards?.allocatorCount ?? null,
        reservationsInMemory: shards?.reservationsInMemory ?? null,
        liveHolds: shards?.liveHolds ?? null,
        pendingEvents: shards?.pendingEvents ?? null,
        rememberedKeys: shards === null ? null : rememberedKeys(shards),
        snapshotsWritten: shards?.stats?.snapshotsWritten ?? null,
        snapshotsFailed: shards?.stats?.snapshotsFailed ?? null,
      };
    } else if (url.pathname === '/loop') {
      body = loopFigures(loop);
      if (url.searchParams.get('reset') === '1') {
        loop.disable();
        loop = monitorEventLoopDelay({ resolution: 1 });
        loop.enable();
      }
    } else {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    attach(s) {
      shards = s as ShardsView;
    },
    close() {
      loop.disable();
      server.close();
    },
  };
}

/** Client side, for the bench scripts. */
export async function probeGet<T = Record<string, number>>(port: number, pathAndQuery: string): Promise<T> {
  const r = await fetch(`http://127.0.0.1:${port}${pathAndQuery}`);
  if (r.status !== 200) throw new Error(`probe ${pathAndQuery} answered ${r.status}`);
  return (await r.json()) as T;
}
