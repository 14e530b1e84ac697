import t from 'tap';
import { createSigner } from 'fast-jwt';
import { createAdminCheck, createShopperVerifier, signShopperToken } from '../src/auth/auth.js';

t.test('shopper tokens: verified once, cached, never past exp', async (t) => {
  const verify = createShopperVerifier('secret');
  const exp = Math.floor(Date.now() / 1000) + 1;
  const token = createSigner({ key: 'secret', algorithm: 'HS256' })({ sub: 'alice', exp });
  t.same(verify(`Bearer ${token}`), { ok: true, shopperId: 'alice' });
  t.same(verify(`bearer ${token}`), { ok: true, shopperId: 'alice' }, 'scheme is case-insensitive; served from the cache');
  await new Promise((resolve) => setTimeout(resolve, exp * 1000 - Date.now() + 50));
  t.match(verify(`Bearer ${token}`), { ok: false }, 'a cached token still expires');
  t.match(verify(undefined), { ok: false });
  t.match(verify('Basic abc'), { ok: false });
  t.match(verify(`Bearer ${signShopperToken('other', 'alice')}`), { ok: false }, 'wrong secret');
  t.match(verify(`Bearer ${signShopperToken('secret', 'x'.repeat(129))}`), { ok: false }, 'shopper id too long');
  t.match(verify(`Bearer ${signShopperToken('secret', 'a\u0000b')}`), { ok: false }, 'no control characters in a shopper id');
});

t.test('admin token: exact match only', async (t) => {
  const isAdmin = createAdminCheck('s3cret');
  t.equal(isAdmin('Bearer s3cret'), true);
  t.equal(isAdmin('Bearer s3cre'), false);
  t.equal(isAdmin('Bearer s3cret2'), false);
  t.equal(isAdmin(undefined), false);
  t.equal(isAdmin(''), false);
});
