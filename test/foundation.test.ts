import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import pg from 'pg';
import { findClientByKey } from '../common/clients.js';
import { CONFIG_VARIABLES, ConfigError, configMarkdownTable, loadConfig } from '../common/config.js';
import { listMigrations, migrate, migrationChecksum } from '../common/migrate.js';
import { MIGRATIONS_DIR, PACKAGE_ROOT } from '../common/paths.js';
import { roleNodeFlags } from '../stack/up.js';
import { createTestDatabase, type TestDatabase } from '../devkit/scratch.js';

const run = promisify(execFile);
const CLI = join(PACKAGE_ROOT, 'dist', 'cli', 'surge.js');

function surge(args: string[], env: Record<string, string>) {
  return run(process.execPath, [CLI, ...args], { env: { ...process.env, ...env } });
}

describe('config', () => {
  test('defaults work on a laptop', () => {
    const c = loadConfig({});
    assert.equal(c.shards, 4);
    assert.equal(c.redisPrefix, 'surge');
    assert.equal(c.durability, 'fast');
    assert.equal(c.ingestPort, 8080);
  });

  test('a bad value names the variable and the accepted values', () => {
    assert.throws(
      () => loadConfig({ SURGE_SHARDS: 'many' }),
      (e: unknown) => {
        assert.ok(e instanceof ConfigError);
        assert.equal(e.variable, 'SURGE_SHARDS');
        assert.match(e.message, /SURGE_SHARDS: "many" is not an integer; accepted: an integer from 1 to 1024/);
        return true;
      },
    );
    assert.throws(
      () => loadConfig({ SURGE_DURABILITY: 'maybe' }),
      /SURGE_DURABILITY: "maybe" is not accepted; accepted: fast \| durable/,
    );
    assert.throws(() => loadConfig({ REDIS_URL: 'http://x' }), /REDIS_URL: protocol http: is not accepted/);
    assert.throws(() => loadConfig({ SURGE_REDIS_PREFIX: 'a{b}' }), /SURGE_REDIS_PREFIX/);
    assert.throws(() => loadConfig({ REDIS_CLUSTER_NODES: 'host-without-port' }), /REDIS_CLUSTER_NODES/);
  });

  test('SURGE_INGEST_NODE_FLAGS reaches only the ingest process surge up starts', () => {
    const c = loadConfig({ SURGE_INGEST_NODE_FLAGS: ' --single-threaded-gc  --max-semi-space-size=16 ' });
    assert.deepEqual(roleNodeFlags(c, 'ingest'), ['--single-threaded-gc', '--max-semi-space-size=16']);
    assert.deepEqual(roleNodeFlags(c, 'work'), []);
    assert.deepEqual(roleNodeFlags(loadConfig({}), 'ingest'), []);
    assert.throws(() => loadConfig({ SURGE_INGEST_NODE_FLAGS: 'single-threaded-gc' }), /SURGE_INGEST_NODE_FLAGS/);
  });

  test('SURGE_WORKER_NODE_FLAGS reaches only the worker process surge up starts', () => {
    const c = loadConfig({ SURGE_WORKER_NODE_FLAGS: '--min-semi-space-size=16' });
    assert.deepEqual(roleNodeFlags(c, 'work'), ['--min-semi-space-size=16']);
    assert.deepEqual(roleNodeFlags(c, 'ingest'), []);
    assert.deepEqual(roleNodeFlags(loadConfig({}), 'work'), []);
    assert.throws(() => loadConfig({ SURGE_WORKER_NODE_FLAGS: 'min-semi-space-size=16' }), /SURGE_WORKER_NODE_FLAGS/);
  });

  test('the CLI stops with exit code 2 and the variable name on a bad value', async () => {
    await assert.rejects(surge(['migrate'], { SURGE_SHARDS: '0' }), (e: { code: number; stderr: string }) => {
      assert.equal(e.code, 2);
      assert.match(
        e.stderr,
        /invalid configuration: SURGE_SHARDS: 0 is out of range; accepted: an integer from 1 to 1024/,
      );
      return true;
    });
  });

  test('the README documents exactly the variables the code reads', () => {
    const readme = readFileSync(join(PACKAGE_ROOT, 'README.md'), 'utf8');
    const start = readme.indexOf('<!-- config-table:start -->');
    const end = readme.indexOf('<!-- config-table:end -->');
    assert.ok(start >= 0 && end > start, 'README has the config-table markers');
    const table = readme.slice(start + '<!-- config-table:start -->'.length, end).trim();
    assert.equal(table, configMarkdownTable(), 'README table is stale: regenerate with `npx surge config --markdown`');
    for (const name of CONFIG_VARIABLES) assert.ok(table.includes(`\`${name}\``), name);
  });
});

