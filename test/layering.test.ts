// Which top-level folders may import which, read from the import statements of the sources:
// cli/ is the top and nothing imports it; bench/ and devkit/ are development tools that
// production code never imports; test/ is imported by nothing but itself.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { test } from 'node:test';
import { PACKAGE_ROOT } from '../common/paths.js';

const PRODUCTION = ['client', 'common', 'ingest', 'workers', 'maintenance', 'metrics', 'stack'];
const FOLDERS = [...PRODUCTION, 'devkit', 'cli', 'bench', 'test'];

function sources(dir: string): string[] {
  return readdirSync(join(PACKAGE_ROOT, dir), { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => relative(PACKAGE_ROOT, join(e.parentPath, e.name)));
}

/** Every `from '…'` and `import('…')` of a relative path, as [importing file, imported folder]. */
const edges: [string, string][] = FOLDERS.flatMap((dir) =>
  sources(dir).flatMap((file) =>
    [...readFileSync(join(PACKAGE_ROOT, file), 'utf8').matchAll(/(?:from\s+|import\s*\()'(\.{1,2}\/[^']+)'/g)].map(
      ([, spec = '']): [string, string] => [
        file,
        relative(PACKAGE_ROOT, resolve(PACKAGE_ROOT, dirname(file), spec)).split('/')[0] ?? '',
      ],
    ),
  ),
);

const folderOf = (file: string) => file.split('/')[0] ?? '';
const offending = (from: (folder: string) => boolean, to: readonly string[]) =>
  edges
    .filter(([file, target]) => from(folderOf(file)) && folderOf(file) !== target && to.includes(target))
    .map(([file, target]) => `${file} -> ${target}/`);

test('the import scan sees the sources', () => {
  assert.ok(edges.some(([file, target]) => file === 'cli/surge.ts' && target === 'stack'));
});

test('nothing outside cli/ imports cli/', () => {
  assert.deepEqual(
    offending((f) => f !== 'cli', ['cli']),
    [],
  );
});

test('bench/ does not import test/, and bench/ and cli/ do not form a loop', () => {
  assert.deepEqual(
    offending((f) => f === 'bench', ['test', 'cli']),
    [],
  );
});

test('production folders import neither test/, bench/ nor devkit/', () => {
  assert.deepEqual(
    offending((f) => PRODUCTION.includes(f), ['test', 'bench', 'devkit', 'cli']),
    [],
  );
});

test('devkit/ imports only production folders', () => {
  assert.deepEqual(
    offending((f) => f === 'devkit', ['test', 'bench', 'cli']),
    [],
  );
});
