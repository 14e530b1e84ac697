import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { advertiseUrl, ConfigError, loadConfig } from '../src/config.js';

const secret = 'Zq3vN8xR2pL7tY5wK1mJ9cH4bF6gD0sAe8Wn5Lq2Vx7Rt4Yp';

t.test('without CLUSTER_SECRET a node runs alone', async (t) => {
  const config = loadConfig({});
  t.equal(config.clusterSecret, null);
  t.equal(config.nodeAdvertiseUrl, null);
  t.equal(config.clusterHeartbeatMs, 1_000);
  t.equal(config.clusterLeaseTimeoutMs, 5_000);
});

t.test('CLUSTER_SECRET and CLUSTER_SECRET_FILE', async (t) => {
  t.equal(loadConfig({ CLUSTER_SECRET: secret }).clusterSecret, secret);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flashstock-cluster-config-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'secret');
  fs.writeFileSync(file, `${secret}\n`);
  t.equal(loadConfig({ CLUSTER_SECRET_FILE: file }).clusterSecret, secret, 'read from the file, trailing newline dropped');
  t.throws(() => loadConfig({ CLUSTER_SECRET: secret, CLUSTER_SECRET_FILE: file }), ConfigError, 'not both');
  t.throws(() => loadConfig({ CLUSTER_SECRET_FILE: path.join(dir, 'missing') }), /cannot read/);
  t.throws(() => loadConfig({ CLUSTER_SECRET: 'short' }), /CLUSTER_SECRET is weak/);
});

t.test('NODE_ADVERTISE_URL: validated, defaulted from HOST and the listening port', async (t) => {
  t.equal(loadConfig({ NODE_ADVERTISE_URL: 'http://flashstock-1.flashstock:8080/' }).nodeAdvertiseUrl, 'http://flashstock-1.flashstock:8080');
  for (const bad of ['flashstock-1:8080', 'https://a:1', 'http://a:1/path', 'http://u:p@a:1', 'http://a:1/?q']) {
    t.throws(() => loadConfig({ NODE_ADVERTISE_URL: bad }), ConfigError, bad);
  }
  t.equal(advertiseUrl(loadConfig({}), 8081), 'http://127.0.0.1:8081', '0.0.0.0 is advertised as 127.0.0.1');
  t.equal(advertiseUrl(loadConfig({ HOST: '10.1.2.3' }), 9000), 'http://10.1.2.3:9000');
  t.equal(advertiseUrl(loadConfig({ HOST: '::1' }), 9000), 'http://[::1]:9000');
  t.equal(advertiseUrl(loadConfig({ NODE_ADVERTISE_URL: 'http://n:1' }), 9000), 'http://n:1');
});

t.test('lease timings are bounded and consistent', async (t) => {
  t.throws(() => loadConfig({ CLUSTER_HEARTBEAT_MS: '2000', CLUSTER_LEASE_TIMEOUT_MS: '5000' }), /3 × CLUSTER_HEARTBEAT_MS/);
  t.throws(() => loadConfig({ CLUSTER_HEARTBEAT_MS: '10' }), /CLUSTER_HEARTBEAT_MS must be an integer from 50/);
  t.throws(() => loadConfig({ CLUSTER_LOCK_NAMESPACE: '0' }), ConfigError);
  t.equal(loadConfig({ CLUSTER_MAX_IN_FLIGHT: '5' }).clusterMaxInFlight, 5);
});
