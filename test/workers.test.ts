// The apply path against real Redis and PostgreSQL, one worker in this process.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Writable } from 'node:stream';
import fc from 'fast-check';
import { pino } from 'pino';
import pg from 'pg';
import copyStreams from 'pg-copy-streams';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { dlqKey, GROUP, shardFor, streamKey } from '../common/keys.js';
import { createPool } from '../common/db.js';
import { encodeEntry } from '../common/entry.js';
import { canonicalOrderJson } from '../common/order.js';
import { applyBatch, classifyError, encodeBatch } from '../workers/apply.js';
import { copyBuffer, copyRow } from '../workers/copy.js';
import { startWorker, type WorkerHandle } from '../workers/worker.js';
import { createTestEnv } from '../devkit/scratch.js';
import { waitFor } from '../devkit/wait.js';
import {
  closeWorkerEnv,
  count,
  enqueue,
  enqueueRaw,
  metricSum,
  openWorkerEnv,
  type QueuedOrder,
  scrape,
  simpleOrder,
  type WorkerEnv,
  waitForDrained,
} from './support/workers.js';
import { defined } from './support/defined.js';

interface Ctx extends WorkerEnv {
  workers: WorkerHandle[];
}

async function setup(overrides: Record<string, string> = {}): Promise<Ctx> {
  return { ...(await openWorkerEnv({ SURGE_WORKER_THREADS: '2', ...overrides })), workers: [] };
}

async function teardown(ctx: Ctx): Promise<void> {
  await Promise.all(ctx.workers.map((w) => w.stop()));
  await closeWorkerEnv(ctx);
}

