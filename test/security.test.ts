// Security basics: API keys stored only as hashes and compared in constant time;
// one client cannot read or replay another's orders; /metrics of ingest, workers and the lag
// exporter carry no order data; SQL reaches PostgreSQL only as static text with parameters,
// identifiers escaped with pg.escapeIdentifier, numbers clamped, or the escaped COPY stream.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { type CreatedClient, createClient, findClientByKey } from '../common/clients.js';
import { createLogger } from '../common/log.js';
import { PACKAGE_ROOT } from '../common/paths.js';
import { type IngestService, startIngest } from '../ingest/server.js';
import { startLagExporter } from '../metrics/exporter.js';
import { startWorker, type WorkerHandle } from '../workers/worker.js';
import { createTestEnv, type TestEnv } from '../devkit/scratch.js';
import { waitFor } from '../devkit/wait.js';
import { http } from './support/http.js';

const silent = createLogger('silent', 'security-test');
const SECRET = 'S3CRET-MARK';

function sourceFiles(dir: string): string[] {
  return readdirSync(join(PACKAGE_ROOT, dir), { withFileTypes: true }).flatMap((e) =>
    e.isDirectory()
      ? sourceFiles(join(dir, e.name))
      : e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')
        ? [join(dir, e.name)]
        : [],
  );
}

