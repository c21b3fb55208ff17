// Stock under contention: multi-item orders over a few hot SKUs, two workers, small batches.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pg from 'pg';
import type { Order } from '../common/order.js';
import { startWorker } from '../workers/worker.js';
import { sqlFile } from '../common/sql.js';
import { createTestDatabase } from '../devkit/scratch.js';
import {
  closeWorkerEnv,
  enqueue,
  metricSum,
  openWorkerEnv,
  type QueuedOrder,
  scrape,
  waitForDrained,
} from './support/workers.js';
import { defined } from './support/defined.js';

test('multi-item orders across hot SKUs, two workers: no deadlock errors, no partial fills, never below zero', async () => {
  const w = await openWorkerEnv({
    SURGE_SHARDS: '4',
    SURGE_BATCH_SIZE: '20',
    SURGE_BATCH_LINGER_MS: '0',
    SURGE_WORKER_THREADS: '2',
  });
  const { env, redis, db } = w;
  const workers: Array<Awaited<ReturnType<typeof startWorker>>> = [];
  try {
    const hot = ['hot-a', 'hot-b', 'hot-c', 'hot-d', 'hot-e'];
    const initial = 400;
    for (const sku of hot) await db.query('INSERT INTO inventory (sku, available) VALUES ($1, $2)', [sku, initial]);
    // Deterministic pseudo-random orders: 2–4 lines, hot SKUs in shuffled order (a SKU may repeat
    // on two lines), plus an untracked SKU now and then.
    let seed = 42;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const orders: QueuedOrder[] = Array.from({ length: 1500 }, (_, i) => {
      const items: Order['items'] = Array.from({ length: 2 + rnd(3) }, () => ({
        sku: defined(hot[rnd(hot.length)], 'a hot SKU'),
        qty: 1 + rnd(3),
        unit_price_cents: 100,
      }));
      if (i % 7 === 0) items.push({ sku: `free-${i}`, qty: 5, unit_price_cents: 1 });
      return { client: 'c1', key: `k-${i}`, order: { customer_id: `c${i}`, currency: 'EUR', items } };
    });
    // Both workers are reading before the orders arrive: started one after the other with the
    // streams already full, the first could drain them all before the second began (seen on a
    // loaded CI host), and there would be no contention between workers to test.
    workers.push(
      ...(await Promise.all([
        startWorker(env.config, { consumerName: 'w1' }),
        startWorker(env.config, { consumerName: 'w2' }),
      ])),
    );
    await enqueue(redis, env.prefix, 4, orders);
    await waitForDrained(redis, env.prefix, 4);

    const byKey = new Map(orders.map((o) => [o.key, o.order]));
    const rows = (
      await db.query<{ idempotency_key: string; status: string; reason: string | null }>(
        'SELECT idempotency_key, status, reason FROM orders',
      )
    ).rows;
    assert.equal(rows.length, orders.length);
    const stock = new Map(
      (await db.query<{ sku: string; available: string }>('SELECT sku, available FROM inventory')).rows.map((r) => [
        r.sku,
        Number(r.available),
      ]),
    );
    // Conservation: what left each SKU is exactly what the applied orders asked for — a rejected
    // order took nothing (no partial fills), an applied one took all of its lines.
    const taken = new Map(hot.map((s) => [s, 0]));
    let applied = 0;
    let rejected = 0;
    for (const r of rows) {
      if (r.status === 'rejected') {
        assert.equal(r.reason, 'out_of_stock');
        rejected++;
        continue;
      }
      applied++;
      for (const item of defined(byKey.get(r.idempotency_key), r.idempotency_key).items) {
        const before = taken.get(item.sku);
        if (before !== undefined) taken.set(item.sku, before + item.qty);
      }
    }
    for (const sku of hot) {
      const left = defined(stock.get(sku), `stock of ${sku}`);
      assert.ok(left >= 0, `${sku} below zero`);
      assert.equal(initial - left, taken.get(sku), `${sku}: stock taken = applied quantities`);
    }
    assert.ok(applied > 100 && rejected > 100, `contention was real: ${applied} applied, ${rejected} rejected`);
    // Every rejected order really lacked stock at the end: at least one of its SKUs cannot fill it now.
    for (const r of rows.filter((x) => x.status === 'rejected')) {
      const need = new Map<string, number>();
      for (const item of defined(byKey.get(r.idempotency_key), r.idempotency_key).items)
        if (stock.has(item.sku)) need.set(item.sku, (need.get(item.sku) ?? 0) + item.qty);
      assert.ok(
        [...need].some(([sku, q]) => defined(stock.get(sku), `stock of ${sku}`) < q),
        `${r.idempotency_key} was rejected but fits`,
      );
    }
    for (const w of workers) {
      const text = await scrape(w.port);
      assert.equal(metricSum(text, 'surge_apply_retries_total', { sqlstate: '40P01' }), 0, 'no deadlocks');
      assert.equal(metricSum(text, 'surge_apply_retries_total'), 0, 'no retries at all');
      assert.ok(metricSum(text, 'surge_apply_batch_size_count') > 0, `${w.consumer} applied batches`);
    }
  } finally {
    await Promise.all(workers.map((x) => x.stop()));
    await closeWorkerEnv(w);
  }
});

