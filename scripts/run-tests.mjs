// Runs the compiled node:test files: every dist/test/**/*.test.js, or only those whose path
// contains one of the arguments (`npm test -- ingest`). Node 20's test runner takes no globs.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

function walk(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(join(dir, e.name)) : e.name.endsWith('.test.js') ? [join(dir, e.name)] : [],
  );
}

const filters = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const flags = process.argv.slice(2).filter((a) => a.startsWith('--'));
const root = process.env.SURGE_TEST_DIR ?? 'dist/test';
const files = walk(root)
  .filter((f) => filters.length === 0 || filters.some((p) => f.includes(p)))
  .sort();
if (files.length === 0) {
  console.error(`no test files under ${root} match ${filters.join(' ')}`);
  process.exit(1);
}
const concurrency = process.env.SURGE_TEST_CONCURRENCY ?? '1';
const r = spawnSync(process.execPath, ['--test', `--test-concurrency=${concurrency}`, ...flags, ...files], {
  stdio: 'inherit',
});
process.exit(r.status ?? 1);
