/**
 * What checking a peer's frames costs (src/shard/protocol.ts), in CPU time
 * per message: a request frame as the owner decodes it, a reply frame as the
 * caller decodes it, each against JSON.parse of the same text alone (what
 * the cast cost before). CPU time, not wall time: robust on a busy machine.
 *
 *   node --import tsx bench/protocol-decode.ts [messages per frame, default 50]
 */
import { newReservationId, shardOf } from '../src/shard/placement.js';
import type { ShardRequest } from '../src/shard/messages.js';
import { decodeEnvelope, decodeFrame, decodeReply, isRefusal, messageId } from '../src/shard/protocol.js';

const shardCount = 64;
const perFrame = Number(process.argv[2] ?? 50);
const rounds = 20_000;

const requests: ShardRequest[] = Array.from({ length: perFrame }, (_, i) => ({
  type: 'reserve',
  sku: `SKU-${i % 7}`,
  shopperId: `shopper-${i}`,
  quantity: 1,
  idempotencyKey: `6c9f1f1e-2b5c-4a53-9d1e-${String(i).padStart(12, '0')}`,
}));
const requestText = JSON.stringify({
  t: 'req',
  m: requests.map((payload, i) => ({ id: i + 1, shard: shardOf((payload as { sku: string }).sku, shardCount), payload })),
});
const replyText = JSON.stringify({
  t: 'res',
  m: requests.map((request, i) => ({
    id: i + 1,
    ok: true,
    payload: {
      ok: true,
      value: { reservationId: newReservationId((request as { sku: string }).sku), sku: (request as { sku: string }).sku, quantity: 1, status: 'held', expiresAt: '2026-12-06T08:00:00.000Z' },
    },
  })),
});

function decodeRequests(): number {
  const frame = decodeFrame(requestText);
  if (isRefusal(frame)) throw new Error(frame);
  let ok = 0;
  for (const value of frame.m) if (!isRefusal(decodeEnvelope(value, shardCount))) ok += 1;
  return ok;
}

function decodeReplies(): number {
  const frame = decodeFrame(replyText);
  if (isRefusal(frame)) throw new Error(frame);
  let ok = 0;
  for (const value of frame.m) {
    const id = messageId(value)!;
    if (!isRefusal(decodeReply(value, id, requests[id - 1]!))) ok += 1;
  }
  return ok;
}

const parseOnly = (text: string) => () => (JSON.parse(text) as { m: unknown[] }).m.length;

function measure(name: string, run: () => number): number {
  for (let i = 0; i < 2_000; i++) run(); // warm up
  const before = process.cpuUsage();
  let checked = 0;
  for (let i = 0; i < rounds; i++) checked += run();
  const used = process.cpuUsage(before);
  const nsPerMessage = ((used.user + used.system) * 1000) / (rounds * perFrame);
  if (checked !== rounds * perFrame) throw new Error(`${name}: only ${checked} of ${rounds * perFrame} decoded`);
  console.log(`${name.padEnd(34)} ${nsPerMessage.toFixed(0).padStart(6)} ns/message`);
  return nsPerMessage;
}

console.log(`${perFrame} messages per frame, ${rounds} frames each (request ${requestText.length} B, reply ${replyText.length} B per frame)`);
const parseReq = measure('request frame: JSON.parse only', parseOnly(requestText));
const decodeReq = measure('request frame: parse + decode', decodeRequests);
const parseRes = measure('reply frame: JSON.parse only', parseOnly(replyText));
const decodeRes = measure('reply frame: parse + decode', decodeReplies);
console.log(`checks alone: ${(decodeReq - parseReq).toFixed(0)} ns per request, ${(decodeRes - parseRes).toFixed(0)} ns per reply`);
