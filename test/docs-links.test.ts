// Every relative link of the documentation resolves: the file it names exists, and its #anchor is
// a heading of that page (as GitHub makes anchors). Pages are moved and sections renamed; a link
// that silently lands at the top of a page, or nowhere, is caught here.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize } from 'node:path';
import { test } from 'node:test';
import { PACKAGE_ROOT } from '../common/paths.js';
import { anchors } from './support/markdown.js';

const PAGES = [
  'README.md',
  'CONTRIBUTING.md',
  ...readdirSync(join(PACKAGE_ROOT, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/${f}`),
];

const read = (page: string) => readFileSync(join(PACKAGE_ROOT, page), 'utf8');

/** The `[text](target)` links of a page outside code fences and code spans, with no scheme. */
function relativeLinks(markdown: string): string[] {
  const out: string[] = [];
  let fenced = false;
  for (const line of markdown.split('\n')) {
    if (line.startsWith('```')) fenced = !fenced;
    if (fenced) continue;
    const prose = line.replace(/`[^`]*`/g, '');
    for (const [, target = ''] of prose.matchAll(/\]\(([^)\s]+)\)/g))
      if (!/^[a-z][a-z0-9+.-]*:/i.test(target)) out.push(target);
  }
  return out;
}

/** What is wrong with one link of a page, or undefined. */
function linkProblem(page: string, target: string): string | undefined {
  const [path = '', anchor] = target.split('#');
  const file = path === '' ? page : normalize(join(dirname(page), decodeURIComponent(path)));
  if (!existsSync(join(PACKAGE_ROOT, file))) return `${page}: ${target}: no file ${file}`;
  if (anchor === undefined || !file.endsWith('.md')) return undefined;
  if (!anchors(read(file)).has(anchor)) return `${page}: ${target}: no heading #${anchor} in ${file}`;
  return undefined;
}

test('the link reader finds relative links and the anchors of headings', () => {
  assert.deepEqual(relativeLinks('[a](x.md#b) [c](https://e.org) `[d](y.md)`\n```\n[e](z.md)\n```\n[f](#g)'), [
    'x.md#b',
    '#g',
  ]);
  assert.deepEqual(
    [...anchors('# T\n## Ingest: `npm run bench:ingest`\n## A\n## A\n')],
    ['t', 'ingest-npm-run-benchingest', 'a', 'a-1'],
  );
});

test('every relative link in README, CONTRIBUTING and docs/ resolves to a file and a heading', () => {
  const problems = PAGES.flatMap((page) =>
    relativeLinks(read(page)).flatMap((target) => linkProblem(page, target) ?? []),
  );
  assert.deepEqual(problems, []);
});
