import t from 'tap';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * The documentation's relative links resolve: every `[text](target)` in
 * README.md, docs/*.md and bench/README.md that is not a URL names a file or
 * folder that exists, and its `#anchor`, if any, names a heading of the target
 * Markdown file by GitHub's slug rules. And the README stays short enough to
 * read in ten minutes.
 */

const repo = path.resolve(import.meta.dirname, '..');
const readmeMaxLines = 300;

export interface BrokenLink {
  file: string;
  line: number;
  target: string;
  reason: string;
}

/** Fenced code blocks blanked out (lines kept, so line numbers stay right). */
function withoutFences(markdown: string): string[] {
  let fence: string | null = null;
  return markdown.split('\n').map((line) => {
    const open = /^\s{0,3}(`{3,}|~{3,})/.exec(line);
    if (fence === null && open) {
      fence = open[1]!.slice(0, 3);
      return '';
    }
    if (fence !== null) {
      if (line.trimStart().startsWith(fence)) fence = null;
      return '';
    }
    return line;
  });
}

/** GitHub's heading slug (github-slugger): lower case, punctuation and symbols dropped, spaces to dashes. */
export function githubSlug(heading: string): string {
  const text = heading
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1') // a link's text only
    .replace(/<[^>]+>/g, '') // inline HTML
    .replace(/[`*]/g, ''); // code and emphasis marks render as nothing
  return text
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '')
    .replace(/ /g, '-');
}

/** Every anchor a Markdown file offers: its headings' slugs, repeats numbered -1, -2… as GitHub does. */
export function anchorsOf(markdown: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  for (const line of withoutFences(markdown)) {
    const heading = /^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!heading) continue;
    const slug = githubSlug(heading[1]!);
    const count = seen.get(slug) ?? 0;
    seen.set(slug, count + 1);
    anchors.add(count === 0 ? slug : `${slug}-${count}`);
  }
  return anchors;
}

const linkPattern = /!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g;

/** The relative links of one Markdown file that do not resolve (or leave `root`). */
export function brokenLinks(file: string, root = repo): BrokenLink[] {
  const broken: BrokenLink[] = [];
  const lines = withoutFences(readFileSync(file, 'utf8'));
  lines.forEach((raw, index) => {
    const line = raw.replace(/`[^`]*`/g, (code) => ' '.repeat(code.length)); // inline code is not a link
    for (const match of line.matchAll(linkPattern)) {
      const target = match[1]!;
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // http:, https:, mailto:
      const hash = target.indexOf('#');
      const pathPart = decodeURIComponent(hash === -1 ? target : target.slice(0, hash));
      const anchor = hash === -1 ? null : decodeURIComponent(target.slice(hash + 1));
      const resolved = pathPart === '' ? file : path.resolve(path.dirname(file), pathPart);
      const report = (reason: string) => broken.push({ file: path.relative(root, file), line: index + 1, target, reason });
      if (!resolved.startsWith(root + path.sep) && resolved !== root) {
        report('points outside the repository');
        continue;
      }
      if (!existsSync(resolved)) {
        report('no such file or folder');
        continue;
      }
      if (pathPart.endsWith('/') && !statSync(resolved).isDirectory()) report('not a folder');
      if (anchor === null) continue;
      if (!resolved.endsWith('.md')) {
        report('an anchor into a file that is not Markdown');
        continue;
      }
      if (!anchorsOf(readFileSync(resolved, 'utf8')).has(anchor)) report(`no heading with the anchor #${anchor}`);
    }
  });
  return broken;
}

function documentationFiles(): string[] {
  const docs = path.join(repo, 'docs');
  return [
    path.join(repo, 'README.md'),
    path.join(repo, 'bench', 'README.md'),
    ...readdirSync(docs)
      .filter((name) => name.endsWith('.md'))
      .sort()
      .map((name) => path.join(docs, name)),
  ];
}

t.test('GitHub slugs', async (t) => {
  t.equal(githubSlug('WebSocket: `/v1/stream`'), 'websocket-v1stream');
  t.equal(githubSlug("How a commit's outcome is learned"), 'how-a-commits-outcome-is-learned');
  t.equal(githubSlug('Why, and the design in one picture'), 'why-and-the-design-in-one-picture');
  t.equal(githubSlug('SHARD_THREADS and [threads](threads.md)'), 'shard_threads-and-threads');
  t.same([...anchorsOf('# A\n## Tests\n```\n# not a heading\n```\n### Tests\n')], ['a', 'tests', 'tests-1']);
});

t.test('the checker finds broken links and anchors', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'flashstock-docs-links-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(path.join(dir, 'sub'));
  writeFileSync(path.join(dir, 'sub', 'target.md'), '# Target\n\n## A section\n');
  writeFileSync(
    path.join(dir, 'page.md'),
    [
      '# Page',
      '[ok](sub/target.md) [ok anchor](sub/target.md#a-section) [self](#page) [folder](sub/) [web](https://example.com/x)',
      '[missing](sub/nope.md)',
      '[bad anchor](sub/target.md#no-such-section)',
      '`[in code](nowhere.md)`',
      '```',
      '[in a fence](nowhere.md)',
      '```',
      '[bad self](#nope)',
      '[escape](../../etc/passwd)',
    ].join('\n'),
  );
  const found = brokenLinks(path.join(dir, 'page.md'), dir).map((b) => `${b.line} ${b.target}: ${b.reason}`);
  t.same(found, [
    '3 sub/nope.md: no such file or folder',
    '4 sub/target.md#no-such-section: no heading with the anchor #no-such-section',
    '9 #nope: no heading with the anchor #nope',
    '10 ../../etc/passwd: points outside the repository',
  ]);
});

t.test('every relative link in README.md, bench/README.md and docs/*.md resolves', async (t) => {
  const files = documentationFiles();
  t.ok(files.length >= 3, `checked ${files.length} files`);
  for (const file of files) {
    const broken = brokenLinks(file);
    t.same(broken, [], `${path.relative(repo, file)}: ${broken.map((b) => `line ${b.line} ${b.target} (${b.reason})`).join('; ')}`);
  }
});

t.test(`README.md is at most ${readmeMaxLines} lines`, async (t) => {
  const lines = readFileSync(path.join(repo, 'README.md'), 'utf8').replace(/\n$/, '').split('\n').length;
  t.ok(lines <= readmeMaxLines, `README.md has ${lines} lines`);
});

t.test('every docs/ page is linked from the README', async (t) => {
  const readme = readFileSync(path.join(repo, 'README.md'), 'utf8');
  for (const name of readdirSync(path.join(repo, 'docs')).filter((n) => n.endsWith('.md'))) {
    t.ok(readme.includes(`(docs/${name}`), `README links docs/${name}`);
  }
});
