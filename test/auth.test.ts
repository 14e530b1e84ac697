import t from 'tap';
import { spawnSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createAdminCheck, createShopperVerifier, jwtClockSkewSeconds, signShopperToken } from '../src/auth/auth.js';
import { ConfigError, loadConfig } from '../src/config.js';

/** A clock the test moves by hand: no sleeping, no race with the wall clock. */
function testClock(startMs = Date.UTC(2030, 0, 1)) {
  let nowMs = startMs;
  return { now: () => nowMs, advance: (ms: number) => (nowMs += ms), seconds: () => Math.floor(nowMs / 1000) };
}

const rules = { maxLifetimeSeconds: 3600 };
/** An HS256 token with exactly these claims (no iat added, any value kept as it is). */
function signed(claims: Record<string, unknown>, key = 'secret'): string {
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const body = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  return `Bearer ${body}.${createHmac('sha256', key).update(body).digest('base64url')}`;
}

t.test('shopper tokens: verified once, cached, never past exp', async (t) => {
  const clock = testClock();
  const verify = createShopperVerifier('secret', rules, clock.now);
  const token = signed({ sub: 'alice', exp: clock.seconds() + 1 });
  t.same(verify(token), { ok: true, shopperId: 'alice' });
  t.same(verify(token.replace('Bearer', 'bearer')), { ok: true, shopperId: 'alice' }, 'scheme is case-insensitive; served from the cache');
  clock.advance(999);
  t.same(verify(token), { ok: true, shopperId: 'alice' }, 'good until its exp');
  clock.advance(1);
  t.match(verify(token), { ok: false, detail: /expired at 2030-01-01T00:00:01/ }, 'a cached token still expires, at exp exactly');
  t.match(verify(undefined), { ok: false });
  t.match(verify('Basic abc'), { ok: false });
  t.match(verify(`Bearer ${signShopperToken('other', 'alice', 60, clock.now)}`), { ok: false }, 'wrong secret');
  t.match(verify(`Bearer ${signShopperToken('secret', 'x'.repeat(129), 60, clock.now)}`), { ok: false }, 'shopper id too long');
  t.match(verify(`Bearer ${signShopperToken('secret', 'a\u0000b', 60, clock.now)}`), { ok: false }, 'no control characters in a shopper id');
});

t.test('exp is required, in the future, and at most JWT_MAX_LIFETIME_SECONDS ahead', async (t) => {
  const clock = testClock();
  const verify = createShopperVerifier('secret', rules, clock.now);
  const now = clock.seconds();
  t.match(verify(signed({ sub: 'a' })), { ok: false, detail: /no exp claim/ }, 'no exp');
  t.match(verify(signed({ sub: 'a', exp: 1e12 })), { ok: false, detail: /exp must be a NumericDate/ }, 'exp 10^12 (milliseconds by mistake)');
  t.match(verify(signed({ sub: 'a', exp: String(now + 60) })), { ok: false, detail: /exp/ }, 'exp as a string');
  t.match(verify(signed({ sub: 'a', exp: now - 1 })), { ok: false, detail: /expired at/ }, 'exp in the past');
  t.match(verify(signed({ sub: 'a', exp: now })), { ok: false, detail: /expired at/ }, 'exp now');
  t.same(verify(signed({ sub: 'a', exp: now + 3600 })), { ok: true, shopperId: 'a' }, 'exactly the lifetime ahead');
  t.same(verify(signed({ sub: 'b', exp: now + 3600 + jwtClockSkewSeconds })), { ok: true, shopperId: 'b' }, 'the lifetime plus the skew');
  t.match(
    verify(signed({ sub: 'a', exp: now + 3600 + jwtClockSkewSeconds + 1 })),
    { ok: false, detail: /3661 s ahead; at most 3600 s \(JWT_MAX_LIFETIME_SECONDS\)/ },
    'beyond it',
  );
  t.match(verify(signed({ sub: 'a', exp: now + 10 * 365 * 86400 })), { ok: false, detail: /JWT_MAX_LIFETIME_SECONDS/ }, 'ten years');
});

