import t from 'tap';
import { RateWindows } from '../src/ratelimit/windows.js';

/** The memory rate limiter's windows: budget, refusal with the wait, reset, bounded memory; time passed in. */

t.test('a window admits its points, refuses the rest until it ends, then opens afresh', async (t) => {
  const w = new RateWindows({ points: 6, windowMs: 2_000, maxKeys: 100 }, 1_000_000);
  const start = 1_000_000;
  for (let i = 0; i < 6; i++) t.equal(w.take('alice', start + i * 100), 0, `request ${i + 1} of the budget`);
  t.equal(w.take('alice', start + 700), 1_300, 'refused; the window ends 2 s after its first request');
  t.equal(w.take('alice', start + 1_999), 1, 'refusals are not counted and do not extend the window');
  t.equal(w.take('bob', start + 700), 0, 'another key has its own window');
  t.equal(w.take('alice', start + 2_000), 0, 'a new window at its end');
  for (let i = 0; i < 5; i++) t.equal(w.take('alice', start + 2_001), 0);
  t.equal(w.take('alice', start + 2_002), 1_998, 'and its budget is the whole budget again');
});

t.test('windows survive generations while open; idle keys are forgotten after a whole window', async (t) => {
  const base = 5_000;
  const w = new RateWindows({ points: 3, windowMs: 1_000, maxKeys: 1_000 }, base);
  w.take('busy', base + 900);
  w.take('busy', base + 950);
  w.take('idle', base + 950);
  // base + 1,000: the generation rotates; busy's window (opened at 900) is still open.
  t.equal(w.take('busy', base + 1_100), 0, 'third of three, across the rotation');
  t.equal(w.take('busy', base + 1_200), 700, 'the window opened at 900 is still the one counted');
  t.equal(w.take('busy', base + 1_900), 0, 'it ended at 1,900');
  w.take('busy', base + 2_100);
  w.take('busy', base + 3_200);
  t.ok(w.size <= 2, `only the busy key is held (${w.size})`);
  for (let i = 0; i < 3; i++) t.equal(w.take('idle', base + 3_200), 0, 'an idle key comes back with its whole budget');
});

t.test('bounded: a flood of distinct keys rotates early; never more than twice maxKeys held', async (t) => {
  const w = new RateWindows({ points: 2, windowMs: 2_000, maxKeys: 100 }, 0);
  let max = 0;
  for (let i = 0; i < 10_000; i++) {
    w.take(`k${i}`, 10);
    max = Math.max(max, w.size);
  }
  t.ok(max <= 200, `held at most ${max}`);
  t.equal(w.take('k9999', 10), 0, 'the newest keys are still known: second of two');
  t.ok(w.take('k9999', 10) > 0, 'k9999 spent its two');
});

t.test('a clock that steps back does not refund a window', async (t) => {
  const w = new RateWindows({ points: 1, windowMs: 1_000, maxKeys: 10 }, 10_000);
  t.equal(w.take('a', 10_500), 0);
  t.ok(w.take('a', 10_200) > 0, 'stepped back: still spent');
  t.equal(w.take('a', 11_500), 0, 'the window ends on time');
});

t.test('large budgets stay exact', async (t) => {
  const w = new RateWindows({ points: 2_000_000, windowMs: 2_000, maxKeys: 10 }, 0);
  for (let i = 0; i < 2_000_000; i++) if (w.take('k', 1_000 + (i % 900)) !== 0) t.fail(`refused at ${i}`);
  t.equal(w.take('k', 1_999), 1_001);
});

t.test('settings are checked', async (t) => {
  t.throws(() => new RateWindows({ points: 0, windowMs: 1, maxKeys: 1 }, 0));
  t.throws(() => new RateWindows({ points: 1, windowMs: 0, maxKeys: 1 }, 0));
  t.throws(() => new RateWindows({ points: 1, windowMs: 1, maxKeys: 1.5 }, 0));
});
