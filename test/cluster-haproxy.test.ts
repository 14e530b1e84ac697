import t, { type Test } from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { renderLocalHaproxyConfig } from '../src/cluster/haproxy-config.js';
import type { Child } from './helpers/child.js';
import { createTestDatabase } from './helpers/db.js';
import { freePort } from './helpers/net.js';
import { clientFor } from './helpers/service.js';
import { balanced, ownerUrl, reapNodes, SHARDS, startNode, until, view } from './helpers/cluster.js';
import { shardOf } from '../src/shard/placement.js';
import { startLoad, verifyFromLog } from './helpers/fault-load.js';

/**
 * haproxy with deploy/haproxy/haproxy.cfg (rendered for local nodes, as `npm
 * run cluster` does) in front of three real node processes (src/main.ts with
 * CLUSTER_SECRET) under reservation load; one node is SIGKILLed. Shoppers only
 * talk to haproxy, which is never killed: every answer they get must be a
 * documented one (201, 409 sold_out, 503 with Retry-After; a 502 from haproxy,
 * a dropped connection or a contract error fails), haproxy takes the dead
 * node out of its pool, the dead node's SKUs are served again by the others,
 * every SKU sells out, and the log holds every 201 and nothing oversold.
 * Needs `haproxy` on PATH (Debian: apt-get install haproxy): a TAP skip
 * without it.
 */

// Three node processes and haproxy on a shared 2-core machine, under load, through a takeover.
t.setTimeout(300_000);

const haproxy = spawnSync('haproxy', ['-v'], { encoding: 'utf8' });
const missing = haproxy.error !== undefined || haproxy.status !== 0 ? 'haproxy is not on PATH (apt-get install haproxy)' : false;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** haproxy's own view of a backend server (its stats CSV): UP, DOWN, ... */
async function serverStatus(statsPort: number, server: string): Promise<string | null> {
  const csv = await (await fetch(`http://127.0.0.1:${statsPort}/stats;csv`)).text();
  const row = csv.split('\n').find((line) => line.startsWith(`nodes,${server},`));
  if (row === undefined) return null;
  const header = csv.split('\n')[0]!.replace(/^# /, '').split(',');
  return row.split(',')[header.indexOf('status')] ?? null;
}

t.test('haproxy (deploy/haproxy) in front of three nodes under load, one node SIGKILLed', { skip: missing }, async (t: Test) => {
  const db = await createTestDatabase(t);
  const nodes: Child[] = [];
  reapNodes(t, nodes);
  for (let i = 0; i < 3; i++) nodes.push(await startNode(db.url, `haproxy-node${i}`));
  const urls = nodes.map((n) => n.url);
  await until('three balanced nodes', () => balanced(urls[0]!, 3), 60_000);

  const port = await freePort();
  const statsPort = await freePort();
  const template = fs.readFileSync(new URL('../deploy/haproxy/haproxy.cfg', import.meta.url), 'utf8');
  const adminPort = await freePort();
  const config = renderLocalHaproxyConfig(template, port, statsPort, urls.map((url) => Number(new URL(url).port)), adminPort);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flashstock-haproxy-cluster-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'haproxy.cfg');
  fs.writeFileSync(file, config);
  const proxy = spawn('haproxy', ['-db', '-f', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  const proxyLog: string[] = [];
  proxy.stderr.on('data', (chunk: Buffer) => proxyLog.push(chunk.toString('utf8')));
  t.teardown(() => {
    proxy.kill('SIGTERM');
    if (t.passing() === false) t.comment(`haproxy:\n${proxyLog.join('').slice(-3000)}`);
  });
  await until('every node UP in haproxy', async () => {
    const statuses = await Promise.all(['node1', 'node2', 'node3'].map((s) => serverStatus(statsPort, s).catch(() => null)));
    return statuses.every((s) => s === 'UP') ? true : null;
  }, 30_000);

  const api = clientFor(`http://127.0.0.1:${port}`);
  const stock = 150;
  const victimIndex = 1;
  // Two SKUs the victim owns (they must move) and two others.
  const victimShards = (await view(urls[0]!)).nodes.find((n) => n.url === urls[victimIndex])!.shards;
  const skus: string[] = [];
  for (let i = 0, mine = 0, others = 0; mine < 2 || others < 2; i++) {
    const sku = `HA-${i}`;
    const onVictim = victimShards.includes(shardOf(sku, SHARDS));
    if (onVictim && mine < 2) (mine++, skus.push(sku));
    if (!onVictim && others < 2) (others++, skus.push(sku));
  }
  // The public frontend answers 404 for /v1/admin: SKUs are configured through the admin frontend.
  const admin = clientFor(`http://127.0.0.1:${adminPort}`);
  for (const sku of skus) t.equal((await admin.putSku(sku, { stock, perShopperLimit: 1 })).status, 201, `${sku} configured through haproxy's admin frontend`);
  const owners = await Promise.all(skus.map((sku) => ownerUrl(urls[0]!, sku)));
  t.equal(owners.filter((url) => url === urls[victimIndex]).length, 2, 'two of the SKUs are on the node that will be killed');
  t.comment(`owners: ${skus.map((sku, i) => `${sku} on node${urls.indexOf(owners[i]!) + 1}`).join(', ')}`);

  const load = startLoad(api, skus, 16);
  while (load.acknowledged() < 120) await sleep(10);
  const killedAt = Date.now();
  nodes[victimIndex]!.child.kill('SIGKILL');
  await until('haproxy marks the killed node DOWN', async () => ((await serverStatus(statsPort, `node${victimIndex + 1}`)) === 'DOWN' ? true : null), 30_000);
  t.comment(`haproxy marked node${victimIndex + 1} DOWN ${Date.now() - killedAt} ms after the kill`);
  await load.soldOut(90_000);
  const attempts = await load.stop();
  t.comment(`answers: ${attempts.length}, 201: ${attempts.filter((a) => a.status === 201).length}, 409: ${attempts.filter((a) => a.status === 409).length}, 503: ${attempts.filter((a) => a.status === 503).length}`);
  const victimSkus = skus.filter((_, i) => owners[i] === urls[victimIndex]);
  t.comment(`SKUs the killed node owned: ${victimSkus.join(', ') || 'none'} (taken over and sold out by the others)`);
  for (const sku of skus) await verifyFromLog(t, api, db.pool, sku, stock, attempts);
});