t.test('iat and nbf in the future beyond the skew are refused', async (t) => {
  const clock = testClock();
  const verify = createShopperVerifier('secret', rules, clock.now);
  const now = clock.seconds();
  const exp = now + 600;
  t.same(verify(signed({ sub: 'a', exp, iat: now })), { ok: true, shopperId: 'a' }, 'iat now');
  t.same(verify(signed({ sub: 'b', exp, iat: now + jwtClockSkewSeconds })), { ok: true, shopperId: 'b' }, 'iat within the skew');
  t.match(verify(signed({ sub: 'a', exp, iat: now + jwtClockSkewSeconds + 1 })), { ok: false, detail: /iat is 61 s in the future \(60 s of clock skew/ }, 'iat beyond it');
  t.match(verify(signed({ sub: 'a', exp, iat: 'yesterday' })), { ok: false, detail: /iat/ }, 'iat not a number');
  t.same(verify(signed({ sub: 'c', exp, nbf: now + 30 })), { ok: true, shopperId: 'c' }, 'nbf within the skew');
  t.match(verify(signed({ sub: 'a', exp, nbf: now + 120 })), { ok: false, detail: /not valid before/ }, 'nbf beyond it');
  clock.advance(120_000);
  t.same(verify(signed({ sub: 'a', exp, nbf: now + 120 })), { ok: true, shopperId: 'a' }, 'valid once the clock reaches nbf');
});

t.test('signShopperToken issues tokens the verifier takes, up to the maximum lifetime', async (t) => {
  const clock = testClock();
  const verify = createShopperVerifier('secret', { maxLifetimeSeconds: 86_400 }, clock.now);
  t.same(verify(`Bearer ${signShopperToken('secret', 'alice', undefined, clock.now)}`), { ok: true, shopperId: 'alice' }, 'the default (a day)');
  t.same(verify(`Bearer ${signShopperToken('secret', 'bob', 60, clock.now)}`), { ok: true, shopperId: 'bob' }, 'a minute');
  t.match(verify(`Bearer ${signShopperToken('secret', 'carol', 2 * 86_400, clock.now)}`), { ok: false, detail: /JWT_MAX_LIFETIME_SECONDS/ }, 'two days');
});

t.test('JWT_MAX_LIFETIME_SECONDS: default a day, bounded', async (t) => {
  t.equal(loadConfig({}).jwtMaxLifetimeSeconds, 86_400);
  t.equal(loadConfig({ JWT_MAX_LIFETIME_SECONDS: '900' }).jwtMaxLifetimeSeconds, 900);
  for (const bad of ['0', '59', '-1', '1.5', 'a day', '31536001']) {
    t.throws(() => loadConfig({ JWT_MAX_LIFETIME_SECONDS: bad }), ConfigError, `refused: ${bad}`);
  }
});

t.test('npm run token prints a token the service accepts; it will not issue one longer than the maximum', async (t) => {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'flashstock-token-'));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  const secret = 'cli-test-jwt-secret-0123456789abcdef';
  const run = (args: string[], env: Record<string, string> = {}) =>
    spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/token.ts', ...args], {
      env: { ...process.env, JWT_SECRET: secret, DATA_DIR: dataDir, ...env },
      encoding: 'utf8',
    });
  const verify = createShopperVerifier(secret, { maxLifetimeSeconds: 86_400 });
  const plain = run(['alice']);
  t.equal(plain.status, 0, plain.stderr);
  t.same(verify(`Bearer ${plain.stdout.trim()}`), { ok: true, shopperId: 'alice' }, 'the default token passes');
  const short = run(['bob', '120']);
  t.same(verify(`Bearer ${short.stdout.trim()}`), { ok: true, shopperId: 'bob' }, 'a two-minute token passes');
  const long = run(['carol', '172800']);
  t.equal(long.status, 2, 'two days: refused');
  t.match(long.stderr, /from 1 to 86400 \(JWT_MAX_LIFETIME_SECONDS\)/);
  const shorter = run(['dave'], { JWT_MAX_LIFETIME_SECONDS: '600' });
  t.equal(shorter.status, 0, shorter.stderr);
  const strict = createShopperVerifier(secret, { maxLifetimeSeconds: 600 });
  t.same(strict(`Bearer ${shorter.stdout.trim()}`), { ok: true, shopperId: 'dave' }, 'with a shorter maximum, the default follows it');
});

t.test('admin token: exact match only', async (t) => {
  const isAdmin = createAdminCheck('s3cret');
  t.equal(isAdmin('Bearer s3cret'), true);
  t.equal(isAdmin('Bearer s3cre'), false);
  t.equal(isAdmin('Bearer s3cret2'), false);
  t.equal(isAdmin(undefined), false);
  t.equal(isAdmin(''), false);
});
