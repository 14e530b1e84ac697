import t from 'tap';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { renderLocalHaproxyConfig } from '../src/cluster/haproxy-config.js';
import { commandPath } from './helpers/net.js';
import { skipBecause } from './helpers/skip.js';

/** The deployment files: parsed and checked here, and run through the real validators when installed. */

const repo = path.resolve(import.meta.dirname, '..');
const read = (file: string) => fs.readFileSync(path.join(repo, file), 'utf8');
/** The program's path when it is installed and runs (`args`: a harmless invocation), else null. */
const runnable = (command: string, args: string[]) => {
  const found = commandPath(command);
  return found !== null && spawnSync(found, args, { stdio: 'ignore' }).status === 0 ? found : null;
};

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Doc = any;

t.test('deploy/k8s: three replicas, headless Service, PDB, rolling updates, no plaintext secret', async (t) => {
  const docs = parseAllDocuments(read('deploy/k8s/flashstock.yaml'));
  t.ok(docs.every((d) => d.errors.length === 0), 'valid YAML');
  const objects: Doc[] = docs.map((d) => d.toJS());
  const byKind = (kind: string) => objects.filter((o) => o.kind === kind);
  t.equal(byKind('Secret').length, 0, 'no Secret object (the operator creates it)');
  t.notMatch(read('deploy/k8s/flashstock.yaml'), /stringData|change-me/, 'no secret values');

  const [sts] = byKind('StatefulSet');
  t.equal(sts.spec.replicas, 3);
  t.equal(sts.spec.updateStrategy.type, 'RollingUpdate');
  const headless = byKind('Service').find((s: Doc) => s.metadata.name === sts.spec.serviceName);
  t.equal(headless?.spec.clusterIP, 'None', 'serviceName is a headless Service');
  t.equal(headless?.spec.publishNotReadyAddresses, true);
  t.same(byKind('PodDisruptionBudget')[0]?.spec.maxUnavailable, 1);

  const container = sts.spec.template.spec.containers[0];
  const env = new Map(container.env.map((e: Doc) => [e.name, e.value]));
  t.match(env.get('NODE_ADVERTISE_URL'), /^http:\/\/\$\(POD_NAME\)\.flashstock-nodes\.\$\(POD_NAMESPACE\)\.svc\.cluster\.local:8080$/);
  t.equal(env.get('NODE_ID'), '$(POD_NAME)');
  t.ok(env.has('CLUSTER_SECRET_FILE'), 'the cluster secret comes from a mounted Secret');
  t.same(container.envFrom, [{ secretRef: { name: 'flashstock' } }]);
  t.equal(container.startupProbe.httpGet.path, '/readyz');
  t.equal(container.readinessProbe.httpGet.path, '/readyz');
  t.equal(container.livenessProbe.httpGet.path, '/healthz');
  t.match(container.ports, [{ name: 'http', containerPort: 8080 }, { name: 'metrics', containerPort: 9464 }], '/metrics on its own port');
  t.equal(env.get('METRICS_PORT'), '9464');
  const services: Doc[] = byKind('Service');
  t.notOk(services.some((svc) => svc.spec.ports.some((p: Doc) => p.targetPort === 'metrics' || p.port === 9464)), 'no Service exposes the metrics port');
  const [policy] = byKind('NetworkPolicy');
  t.match(policy?.spec.ingress, [{ ports: [{ port: 'http' }] }, { from: [{ podSelector: { matchLabels: { 'app.kubernetes.io/name': 'prometheus' } } }], ports: [{ port: 'metrics' }] }], 'only Prometheus reaches the metrics port');
  const shutdownMs = Number(env.get('SHUTDOWN_TIMEOUT_MS'));
  t.ok(sts.spec.template.spec.terminationGracePeriodSeconds * 1000 > shutdownMs, 'grace period outlasts the handover');
});

t.test('deploy/haproxy: haproxy -c accepts the compose config and the local rendering', async (t) => {
  const template = read('deploy/haproxy/haproxy.cfg');
  const local = renderLocalHaproxyConfig(template, 18080, 18097, [18081, 18082, 18083]);
  t.match(local, /server node3 127\.0\.0\.1:18083 check/);
  t.notMatch(local, /resolvers|node1:8080/);
  const haproxy = runnable('haproxy', ['-v']);
  if (haproxy === null) {
    skipBecause(t, 'haproxy is not on PATH (apt-get install haproxy): the configs were not validated by haproxy');
    return;
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flashstock-haproxy-test-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, 'local.cfg'), local);
  for (const file of [path.join(repo, 'deploy/haproxy/haproxy.cfg'), path.join(dir, 'local.cfg')]) {
    const check = spawnSync(haproxy, ['-c', '-f', file], { encoding: 'utf8' });
    t.equal(check.status, 0, `haproxy -c ${path.basename(file)}: ${check.stderr.split('\n').filter((l) => l.includes('ALERT')).join(' ')}`);
  }
});

t.test('deploy/compose: docker-compose config accepts it', async (t) => {
  const compose = parseAllDocuments(read('deploy/compose/docker-compose.yml'))[0]!.toJS() as Doc;
  t.same(Object.keys(compose.services).sort(), ['haproxy', 'node1', 'node2', 'node3', 'postgres', 'prometheus', 'redis']);
  t.equal(compose.services.node2.environment.NODE_ADVERTISE_URL, 'http://node2:8080');
  t.equal(compose['x-node'].environment.METRICS_PORT, '9464', 'every node (the x-node anchor): metrics on 9464');
  t.same(compose.services.haproxy.ports, ['8080:8080', '8404:8404'], 'the admin frontend (8081) is not published');
  t.match(read('deploy/compose/prometheus.yml'), /targets: \["node1:9464", "node2:9464", "node3:9464"\]/, 'Prometheus scrapes the metrics port');
  const dockerCompose = runnable('docker-compose', ['version']);
  if (dockerCompose === null) {
    skipBecause(t, 'docker-compose is not on PATH (apt-get install docker-compose): the compose file was not validated');
    return;
  }
  const dir = path.join(repo, 'deploy/compose');
  const secretFile = path.join(dir, 'cluster_secret');
  const created = !fs.existsSync(secretFile);
  if (created) fs.writeFileSync(secretFile, 'validation-only\n');
  t.teardown(() => created && fs.rmSync(secretFile, { force: true }));
  const env = { ...process.env, ADMIN_TOKEN: 'a', JWT_SECRET: 'b', PAYMENT_WEBHOOK_SECRET: 'c', POSTGRES_PASSWORD: 'd' };
  const check = spawnSync(dockerCompose, ['-f', 'docker-compose.yml', 'config', '-q'], { cwd: dir, env, encoding: 'utf8' });
  t.equal(check.status, 0, `docker-compose config: ${check.stderr}`);
  const missing = spawnSync('docker-compose', ['-f', 'docker-compose.yml', 'config', '-q'], {
    cwd: dir,
    env: { ...env, ADMIN_TOKEN: '' },
    encoding: 'utf8',
  });
  t.not(missing.status, 0, 'a missing secret is refused, not defaulted');
});
