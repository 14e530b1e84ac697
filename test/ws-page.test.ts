import t from 'tap';
import { browserMissing, launchChromium, skipLoudly } from './helpers/browser.js';
import { startTestService } from './helpers/service.js';

/**
 * The watch-a-drop page at `/`, in a real headless Chromium (Debian's
 * `chromium`, driven by playwright-core): it shows the live count, Reserve
 * works, and the count drops, also when someone else buys.
 */

if (browserMissing !== null) {
  skipLoudly(t, 'the browser page test');
} else {
  t.test('the page shows the live count, Reserve works, and the count drops', async (t) => {
    const api = await startTestService(t);
    await api.putSku('PAGE-1', { stock: 5, perShopperLimit: 2 });
    const browser = await launchChromium(t);
    const page = await browser.newPage();
    const problems: string[] = [];
    page.on('console', (message) => {
      if (message.type() === 'error') problems.push(message.text());
    });
    page.on('pageerror', (error) => problems.push(error.message));

    await page.goto(`${api.url}/?sku=PAGE-1&token=${encodeURIComponent(api.token('pageshopper'))}`);
    const available = page.locator('#available');
    await available.filter({ hasText: /^5$/ }).waitFor({ timeout: 10_000 });
    t.pass('the page shows the count: 5');
    t.match(await page.locator('#who').textContent(), /signed in as pageshopper/);

    await page.locator('#reserve').click();
    await available.filter({ hasText: /^4$/ }).waitFor({ timeout: 10_000 });
    t.pass('after Reserve the count dropped to 4');
    t.match(await page.locator('#result').textContent(), /held/, 'the page shows the reservation');
    t.match((await api.call('GET', '/v1/skus/PAGE-1')).body, { available: 4, held: 1 }, 'and it is real');

    t.equal((await api.reserve('PAGE-1', 'someone-else', 2)).status, 201);
    await available.filter({ hasText: /^2$/ }).waitFor({ timeout: 10_000 });
    t.pass('another shopper buys: the count drops live to 2');

    await page.locator('#release').click();
    await available.filter({ hasText: /^3$/ }).waitFor({ timeout: 10_000 });
    t.pass('Release gives the unit back: 3');

    t.same(problems, [], 'no console errors (and no CSP violations)');
  });

  t.test('without a token the page watches but offers no Reserve', async (t) => {
    const api = await startTestService(t);
    await api.putSku('PAGE-2', { stock: 9 });
    const browser = await launchChromium(t);
    const page = await browser.newPage();
    await page.goto(`${api.url}/?sku=PAGE-2`);
    await page.locator('#available').filter({ hasText: /^9$/ }).waitFor({ timeout: 10_000 });
    t.ok(await page.locator('#reserve').isDisabled(), 'Reserve is disabled');
    t.match(await page.locator('#who').textContent(), /watching only/);
  });
}
