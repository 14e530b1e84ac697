/**
 * Where a restart's CPU goes for a SKU with many live holds, without a
 * database: one SKU gets --holds live one-unit holds of distinct shoppers with
 * the service's random ids and keys (bench/lib/hot-sku-history.ts), its
 * snapshot is encoded, then, best of --repeat:
 *
 *   - decode: the snapshot's bytes into reservations (SnapshotDecoder.pushWhole);
 *   - restore: those into the allocator's indexes (SnapshotDecoder.finish);
 *   - the cost of one index (a Map of --holds entries) keyed by
 *       fresh strings (as a restore sees them: their hash not yet computed),
 *       the same strings again (hash cached: the insert alone),
 *       small integers (no string hash at all).
 *
 * A restore puts every hold in two such Maps (reservations by id; the
 * shoppers, whose entry holds their units and idempotency slots), keyed by two
 * strings decoded moments before: the last three rows say how much of it is
 * hashing and how much the inserts. Times are CPU milliseconds of this process (single-threaded here).
 *
 *   node --expose-gc --import tsx bench/restore-cost.ts [--holds 1000000] [--repeat 3]
 *   npm run build && node --expose-gc dist/bench/restore-cost.js …   (compiled, as the service runs)
 */
import os from 'node:os';
import { SkuAllocator } from '../src/allocator/allocator.js';
import { encodeSnapshot } from '../src/snapshot/codec.js';
import { SnapshotDecoder } from '../src/snapshot/decoder.js';
import { hotSkuHistory, hotSkuLimits } from './lib/hot-sku-history.js';
import { numberArg } from './lib/service.js';

const holds = numberArg('holds', 1_000_000);
const repeat = numberArg('repeat', 3);
const sku = 'bench-restore';
const gc = (globalThis as { gc?: () => void }).gc ?? (() => undefined);

function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/** CPU ms of `measured` after `prepare` (not timed), the best of --repeat; a full GC before each. */
function best<T>(prepare: () => T, measured: (input: T) => void): number {
  let min = Infinity;
  for (let i = 0; i < repeat; i++) {
    const input = prepare();
    gc();
    const t = cpuMs();
    measured(input);
    min = Math.min(min, cpuMs() - t);
  }
  return Math.round(min);
}

/** Copies of `texts` that share no memory (or cached hash) with them: what a decoder hands over. */
function freshCopies(texts: string[]): string[] {
  return texts.map((text) => Buffer.from(text, 'latin1').toString('latin1'));
}

function fill(keys: readonly (string | number)[]): void {
  const index = new Map<string | number, number>();
  for (let i = 0; i < keys.length; i++) index.set(keys[i]!, i);
}

const allocator = SkuAllocator.replay(sku, hotSkuLimits, hotSkuHistory(sku, holds, 'random'));
const snapshot = encodeSnapshot(allocator);
const ids = [...allocator.reservations.keys()];

const decodeMs = best(
  () => new SnapshotDecoder(snapshot.length, hotSkuLimits),
  (decoder) => decoder.pushWhole(snapshot),
);
const restoreMs = best(
  () => {
    const decoder = new SnapshotDecoder(snapshot.length, hotSkuLimits);
    decoder.pushWhole(snapshot);
    return decoder;
  },
  (decoder) => void decoder.finish(),
);
const freshKeysMs = best(() => freshCopies(ids), fill);
const hashedKeysMs = best(
  () => {
    const keys = freshCopies(ids);
    fill(keys);
    return keys;
  },
  fill,
);
const integerKeysMs = best(() => ids.map((_, i) => i), fill);

const perHoldNs = (ms: number): number => Math.round((ms * 1e6) / holds);
const rows: [string, number][] = [
  ['decode (bytes → reservations)', decodeMs],
  ['restore (reservations → the allocator’s indexes)', restoreMs],
  ['one Map, fresh string keys (36 characters)', freshKeysMs],
  ['one Map, the same keys, hash cached', hashedKeysMs],
  ['one Map, small integer keys', integerKeysMs],
];
console.log(`restore cost: ${holds.toLocaleString('en')} live holds, snapshot ${(snapshot.length / 2 ** 20).toFixed(1)} MiB; ${os.cpus()[0]?.model ?? 'cpu'}, Node ${process.version}; best of ${repeat}, CPU ms`);
console.log('| step | CPU ms | ns per hold |');
console.log('| --- | ---: | ---: |');
for (const [step, ms] of rows) console.log(`| ${step} | ${ms} | ${perHoldNs(ms)} |`);
console.log(`string hashing ≈ ${perHoldNs(freshKeysMs - hashedKeysMs)} ns per fresh key; a restore hashes two per hold`);
