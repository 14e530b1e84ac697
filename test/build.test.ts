import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

/**
 * scripts/build.mjs, what `npm start`, `npm run migrate` and `npm run token`
 * run first: it compiles only when the sources changed, and any number of
 * builders started at once from one install each end with a complete dist/
 * that loads. Run on a copy of the repository (its node_modules linked), so
 * the test's builds and edits never touch the checkout.
 */

t.setTimeout(600_000);

const repo = process.cwd();

function copyRepository(): string {
  const dir = fs.mkdtempSync(path.join(tmpdir(), 'flashstock-build-'));
  for (const name of ['src', 'bench', 'scripts', 'migrations', 'tsconfig.json', 'tsconfig.build.json', 'package.json', 'package-lock.json']) {
    fs.cpSync(path.join(repo, name), path.join(dir, name), { recursive: true, filter: (source) => !source.includes(`${path.sep}results${path.sep}`) });
  }
  fs.symlinkSync(path.join(repo, 'node_modules'), path.join(dir, 'node_modules'));
  return dir;
}

async function buildAtOnce(dir: string, n: number): Promise<{ code: number | null; stderr: string }[]> {
  return Promise.all(
    Array.from({ length: n }, async () => {
      const child = spawn(process.execPath, ['scripts/build.mjs'], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      const [code] = (await once(child, 'exit')) as [number | null];
      return { code, stderr };
    }),
  );
}

/** What a started process does: load the whole service from dist/ (every module app.ts reaches) and the CLIs' config. */
function loads(dir: string): { ok: boolean; output: string } {
  const script = "const app = await import('./dist/src/app.js'); const config = await import('./dist/src/config.js'); " +
    "if (typeof app.startFlashstock !== 'function' || typeof config.loadConfig !== 'function') process.exit(3); " +
    'console.log(config.marker ?? "no marker")';
  const result = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: dir, encoding: 'utf8' });
  return { ok: result.status === 0, output: result.stdout.trim() + result.stderr };
}

const trees = (dir: string) => fs.readdirSync(dir).filter((name) => name.startsWith('dist.'));

t.test('three builders at once on a changed tree: each succeeds, one compiles, each loads a complete dist', async (t) => {
  const dir = copyRepository();
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  // An older checkout's build: a real dist/ directory, replaced by the link.
  fs.mkdirSync(path.join(dir, 'dist', 'src'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'dist', 'src', 'app.js'), 'export const stale = true;\n');

  const first = await buildAtOnce(dir, 3);
  t.same(first.map((r) => r.code), [0, 0, 0], `all three builders succeeded ${first.map((r) => r.stderr).join('')}`);
  t.ok(fs.lstatSync(path.join(dir, 'dist')).isSymbolicLink(), 'dist is now a link');
  t.equal(trees(dir).length, 1, 'one tree was compiled');
  const loaded = [loads(dir), loads(dir), loads(dir)];
  t.ok(loaded.every((l) => l.ok), `each process loads dist: ${loaded.map((l) => l.output).join(' | ')}`);

  // A source change: the next builders compile it, again at once.
  const tree = fs.readlinkSync(path.join(dir, 'dist'));
  const completeMs = fs.statSync(path.join(dir, tree, '.complete')).mtimeMs;
  fs.appendFileSync(path.join(dir, 'src', 'config.ts'), "\nexport const marker = 'changed';\n");
  const second = await buildAtOnce(dir, 3);
  t.same(second.map((r) => r.code), [0, 0, 0], 'all three builders succeeded after the change');
  t.not(fs.readlinkSync(path.join(dir, 'dist')), tree, 'dist points at a new tree');
  t.same([loads(dir).output, loads(dir).output, loads(dir).output], ['changed', 'changed', 'changed'], 'each process loads the changed code');
  t.ok(trees(dir).includes(tree), 'the previous tree is kept for processes still running from it');

  // Nothing changed: no compile.
  const current = fs.readlinkSync(path.join(dir, 'dist'));
  const currentCompleteMs = fs.statSync(path.join(dir, current, '.complete')).mtimeMs;
  const started = performance.now();
  const third = await buildAtOnce(dir, 3);
  const upToDateMs = Math.round(performance.now() - started);
  t.same(third.map((r) => r.code), [0, 0, 0]);
  t.equal(fs.readlinkSync(path.join(dir, 'dist')), current, 'the same tree');
  t.equal(fs.statSync(path.join(dir, current, '.complete')).mtimeMs, currentCompleteMs, `not rebuilt (three up-to-date checks took ${upToDateMs} ms)`);
  t.not(completeMs, currentCompleteMs);
});

t.test('a failed compile leaves dist as it was', async (t) => {
  const dir = copyRepository();
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  t.same((await buildAtOnce(dir, 1)).map((r) => r.code), [0]);
  const tree = fs.readlinkSync(path.join(dir, 'dist'));
  fs.appendFileSync(path.join(dir, 'src', 'config.ts'), '\nexport const broken: number = "not a number";\n');
  const [failed] = await buildAtOnce(dir, 1);
  t.not(failed!.code, 0, 'the build fails');
  t.match(failed!.stderr, /tsc failed/);
  t.equal(fs.readlinkSync(path.join(dir, 'dist')), tree, 'dist still points at the last good tree');
  t.ok(loads(dir).ok, 'which still loads');
  t.same(fs.readdirSync(dir).filter((name) => name.startsWith('.dist-build-')), [], 'no temporary tree left behind');
  t.notOk(fs.existsSync(path.join(dir, '.dist.lock')), 'the lock is released');
});
