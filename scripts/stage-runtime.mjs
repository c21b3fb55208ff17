// Copies what the runtime image needs out of a built checkout into one directory:
// package.json, package-lock.json and the entries of package.json "files" (dist/, sql/,
// metrics/*.yml, metrics/*.json), leaving out compiled tests and the compiler's build info.
// The Dockerfile's build stage runs it, and so does the production-install test, so the two
// ship exactly the same files. Usage: node scripts/stage-runtime.mjs <target-dir>
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const target = process.argv[2];
if (!target) {
  console.error('usage: node scripts/stage-runtime.mjs <target-dir>');
  process.exit(2);
}
const out = resolve(target);
if (!existsSync(join(root, 'dist', 'cli', 'surge.js'))) {
  console.error('stage-runtime: dist/cli/surge.js is missing; build first (npm run build)');
  process.exit(1);
}

/** Compiled files that are not part of the runtime. */
const EXCLUDED = [join('dist', 'test'), join('dist', '.tsbuildinfo')];
const skip = (src) => {
  const rel = relative(root, src);
  return EXCLUDED.some((e) => rel === e || rel.startsWith(e + sep));
};

/** Expands one package.json "files" entry: a path, or `dir/*.ext`. */
function expand(entry) {
  const star = entry.indexOf('*');
  if (star < 0) return existsSync(join(root, entry)) ? [entry] : [];
  const dir = entry.slice(0, entry.lastIndexOf('/', star) + 1);
  const suffix = entry.slice(star + 1);
  if (!existsSync(join(root, dir))) return [];
  return readdirSync(join(root, dir))
    .filter((name) => name.endsWith(suffix))
    .map((name) => dir + name);
}

const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const entries = ['package.json', 'package-lock.json', ...(pkg.files ?? []).flatMap(expand)];
mkdirSync(out, { recursive: true });
for (const entry of entries) {
  const dest = join(out, entry);
  mkdirSync(dirname(dest), { recursive: true });
  cpSync(join(root, entry), dest, { recursive: true, filter: (src) => !skip(src) });
}
console.log(`staged ${entries.join(', ')} into ${out}`);
