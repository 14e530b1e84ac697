/**
 * `npm run cluster -- [--nodes 3] [--port 8080]`: a local flashstock cluster.
 * One embedded PostgreSQL (data under DATA_DIR, default .data), N node
 * processes (src/main.ts) on ports PORT+1 … PORT+N sharing it with one
 * CLUSTER_SECRET, and, when Debian's `haproxy` is on PATH, haproxy on PORT in
 * front of them (round robin, health-checked on /readyz; config rendered from
 * deploy/haproxy/haproxy.cfg). Prints the URLs; Ctrl-C or SIGTERM stops the
 * nodes gracefully (each hands its shards over), then haproxy and PostgreSQL.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { startEmbeddedPostgres } from '../src/db/embedded.js';
import { loadOrCreateSecrets } from '../src/secrets.js';
import { renderLocalHaproxyConfig } from '../src/cluster/haproxy-config.js';

const MAX_NODES = 16;
/** Node i's metrics listener is METRICS_PORT + i (127.0.0.1 only). */
const metricsBase = Number(process.env.METRICS_PORT ?? '9464');
const NODE_READY_TIMEOUT_MS = 120_000;
const NODE_STOP_TIMEOUT_MS = 30_000;

const { values } = parseArgs({
  options: { nodes: { type: 'string', default: '3' }, port: { type: 'string', default: process.env.PORT ?? '8080' } },
});
const nodeCount = Number(values.nodes);
const port = Number(values.port);
if (!Number.isInteger(nodeCount) || nodeCount < 1 || nodeCount > MAX_NODES) throw new Error(`--nodes must be 1–${MAX_NODES}`);
if (!Number.isInteger(port) || port < 1 || port + nodeCount > 65535) throw new Error('--port must leave room for the nodes above it');

const log = pino({ name: 'cluster', level: process.env.LOG_LEVEL ?? 'info' });
const repo = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const dataDir = path.resolve(process.env.DATA_DIR ?? path.join(repo, '.data'));

async function waitReady(child: ChildProcess, url: string): Promise<void> {
  const deadline = Date.now() + NODE_READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`node at ${url} exited with ${child.exitCode}`);
    const ok = await fetch(`${url}/readyz`).then((r) => r.ok, () => false);
    if (ok) return;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error(`node at ${url} not ready after ${NODE_READY_TIMEOUT_MS} ms`);
}

async function stopChild(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), NODE_STOP_TIMEOUT_MS);
  await exited;
  clearTimeout(timer);
}

async function main(): Promise<void> {
  const embedded = await startEmbeddedPostgres({ dataDir, log });
  const secrets = await loadOrCreateSecrets(dataDir, { adminToken: null, jwtSecret: null, paymentWebhookSecret: null });
  const clusterSecret = randomBytes(32).toString('hex');
  const nodes: ChildProcess[] = [];
  let haproxy: ChildProcess | null = null;
  let stopping = false;
  const stopAll = async (reason: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ reason }, 'stopping the cluster: nodes hand their shards over and exit');
    await Promise.all(nodes.map((node) => stopChild(node, 'SIGTERM')));
    if (haproxy !== null) await stopChild(haproxy, 'SIGUSR1'); // haproxy's soft stop
    await embedded.stop();
    process.exit(0);
  };
  process.on('SIGINT', () => void stopAll('SIGINT'));
  process.on('SIGTERM', () => void stopAll('SIGTERM'));

  const nodePorts = Array.from({ length: nodeCount }, (_, i) => port + 1 + i);
  for (const [i, nodePort] of nodePorts.entries()) {
    const child = spawn(process.execPath, ['--enable-source-maps', '--import', 'tsx', path.join(repo, 'src/main.ts')], {
      cwd: repo,
      env: {
        ...process.env,
        DATABASE_URL: embedded.url,
        ADMIN_TOKEN: secrets.adminToken,
        JWT_SECRET: secrets.jwtSecret,
        PAYMENT_WEBHOOK_SECRET: secrets.paymentWebhookSecret,
        CLUSTER_SECRET: clusterSecret,
        NODE_ID: `node${i + 1}`,
        HOST: '127.0.0.1',
        PORT: String(nodePort),
        METRICS_PORT: String(metricsBase + i),
        METRICS_HOST: '127.0.0.1',
      },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    child.on('exit', (code, signal) => {
      if (!stopping) log.error({ node: i + 1, code, signal }, 'a node exited');
    });
    nodes.push(child);
    // One at a time: the first runs the migrations, the next join a running cluster.
    await waitReady(child, `http://127.0.0.1:${nodePort}`);
  }

  if (spawnSync('haproxy', ['-v'], { stdio: 'ignore' }).status === 0) {
    const cfg = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'flashstock-haproxy-')), 'haproxy.cfg');
    const template = fs.readFileSync(path.join(repo, 'deploy/haproxy/haproxy.cfg'), 'utf8');
    fs.writeFileSync(cfg, renderLocalHaproxyConfig(template, port, port + MAX_NODES + 1, nodePorts, port + MAX_NODES + 2));
    const check = spawnSync('haproxy', ['-c', '-q', '-f', cfg], { encoding: 'utf8' });
    if (check.status !== 0) throw new Error(`haproxy rejected ${cfg}: ${check.stderr}`);
    haproxy = spawn('haproxy', ['-db', '-f', cfg], { stdio: ['ignore', 'inherit', 'inherit'] });
  } else {
    log.warn('haproxy is not on PATH (apt-get install haproxy): no load balancer; use the node URLs');
  }

  const lines = [
    '',
    `flashstock cluster: ${nodeCount} nodes on one PostgreSQL (${embedded.dataDir})`,
    haproxy === null ? null : `  load balancer   http://127.0.0.1:${port}   (haproxy, /readyz health checks)`,
    haproxy === null ? null : `  haproxy stats   http://127.0.0.1:${port + MAX_NODES + 1}/stats`,
    haproxy === null ? null : `  admin API       http://127.0.0.1:${port + MAX_NODES + 2}/v1/admin/…   (haproxy's admin frontend; not on the public one)`,
    ...nodePorts.map((p, i) => `  node${i + 1}           http://127.0.0.1:${p}   metrics http://127.0.0.1:${metricsBase + i}/metrics`),
    `  admin token     in ${path.join(dataDir, 'secrets.json')} (adminToken)`,
    `  cluster view    curl -H "authorization: Bearer $ADMIN" http://127.0.0.1:${nodePorts[0]}/v1/admin/cluster`,
    'Ctrl-C stops everything.',
    '',
  ];
  process.stdout.write(lines.filter((l) => l !== null).join('\n'));
}

main().catch((err: unknown) => {
  log.fatal({ err }, 'cluster failed to start');
  process.exit(1);
});