describe('migrate', () => {
  let db: TestDatabase;
  before(async () => {
    db = await createTestDatabase({ migrate: false });
  });
  after(async () => {
    await db.drop();
  });

  test('two processes migrating at once apply each migration exactly once', async () => {
    const env = { DATABASE_URL: db.url };
    const [a, b] = await Promise.all([surge(['migrate'], env), surge(['migrate'], env)]);
    const expected = listMigrations();
    const appliedLines = [...a.stdout.split('\n'), ...b.stdout.split('\n')].filter((l) => l.startsWith('applied '));
    assert.equal(
      appliedLines.length,
      expected.length,
      `each migration applied by exactly one process:\n${a.stdout}\n${b.stdout}`,
    );
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    try {
      const rows = (await c.query<{ version: number }>('SELECT version FROM surge_migrations ORDER BY version')).rows;
      assert.deepEqual(
        rows.map((r) => r.version),
        expected.map((m) => m.version),
      );
      const tables = (
        await c.query<{ tablename: string }>("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
      ).rows.map((r) => r.tablename);
      for (const t of ['api_clients', 'dead_letters', 'inventory', 'order_items', 'orders', 'surge_migrations'])
        assert.ok(tables.includes(t), t);
    } finally {
      await c.end();
    }
    const again = await surge(['migrate'], env);
    assert.match(again.stdout, /database is up to date/);
  });

  test('clients add prints a key once and stores only its hash', async () => {
    const { stdout } = await surge(['clients', 'add', 'shop-frontend', '--json'], { DATABASE_URL: db.url });
    const created = JSON.parse(stdout) as { id: string; name: string; api_key: string };
    assert.match(created.api_key, /^sk_/);
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    try {
      const row = (await c.query<Record<string, unknown>>('SELECT * FROM api_clients WHERE id = $1', [created.id]))
        .rows[0];
      assert.ok(row, 'the client row');
      assert.ok(!JSON.stringify(row).includes(created.api_key.slice(3)), 'the key itself is not stored');
      assert.deepEqual(await findClientByKey(c, created.api_key), { id: created.id, name: 'shop-frontend' });
      assert.equal(await findClientByKey(c, `${created.api_key}x`), undefined);
    } finally {
      await c.end();
    }
    await assert.rejects(surge(['clients', 'add', 'shop-frontend'], { DATABASE_URL: db.url }), /already exists/);
  });
});

describe('migration checksums', () => {
  test('rewording a comment is no change; changing a statement is', () => {
    const sql = '-- Adds a column.\nALTER TABLE t ADD COLUMN c integer; -- kept\n';
    assert.equal(
      migrationChecksum(sql),
      migrationChecksum('-- Adds a column, reworded.\n\nALTER TABLE t ADD COLUMN c integer; -- kept  \n'),
    );
    assert.notEqual(
      migrationChecksum(sql),
      migrationChecksum('-- Adds a column.\nALTER TABLE t ADD COLUMN c bigint; -- kept\n'),
    );
    // A comment after code on its line counts: it may sit inside a string literal.
    assert.notEqual(
      migrationChecksum(sql),
      migrationChecksum('-- Adds a column.\nALTER TABLE t ADD COLUMN c integer; -- other\n'),
    );
  });

  let db: TestDatabase;
  let dir: string;
  before(async () => {
    db = await createTestDatabase();
    dir = mkdtempSync(join(tmpdir(), 'surge-migrations-'));
    cpSync(MIGRATIONS_DIR, dir, { recursive: true });
  });
  after(async () => {
    rmSync(dir, { recursive: true, force: true });
    await db.drop();
  });

  const checksums = async () => {
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    try {
      const rows = (
        await c.query<{ version: number; checksum: string }>('SELECT version, checksum FROM surge_migrations')
      ).rows;
      return new Map(rows.map((r) => [r.version, r.checksum]));
    } finally {
      await c.end();
    }
  };
  const setChecksum = async (version: number, checksum: string) => {
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    try {
      await c.query('UPDATE surge_migrations SET checksum = $2 WHERE version = $1', [version, checksum]);
    } finally {
      await c.end();
    }
  };

  test("an earlier release's whole-file checksums are accepted and rewritten in today's form", async () => {
    const [first] = listMigrations();
    assert.ok(first);
    // What an earlier release recorded: the whole file's sha256, and 006 before its comment was reworded.
    await setChecksum(first.version, createHash('sha256').update(first.sql).digest('hex'));
    await setChecksum(6, '07b69fa69233b52eab9015e2d96f52d167ed7c508ec4eef090aa225b34a0bb1e');
    const result = await migrate(db.url);
    assert.deepEqual(result.applied, []);
    const now = await checksums();
    for (const m of listMigrations()) assert.equal(now.get(m.version), m.checksum, m.name);
  });

  test('a migration whose statements changed after it was applied is refused; a reworded comment is not', async () => {
    const last = listMigrations(dir).at(-1);
    assert.ok(last);
    const file = join(dir, `${last.name}.sql`);
    writeFileSync(file, `-- A comment added after release.\n${last.sql}`);
    assert.deepEqual((await migrate(db.url, dir)).applied, []);
    writeFileSync(file, `${last.sql}\nSELECT 1;\n`);
    await assert.rejects(
      migrate(db.url, dir),
      new RegExp(`migration ${last.name} was applied with different contents`),
    );
    await setChecksum(last.version, 'f'.repeat(64));
    writeFileSync(file, last.sql);
    await assert.rejects(migrate(db.url, dir), /checksum mismatch/);
  });
});

describe('schema: order_items belong to an order (migration 007)', () => {
  let db: TestDatabase;
  let c: pg.Client;
  before(async () => {
    db = await createTestDatabase();
    c = new pg.Client({ connectionString: db.url });
    await c.connect();
  });
  after(async () => {
    await c.end();
    await db.drop();
  });

  const newOrder = async (key: string): Promise<string> =>
    (
      await c.query<{ id: string }>(
        `INSERT INTO orders (client_id, idempotency_key, customer_id, currency, total_cents, status, received_at, stream, entry_id)
         VALUES ('c', $1, 'cust', 'EUR', 0, 'applied', now(), 's', '1-0') RETURNING id`,
        [key],
      )
    ).rows[0]?.id ?? assert.fail(`no id returned for ${key}`);
  const items = async (): Promise<number> => Number((await c.query('SELECT count(*) AS n FROM order_items')).rows[0].n);

  test('a line for a missing order is refused with SQLSTATE 23503 (insert, multi-row insert, update)', async () => {
    const id = await newOrder('fk-1');
    await c.query("INSERT INTO order_items VALUES ($1, 1, 'a', 1, 1)", [id]);
    await assert.rejects(c.query("INSERT INTO order_items VALUES ($1::bigint + 1000, 1, 'a', 1, 1)", [id]), {
      code: '23503',
    });
    await assert.rejects(
      c.query("INSERT INTO order_items VALUES ($1, 2, 'a', 1, 1), ($1::bigint + 1000, 1, 'a', 1, 1)", [id]),
      { code: '23503' },
    );
    await assert.rejects(c.query('UPDATE order_items SET order_pk = order_pk + 1000'), { code: '23503' });
    assert.equal(await items(), 1, 'the refused statements left nothing behind');
  });

  test('the line check reads orders through its index, whatever the session set when it was planned', async () => {
    // PL/pgSQL caches a function's plans for the session: the check's own settings leave it only
    // the index plan, even when made while the session had index scans off.
    await c.query(`INSERT INTO orders (client_id, idempotency_key, customer_id, currency, total_cents, status, received_at, stream, entry_id)
                   SELECT 'c', 'plan-' || g, 'cust', 'EUR', 0, 'applied', now(), 's', '1-0' FROM generate_series(1, 20000) AS g`);
    await c.query('ANALYZE orders');
    const id = await newOrder('plan-check');
    await c.query('SET enable_indexscan = off');
    await c.query('SET enable_bitmapscan = off');
    await c.query("INSERT INTO order_items VALUES ($1, 1, 'a', 1, 1)", [id]);
    await c.query('RESET enable_indexscan');
    await c.query('RESET enable_bitmapscan');
    // pg_stat_xact_* counts what this backend has not flushed yet (possibly several transactions):
    // compare before and after, inside one transaction.
    const seqScans = async () =>
      Number(
        (await c.query<{ n: string }>("SELECT seq_scan AS n FROM pg_stat_xact_user_tables WHERE relname = 'orders'"))
          .rows[0]?.n,
      );
    await c.query('BEGIN');
    const before = await seqScans();
    await c.query("INSERT INTO order_items VALUES ($1, 2, 'a', 1, 1)", [id]);
    const after = await seqScans();
    await c.query('COMMIT');
    assert.equal(after - before, 0, 'the check read orders through its index');
  });

  test('deleting or truncating orders removes their lines, and only theirs', async () => {
    const keep = await newOrder('fk-keep');
    const gone = await newOrder('fk-gone');
    await c.query("INSERT INTO order_items VALUES ($1, 1, 'a', 1, 1), ($1, 2, 'b', 1, 1), ($2, 1, 'a', 1, 1)", [
      gone,
      keep,
    ]);
    const before = await items();
    await c.query('DELETE FROM orders WHERE id = $1', [gone]);
    assert.equal(await items(), before - 2);
    assert.equal(
      Number((await c.query('SELECT count(*) AS n FROM order_items WHERE order_pk = $1', [keep])).rows[0].n),
      1,
    );
    await c.query('TRUNCATE orders');
    assert.equal(await items(), 0);
  });
});
