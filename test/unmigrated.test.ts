// Every command that works on PostgreSQL, run against a database that was never migrated (and
// one that does not exist, and one an older release migrated), says which command fixes it
// instead of printing PostgreSQL's raw error or a stack. The command list is read from the CLI's own help, so a new command fails
// here until it is classified: it works on the database (and is run below) or it does not.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import pg from 'pg';
import { explainSchemaError, listMigrations, migrate } from '../common/migrate.js';
import { PACKAGE_ROOT } from '../common/paths.js';
import {
  createTestDatabase,
  deleteRedisPrefix,
  TEST_REDIS_URL,
  type TestDatabase,
  uniquePrefix,
} from '../devkit/scratch.js';

const run = promisify(execFile);
const CLI = join(PACKAGE_ROOT, 'dist', 'cli', 'surge.js');

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

async function surge(args: readonly string[], env: Record<string, string>): Promise<Outcome> {
  try {
    // A role that failed to refuse would run until stopped: the timeout ends it.
    const r = await run(process.execPath, [CLI, ...args], {
      env: { ...process.env, ...env },
      timeout: 30_000,
      killSignal: 'SIGKILL',
    });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code?: number | string; signal?: string; stdout?: string; stderr?: string };
    return {
      code: typeof err.code === 'number' ? err.code : -1,
      stdout: err.stdout ?? '',
      stderr: `${err.stderr ?? ''}${err.signal ? `\n(killed by ${err.signal})` : ''}`,
    };
  }
}

/** The subcommand names in a Commander help text's "Commands:" section (not `help`). */
function helpCommands(help: string): string[] {
  const start = help.indexOf('\nCommands:\n');
  if (start < 0) return [];
  const names: string[] = [];
  for (const line of help.slice(start + '\nCommands:\n'.length).split('\n')) {
    if (line.trim() === '') break;
    const name = /^ {2}([a-z][\w-]*)/.exec(line)?.[1];
    if (name && name !== 'help') names.push(name);
  }
  return names;
}

/**
 * How each command that works on PostgreSQL is run here, and where its answer goes: the one-shot
 * commands and the roles stop with exit code 1 and the message on stderr; `surge status` reads
 * Redis too, so it still prints its report (exit 0) and names the fix where the apply rate goes.
 */
const DATABASE: Record<string, { runs: string[][]; code: 0 | 1; stream: 'stdout' | 'stderr' }> = {
  'clients add': { runs: [['clients', 'add', 'shop']], code: 1, stream: 'stderr' },
  'clients list': { runs: [['clients', 'list']], code: 1, stream: 'stderr' },
  'clients disable': { runs: [['clients', 'disable', 'shop']], code: 1, stream: 'stderr' },
  'dlq list': { runs: [['dlq', 'list']], code: 1, stream: 'stderr' },
  'dlq show': { runs: [['dlq', 'show', '1']], code: 1, stream: 'stderr' },
  'dlq replay': {
    runs: [
      ['dlq', 'replay', '1'],
      ['dlq', 'replay', '--all'],
      ['dlq', 'replay', '--all', '--detach'],
    ],
    code: 1,
    stream: 'stderr',
  },
  'dlq purge': {
    runs: [
      ['dlq', 'purge', '1', '--yes'],
      ['dlq', 'purge', '--all', '--yes'],
    ],
    code: 1,
    stream: 'stderr',
  },
  ingest: { runs: [['ingest']], code: 1, stream: 'stderr' },
  work: { runs: [['work']], code: 1, stream: 'stderr' },
  maintenance: { runs: [['maintenance']], code: 1, stream: 'stderr' },
  status: { runs: [['status'], ['status', '--json']], code: 0, stream: 'stdout' },
};

/** Commands (or whole command groups) that do not work on Surge's schema, and why. */
const NO_DATABASE: Record<string, string> = {
  migrate: 'creates the schema: it is the command the message names',
  up: 'migrates the database itself before it starts the roles',
  config: 'validates and prints the environment; connects to nothing',
  contract: 'prints or writes the OpenAPI document; connects to nothing',
  'lag-exporter': 'reads the shard streams in Redis only',
  dashboard: 'Bull Board over the BullMQ queues in Redis only',
  bench: 'each benchmark creates and migrates its own scratch database, or drives a stack the operator started',
};

