/**
 * What a snapshot of a hot SKU costs, by the road it takes. One SKU gets
 * --reservations reservations of one unit from distinct shoppers (holds of an
 * hour: all live, the hot-SKU bench's state), then:
 *
 *   - bytes of its snapshot, and encode / decode time;
 *   - the old road (a worker folds the log a second time): decode the previous
 *     snapshot (taken at half the reservations), apply the events since, encode;
 *   - the new road (src/snapshot/live.ts): capture on the shard's thread (the
 *     longest synchronous step: the event-loop pause), then the encoding slices.
 *
 * Times are CPU milliseconds of this process (the best of --repeat runs): the
 * machine is shared, and CPU time is not stretched by other work the way the wall clock is.
 *
 *   node --import tsx bench/snapshot-cost.ts [--reservations 183000] [--repeat 3]
 */
import os from 'node:os';
import { SkuAllocator } from '../src/allocator/allocator.js';
import { decodeSnapshot, encodeSnapshot } from '../src/snapshot/codec.js';
import { LiveSnapshot } from '../src/snapshot/live.js';
import { hotSkuHistory, hotSkuLimits } from './lib/hot-sku-history.js';
import { numberArg } from './lib/service.js';

const reservations = numberArg('reservations', 183_000);
const repeat = numberArg('repeat', 3);
const limits = hotSkuLimits;
const sku = 'bench-hot-sku';

/** CPU milliseconds of this (single-threaded) process since `from`: unlike the wall clock, not stretched by other work. */
function cpuMs(from = 0): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000 - from;
}

function best(run: () => void): number {
  let min = Infinity;
  for (let i = 0; i < repeat; i++) {
    const t = cpuMs();
    run();
    min = Math.min(min, cpuMs(t));
  }
  return Number(min.toFixed(1));
}

const events = hotSkuHistory(sku, reservations, 'sequential');
const half = SkuAllocator.replay(sku, limits, events.slice(0, 1 + reservations / 2));
const halfSnapshot = encodeSnapshot(half);
const full = SkuAllocator.replay(sku, limits, events);
const rest = events.slice(1 + reservations / 2);

let snapshot: Buffer = Buffer.alloc(0);
const encodeMs = best(() => void (snapshot = encodeSnapshot(full)));
const decodeMs = best(() => void decodeSnapshot(snapshot, limits));
const oldRoadMs = best(() => {
  const allocator = decodeSnapshot(halfSnapshot, limits);
  for (const event of rest) allocator.apply(event);
  encodeSnapshot(allocator);
});

let captureMs = Infinity;
let slices = 0;
let longestSliceMs = 0;
let medianSliceMs = 0;
let totalMs = Infinity;
let liveBytes = 0;
for (let i = 0; i < repeat; i++) {
  const t0 = cpuMs();
  const live = new LiveSnapshot(full);
  captureMs = Math.min(captureMs, cpuMs(t0));
  let n = 0;
  let longest = 0;
  const times: number[] = [];
  for (;;) {
    const t = cpuMs();
    const done = live.step();
    times.push(cpuMs(t));
    longest = Math.max(longest, times[times.length - 1]!);
    n += 1;
    if (done) break;
  }
  const state = live.finish();
  totalMs = Math.min(totalMs, cpuMs(t0));
  slices = n;
  medianSliceMs = times.sort((a, b) => a - b)[Math.floor(times.length / 2)]!;
  longestSliceMs = longest;
  liveBytes = state.length;
  if (!state.equals(snapshot)) throw new Error('the live snapshot differs from encodeSnapshot of the same state');
}

process.stdout.write(
  JSON.stringify(
    {
      reservations,
      machine: { cpu: os.cpus()[0]?.model, cores: os.cpus().length, load: os.loadavg()[0], node: process.version },
      snapshotBytes: snapshot.length,
      encodeMs,
      decodeMs,
      oldRoad: { what: 'decode the snapshot at half, apply the other half, encode', ms: oldRoadMs, perEventUs: Number(((oldRoadMs * 1000) / rest.length).toFixed(2)) },
      newRoad: {
        what: 'capture on the shard thread, then encoding slices',
        captureMs: Number(captureMs.toFixed(1)),
        slices,
        medianSliceMs: Number(medianSliceMs.toFixed(1)),
        longestSliceMs: Number(longestSliceMs.toFixed(1)),
        totalMs: Number(totalMs.toFixed(1)),
        perEventUs: Number(((totalMs * 1000) / rest.length).toFixed(2)),
        bytes: liveBytes,
      },
    },
    null,
    2,
  ) + '\n',
);
