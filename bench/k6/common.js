// Shared helpers for the k6 scripts (k6 is not installed by npm: https://k6.io/docs/get-started/installation/).
import crypto from 'k6/crypto';
import encoding from 'k6/encoding';
import http from 'k6/http';

export const baseUrl = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/$/, '');
export const adminToken = __ENV.ADMIN_TOKEN;
export const jwtSecret = __ENV.JWT_SECRET;

if (!adminToken || !jwtSecret) {
  throw new Error('set ADMIN_TOKEN and JWT_SECRET (the service prints where it keeps them; npm run token -- <id> mints one token)');
}

const header = encoding.b64encode(JSON.stringify({ alg: 'HS256', typ: 'JWT' }), 'rawurl');

/** HS256 JWT with sub = shopper id, exp in an hour: what the service expects. */
export function shopperToken(shopperId) {
  const payload = encoding.b64encode(JSON.stringify({ sub: shopperId, exp: Math.floor(Date.now() / 1000) + 3600 }), 'rawurl');
  const signature = crypto.hmac('sha256', jwtSecret, `${header}.${payload}`, 'base64rawurl');
  return `${header}.${payload}.${signature}`;
}

export function createSku(sku, config) {
  const res = http.put(`${baseUrl}/v1/admin/skus/${sku}`, JSON.stringify(config), {
    headers: { Authorization: `Bearer ${adminToken}`, 'Content-Type': 'application/json' },
  });
  if (res.status !== 201 && res.status !== 200) throw new Error(`PUT ${sku}: ${res.status} ${res.body}`);
}

export function reserve(sku, token, idempotencyKey, quantity) {
  return http.post(`${baseUrl}/v1/skus/${sku}/reservations`, JSON.stringify({ quantity }), {
    headers: { Authorization: `Bearer ${token}`, 'Idempotency-Key': idempotencyKey, 'Content-Type': 'application/json' },
    tags: { name: 'reserve' },
    responseCallback: http.expectedStatuses(201, 409),
  });
}

export function problemCode(res) {
  try {
    return JSON.parse(res.body).code || null;
  } catch (e) {
    return null;
  }
}

export function getSku(sku) {
  return JSON.parse(http.get(`${baseUrl}/v1/skus/${sku}`).body);
}
