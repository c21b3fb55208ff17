// `surge migrate`: applies sql/migrations/NNN_name.sql in order, each in its own transaction,
// under a PostgreSQL advisory lock so that pods starting together do not race. Re-running is a
// no-op; an applied migration whose statements changed is reported, not re-run. Its comments may
// change: the checksum leaves whole-line comments out.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { MIGRATIONS_DIR } from './paths.js';

/** pg_advisory_lock key: the first 8 bytes of sha256('surge.migrate') would do; a constant is clearer. */
const MIGRATION_LOCK_KEY = 7_310_455_120_993_331n;

export interface Migration {
  version: number;
  name: string;
  sql: string;
  checksum: string;
}

/** The checksum's format tag: rows without it hold a checksum of the whole file (earlier releases). */
const CHECKSUM_TAG = 'stmt:';

/**
 * sha256 of the migration without its whole-line `--` comments, blank lines and trailing spaces:
 * what PostgreSQL runs, so rewording a comment is no change. A comment after code on the same
 * line still counts (it could sit inside a string literal).
 */
export function migrationChecksum(sql: string): string {
  const statements = sql
    .split('\n')
    .map((line) => line.trimEnd())
    .filter((line) => line !== '' && !line.trimStart().startsWith('--'))
    .join('\n');
  return CHECKSUM_TAG + createHash('sha256').update(statements).digest('hex');
}

/**
 * Whole-file checksums recorded by earlier releases for texts that differ from today's files only
 * in their comments: a database migrated by one of them is up to date, and its row is rewritten
 * in today's form on the next `surge migrate`.
 */
const EARLIER_FILE_CHECKSUMS: ReadonlyMap<number, readonly string[]> = new Map([
  [6, ['07b69fa69233b52eab9015e2d96f52d167ed7c508ec4eef090aa225b34a0bb1e']],
  [7, ['03d54b7c4e292c7a9dd441d06bedc94cba36b295de17b18ff39d0ddbe2e8455c']],
]);

/** Whether a recorded checksum is this migration's: today's form, the whole file's, or an earlier release's. */
function sameMigration(recorded: string, m: Migration): { same: boolean; legacy: boolean } {
  if (recorded === m.checksum) return { same: true, legacy: false };
  const legacy =
    recorded === createHash('sha256').update(m.sql).digest('hex') ||
    (EARLIER_FILE_CHECKSUMS.get(m.version) ?? []).includes(recorded);
  return { same: legacy, legacy };
}

export function listMigrations(dir: string = MIGRATIONS_DIR): Migration[] {
  const files = readdirSync(dir).filter((f) => /^\d{3,}_[a-z0-9_]+\.sql$/.test(f));
  const migrations = files.map((file) => {
    const sql = readFileSync(join(dir, file), 'utf8');
    return {
      version: Number(file.slice(0, file.indexOf('_'))),
      name: file.replace(/\.sql$/, ''),
      sql,
      checksum: migrationChecksum(sql),
    };
  });
  migrations.sort((a, b) => a.version - b.version);
  for (let i = 1; i < migrations.length; i++) {
    if (migrations[i]?.version === migrations[i - 1]?.version) {
      throw new Error(`two migrations share version ${migrations[i]?.version}`);
    }
  }
  return migrations;
}

export interface MigrateResult {
  applied: string[];
  alreadyApplied: string[];
}

export async function migrate(databaseUrl: string, dir: string = MIGRATIONS_DIR): Promise<MigrateResult> {
  const migrations = listMigrations(dir);
  const client = new pg.Client({ connectionString: databaseUrl, application_name: 'surge-migrate' });
  await client.connect();
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_KEY.toString()]);
    try {
      await client.query(`CREATE TABLE IF NOT EXISTS surge_migrations (
        version    integer PRIMARY KEY,
        name       text NOT NULL,
        checksum   text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
      )`);
      const done = await client.query<{ version: number; checksum: string; name: string }>(
        'SELECT version, checksum, name FROM surge_migrations',
      );
      const applied = new Map(done.rows.map((r) => [r.version, r]));
      const result: MigrateResult = { applied: [], alreadyApplied: [] };
      for (const m of migrations) {
        const prior = applied.get(m.version);
        if (prior) {
          const { same, legacy } = sameMigration(prior.checksum, m);
          if (!same) {
            throw new Error(
              `migration ${m.name} was applied with different contents (checksum mismatch); ` +
                'add a new migration instead of editing it',
            );
          }
          if (legacy) {
            await client.query('UPDATE surge_migrations SET checksum = $2 WHERE version = $1', [m.version, m.checksum]);
          }
          result.alreadyApplied.push(m.name);
          continue;
        }
        await client.query('BEGIN');
        try {
          await client.query(m.sql);
          await client.query('INSERT INTO surge_migrations (version, name, checksum) VALUES ($1, $2, $3)', [
            m.version,
            m.name,
            m.checksum,
          ]);
          await client.query('COMMIT');
        } catch (e) {
          await client.query('ROLLBACK');
          throw new Error(`migration ${m.name} failed: ${(e as Error).message}`);
        }
        result.applied.push(m.name);
      }
      return result;
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY.toString()]).catch(() => {});
    }
  } finally {
    await client.end();
  }
}

/** The database lacks Surge's schema (never migrated) or does not exist: says which command fixes it. */
class SchemaMissingError extends Error {}

/**
 * A PostgreSQL error that means "not migrated" (undefined table), "migrated by an older release"
 * (undefined column: Surge's queries name only columns its migrations create) or "no such
 * database", as a SchemaMissingError naming the command to run; anything else as it was.
 */
export function explainSchemaError(e: unknown): unknown {
  const code = typeof e === 'object' && e !== null ? (e as { code?: unknown }).code : undefined;
  const message = e instanceof Error ? e.message : String(e);
  if (code === '42P01')
    return new SchemaMissingError(`${message}: the database is not migrated; run \`surge migrate\``);
  if (code === '42703')
    return new SchemaMissingError(`${message}: the database lacks a newer migration; run \`surge migrate\``);
  if (code === '3D000') {
    return new SchemaMissingError(`${message}: run \`surge migrate --create-database\` to create and migrate it`);
  }
  return e;
}

/**
 * Fails with a SchemaMissingError when the database was never migrated, or lacks a migration
 * this release ships (a pod of a new release that starts before the migrate Job has finished).
 * Migrations newer than this release are fine: they keep the schema compatible with it.
 */
export async function assertMigrated(databaseUrl: string): Promise<void> {
  const client = new pg.Client({ connectionString: databaseUrl, application_name: 'surge-schema-check' });
  try {
    await client.connect();
    const table = await client.query<{ t: string | null }>(`SELECT to_regclass('surge_migrations')::text AS t`);
    const applied = new Set(
      table.rows[0]?.t == null
        ? []
        : (await client.query<{ version: number }>('SELECT version FROM surge_migrations')).rows.map((r) => r.version),
    );
    const name = new URL(databaseUrl).pathname.slice(1);
    if (applied.size === 0) throw new SchemaMissingError(`database ${name} was never migrated: run \`surge migrate\``);
    const missing = listMigrations().filter((m) => !applied.has(m.version));
    if (missing.length > 0) {
      throw new SchemaMissingError(
        `database ${name} lacks migration ${missing.map((m) => m.name).join(', ')}: run \`surge migrate\``,
      );
    }
  } catch (e) {
    throw explainSchemaError(e);
  } finally {
    await client.end().catch(() => {});
  }
}
