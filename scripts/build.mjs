#!/usr/bin/env node
// Builds dist/ only when the sources changed, and never leaves a half-written
// tree where a starting process could load it. Plain JavaScript on purpose:
// it runs before anything is compiled, in well under a second when up to date.
//
// dist is a symlink to dist.<hash>, where <hash> covers every input of the
// build (the TypeScript under src/, bench/ and scripts/, the tsconfig files,
// package-lock.json). Up to date = the link points at the tree of today's hash
// and that tree is complete: nothing to do. Otherwise tsc compiles into a
// fresh temporary folder, which is renamed to dist.<hash> once complete, and
// the link is swapped with rename(2) (atomic: a reader sees the old tree or
// the new one). Any number of builders may run at once (npm start from one
// install, several times): a lock file makes the others wait rather than
// compile the same thing, and correctness does not depend on it — each step is
// a rename of a complete tree. Trees of earlier hashes are kept for a while:
// a process started from one loads worker-thread modules from it later.
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const link = path.join(root, 'dist');
const lockFile = path.join(root, '.dist.lock');
const completeMarker = '.complete';
/** Directories whose TypeScript tsconfig.build.json compiles. */
const sourceDirs = ['src', 'bench', 'scripts'];
const sourceFiles = ['tsconfig.json', 'tsconfig.build.json', 'package-lock.json', 'package.json'];
/** Earlier trees kept for processes still running from them; older ones go after this long. */
const keepOldTreesMs = 24 * 3600 * 1000;
const lockPollMs = 100;
/** A builder holding the lock longer than this is taken as gone (tsc takes ~15 s on a busy machine). */
const lockStaleMs = 10 * 60 * 1000;

function inputsHash() {
  const hash = createHash('sha256');
  const files = [...sourceFiles];
  for (const dir of sourceDirs) {
    const full = path.join(root, dir);
    if (!fs.existsSync(full)) continue;
    for (const entry of fs.readdirSync(full, { recursive: true, withFileTypes: true })) {
      if (!entry.isFile()) continue;
      const file = path.relative(root, path.join(entry.parentPath ?? entry.path, entry.name));
      // Everything of src/ (JSON assets are imported too); only TypeScript elsewhere (bench results are data).
      if (dir === 'src' || file.endsWith('.ts')) files.push(file);
    }
  }
  for (const file of files.sort()) {
    const full = path.join(root, file);
    if (!fs.existsSync(full)) continue;
    hash.update(`${file}\0`).update(fs.readFileSync(full)).update('\0');
  }
  return hash.digest('hex').slice(0, 16);
}

const isComplete = (tree) => fs.existsSync(path.join(root, tree, completeMarker));

function currentTarget() {
  try {
    return fs.readlinkSync(link);
  } catch {
    return null; // missing, or a real directory from an older build
  }
}

/** Point dist at `tree`, atomically. A real dist/ directory (older builds) is moved aside first. */
function swapLink(tree) {
  const temporary = path.join(root, `.dist-link-${process.pid}-${randomBytes(4).toString('hex')}`);
  fs.symlinkSync(tree, temporary);
  try {
    fs.renameSync(temporary, link);
  } catch (error) {
    if (error.code !== 'EISDIR' && error.code !== 'ENOTEMPTY' && error.code !== 'EEXIST' && error.code !== 'ENOTDIR') throw error;
    const aside = path.join(root, `.dist-old-${process.pid}-${randomBytes(4).toString('hex')}`);
    try {
      fs.renameSync(link, aside);
    } catch (moveError) {
      if (moveError.code !== 'ENOENT') throw moveError; // another builder moved it already
    }
    fs.renameSync(temporary, link);
    fs.rmSync(aside, { recursive: true, force: true });
  }
}

function compile(tree) {
  const building = path.join(root, `.dist-build-${process.pid}-${randomBytes(4).toString('hex')}`);
  const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  const result = spawnSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.build.json'), '--outDir', building], {
    cwd: root,
    stdio: 'inherit',
  });
  if (result.status !== 0) {
    fs.rmSync(building, { recursive: true, force: true });
    throw new CompileFailed(result.status ?? 1);
  }
  fs.writeFileSync(path.join(building, completeMarker), `${new Date().toISOString()}\n`);
  try {
    fs.renameSync(building, path.join(root, tree));
  } catch (error) {
    // Another builder renamed a complete tree of the same hash first: same inputs, same output.
    fs.rmSync(building, { recursive: true, force: true });
    if (!isComplete(tree)) throw error;
  }
}

class CompileFailed extends Error {
  constructor(status) {
    super('build: tsc failed');
    this.status = status;
  }
}

function tryLock() {
  try {
    fs.writeFileSync(lockFile, String(process.pid), { flag: 'wx' });
    return true;
  } catch (error) {
    if (error.code !== 'EEXIST') throw error;
  }
  let holder = NaN;
  let ageMs = 0;
  try {
    holder = Number(fs.readFileSync(lockFile, 'utf8'));
    ageMs = Date.now() - fs.statSync(lockFile).mtimeMs;
  } catch {
    return false; // released meanwhile: try again next round
  }
  if (isAlive(holder) && ageMs < lockStaleMs) return false;
  fs.rmSync(lockFile, { force: true }); // its builder died: its temporary tree is never renamed
  return false;
}

function isAlive(pid) {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return error.code === 'EPERM';
  }
}

/** Trees of other hashes older than the keep time (never the one just replaced), and temporary folders of builders long gone. */
function removeOldTrees(tree, previous) {
  const now = Date.now();
  for (const name of fs.readdirSync(root)) {
    const old = name.startsWith('dist.') && name !== tree && name !== previous;
    const leftover = name.startsWith('.dist-build-') || name.startsWith('.dist-old-') || name.startsWith('.dist-link-');
    if (!old && !leftover) continue;
    const full = path.join(root, name);
    try {
      if (now - fs.lstatSync(full).mtimeMs > (old ? keepOldTreesMs : lockStaleMs)) fs.rmSync(full, { recursive: true, force: true });
    } catch {
      /* removed by another builder */
    }
  }
}

const sleep = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

function main() {
  const tree = `dist.${inputsHash()}`;
  if (currentTarget() === tree && isComplete(tree)) return; // up to date
  for (;;) {
    if (isComplete(tree)) break; // built by someone else meanwhile
    if (tryLock()) {
      try {
        if (!isComplete(tree)) compile(tree);
      } finally {
        fs.rmSync(lockFile, { force: true });
      }
      break;
    }
    sleep(lockPollMs);
  }
  const previous = currentTarget();
  if (previous !== tree) swapLink(tree);
  removeOldTrees(tree, previous);
}

try {
  main();
} catch (error) {
  if (!(error instanceof CompileFailed)) throw error;
  // dist still points at the last good tree (if any).
  process.stderr.write(`${error.message}\n`);
  process.exitCode = error.status;
}
