import t from 'tap';
import { randomUUID } from 'node:crypto';
import { createTestDatabase } from './helpers/db.js';
import { startTestService, type TestService } from './helpers/service.js';
import { sharedTestClock } from './helpers/waits.js';
import { spearman } from './helpers/rank.js';

// The waiting room end to end: real service, real Postgres, the injected clock (never the wall clock).

const clock = sharedTestClock();
const startsAtMs = clock.nowMs() + 60_000;
const startsAt = new Date(startsAtMs).toISOString();
const shoppers = 200;
const rate = 10;
const db = await createTestDatabase(t);
const options = { nowMs: clock.nowMs, frontEndNowMs: clock.nowMs };
const frontEndThreads = Number(process.env.TEST_HTTP_THREADS || '1');
let api: TestService = await startTestService(t, {}, options, db.url);

const join = (sku: string, shopper: string) => api.call('POST', `/v1/skus/${sku}/queue`, { shopper });
const poll = (ticket: string, shopper: string) => api.call('GET', `/v1/queue/${ticket}`, { shopper });
const reserveWith = (sku: string, shopper: string, token?: string) =>
  api.call('POST', `/v1/skus/${sku}/reservations`, {
    shopper,
    body: { quantity: 1 },
    headers: { 'idempotency-key': randomUUID(), ...(token === undefined ? {} : { 'admission-token': token }) },
  });

const tickets: string[] = [];
t.test('joining before the start: one ticket per shopper, no position until the draw', async (t) => {
  t.equal((await api.putSku('Q', { stock: 1000, perShopperLimit: 1, startsAt, waitingRoom: { admitPerSecond: rate } })).status, 201);
  t.equal((await api.putSku('R', { stock: 10, startsAt, waitingRoom: { admitPerSecond: 1000 } })).status, 201);
  t.equal((await api.putSku('PLAIN')).status, 201);
  for (const waitingRoom of [{ admitPerSecond: 0 }, { admitPerSecond: 1.5 }, { admitPerSecond: 5, seed: '00' }, {}]) {
    t.equal((await api.putSku('BAD', { waitingRoom })).body.code, 'invalid_request', `waitingRoom ${JSON.stringify(waitingRoom)} is refused`);
  }
  for (let i = 0; i < shoppers; i++) {
    const joined = await join('Q', `shopper-${i}`);
    t.equal(joined.status, 201);
    tickets.push(joined.body.ticket);
  }
  const again = await join('Q', 'shopper-7');
  t.same([again.status, again.body.ticket, again.body.position, again.body.status], [201, tickets[7], null, 'waiting'], 'asking again: the same ticket');
  t.equal(tickets[0]!.slice(0, 8), tickets[1]!.slice(0, 8), "tickets carry their SKU's hash");
  t.equal((await join('PLAIN', 'shopper-1')).body.code, 'no_waiting_room');
  t.equal((await reserveWith('Q', 'shopper-1')).body.code, 'admission_required', 'no token: 403 admission_required');
  t.equal((await reserveWith('PLAIN', 'shopper-1')).status, 201, 'a SKU without a waiting room needs no token');
  const view = (await api.call('GET', '/v1/skus/Q')).body;
  t.same(view.waitingRoom, { admitPerSecond: rate }, 'the SKU view shows the waiting room, never its seed');
  t.notOk(JSON.stringify(view).includes('seed'));
  t.notOk('waitingRoom' in (await api.call('GET', '/v1/skus/PLAIN')).body, 'and only where there is one');
  const moved = await api.putSku('Q', { stock: 1000, perShopperLimit: 1, startsAt, waitingRoom: { admitPerSecond: rate + 1 } });
  t.same([moved.status, moved.body.code], [409, 'waiting_room_in_use'], 'the rate of a waiting room with tickets stays');
  t.equal((await api.putSku('Q', { stock: 2000, perShopperLimit: 1, startsAt, waitingRoom: { admitPerSecond: rate } })).status, 200, 'other changes are fine');
});

t.test('at the start: the draw is uncorrelated with join order', async (t) => {
  clock.advance(60_000);
  const positions: number[] = [];
  for (let i = 0; i < shoppers; i++) {
    const polled = await poll(tickets[i]!, `shopper-${i}`);
    t.equal(polled.status, 200);
    positions.push(polled.body.status === 'admitted' ? 0 : polled.body.position);
  }
  t.same([...positions].sort((a, b) => a - b), Array.from({ length: shoppers }, (_, i) => i), 'one admitted, the rest in line 1..n-1');
  // The seed is random (drawn by the service), so the bound must hold for any seed: for a uniform
  // permutation of 200, rho has sd 1/sqrt(199) = 0.071, and |rho| >= 0.4 is a 5.6-sigma event
  // (probability about 2e-8). A join-order queue gives rho = 1.
  const rho = spearman(Array.from({ length: shoppers }, (_, i) => i), positions);
  t.ok(Math.abs(rho) < 0.4, `Spearman rho of join order vs drawn place: ${rho.toFixed(3)}`);
});