describe('security', () => {
  let env: TestEnv;
  let pool: pg.Pool;
  let alice: CreatedClient;
  let bob: CreatedClient;
  let ingest: IngestService;

  const post = (c: CreatedClient, key: string, body: unknown) =>
    http(ingest.url, {
      method: 'POST',
      path: '/v1/orders',
      headers: { authorization: `Bearer ${c.apiKey}`, 'content-type': 'application/json', 'idempotency-key': key },
      body: JSON.stringify(body),
    });
  const get = (c: CreatedClient, key: string) =>
    http(ingest.url, {
      path: `/v1/orders/${encodeURIComponent(key)}`,
      headers: { authorization: `Bearer ${c.apiKey}` },
    });
  const order = (customer: string) => ({
    customer_id: customer,
    currency: 'EUR',
    items: [{ sku: `${SECRET}-sku`, qty: 1, unit_price_cents: 100 }],
    order_id: `${SECRET}-oid`,
    metadata: { note: SECRET },
  });

  before(async () => {
    env = await createTestEnv({ SURGE_SHARDS: '2' });
    pool = new pg.Pool({ connectionString: env.db.url, max: 2 });
    alice = await createClient(pool, 'alice');
    bob = await createClient(pool, 'bob');
    ingest = await startIngest(env.config, { logger: silent });
  });
  after(async () => {
    await ingest?.stop();
    await pool?.end();
    await env?.cleanup();
  });

  test('API keys: only a SHA-256 hash and an 8-character prefix are stored; lookups hash and compare in constant time', async () => {
    const rows = await pool.query<{ row: string; key_hash: Buffer; key_prefix: string }>(
      'SELECT row_to_json(a)::text AS row, key_hash, key_prefix FROM api_clients a WHERE id = $1',
      [alice.id],
    );
    const row = rows.rows[0] as { row: string; key_hash: Buffer; key_prefix: string };
    assert.equal(row.row.includes(alice.apiKey), false, 'the key itself is nowhere in the row');
    assert.equal(row.row.includes(alice.apiKey.slice(8)), false, 'nor its secret part');
    assert.deepEqual(row.key_hash, createHash('sha256').update(alice.apiKey).digest());
    assert.equal(row.key_prefix, alice.apiKey.slice(0, 8));
    // Behaviour: the right key finds the client; a key differing in its last character does not.
    assert.equal((await findClientByKey(pool, alice.apiKey))?.id, alice.id);
    const last = alice.apiKey.at(-1) === 'A' ? 'B' : 'A';
    assert.equal(await findClientByKey(pool, alice.apiKey.slice(0, -1) + last), undefined);
    // Code review as a test: the lookup is by hash and the comparison is timingSafeEqual over
    // fixed-length digests; no key is compared with === anywhere.
    const clients = readFileSync(join(PACKAGE_ROOT, 'common', 'clients.ts'), 'utf8');
    assert.match(clients, /WHERE key_hash = \$1/);
    assert.match(clients, /timingSafeEqual\(row\.key_hash, hash\)/);
    for (const file of [...sourceFiles('common'), ...sourceFiles('ingest')]) {
      const text = readFileSync(join(PACKAGE_ROOT, file), 'utf8');
      assert.doesNotMatch(text, /apiKey\s*[!=]==|[!=]==\s*apiKey|token\s*[!=]==/, `${file} compares a key with ===`);
    }
  });

  test('cross-client isolation: another client can neither read nor replay (nor block) an order by its key', async () => {
    const a = await post(alice, 'shared-key', order('alice-cust'));
    assert.equal(a.status, 202);
    assert.equal((await get(alice, 'shared-key')).status, 200);
    assert.equal((await get(bob, 'shared-key')).status, 404, "bob cannot see alice's order");
    // Bob using the same key with the same body: his own new order, not a replay of alice's 202.
    const b = await post(bob, 'shared-key', order('alice-cust'));
    assert.equal(b.status, 202);
    assert.equal(b.headers['idempotent-replayed'], undefined);
    assert.notEqual((b.json as { order_ref: string }).order_ref, (a.json as { order_ref: string }).order_ref);
    // With another body: still his own order (alice's fingerprint is invisible to him: no 422).
    assert.equal((await post(bob, 'shared-key-2', order('x'))).status, 202);
    assert.equal((await post(alice, 'shared-key-2', order('y'))).status, 202);
    // Once applied, each sees only their own row.
    const worker = await startWorker(env.config, { logger: silent });
    try {
      await waitFor(
        'both applied',
        async () => Number((await pool.query('SELECT count(*) AS n FROM orders')).rows[0].n) === 4,
      );
      const mine = (await get(bob, 'shared-key')).json as { status: string; order_ref: string };
      assert.equal(mine.status, 'applied');
      assert.equal(mine.order_ref, (b.json as { order_ref: string }).order_ref);
      assert.equal(
        ((await get(alice, 'shared-key')).json as { order_ref: string }).order_ref,
        (a.json as { order_ref: string }).order_ref,
      );
    } finally {
      await worker.stop();
    }
  });

  test('/metrics of ingest, a worker and the lag exporter expose no order data (customer, SKU, order id, key, metadata, client)', async () => {
    assert.equal((await post(alice, `${SECRET}-key`, order(`${SECRET}-cust`))).status, 202);
    let worker: WorkerHandle | undefined;
    const exporter = await startLagExporter(env.config, { logger: silent });
    try {
      worker = await startWorker(env.config, { logger: silent });
      await waitFor(
        'applied',
        async () =>
          (await pool.query('SELECT 1 FROM orders WHERE idempotency_key = $1', [`${SECRET}-key`])).rowCount === 1,
      );
      const texts = [
        (await http(ingest.metricsUrl, { path: '/metrics' })).text,
        (await http(`http://127.0.0.1:${worker.port}`, { path: '/metrics' })).text,
        (await http(`http://127.0.0.1:${exporter.port}`, { path: '/metrics' })).text,
      ];
      for (const text of texts) {
        assert.ok(text.includes('surge_'), 'a real metrics page');
        for (const secret of [SECRET, alice.id, bob.id, 'alice-cust', 'shared-key', alice.apiKey.slice(0, 8)]) {
          assert.equal(text.includes(secret), false, `metrics contain ${secret}`);
        }
      }
    } finally {
      await worker?.stop();
      await exporter.stop();
    }
  });

  test('SQL is static text with $n parameters; the only interpolations are static sql/ files, escaped identifiers and clamped integers; data goes in by COPY through the escaping encoder', () => {
    const files = ['common', 'ingest', 'workers', 'metrics', 'maintenance', 'cli'].flatMap(sourceFiles);
    const allowed = [/^pg\.escapeIdentifier\([^)]*\)$/, /^Math\.max\(1, Math\.floor\([^`]*\)\)$/];
    const findings: string[] = [];
    for (const file of files) {
      const text = readFileSync(join(PACKAGE_ROOT, file), 'utf8');
      // Every query(…)/copyFrom(…) whose text is built: a template literal with ${…} or a + concatenation.
      for (const [, sql = ''] of text.matchAll(/\b(?:query|copyFrom|copyTo)(?:<[^>]*>)?\(\s*`([^`]*)`/g)) {
        for (const [, hole = ''] of sql.matchAll(/\$\{([^}]*(?:\}[^}]*)*?)\}/g)) {
          const expr = hole.trim();
          // A constant that is the text of a static file under sql/: `const X = () => sqlFile('…')`.
          const staticFile = /^([A-Z_]+)\(\)$/.exec(expr);
          const isStatic =
            staticFile !== null && new RegExp(`const ${staticFile[1]} = \\(\\) => sqlFile\\('[a-z_/]+'\\);`).test(text);
          if (!isStatic && !allowed.some((re) => re.test(expr))) findings.push(`${relative('.', file)}: \${${expr}}`);
        }
      }
      for (const m of text.matchAll(/\b(?:query|copyFrom)(?:<[^>]*>)?\(\s*(['"`][^'"`]*['"`]\s*\+|[A-Za-z_.]+\s*\+)/g))
        findings.push(`${file}: concatenation ${m[1]}`);
    }
    assert.deepEqual(findings, [], 'string-built SQL');
    // The apply path: COPY's statement is a static file, its data only comes from copyRow.
    const apply = readFileSync(join(PACKAGE_ROOT, 'workers', 'apply.ts'), 'utf8');
    const copyCalls = [...apply.matchAll(/copyFrom\(([^)]*)\)/g)].map((m) => m[1]);
    assert.deepEqual(copyCalls, ['sql'], 'COPY runs in one helper (copyIn) only');
    const copies = [...apply.matchAll(/copyIn\(client, ([^,]+),/g)].map((m) => m[1]);
    assert.deepEqual(copies, ['sql.copy'], 'COPY runs the statement statementsFor made');
    // That statement is a static sql/ file, rewritten only by literal replacements (a table name).
    const copyTexts = [...apply.matchAll(/\bcopy = ([^;]+);/g)].map((m) => m[1]);
    assert.ok(copyTexts.length > 0, 'statementsFor builds the COPY statement');
    for (const text of copyTexts)
      assert.match(
        text ?? '',
        /^(?:sqlFile\('apply\/copy_stage'\)|derive\(copy, \/[^/]+\/g?, '[a-z_]+', '[^']*'\))$/,
        'COPY statements are static sql/ files with literal rewrites',
      );
    assert.match(apply, /copyRow\(rowValues\)/, 'order rows come from the escaping encoder (workers/copy.ts)');
    // The order travels as its JSON text, a value like any other: PostgreSQL parses it as jsonb
    // and the insert reads fields out of it (operators, no SQL built from its content).
    assert.match(apply, /rowValues\[5\] = orderJson;/, 'the order is one escaped value of the row');
    // sql/ holds no dynamic SQL (no EXECUTE format(...) with unescaped input; EXECUTE of a constant string is static).
    const sqlDir = join(PACKAGE_ROOT, 'sql');
    const sqlFiles = readdirSync(sqlDir, { recursive: true })
      .map(String)
      .filter((f) => f.endsWith('.sql'));
    assert.ok(sqlFiles.length > 5);
    for (const f of sqlFiles)
      assert.doesNotMatch(
        readFileSync(join(sqlDir, f), 'utf8'),
        /\bEXECUTE\b\s+(?!format\([^)]*%I|FUNCTION\b|PROCEDURE\b|'[^']*')/i,
        f,
      );
  });
});
