import t from 'tap';
import { browserMissing, launchChromium, skipLoudly } from './helpers/browser.js';
import { startTestService } from './helpers/service.js';
import { dropBody, until } from './helpers/drops.js';

/**
 * The page at `/?drop=NAME` in a real headless Chromium (Debian's `chromium`,
 * driven by playwright-core): it follows the drop's cycle, Reserve buys in
 * it, and when the cycle closes it moves to the next one (fresh stock).
 */

if (browserMissing !== null) {
  skipLoudly(t, 'the drop page test');
} else {
  t.test('the page follows a drop from cycle to cycle', async (t) => {
    const api = await startTestService(t);
    const browser = await launchChromium(t);
    const page = await browser.newPage();
    const problems: string[] = [];
    page.on('console', (message) => {
      // The next cycle may be announced before its SKU exists: the page asks again, the browser logs nothing else.
      if (message.type() === 'error') problems.push(message.text());
    });
    page.on('pageerror', (error) => problems.push(error.message));
    await page.goto(`${api.url}/`);
    // The browser is up (its start can take seconds here): only now does the drop begin.
    const first = Date.now() + 5000;
    t.equal((await api.call('PUT', '/v1/admin/drops/PAGEDROP', { admin: true, body: dropBody(first, 4, 3, { stockPerCycle: 5 }) })).status, 201);

    await page.goto(`${api.url}/?drop=PAGEDROP&token=${encodeURIComponent(api.token('dropfan'))}`);
    await page.locator('#sku').filter({ hasText: /^PAGEDROP\.1$/ }).waitFor({ timeout: 20_000 });
    t.match(await page.locator('#what').textContent(), /Drop PAGEDROP/);
    await page.locator('#available').filter({ hasText: /^5$/ }).waitFor({ timeout: 20_000 });
    t.pass('before it opens the page watches cycle 1: 5 available');
    t.match(await page.locator('#cycle').textContent(), /cycle 1 · (opens at|open until)/);

    await until('cycle 1 open', async () => Date.now() >= first + 50);
    await page.locator('#cycle').filter({ hasText: /cycle 1 · open until/ }).waitFor({ timeout: 10_000 });
    await page.locator('#reserve').click();
    await page.locator('#available').filter({ hasText: /^4$/ }).waitFor({ timeout: 10_000 });
    t.pass('Reserve buys in cycle 1: 4 left');
    t.match((await api.call('GET', '/v1/skus/PAGEDROP.1')).body, { available: 4, held: 1 });

    await page.locator('#sku').filter({ hasText: /^PAGEDROP\.2$/ }).waitFor({ timeout: 15_000 });
    await page.locator('#available').filter({ hasText: /^5$/ }).waitFor({ timeout: 10_000 });
    t.pass('cycle 1 closed: the page moved to cycle 2, fresh stock 5');
    t.same(problems, [], 'no console errors (and no CSP violations)');
  });
}