describe('COPY text encoding', () => {
  test('any storable string survives a real COPY (property)', async () => {
    const env = await createTestEnv();
    const client = new pg.Client({ connectionString: env.db.url });
    await client.connect();
    try {
      await client.query('CREATE TABLE t (i int, a text, b text)');
      const noNul = fc.string({ unit: 'binary', maxLength: 40 }).filter((s) => !s.includes('\u0000'));
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.tuple(noNul, fc.option(noNul, { nil: null })), { minLength: 1, maxLength: 20 }),
          async (rows) => {
            await client.query('TRUNCATE t');
            const { buffer } = copyBuffer(rows.map(([a, b], i) => copyRow([String(i), a, b])));
            await pipeline(Readable.from([buffer]), client.query(copyStreams.from('COPY t (i, a, b) FROM STDIN')));
            const back = await client.query<{ a: string; b: string | null }>('SELECT a, b FROM t ORDER BY i');
            assert.deepEqual(
              back.rows.map((r) => [r.a, r.b]),
              rows,
            );
          },
        ),
        { numRuns: 60 },
      );
    } finally {
      await client.end();
      await env.cleanup();
    }
  });

  test('row ends let a batch be split at any row', () => {
    const { buffer, rowEnds } = copyBuffer([copyRow(['1', 'é\t']), copyRow(['2', '🎉'])]);
    assert.equal(buffer.subarray(0, rowEnds[0]).toString(), '1\té\\t\n');
    assert.equal(buffer.subarray(rowEnds[0], rowEnds[1]).toString(), '2\t🎉\n');
  });

  test('total_cents is the lines’ sum, exact past 2^53 (100 lines at the largest qty and price)', async () => {
    const env = await createTestEnv();
    const pool = createPool(env.db.url, { max: 1, applicationName: 'surge-test' });
    try {
      const max = Array.from({ length: 100 }, () => ({ sku: 'a', qty: 10_000, unit_price_cents: 100_000_000_001 }));
      const small = [
        { sku: 'a', qty: 2, unit_price_cents: 150 },
        { sku: 'b', qty: 1, unit_price_cents: 1 },
      ];
      const entries = [max, small].map((items, i) => ({
        id: `1714564800000-${i}`,
        fields: encodeEntry({
          clientId: 'c1',
          idempotencyKey: `k${i}`,
          canonical: canonicalOrderJson({ customer_id: 'x', currency: 'EUR', items }),
        }),
        deliveries: 1,
      }));
      const outcome = await applyBatch(pool, { stream: 's', entries }, encodeBatch(entries), { retryBudgetMs: 5000 });
      assert.equal(outcome.stats.inserted, 2);
      const totals = await pool.query<{ total_cents: string }>('SELECT total_cents FROM orders ORDER BY entry_id');
      assert.deepEqual(
        totals.rows.map((r) => r.total_cents),
        [(100n * 10_000n * 100_000_000_001n).toString(), '301'],
      );
    } finally {
      await pool.end();
      await env.cleanup();
    }
  });

  test('orders too big for the PLAIN stage are staged wide: by their length, or after the COPY refuses them', async () => {
    const env = await createTestEnv();
    const pool = createPool(env.db.url, { max: 1, applicationName: 'surge-test' });
    try {
      const items = [{ sku: 'a', qty: 1, unit_price_cents: 5 }];
      // A long string (its COPY row alone is over 8160 bytes), and many small numbers (a short row
      // whose jsonb is over 8160 bytes: only the COPY finds out, with 54000).
      const long = { note: 'x'.repeat(9000) };
      const numbers = { n: Array.from({ length: 1500 }, () => 1) };
      const small = { s: 1 };
      const batch = (from: number, ms: Array<Record<string, unknown>>) =>
        ms.map((metadata, i) => ({
          id: `1714564800000-${from + i}`,
          fields: encodeEntry({
            clientId: 'c1',
            idempotencyKey: `k${from + i}`,
            canonical: canonicalOrderJson({ customer_id: 'x', currency: 'EUR', items, metadata }),
          }),
          deliveries: 1,
        }));
      for (const [from, ms] of [
        [0, [small, long]],
        [2, [numbers, small]],
        [4, [small]],
      ] as const) {
        const entries = batch(from, [...ms]);
        const outcome = await applyBatch(pool, { stream: 's', entries }, encodeBatch(entries), { retryBudgetMs: 5000 });
        assert.equal(outcome.stats.inserted, entries.length);
        assert.deepEqual(outcome.stats.retries, {});
        assert.deepEqual(outcome.deadLetters, []);
      }
      const rows = await pool.query<{ metadata: unknown }>('SELECT metadata FROM orders ORDER BY entry_id');
      assert.deepEqual(
        rows.rows.map((r) => r.metadata),
        [small, long, numbers, small, small],
      );
    } finally {
      await pool.end();
      await env.cleanup();
    }
  });

  test('a first delivery whose key is already applied: the batch goes again with the arbiter, nothing twice', async () => {
    // First deliveries are inserted without ON CONFLICT; a key already in `orders` fails that try
    // (23505) and the batch is applied again with it: no dead letter, no bisection, no retry.
    const env = await createTestEnv();
    const pool = createPool(env.db.url, { max: 1, applicationName: 'surge-test' });
    try {
      const order = { customer_id: 'x', currency: 'EUR', items: [{ sku: 'a', qty: 1, unit_price_cents: 5 }] };
      const entry = (i: number, key: string) => ({
        id: `1714564800000-${i}`,
        fields: encodeEntry({ clientId: 'c1', idempotencyKey: key, canonical: canonicalOrderJson(order) }),
        deliveries: 1,
      });
      const first = [entry(0, 'k0'), entry(1, 'k1')];
      const one = await applyBatch(pool, { stream: 's', entries: first }, encodeBatch(first), { retryBudgetMs: 5000 });
      assert.equal(one.stats.inserted, 2);
      // k1 again (an ingest retry written twice, a DLQ replay) between new keys, and k3 twice in the batch.
      const second = [entry(2, 'k2'), entry(3, 'k1'), entry(4, 'k3'), entry(5, 'k3')];
      const two = await applyBatch(pool, { stream: 's', entries: second, traced: true }, encodeBatch(second), {
        retryBudgetMs: 5000,
      });
      assert.deepEqual(
        two.steps?.events.map((e) => e.name),
        ['key_conflict'],
        'the first try met k1 and the batch went again with the arbiter',
      );
      assert.deepEqual(
        { inserted: two.stats.inserted, duplicate: two.stats.duplicate, commits: two.stats.commits },
        { inserted: 2, duplicate: 2, commits: 1 },
      );
      assert.deepEqual(two.stats.retries, {});
      assert.deepEqual(two.deadLetters, []);
      assert.deepEqual(
        two.ack,
        second.map((e) => e.id),
      );
      assert.deepEqual(two.committed.map((c) => c.entryId).sort(), ['1714564800000-2', '1714564800000-4']);
      const rows = await pool.query<{ idempotency_key: string; entry_id: string }>(
        'SELECT idempotency_key, entry_id FROM orders ORDER BY idempotency_key',
      );
      assert.deepEqual(
        rows.rows.map((r) => [r.idempotency_key, r.entry_id]),
        [
          ['k0', '1714564800000-0'],
          ['k1', '1714564800000-1'],
          ['k2', '1714564800000-2'],
          ['k3', '1714564800000-4'],
        ],
      );
      const lines = await pool.query<{ n: string }>('SELECT count(*) AS n FROM order_items');
      assert.equal(lines.rows[0]?.n, '4');
    } finally {
      await pool.end();
      await env.cleanup();
    }
  });

  test('an order PostgreSQL refuses is bisected out and dead-lettered with the decoder’s reason', async () => {
    // The apply step trusts the entry's version and stages the order as is; only the entry that
    // fails alone is decoded, so its dead letter names the field (or keeps PostgreSQL's error
    // when the order is valid).
    const env = await createTestEnv();
    const pool = createPool(env.db.url, { max: 1, applicationName: 'surge-test' });
    try {
      const good = { customer_id: 'x', currency: 'EUR', items: [{ sku: 'a', qty: 1, unit_price_cents: 5 }] };
      const orders = [
        canonicalOrderJson(good),
        canonicalOrderJson({ ...good, items: [{ sku: 'a', qty: 0, unit_price_cents: 5 }] }),
        canonicalOrderJson(good).replace('"x"', '"refused"'),
        '{"customer_id": "x"',
        canonicalOrderJson(good),
      ];
      await pool.query(`CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.customer_id = 'refused' THEN RAISE EXCEPTION 'customer refused' USING ERRCODE = 'check_violation'; END IF; RETURN NEW; END $$`);
      await pool.query('CREATE TRIGGER refuse BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION refuse()');
      const entries = orders.map((canonical, i) => ({
        id: `1714564800000-${i}`,
        fields: encodeEntry({ clientId: 'c1', idempotencyKey: `k${i}`, canonical }),
        deliveries: 1,
      }));
      const outcome = await applyBatch(pool, { stream: 's', entries }, encodeBatch(entries), { retryBudgetMs: 5000 });
      assert.equal(outcome.stats.inserted, 2);
      assert.deepEqual(outcome.ack, ['1714564800000-0', '1714564800000-4']);
      const dead = await pool.query<{ entry_id: string; reason: string; message: string; sqlstate: string }>(
        'SELECT entry_id, reason, message, sqlstate FROM dead_letters ORDER BY entry_id',
      );
      assert.deepEqual(
        dead.rows.map((r) => [r.entry_id, r.reason]),
        [
          ['1714564800000-1', 'undecodable'],
          ['1714564800000-2', 'permanent_error'],
          ['1714564800000-3', 'undecodable'],
        ],
      );
      const [qty, refused, notJson] = dead.rows;
      assert.match(defined(qty, 'qty 0').message, /^invalid order: \/items\/0\/qty must be >= 1/);
      assert.equal(qty?.sqlstate, '23514', 'PostgreSQL’s check on order_items.qty refused it');
      assert.match(defined(refused, 'refused').message, /customer refused/);
      assert.match(defined(notJson, 'not JSON').message, /^field o is not JSON/);
      assert.equal(notJson?.sqlstate, '22P02');
    } finally {
      await pool.end();
      await env.cleanup();
    }
  });

  test('SQLSTATE classes: data and integrity errors are permanent, the rest retried', () => {
    assert.equal(classifyError({ code: '23514' }).kind, 'permanent');
    assert.equal(classifyError({ code: '22P02' }).kind, 'permanent');
    assert.equal(classifyError({ code: 'P0001' }).kind, 'permanent');
    for (const code of ['40001', '40P01', '57P01', '08006', '53300', '42P01'])
      assert.equal(classifyError({ code }).kind, 'transient', code);
    assert.deepEqual(classifyError(new Error('Connection terminated unexpectedly')), {
      kind: 'transient',
      sqlstate: 'connection',
    });
    assert.deepEqual(classifyError({ code: 'ECONNREFUSED' }), { kind: 'transient', sqlstate: 'connection' });
  });
});

