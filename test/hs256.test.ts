import t from 'tap';
import { createHmac } from 'node:crypto';
import { createSigner, createVerifier } from 'fast-jwt';
import { createHs256FastPath } from '../src/auth/hs256.js';

/** The lean HS256 path accepts the usual token and nothing fast-jwt would refuse. */

const secret = 'the-secret';
const b64 = (value: unknown): string => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
function token(header: unknown, payload: unknown, key = secret): string {
  const input = `${b64(header)}.${b64(payload)}`;
  return `${input}.${createHmac('sha256', key).update(input).digest('base64url')}`;
}

const fast = createHs256FastPath(secret);
const full = createVerifier({ key: secret, algorithms: ['HS256'], requiredClaims: ['sub'] });
const accepts = (tok: string): boolean => {
  try {
    full(tok);
    return true;
  } catch {
    return false;
  }
};
const nowS = Math.floor(Date.now() / 1000);

t.test('the usual tokens: accepted, with their claims', async (t) => {
  const signed = createSigner({ key: secret, algorithm: 'HS256', expiresIn: 60_000 })({ sub: 'alice' });
  t.match(fast(signed), { sub: 'alice', exp: Number });
  t.match(fast(token({ alg: 'HS256', typ: 'JWT' }, { sub: 'bob', nbf: nowS - 5, exp: nowS + 60 })), { sub: 'bob' });
  t.match(fast(token({ alg: 'HS256' }, { sub: 'carol' })), { sub: 'carol' }, 'no exp: no expiry (as fast-jwt)');
});

t.test('anything else is left to fast-jwt (null), and fast-jwt refuses what must be refused', async (t) => {
  const cases: Record<string, string> = {
    'wrong secret': token({ alg: 'HS256' }, { sub: 'a' }, 'other'),
    'alg HS512': token({ alg: 'HS512' }, { sub: 'a' }),
    'alg none': `${b64({ alg: 'none' })}.${b64({ sub: 'a' })}.`,
    'crit header': token({ alg: 'HS256', crit: ['x'], x: 1 }, { sub: 'a' }),
    'kid header (legal, but not the usual)': token({ alg: 'HS256', kid: 'k1' }, { sub: 'a' }),
    'typ not a string': token({ alg: 'HS256', typ: 1 }, { sub: 'a' }),
    expired: token({ alg: 'HS256' }, { sub: 'a', exp: nowS - 10 }),
    'not yet valid': token({ alg: 'HS256' }, { sub: 'a', nbf: nowS + 60 }),
    'exp a string': token({ alg: 'HS256' }, { sub: 'a', exp: String(nowS + 60) }),
    'exp an array': token({ alg: 'HS256' }, { sub: 'a', exp: [nowS + 60] }),
    'no sub': token({ alg: 'HS256' }, { name: 'a' }),
    'payload an array': token({ alg: 'HS256' }, ['sub']),
    'payload null': token({ alg: 'HS256' }, null),
    'payload not JSON': token({ alg: 'HS256' }, '{sub:'),
    'header not JSON': token('{alg', { sub: 'a' }),
    'two segments': `${b64({ alg: 'HS256' })}.${b64({ sub: 'a' })}`,
    'padded signature': `${token({ alg: 'HS256' }, { sub: 'a' })}=`,
    'whitespace in the payload segment': (() => {
      const [h, p, s] = token({ alg: 'HS256' }, { sub: 'a' }).split('.');
      return `${h}.${p!.slice(0, 4)} ${p!.slice(4)}.${s}`;
    })(),
    'empty signature': `${b64({ alg: 'HS256' })}.${b64({ sub: 'a' })}.`,
    'truncated signature': token({ alg: 'HS256' }, { sub: 'a' }).slice(0, -2),
    // The last of 43 characters carries 4 bits and 2 unused ones: this one decodes to the same bytes.
    'signature with other unused bits': (() => {
      const signed = token({ alg: 'HS256' }, { sub: 'a' });
      const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
      return signed.slice(0, -1) + alphabet[alphabet.indexOf(signed.at(-1)!) ^ 1];
    })(),
    'signature one character off': (() => {
      const signed = token({ alg: 'HS256' }, { sub: 'a' });
      return signed.slice(0, -10) + (signed.at(-10) === 'A' ? 'B' : 'A') + signed.slice(-9);
    })(),
  };
  for (const [name, tok] of Object.entries(cases)) {
    t.equal(fast(tok), null, `${name}: not decided by the lean path`);
  }
  t.same(
    Buffer.from(cases['signature with other unused bits']!.split('.')[2]!, 'base64url'),
    Buffer.from(token({ alg: 'HS256' }, { sub: 'a' }).split('.')[2]!, 'base64url'),
    'the non-canonical signature decodes to the right bytes (fast-jwt decides it)',
  );
  for (const name of ['signature one character off', 'wrong secret', 'alg HS512', 'alg none', 'crit header', 'expired', 'not yet valid', 'exp a string', 'exp an array', 'no sub', 'payload an array', 'padded signature', 'truncated signature']) {
    t.notOk(accepts(cases[name]!), `${name}: fast-jwt refuses it too`);
  }
});

t.test('never accepts what fast-jwt refuses: random claim sets', async (t) => {
  const values = [undefined, null, 0, 1, -1, nowS - 1000, nowS + 1000, '1', [], {}, true];
  let compared = 0;
  for (const exp of values) {
    for (const nbf of values) {
      for (const sub of ['a', undefined, 5]) {
        const payload: Record<string, unknown> = {};
        if (sub !== undefined) payload.sub = sub;
        if (exp !== undefined) payload.exp = exp;
        if (nbf !== undefined) payload.nbf = nbf;
        const tok = token({ alg: 'HS256', typ: 'JWT' }, payload);
        const lean = fast(tok);
        if (lean !== null) t.ok(accepts(tok), `accepted only what fast-jwt accepts: ${JSON.stringify(payload)}`);
        compared += 1;
      }
    }
  }
  t.ok(compared > 300);
});
