// hot-sku: one SKU with more stock than the run can sell, every iteration a distinct shopper.
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e ADMIN_TOKEN=... -e JWT_SECRET=... bench/k6/hot-sku.js
//   (-e VUS=256 -e DURATION=30s to change the load)
import { check } from 'k6';
import { Counter } from 'k6/metrics';
import { createSku, reserve, problemCode, shopperToken, getSku } from './common.js';

const vus = Number(__ENV.VUS || 256);
const run = `${Date.now().toString(36)}`;
const sku = `k6-hot-${run}`;
const reserved = new Counter('reservations_201');

export const options = {
  scenarios: {
    hot: { executor: 'constant-vus', vus, duration: __ENV.DURATION || '30s' },
  },
  thresholds: {
    'http_req_duration{name:reserve}': ['p(99)<5'],
    checks: ['rate>0.999'],
  },
  summaryTrendStats: ['avg', 'med', 'p(90)', 'p(99)', 'p(99.9)', 'max'],
};

export function setup() {
  createSku(sku, { stock: 1000000000, perShopperLimit: 1000, holdSeconds: 3600, priceCents: 1999, currency: 'USD' });
  return { sku };
}

export default function (data) {
  const shopper = `k6-${run}-${__VU}-${__ITER}`;
  const res = reserve(data.sku, shopperToken(shopper), `${shopper}-1`, 1);
  if (res.status === 201) reserved.add(1);
  check(res, { 'reserved (201)': (r) => r.status === 201 }, { code: problemCode(res) || 'none' });
}

export function teardown(data) {
  const view = getSku(data.sku);
  console.log(`hot-sku ${data.sku}: held ${view.held}, sold ${view.sold}, available ${view.available}`);
}