test('reserve_all takes the whole batch when every SKU has enough, and nothing when one falls short', async () => {
  const db = await createTestDatabase({ migrate: true });
  const client = new pg.Client({ connectionString: db.url });
  await client.connect();
  const stock = async () =>
    new Map(
      (await client.query<{ sku: string; available: string }>('SELECT sku, available FROM inventory')).rows.map((r) => [
        r.sku,
        Number(r.available),
      ]),
    );
  try {
    await client.query(`INSERT INTO inventory (sku, available) VALUES ('b', 5), ('a', 10)`);
    await client.query(sqlFile('apply/create_need'));
    // In the worker, insert_orders.sql notes what the batch's new orders need of each SKU in
    // surge_need (emptied at every commit); here the test notes it, in one transaction with the
    // reservation. Each argument is one order's lines, [sku, qty].
    const reserve = async (...orders: Array<Array<[string, number]>>) => {
      const lines = orders.flat();
      await client.query('BEGIN');
      try {
        await client.query(
          'INSERT INTO surge_need (sku, qty) SELECT sku, sum(qty) FROM unnest($1::text[], $2::bigint[]) AS d(sku, qty) GROUP BY sku',
          [lines.map((l) => l[0]), lines.map((l) => l[1])],
        );
        return await client.query<{ sku: string; available: string; reserved: boolean }>(sqlFile('apply/reserve_all'));
      } finally {
        await client.query('COMMIT');
      }
    };
    // 'free' has no inventory row: not stock-checked, not returned. 'b' is needed by two orders.
    const fits = await reserve(
      [
        ['b', 3],
        ['free', 99],
      ],
      [
        ['a', 4],
        ['b', 2],
      ],
    );
    assert.deepEqual(
      fits.rows.map((r) => [r.sku, r.available, r.reserved]),
      [
        ['a', '10', true],
        ['b', '5', true],
      ],
      'the locked rows in sku order, as they were before the reservation',
    );
    assert.deepEqual(
      await stock(),
      new Map([
        ['a', 6],
        ['b', 0],
      ]),
    );
    const short = await reserve([
      ['a', 1],
      ['b', 1],
    ]);
    assert.deepEqual(
      short.rows.map((r) => [r.sku, r.available, r.reserved]),
      [
        ['a', '6', false],
        ['b', '0', false],
      ],
    );
    assert.deepEqual(
      await stock(),
      new Map([
        ['a', 6],
        ['b', 0],
      ]),
      'nothing taken when one SKU falls short',
    );
    assert.deepEqual((await reserve([['free', 1]])).rows, [], 'no stocked SKU: no row');
  } finally {
    await client.end();
    await db.drop();
  }
});