describe('workers apply orders', () => {
  test('strings with tabs, newlines, backslashes, \\N, quotes and emoji round-trip exactly', async () => {
    const ctx = await setup();
    try {
      const nasty = [
        'tab\there',
        'new\nline',
        'cr\rlf\r\n',
        'back\\slash\\',
        '\\N',
        'N\\',
        `quo"te's`,
        'emoji 🎉👩‍👩‍👧',
        '\\.',
        ',;|{}[]',
        'ünï©ødé',
      ];
      const orders: QueuedOrder[] = nasty.map((s, i) => ({
        client: 'c1',
        key: `nasty-${i}`,
        order: {
          customer_id: s,
          currency: 'USD',
          order_id: `${s}#${i}`,
          placed_at: '2024-05-01T12:00:00.123Z',
          items: [
            { sku: s, qty: 2, unit_price_cents: 150 },
            { sku: `x${s}`, qty: 1, unit_price_cents: 1 },
          ],
          metadata: { [s]: s, nested: { list: [s, '\\N', null] } },
        },
      }));
      const ids = await enqueue(ctx.redis, ctx.env.prefix, ctx.env.config.shards, orders);
      ctx.workers.push(await startWorker(ctx.env.config));
      await waitForDrained(ctx.redis, ctx.env.prefix, ctx.env.config.shards);
      const rows = await ctx.db.query<{
        id: string;
        idempotency_key: string;
        customer_id: string;
        order_id: string;
        metadata: Record<string, unknown>;
        total_cents: string;
        received_at: Date;
        entry_id: string;
        stream: string;
        placed_at: Date;
      }>('SELECT * FROM orders ORDER BY id');
      assert.equal(rows.rows.length, nasty.length);
      for (const r of rows.rows) {
        const i = Number(r.idempotency_key.slice('nasty-'.length));
        const o = defined(orders[i], `order ${i}`);
        assert.equal(r.customer_id, o.order.customer_id);
        assert.equal(r.order_id, o.order.order_id);
        assert.deepEqual(r.metadata, o.order.metadata);
        assert.equal(r.total_cents, '301');
        assert.equal(r.entry_id, ids[i]);
        assert.equal(r.stream, streamKey(ctx.env.prefix, shardFor('c1', o.key, ctx.env.config.shards)));
        assert.equal(r.received_at.getTime(), Number(defined(ids[i], `entry ${i}`).split('-')[0]));
        assert.equal(r.placed_at.toISOString(), '2024-05-01T12:00:00.123Z');
        const items = await ctx.db.query<{ line: number; sku: string; qty: number; unit_price_cents: string }>(
          'SELECT line, sku, qty, unit_price_cents FROM order_items WHERE order_pk = $1 ORDER BY line',
          [r.id],
        );
        assert.deepEqual(
          items.rows.map((x) => [x.line, x.sku, x.qty, Number(x.unit_price_cents)]),
          o.order.items.map((x, j) => [j + 1, x.sku, x.qty, x.unit_price_cents]),
        );
      }
    } finally {
      await teardown(ctx);
    }
  });

  test('10,000 orders with 20 % redelivered duplicates → exactly 10,000 rows, each once', async () => {
    const ctx = await setup({ SURGE_CLAIM_TIMEOUT_MS: '3000', SURGE_CLAIM_INTERVAL_MS: '200' });
    try {
      const n = 10_000;
      const orders: QueuedOrder[] = Array.from({ length: n }, (_, i) => ({
        client: `c${i % 3}`,
        key: `order-${i}`,
        order: simpleOrder(i),
      }));
      // 2,000 duplicates: 1,000 right behind their original (same batch) and 1,000 at the end
      // (a later batch) — what an ambiguous XADD retry or a client replay puts in the stream.
      const stream: QueuedOrder[] = [];
      orders.forEach((o, i) => {
        stream.push(o);
        if (i % 10 === 0) stream.push(o);
      });
      for (let i = 5; i < n; i += 10) stream.push(defined(orders[i], `order ${i}`));
      await enqueue(ctx.redis, ctx.env.prefix, ctx.env.config.shards, stream);
      // Redelivery: a consumer that reads 500 entries of every shard and dies before acking.
      for (let s = 0; s < ctx.env.config.shards; s++) {
        await ctx.redis.xreadgroup('GROUP', GROUP, 'ghost', 'COUNT', 500, 'STREAMS', streamKey(ctx.env.prefix, s), '>');
      }
      const worker = await startWorker(ctx.env.config, { consumerName: 'w1' });
      ctx.workers.push(worker);
      await waitForDrained(ctx.redis, ctx.env.prefix, ctx.env.config.shards, 120_000);
      assert.equal(await count(ctx.db, 'SELECT count(*) AS n FROM orders'), n);
      assert.equal(await count(ctx.db, 'SELECT count(DISTINCT (client_id, idempotency_key)) AS n FROM orders'), n);
      assert.equal(await count(ctx.db, 'SELECT count(*) AS n FROM order_items'), n);
      assert.equal(await count(ctx.db, "SELECT count(*) AS n FROM orders WHERE status = 'applied'"), n);
      // total_cents = qty * price for the single item of each order
      assert.equal(
        await count(
          ctx.db,
          'SELECT count(*) AS n FROM orders o JOIN order_items i ON i.order_pk = o.id WHERE o.total_cents <> i.qty * i.unit_price_cents',
        ),
        0,
      );
      const text = await scrape(worker.port);
      assert.equal(metricSum(text, 'surge_orders_applied_total', { result: 'inserted' }), n);
      assert.equal(metricSum(text, 'surge_orders_applied_total', { result: 'duplicate' }), 2000);
      assert.equal(metricSum(text, 'surge_entries_claimed_total'), 2000);
      assert.equal(metricSum(text, 'surge_order_end_to_end_seconds_count'), n);
      assert.ok(metricSum(text, 'surge_apply_batch_size_count') > 0);
    } finally {
      await teardown(ctx);
    }
  });

  test('a poison entry (bad payload) in a batch of 1,000 → 999 applied, 1 dead-lettered with its reason', async () => {
    const ctx = await setup({ SURGE_SHARDS: '1', SURGE_BATCH_SIZE: '1000', SURGE_BATCH_LINGER_MS: '200' });
    try {
      const orders = Array.from({ length: 999 }, (_, i) => ({ client: 'c1', key: `k-${i}`, order: simpleOrder(i) }));
      await enqueue(ctx.redis, ctx.env.prefix, 1, orders.slice(0, 500));
      const poison = ['v', '1', 'c', 'c1', 'k', 'poison', 'o', '{"customer_id": "x", "currency": "EURO", "items": []'];
      const poisonId = await enqueueRaw(ctx.redis, ctx.env.prefix, 0, poison);
      await enqueue(ctx.redis, ctx.env.prefix, 1, orders.slice(500));
      const worker = await startWorker(ctx.env.config);
      ctx.workers.push(worker);
      await waitForDrained(ctx.redis, ctx.env.prefix, 1);
      assert.equal(await count(ctx.db, 'SELECT count(*) AS n FROM orders'), 999);
      const dl = await ctx.db.query('SELECT * FROM dead_letters');
      assert.equal(dl.rows.length, 1);
      assert.equal(dl.rows[0].entry_id, poisonId);
      assert.equal(dl.rows[0].reason, 'undecodable');
      assert.match(dl.rows[0].message, /not JSON/);
      assert.equal(dl.rows[0].payload, poison[7]);
      assert.equal(dl.rows[0].idempotency_key, 'poison');
      const dlq = await ctx.redis.xrange(dlqKey(ctx.env.prefix, 0), '-', '+');
      assert.equal(dlq.length, 1);
      const f = defined(dlq[0], 'the DLQ entry')[1];
      assert.deepEqual(f.slice(0, 8), poison);
      const field = (k: string) => f[f.indexOf(k) + 1];
      assert.equal(field('dl_id'), poisonId);
      assert.equal(field('dl_reason'), 'undecodable');
      assert.equal(field('dl_stream'), streamKey(ctx.env.prefix, 0));
      const text = await scrape(worker.port);
      assert.equal(metricSum(text, 'surge_orders_applied_total', { result: 'dead_lettered' }), 1);
      assert.equal(metricSum(text, 'surge_apply_batch_size_count'), 1, 'all 1,000 entries went in one batch');
    } finally {
      await teardown(ctx);
    }
  });

  test('a permanent PostgreSQL error isolates the bad entry (split) and commits the rest', async () => {
    const ctx = await setup({ SURGE_SHARDS: '1', SURGE_BATCH_SIZE: '1000', SURGE_BATCH_LINGER_MS: '200' });
    try {
      // A constraint only this test's database has: one customer is refused by PostgreSQL.
      await ctx.db.query(`CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.customer_id = 'refused' THEN RAISE EXCEPTION 'customer refused' USING ERRCODE = 'check_violation'; END IF; RETURN NEW; END $$`);
      await ctx.db.query('CREATE TRIGGER refuse BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION refuse()');
      await ctx.db.query("INSERT INTO inventory (sku, available) VALUES ('s', 1000)");
      const orders: QueuedOrder[] = Array.from({ length: 300 }, (_, i) => ({
        client: 'c1',
        key: `k-${i}`,
        order: {
          ...simpleOrder(i, [{ sku: 's', qty: 1, unit_price_cents: 5 }]),
          customer_id: i === 137 ? 'refused' : `c${i}`,
        },
      }));
      const ids = await enqueue(ctx.redis, ctx.env.prefix, 1, orders);
      const worker = await startWorker(ctx.env.config);
      ctx.workers.push(worker);
      await waitForDrained(ctx.redis, ctx.env.prefix, 1);
      assert.equal(await count(ctx.db, 'SELECT count(*) AS n FROM orders'), 299);
      assert.equal(await count(ctx.db, "SELECT count(*) AS n FROM orders WHERE customer_id = 'refused'"), 0);
      assert.equal(
        await count(ctx.db, "SELECT available AS n FROM inventory WHERE sku = 's'"),
        1000 - 299,
        'stock only for committed orders',
      );
      const dl = await ctx.db.query('SELECT * FROM dead_letters');
      assert.equal(dl.rows.length, 1);
      assert.equal(dl.rows[0].entry_id, ids[137]);
      assert.equal(dl.rows[0].reason, 'permanent_error');
      assert.equal(dl.rows[0].sqlstate, '23514');
      assert.match(dl.rows[0].message, /customer refused/);
      assert.equal(await ctx.redis.xlen(dlqKey(ctx.env.prefix, 0)), 1);
    } finally {
      await teardown(ctx);
    }
  });

  test('PostgreSQL connection killed mid-batch (pg_terminate_backend) → batch retried, nothing lost or doubled', async () => {
    const ctx = await setup({ SURGE_SHARDS: '2', SURGE_BATCH_SIZE: '200' });
    const blocker = new pg.Client({ connectionString: ctx.env.db.url });
    await blocker.connect();
    try {
      await ctx.db.query("INSERT INTO inventory (sku, available) VALUES ('hot', 100000)");
      const orders: QueuedOrder[] = Array.from({ length: 2000 }, (_, i) => ({
        client: 'c1',
        key: `k-${i}`,
        order: simpleOrder(i, [{ sku: i % 2 ? 'hot' : `cold-${i}`, qty: 1, unit_price_cents: 10 }]),
      }));
      // Hold the hot SKU's row lock: every batch stops in its stock step, mid-transaction.
      await blocker.query('BEGIN');
      await blocker.query("SELECT * FROM inventory WHERE sku = 'hot' FOR UPDATE");
      await enqueue(ctx.redis, ctx.env.prefix, 2, orders);
      const worker = await startWorker(ctx.env.config);
      ctx.workers.push(worker);
      const victims = await waitFor('worker backends waiting on the row lock', async () => {
        const r = await ctx.db.query<{ pid: number }>(
          "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'surge-worker' AND wait_event_type = 'Lock'",
        );
        return r.rows.length >= 2 ? r.rows.map((x) => x.pid) : undefined;
      });
      for (const pid of victims) await ctx.db.query('SELECT pg_terminate_backend($1)', [pid]);
      await blocker.query('COMMIT');
      await waitForDrained(ctx.redis, ctx.env.prefix, 2);
      assert.equal(await count(ctx.db, 'SELECT count(*) AS n FROM orders'), 2000);
      assert.equal(await count(ctx.db, 'SELECT count(DISTINCT idempotency_key) AS n FROM orders'), 2000);
      assert.equal(await count(ctx.db, 'SELECT count(*) AS n FROM order_items'), 2000);
      assert.equal(await count(ctx.db, "SELECT available AS n FROM inventory WHERE sku = 'hot'"), 100000 - 1000);
      const text = await scrape(worker.port);
      assert.ok(
        metricSum(text, 'surge_apply_retries_total') >= victims.length,
        text
          .split('\n')
          .filter((l) => l.includes('retries'))
          .join('\n'),
      );
      assert.equal(metricSum(text, 'surge_orders_applied_total', { result: 'inserted' }), 2000);
      assert.equal(metricSum(text, 'surge_orders_applied_total', { result: 'dead_lettered' }), 0);
    } finally {
      await blocker.end().catch(() => {});
      await teardown(ctx);
    }
  });

  test('PostgreSQL unavailable longer than the retry budget → the worker keeps its entries (no claim, no max_deliveries) and applies them once it is back', async () => {
    const ctx = await setup({
      SURGE_SHARDS: '1',
      SURGE_CLAIM_TIMEOUT_MS: '1600',
      SURGE_CLAIM_INTERVAL_MS: '50',
      SURGE_MAX_DELIVERIES: '1',
    });
    try {
      // Outage switch of this test's database: while on, every insert into orders fails with
      // 57P03 (cannot_connect_now), as a starting or failing-over server would answer.
      await ctx.db.query('CREATE TABLE outage (down boolean NOT NULL)');
      await ctx.db.query('INSERT INTO outage VALUES (true)');
      await ctx.db.query(`CREATE FUNCTION outage() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF (SELECT down FROM outage) THEN RAISE EXCEPTION 'server unavailable' USING ERRCODE = 'cannot_connect_now'; END IF; RETURN NEW; END $$`);
      await ctx.db.query('CREATE TRIGGER outage BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION outage()');
      await enqueue(
        ctx.redis,
        ctx.env.prefix,
        1,
        Array.from({ length: 50 }, (_, i) => ({ client: 'c1', key: `k-${i}`, order: simpleOrder(i) })),
      );
      let keptRounds = 0;
      const logger = pino(
        { level: 'warn' },
        new Writable({
          write(chunk: Buffer, _enc, done) {
            if (chunk.toString().includes('batch kept and retried')) keptRounds++;
            done();
          },
        }),
      );
      const worker = await startWorker(ctx.env.config, { logger });
      ctx.workers.push(worker);
      // Each round lasts at least the retry budget (400 ms = a quarter of the claim timeout) plus a
      // pause: 5 rounds outlast the 1,600 ms claim timeout, so without the idle refresh the entries
      // would be claimed (a second delivery, over SURGE_MAX_DELIVERIES=1, dead-lettered).
      await waitFor('five give-up rounds', () => keptRounds >= 5);
      const pending = (await ctx.redis.xpending(streamKey(ctx.env.prefix, 0), GROUP, '-', '+', 100)) as Array<
        [string, string, number, number]
      >;
      assert.equal(pending.length, 50);
      assert.deepEqual(new Set(pending.map((p) => p[3])), new Set([1]), 'delivered once each: never claimed');
      await ctx.db.query('UPDATE outage SET down = false');
      await waitForDrained(ctx.redis, ctx.env.prefix, 1);
      assert.equal(await count(ctx.db, 'SELECT count(*) AS n FROM orders'), 50);
      assert.equal(await count(ctx.db, 'SELECT count(*) AS n FROM dead_letters'), 0);
      const text = await scrape(worker.port);
      assert.ok(metricSum(text, 'surge_apply_retries_total', { sqlstate: '57P03' }) >= 4);
      assert.equal(metricSum(text, 'surge_entries_claimed_total'), 0);
    } finally {
      await teardown(ctx);
    }
  });

  test('a batch that runs longer than the claim timeout is not claimed while its worker lives (heartbeat)', async () => {
    // Claim timeout 2 s (statement timeout 500 ms). A poison entry among 256 makes the batch
    // bisect: 17 transactions, each slowed by 250 ms, ≈ 4 s in all — twice the claim timeout.
    const ctx = await setup({ SURGE_SHARDS: '1', SURGE_CLAIM_TIMEOUT_MS: '2000', SURGE_CLAIM_INTERVAL_MS: '50' });
    try {
      await ctx.db.query(
        `CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.25); RETURN NULL; END $$`,
      );
      await ctx.db.query('CREATE TRIGGER slow BEFORE INSERT ON orders FOR EACH STATEMENT EXECUTE FUNCTION slow()');
      await ctx.db.query(`CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.idempotency_key = 'k-100' THEN RAISE EXCEPTION 'poison' USING ERRCODE = 'check_violation'; END IF; RETURN NEW; END $$`);
      await ctx.db.query('CREATE TRIGGER poison BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION poison()');
      // Enqueued before the worker starts, so that its first read takes all 256 as one batch (a
      // worker already blocked on the stream would take the first entry alone).
      await enqueue(
        ctx.redis,
        ctx.env.prefix,
        1,
        Array.from({ length: 256 }, (_, i) => ({ client: 'c1', key: `k-${i}`, order: simpleOrder(i) })),
      );
      const a = await startWorker(ctx.env.config, { consumerName: 'slow-a' });
      ctx.workers.push(a);
      const key = streamKey(ctx.env.prefix, 0);
      await waitFor('worker a holds the batch', async () => {
        const summary = (await ctx.redis.xpending(key, GROUP)) as [
          number,
          string,
          string,
          Array<[string, string]> | null,
        ];
        return summary[3]?.some(([c, n]) => c === 'slow-a' && Number(n) === 256) ?? false;
      });
      // A second live consumer, claiming every 50 ms whatever has been idle for 2 s.
      const b = await startWorker(ctx.env.config, { consumerName: 'slow-b' });
      ctx.workers.push(b);
      await waitForDrained(ctx.redis, ctx.env.prefix, 1);
      assert.equal(await count(ctx.db, 'SELECT count(*) AS n FROM orders'), 255);
      const dl = await ctx.db.query<{ idempotency_key: string; deliveries: number }>(
        'SELECT idempotency_key, deliveries FROM dead_letters',
      );
      assert.deepEqual(
        dl.rows,
        [{ idempotency_key: 'k-100', deliveries: 1 }],
        'the poison entry alone, delivered once',
      );
      assert.equal(
        metricSum(await scrape(b.port), 'surge_entries_claimed_total'),
        0,
        'the second worker claimed nothing',
      );
      assert.equal(metricSum(await scrape(a.port), 'surge_entries_claimed_total'), 0);
    } finally {
      await teardown(ctx);
    }
  });

  test('reclaim: idle entries are claimed and applied, over-delivered ones dead-lettered, trimmed ones counted lost and acked', async () => {
    const ctx = await setup({
      SURGE_SHARDS: '1',
      SURGE_CLAIM_TIMEOUT_MS: '200',
      SURGE_CLAIM_INTERVAL_MS: '50',
      SURGE_MAX_DELIVERIES: '3',
    });
    try {
      const key = streamKey(ctx.env.prefix, 0);
      const ids = await enqueue(
        ctx.redis,
        ctx.env.prefix,
        1,
        [0, 1, 2].map((i) => ({ client: 'c1', key: `k-${i}`, order: simpleOrder(i) })),
      );
      await ctx.redis.xreadgroup('GROUP', GROUP, 'ghost', 'COUNT', 10, 'STREAMS', key, '>');
      // ids[1] has been delivered 3 times already; ids[2]'s payload is deleted while pending.
      await ctx.redis.xclaim(key, GROUP, 'ghost', 0, defined(ids[1], 'entry 1'), 'RETRYCOUNT', 3);
      await ctx.redis.xdel(key, defined(ids[2], 'entry 2'));
      const worker = await startWorker(ctx.env.config);
      ctx.workers.push(worker);
      await waitForDrained(ctx.redis, ctx.env.prefix, 1);
      const rows = await ctx.db.query<{ idempotency_key: string }>('SELECT idempotency_key FROM orders');
      assert.deepEqual(
        rows.rows.map((r) => r.idempotency_key),
        ['k-0'],
      );
      const dl = await ctx.db.query('SELECT entry_id, reason, deliveries, payload FROM dead_letters');
      assert.equal(dl.rows.length, 1);
      assert.equal(dl.rows[0].entry_id, ids[1]);
      assert.equal(dl.rows[0].reason, 'max_deliveries');
      assert.equal(dl.rows[0].deliveries, 4);
      assert.equal(dl.rows[0].payload, canonicalOrderJson(simpleOrder(1)));
      const text = await scrape(worker.port);
      assert.equal(metricSum(text, 'surge_entries_lost_total'), 1);
      assert.equal(metricSum(text, 'surge_orders_applied_total', { result: 'dead_lettered' }), 1);
      assert.equal(await ctx.redis.xlen(dlqKey(ctx.env.prefix, 0)), 1);
    } finally {
      await teardown(ctx);
    }
  });
});
