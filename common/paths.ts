// Where the package's non-code files are, whether running from dist/ or an installed copy.
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package root (holds package.json and sql/). Compiled files live in dist/<dir>/. */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SQL_DIR = join(PACKAGE_ROOT, 'sql');
export const MIGRATIONS_DIR = join(SQL_DIR, 'migrations');
