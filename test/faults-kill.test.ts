import t from 'tap';
import { once } from 'node:events';
import { createTestDatabase } from './helpers/db.js';
import { clientFor } from './helpers/service.js';
import { startChild } from './helpers/child.js';
import { startLoad, verifyFromLog, waitUntilServing, type Attempt } from './helpers/fault-load.js';

/**
 * SIGKILL loop of the real service (src/main.ts as a child process): three
 * times, reservation load, then SIGKILL mid-load; each time the next process
 * recovers from the log by itself; the last process sells the SKU out. Every
 * answer is 201, 409 sold_out or 503 (or none: a connection refused or reset
 * by the killed process, never any other error). At the end every
 * acknowledged reservation of every round is in the log and readable,
 * replays return the original bodies, every unanswered request's key,
 * retried, learns what happened, and nothing is oversold.
 */

// Real processes start (tsx compiles src/ first) and recover, several times, on a shared 2-core machine.
t.setTimeout(600_000);

const db = await createTestDatabase(t);
const rounds = 3;
// Three kills take about 450 units: the round after the last restart sells the rest out.
const stock = 700;

t.test('SIGKILL loop under reservation load loses nothing that was acknowledged', async (t) => {
  let child = await startChild(db.url);
  t.equal((await clientFor(child.url).putSku('KILLED', { stock, perShopperLimit: 1 })).status, 201);
  await clientFor(child.url).putSku('PROBE', { stock: 1_000_000, perShopperLimit: 1 });
  const attempts: Attempt[] = [];
  for (let round = 0; round < rounds; round++) {
    const load = startLoad(clientFor(child.url), 'KILLED', 16, { processesDie: true });
    const target = 100 + round * 37;
    while (load.acknowledged() < target) await new Promise((resolve) => setTimeout(resolve, 5));
    child.child.kill('SIGKILL');
    await once(child.child, 'exit').catch(() => undefined);
    attempts.push(...(await load.stop()));
    child = await startChild(db.url);
    const ms = await waitUntilServing(clientFor(child.url), 'PROBE', 20_000);
    t.comment(`round ${round + 1}: killed after ${target}+ acknowledged reservations, serving again ${ms} ms after the restart was ready`);
  }
  const last = child;
  t.teardown(async () => {
    last.child.kill('SIGTERM');
    await last.exited;
  });
  const final = startLoad(clientFor(child.url), 'KILLED', 16);
  await final.soldOut(30_000);
  attempts.push(...(await final.stop()));
  t.comment(`attempts: ${attempts.length}, 201: ${attempts.filter((a) => a.status === 201).length}, unanswered: ${attempts.filter((a) => a.status === 0).length}`);
  await verifyFromLog(t, clientFor(child.url), db.pool, 'KILLED', stock, attempts, { processesDie: true });
});
