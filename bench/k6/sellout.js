// sellout: 10,000 units, 6,000 shoppers wanting 1-3 each, all at once; a shopper told sold_out asks
// for one less. The figure is the time to sell out: max of sellout_last_201_ms.
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e ADMIN_TOKEN=... -e JWT_SECRET=... bench/k6/sellout.js
//   (-e STOCK=10000 -e SHOPPERS=6000 -e VUS=1000)
import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import { createSku, reserve, problemCode, shopperToken, getSku } from './common.js';

const stock = Number(__ENV.STOCK || 10000);
const shoppers = Number(__ENV.SHOPPERS || 6000);
const vus = Math.min(Number(__ENV.VUS || 1000), shoppers);
const run = `${Date.now().toString(36)}`;
const sku = `k6-sellout-${run}`;

const units = new Counter('sellout_units_reserved');
const lastYes = new Trend('sellout_last_201_ms', true);
const soldOut = new Counter('sellout_sold_out_answers');

export const options = {
  scenarios: {
    sellout: { executor: 'shared-iterations', vus, iterations: shoppers, maxDuration: '5m' },
  },
  summaryTrendStats: ['avg', 'med', 'p(90)', 'p(99)', 'max'],
};

export function setup() {
  createSku(sku, { stock, perShopperLimit: 3, holdSeconds: 3600, priceCents: 2500, currency: 'USD' });
  return { sku, t0: Date.now() };
}

export default function (data) {
  const shopper = `k6-${run}-${__VU}-${__ITER}`;
  const token = shopperToken(shopper);
  let quantity = 1 + Math.floor(Math.random() * 3);
  for (let attempt = 1; quantity > 0; attempt++) {
    const res = reserve(data.sku, token, `${shopper}-${attempt}`, quantity);
    if (res.status === 201) {
      units.add(quantity);
      lastYes.add(Date.now() - data.t0);
      check(res, { 'reserved (201)': () => true });
      return;
    }
    const code = problemCode(res);
    check(res, { 'answered 201 or 409': (r) => r.status === 409 });
    if (code !== 'sold_out') return;
    soldOut.add(1);
    quantity -= 1;
  }
}

export function teardown(data) {
  const view = getSku(data.sku);
  const taken = view.held + view.sold;
  console.log(`sellout ${data.sku}: ${taken} of ${view.stock} taken${taken > view.stock ? ' — OVERSOLD' : ''}; available ${view.available}`);
}
