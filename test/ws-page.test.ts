import t from 'tap';
import { browserMissing, launchChromium, skipLoudly, textWhen } from './helpers/browser.js';
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
    t.match(await textWhen(page.locator('#result'), /held/), /held/, 'the page shows the reservation');
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

if (browserMissing === null) {
  t.test('the page says the sale state: on sale, then archived with nothing available', async (t) => {
    const api = await startTestService(t);
    await api.putSku('PAGE-3', { stock: 4 });
    const browser = await launchChromium(t);
    const page = await browser.newPage();
    await page.goto(`${api.url}/?sku=PAGE-3&token=${encodeURIComponent(api.token('state-shopper'))}`);
    await page.locator('#available').filter({ hasText: /^4$/ }).waitFor({ timeout: 10_000 });
    t.equal(await page.locator('#state').getAttribute('data-state'), 'on_sale');
    t.equal(await page.locator('#state').textContent(), 'on sale');
    t.notOk(await page.locator('#reserve').isDisabled(), 'Reserve is offered');
    t.equal((await api.call('DELETE', '/v1/admin/skus/PAGE-3', { admin: true })).status, 200);
    await page.locator('#state[data-state="archived"]').waitFor({ timeout: 10_000 });
    t.equal(await page.locator('#available').textContent(), '0', 'archived: 0 available');
    t.ok(await page.locator('#reserve').isDisabled(), 'and no Reserve');
  });

  t.test('a SKU with a waiting room: the page shows the ticket, and Reserve carries the admission token', async (t) => {
    const api = await startTestService(t);
    await api.putSku('PAGE-5', { stock: 4, waitingRoom: { admitPerSecond: 1000 } });
    await api.putSku('PAGE-6', { stock: 4, startsAt: '2099-01-01T00:00:00Z', waitingRoom: { admitPerSecond: 1000 } });
    const browser = await launchChromium(t);
    const page = await browser.newPage();
    const problems: string[] = [];
    page.on('console', (message) => {
      if (message.type() === 'error') problems.push(message.text());
    });
    await page.goto(`${api.url}/?sku=PAGE-6&token=${encodeURIComponent(api.token('queue-shopper'))}&queue=1`);
    await page.locator('#queue[data-status="waiting"]').waitFor({ timeout: 10_000 });
    t.match(await page.locator('#queue').textContent(), /your place is drawn at the start · about \d+ s/, 'before the start: no position yet');
    t.ok(await page.locator('#reserve').isDisabled(), 'no Reserve while waiting');

    await page.goto(`${api.url}/?sku=PAGE-5&token=${encodeURIComponent(api.token('queue-shopper'))}&queue=1`);
    await page.locator('#queue[data-status="admitted"]').waitFor({ timeout: 10_000 });
    t.pass('an empty line admits at once');
    await page.locator('#available').filter({ hasText: /^4$/ }).waitFor({ timeout: 10_000 });
    await page.locator('#reserve').click();
    await page.locator('#available').filter({ hasText: /^3$/ }).waitFor({ timeout: 10_000 });
    t.match(await textWhen(page.locator('#result'), /held/), /held/, 'Reserve with the admission token holds a unit');
    t.equal((await api.reserve('PAGE-5', 'queue-shopper')).body.code, 'admission_required', 'a reserve without the token is refused');
    t.same(problems, [], 'no console errors (and no CSP violations)');
  });

  t.test('a sale that has not started says so, with its opening time', async (t) => {
    const api = await startTestService(t);
    await api.putSku('PAGE-4', { stock: 4, startsAt: '2099-01-01T00:00:00Z' });
    const browser = await launchChromium(t);
    const page = await browser.newPage();
    await page.goto(`${api.url}/?sku=PAGE-4&token=${encodeURIComponent(api.token('state-shopper'))}`);
    await page.locator('#state[data-state="not_started"]').waitFor({ timeout: 10_000 });
    t.match(await page.locator('#state').textContent(), /^not started · opens /);
    t.ok(await page.locator('#reserve').isDisabled(), 'no Reserve before the sale opens');
  });
}

if (browserMissing === null) {
  t.test('a sold-out SKU with a waitlist: Join shows the position, then the offer pushed over the stream', async (t) => {
    const api = await startTestService(t);
    await api.putSku('PAGE-WL', { stock: 1, waitlistOfferSeconds: 60 });
    const held = await api.reserve('PAGE-WL', 'first', 1);
    t.equal(held.status, 201);
    const browser = await launchChromium(t);
    const page = await browser.newPage();
    const problems: string[] = [];
    page.on('console', (message) => {
      if (message.type() === 'error') problems.push(message.text());
    });
    page.on('pageerror', (error) => problems.push(error.message));
    await page.goto(`${api.url}/?sku=PAGE-WL&token=${encodeURIComponent(api.token('waiter'))}`);
    await page.locator('#available').filter({ hasText: /^0$/ }).waitFor({ timeout: 10_000 });
    await page.locator('#join:not([hidden])').waitFor({ timeout: 10_000 });
    await page.locator('#join').click();
    await page.locator('#waitlist[data-status="waiting"]').waitFor({ timeout: 10_000 });
    t.equal(await page.locator('#waitlist').textContent(), 'waitlist: position 1', 'the page shows the place in line');
    t.equal((await api.call('DELETE', `/v1/reservations/${held.body.reservationId}`, { shopper: 'first' })).status, 200);
    await page.locator('#waitlist[data-status="offered"]').waitFor({ timeout: 10_000 });
    t.match(await page.locator('#waitlist').textContent(), /waitlist offer: 1 held for you until/, 'and the offer, pushed live');
    t.notOk(await page.locator('#release').isDisabled(), 'the offer can be given back');
    t.same(problems, [], 'no console errors (and no CSP violations)');
  });
}
