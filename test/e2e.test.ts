// The whole path with the real components: ingest (HTTP) → Redis Streams → workers → PostgreSQL,
// GET showing each state, and a dead letter fixed and replayed through `surge dlq replay`.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import pg from 'pg';
import { createClient } from '../common/clients.js';
import { PACKAGE_ROOT } from '../common/paths.js';
import { startIngest } from '../ingest/server.js';
import { startWorker, type WorkerHandle } from '../workers/worker.js';
import { createTestEnv, type TestEnv } from '../devkit/scratch.js';
import { waitFor } from '../devkit/wait.js';
import { http } from './support/http.js';
import { metricSum, scrape } from './support/workers.js';

const run = promisify(execFile);
const CLI = join(PACKAGE_ROOT, 'dist', 'cli', 'surge.js');

describe('end to end: POST → applied; dead letter → fixed → replayed exactly once', () => {
  let t: TestEnv;
  let db: pg.Pool;
  let ingest: Awaited<ReturnType<typeof startIngest>>;
  let worker: WorkerHandle;
  let apiKey: string;
  let base: string;

  before(async () => {
    t = await createTestEnv({ SURGE_WORKER_THREADS: '1', SURGE_PG_POOL_SIZE: '2' });
    db = new pg.Pool({ connectionString: t.db.url, max: 2 });
    apiKey = (await createClient(db, 'e2e-shop')).apiKey;
    ingest = await startIngest(t.config);
    worker = await startWorker(t.config);
    base = `http://127.0.0.1:${ingest.port}`;
  });
  after(async () => {
    await ingest?.stop();
    await worker?.stop();
    await db?.end();
    await t?.cleanup();
  });

  const post = (key: string, order: unknown) =>
    http(base, {
      method: 'POST',
      path: '/v1/orders',
      headers: { authorization: `Bearer ${apiKey}`, 'idempotency-key': key, 'content-type': 'application/json' },
      body: JSON.stringify(order),
    });
  const state = async (key: string) =>
    (await http(base, { path: `/v1/orders/${key}`, headers: { authorization: `Bearer ${apiKey}` } })).json as {
      status: string;
      reason?: string;
    };

  test('an accepted order is applied with stock reserved, and GET follows it', async () => {
    await db.query("INSERT INTO inventory (sku, available) VALUES ('e2e-sku', 3)");
    const res = await post('e2e-1', {
      customer_id: 'c1',
      currency: 'EUR',
      items: [{ sku: 'e2e-sku', qty: 2, unit_price_cents: 500 }],
    });
    assert.equal(res.status, 202, res.text);
    await waitFor('order e2e-1 applied', async () => (await state('e2e-1')).status === 'applied');
    const row = (await db.query("SELECT total_cents::int AS total, status FROM orders WHERE idempotency_key = 'e2e-1'"))
      .rows[0] as { total: number };
    assert.equal(row.total, 1000);
    assert.equal((await db.query("SELECT available::int AS a FROM inventory WHERE sku = 'e2e-sku'")).rows[0].a, 1);
    const over = await post('e2e-2', {
      customer_id: 'c1',
      currency: 'EUR',
      items: [{ sku: 'e2e-sku', qty: 2, unit_price_cents: 500 }],
    });
    assert.equal(over.status, 202);
    await waitFor('order e2e-2 rejected', async () => (await state('e2e-2')).status === 'rejected');
    assert.equal((await state('e2e-2')).reason, 'out_of_stock');
    assert.equal(
      (await db.query("SELECT available::int AS a FROM inventory WHERE sku = 'e2e-sku'")).rows[0].a,
      1,
      'no partial fill',
    );
  });

  test('a dead letter replayed after fixing its cause is applied once; a forced replay of it is a duplicate', async () => {
    await db.query("ALTER TABLE orders ADD CONSTRAINT e2e_block CHECK (customer_id <> 'blocked')");
    const order = { customer_id: 'blocked', currency: 'EUR', items: [{ sku: 'x', qty: 1, unit_price_cents: 1 }] };
    assert.equal((await post('e2e-dl', order)).status, 202);
    await waitFor('dead-lettered', async () => (await state('e2e-dl')).status === 'dead_lettered');
    const dl = (await db.query("SELECT id, sqlstate, reason FROM dead_letters WHERE idempotency_key = 'e2e-dl'"))
      .rows as Array<{ id: string; sqlstate: string; reason: string }>;
    assert.equal(dl.length, 1);
    assert.equal(dl[0]?.sqlstate, '23514');
    assert.equal(dl[0]?.reason, 'permanent_error');

    await db.query('ALTER TABLE orders DROP CONSTRAINT e2e_block');
    const replay = async (...extra: string[]) =>
      JSON.parse(
        (
          await run(process.execPath, [CLI, 'dlq', 'replay', String(dl[0]?.id), '--json', ...extra], {
            env: { ...process.env, ...t.env },
          })
        ).stdout,
      ) as { outcome: string };
    assert.equal((await replay()).outcome, 'replayed');
    await waitFor('replayed order applied', async () => (await state('e2e-dl')).status === 'applied');
    const rows = async () =>
      (await db.query("SELECT id, entry_id, applied_at FROM orders WHERE idempotency_key = 'e2e-dl'")).rows;
    const once = await rows();
    assert.equal(once.length, 1);

    const duplicatesBefore = metricSum(await scrape(worker.port), 'surge_orders_applied_total', {
      result: 'duplicate',
    });
    assert.equal((await replay('--force')).outcome, 'replayed');
    await waitFor(
      'the forced replay counted as a duplicate',
      async () =>
        metricSum(await scrape(worker.port), 'surge_orders_applied_total', { result: 'duplicate' }) ===
        duplicatesBefore + 1,
    );
    assert.deepEqual(await rows(), once, 'the applied order is unchanged');
  });
});
