import t from 'tap';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, configWarnings, editDistance, loadConfig, secretWeakness } from '../src/config.js';
import { adminToken, jwtSecret } from './helpers/service.js';

/** Every configuration problem is a ConfigError with one line; warnings for near-misses. */

const strong = { ADMIN_TOKEN: adminToken, JWT_SECRET: jwtSecret };

function refusal(env: Record<string, string>): string {
  try {
    loadConfig(env);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    if (error.message.includes('\n')) throw new Error(`not one line: ${error.message}`);
    return error.message;
  }
  throw new Error(`accepted: ${JSON.stringify(env)}`);
}

t.test('defaults load with no environment at all', async (t) => {
  const config = loadConfig({});
  t.equal(config.port, 8080);
  t.equal(config.logLevel, 'info');
  t.equal(config.databaseUrl, null);
  t.equal(config.auditCron, '*/5 * * * *');
  t.equal(config.paymentBreakerResetSeconds, 10);
  t.equal(config.allowWeakSecrets, false);
});

t.test('values, ranges and enums', async (t) => {
  t.match(refusal({ PORT: '70000' }), /^PORT must be an integer from 0 to 65535, got "70000"$/);
  t.match(refusal({ PG_POOL_MAX: '2.5' }), /PG_POOL_MAX must be an integer/);
  t.match(refusal({ BATCH_MAX_EVENTS: 'lots' }), /BATCH_MAX_EVENTS/);
  t.match(refusal({ LOG_LEVEL: 'verbose' }), /^LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent, got "verbose"$/);
  t.match(refusal({ PAYMENT_PROVIDER: 'stripe' }), /PAYMENT_PROVIDER must be one of simulated/);
  t.match(refusal({ ALLOW_WEAK_SECRETS: 'yes' }), /ALLOW_WEAK_SECRETS must be one of 0, 1/);
  t.match(refusal({ AUDIT_CRON: 'every minute' }), /AUDIT_CRON must be a cron expression/);
  t.match(refusal({ PAYMENT_BREAKER_ERROR_PERCENT: '100' }), /PAYMENT_BREAKER_ERROR_PERCENT must be an integer from 1 to 99/);
  t.equal(loadConfig({ AUDIT_CRON: '' }).auditCron, null, 'an empty AUDIT_CRON switches the audit off');
  t.equal(loadConfig({ LOG_LEVEL: 'debug' }).logLevel, 'debug');
});

t.test('URLs: DATABASE_URL is postgres://, REDIS_URL is redis://', async (t) => {
  t.equal(loadConfig({ ...strong, DATABASE_URL: 'postgres://u:p@db:5432/x' }).databaseUrl, 'postgres://u:p@db:5432/x');
  t.equal(loadConfig({ ...strong, DATABASE_URL: 'postgresql://db/x' }).databaseUrl, 'postgresql://db/x');
  t.equal(loadConfig({ REDIS_URL: 'rediss://cache:6380' }).redisUrl, 'rediss://cache:6380');
  t.match(refusal({ DATABASE_URL: 'db.internal:5432' }), /^DATABASE_URL must be a postgres: or postgresql:\/\/ URL/);
  t.match(refusal({ DATABASE_URL: 'not a url' }), /^DATABASE_URL is not a URL/);
  t.match(refusal({ DATABASE_URL: 'mysql://db/x' }), /DATABASE_URL must be a postgres/);
  t.match(refusal({ REDIS_URL: 'http://cache:6379' }), /^REDIS_URL must be a redis: or rediss:\/\/ URL/);
  t.notMatch(refusal({ DATABASE_URL: 'mysql://user:hunter2@db/x' }), /hunter2/, 'the password is not echoed');
});

t.test('weak secrets are refused unless ALLOW_WEAK_SECRETS=1', async (t) => {
  t.match(refusal({ ADMIN_TOKEN: 'short' }), /^ADMIN_TOKEN is weak \(5 bytes, fewer than 32\)/);
  t.match(refusal({ JWT_SECRET: 'change-me-jwt-secret-to-something-long' }), /^JWT_SECRET is weak \(a placeholder value\)/);
  t.match(refusal({ PAYMENT_WEBHOOK_SECRET: 'changeme' }), /PAYMENT_WEBHOOK_SECRET is weak/);
  t.match(refusal({ CLUSTER_SECRET: 'a'.repeat(64) }), /CLUSTER_SECRET is weak \(fewer than 8 distinct characters\)/);
  t.notMatch(refusal({ ADMIN_TOKEN: 'hunter2' }), /hunter2/, 'the secret is not echoed');
  t.equal(loadConfig({ ADMIN_TOKEN: 'short', ALLOW_WEAK_SECRETS: '1' }).adminToken, 'short');
  t.equal(loadConfig(strong).adminToken, adminToken, "the tests' own secrets pass");
  t.throws(() => loadConfig({}, { jwtSecret: 'secret' }), ConfigError, 'overrides are checked too');
  for (const weak of ['secret', 'changeme', 'change-me', 'CHANGE_ME_PLEASE_0123456789abcdefghij', 'password', 'your-secret-here-your-secret-here!!']) {
    t.not(secretWeakness(weak), null, `weak: ${weak}`);
  }
  t.equal(secretWeakness('q1XxkS0bqYJm2jQ1vVUq3Y9wQxYp4oN7Zb2cR5tL8eA'), null, 'random base64 is fine');
});

