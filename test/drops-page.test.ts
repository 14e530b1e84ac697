import t from 'tap';
import { browserMissing, launchChromium, skipLoudly, textWhen } from './helpers/browser.js';
import { startTestService } from './helpers/service.js';
import { dropBody, until } from './helpers/drops.js';

/**
 * The page at `/?drop=NAME` in a real headless Chromium (Debian's `chromium`,
 * driven by playwright-core): it follows the drop's cycle, Reserve buys in
 * it, and when the cycle closes it moves to the next one (fresh stock).
 *
 * The page runs on the browser's clock, so the windows are wide: the page has
 * 20 s to show cycle 1 before it opens and 40 s more before it closes, so a
 * machine at load 10 (Chromium's start and first paint there take many
 * seconds) still sees cycle 1 and clicks Reserve inside it.
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
    const first = Date.now() + 20_000;
    t.equal((await api.call('PUT', '/v1/admin/drops/PAGEDROP', { admin: true, body: dropBody(first, 45, 40, { stockPerCycle: 5 }) })).status, 201);

    await page.goto(`${api.url}/?drop=PAGEDROP&token=${encodeURIComponent(api.token('dropfan'))}`);
    t.equal(await textWhen(page.locator('#sku'), /^PAGEDROP\.1$/, 60_000), 'PAGEDROP.1', 'the page follows cycle 1');
    t.match(await page.locator('#what').textContent(), /Drop PAGEDROP/);
    t.equal(await textWhen(page.locator('#available'), /^5$/, 60_000), '5', 'before it opens the page watches cycle 1: 5 available');
    t.match(await page.locator('#cycle').textContent(), /cycle 1 · (opens at|open until)/);

    await until('cycle 1 open', async () => Date.now() >= first + 50);
    t.match(await textWhen(page.locator('#cycle'), /cycle 1 · open until/, 30_000), /cycle 1 · open until/, 'the page says cycle 1 is open');
    await page.locator('#reserve').click();
    t.equal(await textWhen(page.locator('#available'), /^4$/, 30_000), '4', 'Reserve buys in cycle 1: 4 left');
    t.match((await api.call('GET', '/v1/skus/PAGEDROP.1')).body, { available: 4, held: 1 });

    // Cycle 1 closes 40 s after it opened.
    t.equal(await textWhen(page.locator('#sku'), /^PAGEDROP\.2$/, 90_000), 'PAGEDROP.2', 'cycle 1 closed: the page moved to cycle 2');
    t.equal(await textWhen(page.locator('#available'), /^5$/, 30_000), '5', 'fresh stock 5');
    t.same(problems, [], 'no console errors (and no CSP violations)');
  });
}
