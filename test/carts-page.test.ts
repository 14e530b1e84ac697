import t from 'tap';
import { browserMissing, launchChromium, skipLoudly, textWhen } from './helpers/browser.js';
import { startTestService } from './helpers/service.js';

/** The live page's cart button (`&cart=A,B`), in a real headless Chromium: a held cart, then a refused one naming its line. */

if (browserMissing !== null) {
  skipLoudly(t, 'the browser cart page test');
} else {
  t.test('Hold cart holds every line, then shows the refusal of the line that failed', async (t) => {
    const api = await startTestService(t);
    await api.putSku('PC-1', { stock: 5 });
    await api.putSku('PC-2', { stock: 1 });
    const browser = await launchChromium(t);
    const page = await browser.newPage();
    const problems: string[] = [];
    page.on('pageerror', (error) => problems.push(error.message));
    page.on('console', (message) => {
      if (message.type() === 'error') problems.push(message.text());
    });
    await page.goto(`${api.url}/?sku=PC-1&cart=PC-1,PC-2&token=${encodeURIComponent(api.token('pagecart'))}`);
    const available = page.locator('#available');
    await available.filter({ hasText: /^5$/ }).waitFor({ timeout: 10_000 });
    await page.locator('#cart:not([disabled])').click();
    await available.filter({ hasText: /^4$/ }).waitFor({ timeout: 10_000 });
    const result = page.locator('#result');
    t.match(await textWhen(result, /held/), /cart .* held: PC-1, PC-2/);
    t.match((await api.call('GET', '/v1/skus/PC-2')).body, { available: 0, held: 1 });
    await page.locator('#cart').click();
    await page.locator('#result.error').waitFor({ timeout: 10_000 });
    t.match(await result.textContent(), /409 sold_out \(line 1, PC-2\).*nothing held/);
    t.match((await api.call('GET', '/v1/skus/PC-1')).body, { available: 4, held: 1 }, 'the refused cart holds nothing');
    t.same(problems, [], 'no console errors (and no CSP violations)');
  });
}
