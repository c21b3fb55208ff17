// npm's `prepare` hook, after `npm install` / `npm ci` in a checkout:
// 1. points git at the repository's hooks (.githooks: the commit message check), only in a git
//    work tree whose top is this package, outside CI, and only when core.hooksPath is unset, so
//    a tarball install, an install inside another repository and a developer's own setting are
//    left alone;
// 2. compiles TypeScript. In a production install (`npm ci --omit=dev`) there is no compiler and
//    dist/ is shipped prebuilt, so this step does nothing.
import { execFileSync } from 'node:child_process';
import { existsSync, realpathSync } from 'node:fs';
import { createRequire } from 'node:module';

function git(args) {
  return execFileSync('git', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
}

function installHooks() {
  if (process.env.CI || !existsSync('.githooks/commit-msg')) return;
  let top;
  try {
    top = git(['rev-parse', '--show-toplevel']);
  } catch {
    return; // no git, or not a git work tree
  }
  if (realpathSync(top) !== realpathSync('.')) return;
  try {
    git(['config', '--get', 'core.hooksPath']);
    return; // already set, by the developer or an earlier install
  } catch {
    // unset: git config --get exits 1
  }
  try {
    git(['config', 'core.hooksPath', '.githooks']);
    console.log('surge: git hooks from .githooks enabled (commit message check)');
  } catch {
    // a read-only or otherwise unwritable git config: commits just go unchecked until lint
  }
}

installHooks();

const require = createRequire(import.meta.url);
let tsc;
try {
  tsc = require.resolve('typescript/bin/tsc');
} catch {
  if (!existsSync('dist/cli/surge.js'))
    console.warn('surge: typescript is not installed and dist/ is missing; run `npm install` with dev dependencies');
  process.exit(0);
}
execFileSync(process.execPath, [tsc, '-p', 'tsconfig.json'], { stdio: 'inherit' });
// The type declarations of the `surge/client` export.
execFileSync(process.execPath, [tsc, '-p', 'tsconfig.client.json'], { stdio: 'inherit' });
