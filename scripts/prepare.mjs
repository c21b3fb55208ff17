// npm's `prepare` hook: compile TypeScript after `npm install` / `npm ci` in a checkout.
// In a production install (`npm ci --omit=dev`) there is no compiler and dist/ is shipped
// prebuilt, so this does nothing.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
let tsc;
try {
  tsc = require.resolve('typescript/bin/tsc');
} catch {
  if (!existsSync('dist/cli/surge.js')) console.warn('surge: typescript is not installed and dist/ is missing; run `npm install` with dev dependencies');
  process.exit(0);
}
execFileSync(process.execPath, [tsc, '-p', 'tsconfig.json'], { stdio: 'inherit' });
