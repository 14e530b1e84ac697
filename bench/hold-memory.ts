/**
 * Heap bytes per live hold in the allocator itself (no service, no HTTP): one
 * SKU, --holds reservations of one unit from distinct shoppers (UUID
 * reservation ids and idempotency keys, shopper ids as the service's JWT
 * subjects look), all held (holdSeconds 3600). Heap used after full GCs,
 * before and after, divided by the holds; then the same after the allocator is
 * rebuilt from its snapshot (what a restart holds), and the snapshot's bytes
 * and decode time (CPU ms, not stretched by other work on the machine).
 *
 *   node --expose-gc --import tsx bench/hold-memory.ts [--holds 200000]
 */
import { randomUUID } from 'node:crypto';
import os from 'node:os';
import { SkuAllocator } from '../src/allocator/allocator.js';
import { newReservationId, reservationIdPrefix } from '../src/shard/placement.js';
import type { AllocatorLimits } from '../src/allocator/types.js';
import { decodeSnapshot, encodeSnapshot } from '../src/snapshot/codec.js';
import { numberArg } from './lib/service.js';

const holds = numberArg('holds', 200_000);
const limits: AllocatorLimits = { maxQuantityPerRequest: 100, maxLiveHoldsPerSku: Math.max(holds, 1_000_000), maxEventsPerBatch: 4096 };
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with node --expose-gc');

function heapUsed(): number {
  gc!();
  gc!();
  return process.memoryUsage().heapUsed;
}

function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/** A string as the request parser hands it over: one flat string, not a rope of pieces. */
function fromRequest(text: string): string {
  return Buffer.from(text, 'latin1').toString('latin1');
}

function fill(a: SkuAllocator, n: number): void {
  const configured = a.configure({ stock: 1e9, perShopperLimit: 1, holdSeconds: 3600, priceCents: 100, currency: 'USD', startsAtMs: null, endsAtMs: null }, 1_780_000_000_000);
  if (!configured.ok) throw new Error('configure refused');
  a.apply(configured.event);
  const prefix = reservationIdPrefix(a.sku);
  for (let i = 0; i < n; i++) {
    const nowMs = 1_780_000_000_000 + Math.floor(i / 50);
    // Ids minted as the shard mints them; the shopper and the key as strings read from a request (flat).
    const cmd = { reservationId: newReservationId(a.sku, prefix, nowMs), shopperId: fromRequest(`d-m1abc2-0-${i}`), quantity: 1, idempotencyKey: fromRequest(randomUUID()) };
    const d = a.reserve(cmd, nowMs);
    if (!d.ok || d.kind !== 'new') throw new Error(`reserve refused: ${JSON.stringify(d)}`);
    a.apply(d.event);
  }
}

const base = heapUsed();
let live: SkuAllocator | null = new SkuAllocator('bench-live', limits);
fill(live, holds);
const filled = heapUsed();
const snapshot = encodeSnapshot(live);
live = null;
const emptied = heapUsed();
const t0 = cpuMs();
const restored = decodeSnapshot(snapshot, limits);
const decodeMs = cpuMs() - t0;
const withRestored = heapUsed();
if (restored.liveHolds !== holds) throw new Error('restored holds differ');

process.stdout.write(
  `${JSON.stringify({
    holds,
    machine: { cpu: os.cpus()[0]?.model, cores: os.cpus().length, load: os.loadavg()[0], node: process.version },
    heapBytesPerHold: Math.round((filled - base) / holds),
    heapBytesPerRestoredHold: Math.round((withRestored - emptied) / holds),
    snapshotBytesPerHold: Math.round(snapshot.length / holds),
    decodeMs: Math.round(decodeMs),
  })}\n`,
);