let admittedShopper = -1;
let token = '';
t.test('admission at admitPerSecond, within a second of the setting', async (t) => {
  clock.advance(10_000);
  let admitted = 0;
  for (let i = 0; i < shoppers; i++) {
    const polled = await poll(tickets[i]!, `shopper-${i}`);
    if (polled.body.status !== 'admitted') continue;
    admitted += 1;
    if (admittedShopper < 0) {
      admittedShopper = i;
      token = polled.body.admissionToken;
    }
  }
  t.ok(Math.abs(admitted - 10 * rate) <= rate, `${admitted} admitted after 10 s at ${rate}/s`);
  const metrics = await (await fetch(`${api.metricsUrl}/metrics`)).text();
  t.match(metrics, `flashstock_queue_tickets{state="admitted"} ${admitted}\n`, 'the gauge counts the admitted');
  t.match(metrics, `flashstock_queue_tickets{state="waiting"} ${shoppers - admitted}\n`, 'and the waiting');
  t.match(metrics, /flashstock_queue_polls_total\{status="admitted"\} [1-9]/, 'polls are counted');
  const late = await join('Q', 'latecomer');
  t.same([late.body.status, late.body.position], ['waiting', shoppers - admitted + 1], 'a latecomer queues behind everyone');
  t.ok(late.body.estimatedWaitSeconds >= 9 && late.body.estimatedWaitSeconds <= 11, `estimated wait ${late.body.estimatedWaitSeconds} s`);
});

t.test('tokens: only for their shopper and SKU, not forged, truncated or expired', async (t) => {
  const owner = `shopper-${admittedShopper}`;
  const other = `shopper-${(admittedShopper + 1) % shoppers}`;
  t.equal((await reserveWith('Q', owner, token)).status, 201, 'the admitted shopper reserves');
  const refused = async (sku: string, shopper: string, bad: string) => (await reserveWith(sku, shopper, bad)).body;
  t.same(pick(await refused('Q', other, token)), [403, 'admission_mismatch'], "another shopper's token");
  t.same(pick(await refused('R', owner, token)), [403, 'admission_mismatch'], "another SKU's token");
  const last = token.at(-1) === 'A' ? 'B' : 'A';
  t.same(pick(await refused('Q', owner, token.slice(0, -1) + last)), [403, 'admission_invalid'], 'forged signature');
  t.same(pick(await refused('Q', owner, token.slice(0, 20))), [403, 'admission_invalid'], 'truncated');
  t.same(pick(await refused('Q', owner, 'x'.repeat(5000))), [403, 'admission_invalid'], 'oversized');
  t.same(pick(await refused('Q', owner, api.token(owner))), [403, 'admission_invalid'], 'a shopper JWT is no admission token');
  t.same(pick(await refused('Q', owner, `${Buffer.from(JSON.stringify([1, 'Q', other, 9e9])).toString('base64url')}.${token.split('.')[1]}`)), [403, 'admission_invalid'], 'claims swapped under an old signature');
  t.same(pick((await poll(tickets[admittedShopper]!, other)).body), [404, 'not_found'], "another shopper's ticket is 404");
  t.same(pick((await poll(randomUUID(), owner)).body), [404, 'not_found'], 'an unknown ticket is 404');
  t.same(pick((await poll('not-a-ticket', owner)).body), [404, 'not_found'], 'a malformed ticket is 404');
  clock.advance(301_000);
  const fresh = await poll(tickets[admittedShopper]!, owner);
  t.equal(fresh.body.status, 'admitted', 'admission itself does not lapse: polling again gives a fresh token');
  // Front-end threads (TEST_HTTP_THREADS > 1) read the wall clock, not the injected one: expiry is checked on one front end.
  if (frontEndThreads > 1) return;
  t.same(pick(await refused('Q', owner, token)), [403, 'admission_expired'], 'expired');
  t.not(fresh.body.admissionToken, token);
});

t.test('a restart keeps every position and admission', async (t) => {
  const before = await everyPoll();
  await api.service.stop();
  api = await startTestService(t, { queueMaxTickets: shoppers + 1 }, options, db.url);
  t.same(await everyPoll(), before, 'the same answers from the log');
  t.equal((await join('Q', 'shopper-3')).body.ticket, tickets[3], 'and the same tickets');
  const full = await join('Q', 'one-too-many');
  t.same([full.status, full.body.code], [503, 'queue_full'], 'past QUEUE_MAX_TICKETS: 503 queue_full');
  t.ok(full.headers.get('retry-after'), 'with Retry-After');
});

async function everyPoll(): Promise<unknown[]> {
  const answers: unknown[] = [];
  for (let i = 0; i < shoppers; i++) {
    const { body } = await poll(tickets[i]!, `shopper-${i}`);
    answers.push([body.status, body.position, body.estimatedWaitSeconds]);
  }
  return answers;
}

function pick(body: { status: number; code: string }): [number, string] {
  return [body.status, body.code];
}