t.test('*_FILE variants: read from a file, newline trimmed; both set is an error', async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'flashstock-config-'));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'admin');
  await fs.writeFile(file, `${adminToken}\n`);
  const webhook = path.join(dir, 'webhook');
  await fs.writeFile(webhook, 'from-a-file-0123456789abcdef-0123456789');
  const config = loadConfig({ ADMIN_TOKEN_FILE: file, JWT_SECRET: jwtSecret, PAYMENT_WEBHOOK_SECRET_FILE: webhook, CLUSTER_SECRET_FILE: webhook });
  t.equal(config.adminToken, adminToken);
  t.equal(config.paymentWebhookSecret, 'from-a-file-0123456789abcdef-0123456789');
  t.equal(config.clusterSecret, 'from-a-file-0123456789abcdef-0123456789');
  t.match(refusal({ ADMIN_TOKEN: adminToken, ADMIN_TOKEN_FILE: file }), /^ADMIN_TOKEN and ADMIN_TOKEN_FILE are both set: set only one$/);
  t.match(refusal({ JWT_SECRET_FILE: path.join(dir, 'missing') }), /^JWT_SECRET_FILE: cannot read .*missing: ENOENT$/);
  const weakFile = path.join(dir, 'weak');
  await fs.writeFile(weakFile, 'change-me\n');
  t.match(refusal({ JWT_SECRET_FILE: weakFile }), /^JWT_SECRET is weak \(a placeholder value\)/, 'a file secret is checked like the others');
});

t.test('shutdown budgets must leave the outbox its commit timeout', async (t) => {
  t.match(
    refusal({ SHUTDOWN_TIMEOUT_MS: '5000', SHUTDOWN_PAYMENTS_TIMEOUT_MS: '3000' }),
    /^SHUTDOWN_TIMEOUT_MS \(5000\) must exceed SHUTDOWN_PAYMENTS_TIMEOUT_MS \+ SHUTDOWN_JOBS_TIMEOUT_MS \+ COMMIT_TIMEOUT_MS \(9000\)$/,
  );
  t.equal(loadConfig({ SHUTDOWN_TIMEOUT_MS: '20000', SHUTDOWN_PAYMENTS_TIMEOUT_MS: '10000' }).shutdownPaymentsTimeoutMs, 10000);
});

t.test('unknown FLASHSTOCK_* and misspelled names are warned, other environment is not', async (t) => {
  loadConfig({});
  const warnings = configWarnings({
    FLASHSTOCK_MODE: 'turbo',
    DATABSE_URL: 'postgres://x/y', // transposition
    PG_POOL_MAXX: '3',
    LOG_LEVLE: 'info',
    REDIS_URI: 'redis://x',
    PROT: '80',
    PATH: '/usr/bin',
    HOME: '/root',
    PGPORT: '5432',
    PGHOST: 'db',
    USER: 'root',
    HOSTNAME: 'box',
    TEST_DATABASE_URL: 'postgres://x/y',
    npm_config_cache: '/tmp',
    PORT: '8080',
  });
  t.same(warnings.sort(), [
    'DATABSE_URL is not a flashstock setting: did you mean DATABASE_URL?',
    'FLASHSTOCK_MODE is not a flashstock setting (ignored)',
    'LOG_LEVLE is not a flashstock setting: did you mean LOG_LEVEL?',
    'PG_POOL_MAXX is not a flashstock setting: did you mean PG_POOL_MAX?',
    'PROT is not a flashstock setting: did you mean PORT?',
    'REDIS_URI is not a flashstock setting: did you mean REDIS_URL?',
  ]);
  t.equal(editDistance('DATABSE_URL', 'DATABASE_URL'), 1);
  t.equal(editDistance('PROT', 'PORT'), 1, 'a swap of neighbours is one edit');
  t.equal(editDistance('kitten', 'sitting'), 3);
});

t.test('the real entry point exits 2 with one line on any configuration error', async (t) => {
  const cases: [Record<string, string>, RegExp][] = [
    [{ LOG_LEVEL: 'loud' }, /LOG_LEVEL must be one of/],
    [{ DATABASE_URL: 'postgres://127.0.0.1:1/x', ADMIN_TOKEN: 'short', JWT_SECRET: jwtSecret }, /ADMIN_TOKEN is weak/],
    [{ DATABASE_URL: 'postgres://127.0.0.1:1/x' }, /ADMIN_TOKEN and JWT_SECRET must be set when DATABASE_URL is set/],
  ];
  for (const [env, expected] of cases) {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const [code] = (await once(child, 'exit')) as [number | null];
    t.equal(code, 2, `exit 2 for ${JSON.stringify(env)}`);
    const lines = stderr.trim().split('\n');
    t.equal(lines.length, 1, 'one line');
    t.match(lines[0], /^flashstock failed to start: /);
    t.match(lines[0], expected);
  }
});

t.test('METRICS_PORT: 9464 on 127.0.0.1 by default, never the public port', async (t) => {
  const config = loadConfig({});
  t.equal(config.metricsPort, 9464);
  t.equal(config.metricsHost, '127.0.0.1');
  t.equal(loadConfig({ METRICS_PORT: '0', METRICS_HOST: '0.0.0.0' }).metricsHost, '0.0.0.0');
  t.throws(() => loadConfig({ PORT: '9000', METRICS_PORT: '9000' }), /METRICS_PORT must differ from PORT/);
  t.doesNotThrow(() => loadConfig({ PORT: '0', METRICS_PORT: '0' }), 'both 0: two different free ports');
});
