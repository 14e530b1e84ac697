import { existsSync } from 'node:fs';
import type { Browser, Locator } from 'playwright-core';
import { skipBecause } from './skip.js';

/**
 * Headless Debian Chromium through playwright-core, for the page tests. When
 * either is missing the caller skips, loudly (`browserMissing` says why).
 */

const chromiumPath = '/usr/bin/chromium';

const chromiumArgs = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

async function loadPlaywright(): Promise<typeof import('playwright-core') | null> {
  try {
    return await import('playwright-core');
  } catch {
    return null;
  }
}

const playwright = existsSync(chromiumPath) ? await loadPlaywright() : null;

/** Why the browser cannot run here, or null when it can. */
export const browserMissing: string | null =
  playwright !== null ? null : existsSync(chromiumPath) ? 'playwright-core is not installed' : `${chromiumPath} is absent (apt-get install chromium)`;

/** A TAP skip (and a line on stderr) saying that a page test did not run, and why. */
export function skipLoudly(t: { skip(name: string, cb: () => void): unknown }, what: string): void {
  skipBecause(t, `${what} did not run: ${browserMissing}`);
}

/** A fresh headless Chromium, closed at the test's teardown. */
export async function launchChromium(t: { teardown(fn: () => unknown): void }): Promise<Browser> {
  if (playwright === null) throw new Error(`no browser: ${browserMissing}`);
  const browser = await playwright.chromium.launch({ executablePath: chromiumPath, args: chromiumArgs });
  t.teardown(() => browser.close());
  return browser;
}

/**
 * Wait until `locator`'s text matches `expected` (up to `timeoutMs`); its text
 * then, for the caller's assertion (a wrong text still fails, with its diff).
 * For what the page shows when a message comes: a reply and the stock update
 * it causes are separate messages, and either may come first.
 */
export async function textWhen(locator: Locator, expected: RegExp, timeoutMs = 10_000): Promise<string | null> {
  await locator.filter({ hasText: expected }).waitFor({ timeout: timeoutMs }).catch(() => undefined);
  return locator.textContent();
}
