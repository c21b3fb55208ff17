// Loads the apply statements of sql/<name>.sql once per process (or thread).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SQL_DIR } from './paths.js';

const cache = new Map<string, string>();

/** The text of `sql/<name>.sql`, e.g. sqlFile('apply/insert_orders'). */
export function sqlFile(name: string): string {
  let text = cache.get(name);
  if (text === undefined) {
    text = readFileSync(join(SQL_DIR, `${name}.sql`), 'utf8');
    cache.set(name, text);
  }
  return text;
}