describe('on a database that was never migrated, every command says to run surge migrate', () => {
  let db: TestDatabase;
  const prefix = uniquePrefix();
  let env: Record<string, string>;

  before(async () => {
    db = await createTestDatabase({ migrate: false });
    env = {
      DATABASE_URL: db.url,
      REDIS_URL: TEST_REDIS_URL,
      SURGE_REDIS_PREFIX: prefix,
      // Free ports, should a role start after all (the test then fails on its exit code).
      SURGE_INGEST_PORT: '0',
      SURGE_INGEST_METRICS_PORT: '0',
      SURGE_WORKER_METRICS_PORT: '0',
      SURGE_MAINTENANCE_METRICS_PORT: '0',
    };
  });
  after(async () => {
    await db?.drop();
    await deleteRedisPrefix(TEST_REDIS_URL, prefix);
  });

  test('the help parser reads command names and skips wrapped descriptions and help', () => {
    const help =
      'Usage: surge [options] [command]\n\nOptions:\n  -h, --help  display help\n\nCommands:\n' +
      '  migrate [options]    apply the SQL migrations\n                       (advisory-locked)\n' +
      '  lag-exporter         serve lag\n  help [command]       display help for command\n\nMore text\n';
    assert.deepEqual(helpCommands(help), ['migrate', 'lag-exporter']);
    assert.deepEqual(helpCommands('Usage: surge config [options]\n\nOptions:\n  --markdown  table\n'), []);
  });

  test('every command of the CLI is classified: works on the database, or does not (with why)', async () => {
    const leaves: string[] = [];
    const walk = async (path: string[]): Promise<void> => {
      const subs = helpCommands((await surge([...path, '--help'], {})).stdout);
      if (path.length > 0 && subs.length === 0) {
        leaves.push(path.join(' '));
        return;
      }
      await Promise.all(
        subs.map((s) => {
          const next = [...path, s];
          return next.join(' ') in NO_DATABASE ? leaves.push(next.join(' ')) : walk(next);
        }),
      );
    };
    await walk([]);
    assert.ok(leaves.length >= 15, `the walk finds the commands (${leaves.join(', ')})`);
    const classified = [...Object.keys(DATABASE), ...Object.keys(NO_DATABASE)].sort();
    assert.deepEqual(
      leaves.sort(),
      classified,
      'a command is missing from DATABASE (run against an unmigrated database below) or NO_DATABASE',
    );
  });

  for (const [command, { runs, code, stream }] of Object.entries(DATABASE)) {
    test(`surge ${command}`, async () => {
      for (const args of runs) {
        const r = await surge(args, env);
        const what = `surge ${args.join(' ')}`;
        assert.equal(r.code, code, `${what}: exit code; stderr:\n${r.stderr}`);
        assert.match(r[stream], /run `surge migrate`/, `${what}: names the fix`);
        assert.doesNotMatch(`${r.stdout}${r.stderr}`, /\n\s+at /, `${what}: no stack trace`);
      }
    });
  }

  test('on a database an older release migrated, the roles name the missing migration', async () => {
    const all = listMigrations();
    const last = all.at(-1);
    assert.ok(last && all.length > 1, 'more than one migration');
    const older = await createTestDatabase({ migrate: false });
    const dir = mkdtempSync(join(tmpdir(), 'surge-older-migrations-'));
    try {
      for (const m of all.slice(0, -1)) writeFileSync(join(dir, `${m.name}.sql`), m.sql);
      await migrate(older.url, dir);
      for (const role of ['ingest', 'work', 'maintenance']) {
        const r = await surge([role], { ...env, DATABASE_URL: older.url });
        assert.equal(r.code, 1, `surge ${role}: exit code; stderr:\n${r.stderr}`);
        assert.match(r.stderr, new RegExp(`lacks migration ${last.name}: run \`surge migrate\``), role);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
      await older.drop();
    }
  });

  test('a column an older schema lacks is explained too', async () => {
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    try {
      const e = await c.query('SELECT no_such_column FROM pg_class').then(
        () => undefined,
        (err: unknown) => err,
      );
      const explained = explainSchemaError(e);
      assert.ok(explained instanceof Error);
      assert.match(explained.message, /column "no_such_column" does not exist: .*run `surge migrate`/);
      const other = new Error('connection refused');
      assert.equal(explainSchemaError(other), other, 'any other error as it was');
    } finally {
      await c.end();
    }
  });

  test('on a database that does not exist: run surge migrate --create-database', async () => {
    const missing = new URL(db.url);
    missing.pathname = `/${db.name}_missing`;
    const missingEnv = { ...env, DATABASE_URL: missing.href };
    for (const [args, stream] of [
      [['dlq', 'list'], 'stderr'],
      [['work'], 'stderr'],
      [['status'], 'stdout'],
    ] as const) {
      const r = await surge(args, missingEnv);
      assert.match(r[stream], /does not exist: run `surge migrate --create-database`/, args.join(' '));
    }
  });
});
