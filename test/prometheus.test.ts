import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { startTestService } from './helpers/service.js';
import { freePort, commandPath } from './helpers/net.js';
import { skipBecause } from './helpers/skip.js';

/**
 * A real Prometheus (Debian's `prometheus` package) scrapes a running service;
 * `flashstock_reservations_total` is read back through Prometheus's HTTP API.
 * promtool lints the /metrics output and checks deploy/prometheus/alerts.yml,
 * and every query of the Grafana dashboard must be valid PromQL.
 */


const prometheus = commandPath('prometheus');
const promtool = commandPath('promtool');
if (prometheus === null || promtool === null) {
  skipBecause(t, 'no prometheus/promtool on PATH (apt-get install prometheus): the Prometheus test did not run');
} else {
  await run(prometheus, promtool);
}


async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | null>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => null);
    if (value !== null) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

async function run(prometheusPath: string, promtoolPath: string): Promise<void> {
  const api = await startTestService(t);
  const dir = mkdtempSync(path.join(tmpdir(), 'flashstock-prometheus-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const port = await freePort();
  // The metrics listener (METRICS_PORT), not the API port.
  const target = new URL(api.metricsUrl).host;
  writeFileSync(
    path.join(dir, 'prometheus.yml'),
    [
      'global:',
      '  scrape_interval: 1s',
      '  evaluation_interval: 1s',
      'rule_files:',
      `  - ${path.resolve('deploy/prometheus/alerts.yml')}`,
      'scrape_configs:',
      '  - job_name: flashstock',
      '    scrape_timeout: 900ms',
      `    static_configs: [{ targets: ['${target}'] }]`,
      '',
    ].join('\n'),
  );
  const server = spawn(
    prometheusPath,
    [
      `--config.file=${path.join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${path.join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let serverLog = '';
  server.stderr!.on('data', (chunk: Buffer) => {
    serverLog = (serverLog + chunk.toString()).slice(-4000);
  });
  const exited = new Promise<void>((resolve) => server.once('exit', () => resolve()));
  t.teardown(async () => {
    server.kill('SIGTERM');
    await exited;
  });
  const promUrl = `http://127.0.0.1:${port}`;
  const query = async (expr: string) => {
    const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(expr)}`);
    return (await res.json()) as { status: string; error?: string; data: { result: { metric: Record<string, string>; value: [number, string] }[] } };
  };

  t.test('Prometheus scrapes the service and answers flashstock_reservations_total', async (t) => {
    await until('Prometheus to be ready', 30_000, async () => ((await fetch(`${promUrl}/-/ready`)).ok ? true : null)).catch((error) => {
      throw new Error(`${(error as Error).message}; prometheus said: ${serverLog}`);
    });
    t.equal((await api.putSku('PROM-1', { stock: 5 })).status, 201);
    t.equal((await api.reserve('PROM-1', 'prom-shopper', 1, randomUUID())).status, 201);
    const created = await until('the reservation in Prometheus', 30_000, async () => {
      const answer = await query('flashstock_reservations_total{job="flashstock",outcome="created"}');
      const sample = answer.data.result[0];
      return sample !== undefined && Number(sample.value[1]) >= 1 ? sample : null;
    });
    t.equal(Number(created.value[1]), 1, 'one reservation created, as Prometheus saw it');
    t.equal(created.metric.instance, target);
    const targets = (await (await fetch(`${promUrl}/api/v1/targets`)).json()) as {
      data: { activeTargets: { health: string; lastError: string }[] };
    };
    t.match(targets.data.activeTargets, [{ health: 'up', lastError: '' }], 'the scrape is healthy');
    const rules = (await (await fetch(`${promUrl}/api/v1/rules`)).json()) as { data: { groups: { rules: unknown[] }[] } };
    t.ok(rules.data.groups[0]!.rules.length >= 5, 'alerts.yml is loaded by Prometheus');
  });

  t.test('every Grafana dashboard query is valid PromQL', async (t) => {
    const dashboard = JSON.parse(readFileSync('deploy/grafana/flashstock.json', 'utf8')) as {
      panels: { title: string; targets?: { expr: string }[] }[];
    };
    for (const panel of dashboard.panels) {
      for (const target of panel.targets ?? []) {
        const expr = target.expr.replaceAll('$instance', '.*').replaceAll('$route', '/v1/skus/:sku/reservations');
        const answer = await query(expr);
        t.equal(answer.status, 'success', `${panel.title}: ${expr}${answer.error ? ` (${answer.error})` : ''}`);
      }
    }
  });

  t.test('promtool: /metrics passes `check metrics`, alerts.yml passes `check rules`', async (t) => {
    const text = await (await fetch(`${api.metricsUrl}/metrics`)).text();
    const metrics = spawnSync(promtoolPath, ['check', 'metrics'], { input: text, encoding: 'utf8' });
    t.equal(metrics.status, 0, `promtool check metrics: ${metrics.stdout}${metrics.stderr}`);
    const rules = spawnSync(promtoolPath, ['check', 'rules', 'deploy/prometheus/alerts.yml'], { encoding: 'utf8' });
    t.equal(rules.status, 0, `promtool check rules: ${rules.stdout}${rules.stderr}`);
    const config = spawnSync(promtoolPath, ['check', 'config', 'deploy/prometheus/prometheus.yml'], { encoding: 'utf8' });
    t.equal(config.status, 0, `promtool check config: ${config.stdout}${config.stderr}`);
  });
}
