// Worker processes (`node dist/cli/surge.js work`) killed, stopped and racing for stock.
import assert from 'node:assert/strict';
import { getPriority, hostname } from 'node:os';
import { describe, test } from 'node:test';
import pg from 'pg';
import { consumerName, GROUP, streamKey } from '../common/keys.js';
import type { RedisClient } from '../common/redis.js';
import { waitFor } from '../devkit/wait.js';
import { defined } from './support/defined.js';
import {
  closeWorkerEnv,
  count,
  enqueue,
  openWorkerEnv,
  type QueuedOrder,
  simpleOrder,
  spawnWorker,
  type WorkerEnv,
  type WorkerProcess,
  waitForDrained,
} from './support/workers.js';

interface Ctx extends WorkerEnv {
  procs: WorkerProcess[];
  /** The connection that holds the 'hot' inventory row locked (hotRowStage), ended by teardown. */
  lock?: pg.Client;
}

async function setup(overrides: Record<string, string>): Promise<Ctx> {
  // The default placement (no threads): workers.test.ts and workers-stock.test.ts run threads.
  return { ...(await openWorkerEnv({ SURGE_WORKER_THREADS: '0', SURGE_PG_POOL_SIZE: '2', ...overrides })), procs: [] };
}

async function teardown(ctx: Ctx): Promise<void> {
  // SURGE_TEST_LOG_LEVEL=info shows what the worker processes logged.
  if (ctx.env.env.SURGE_LOG_LEVEL !== 'silent')
    for (const p of ctx.procs) console.log(`--- worker ${p.pid}\n${p.output()}`);
  for (const p of ctx.procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
  await Promise.all(ctx.procs.map((p) => p.exited));
  await ctx.lock?.end().catch(() => {});
  await closeWorkerEnv(ctx);
}

/** Backends of worker processes blocked on a row lock (i.e. in the middle of a batch). */
async function lockWaiters(db: pg.Pool, min: number): Promise<number[]> {
  return await waitFor(`${min} worker backend(s) waiting on a row lock`, async () => {
    const r = await db.query<{ pid: number }>(
      "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'surge-worker' AND wait_event_type = 'Lock'",
    );
    return r.rows.length >= min ? r.rows.map((x) => x.pid) : undefined;
  });
}

async function pendingOf(redis: RedisClient, prefix: string, shards: number, consumer: string): Promise<number> {
  let n = 0;
  for (let s = 0; s < shards; s++) {
    const rows = (await redis.xpending(streamKey(prefix, s), GROUP, '-', '+', 100000, consumer)) as unknown[];
    n += rows.length;
  }
  return n;
}

/** Stocks 10,000 of the 'hot' SKU, enqueues the orders and opens the connection that will lock its row. */
async function hotRowStage(ctx: Ctx, orders: QueuedOrder[]): Promise<pg.Client> {
  const lock = new pg.Client({ connectionString: ctx.env.db.url });
  ctx.lock = lock;
  await lock.connect();
  await ctx.db.query("INSERT INTO inventory (sku, available) VALUES ('hot', 10000)");
  await enqueue(ctx.redis, ctx.env.prefix, ctx.env.config.shards, orders);
  return lock;
}

/** Holds the 'hot' inventory row locked in `lock`, starts a worker and waits until a batch of it waits for that row. */
async function workerBlockedOnHotRow(ctx: Ctx, lock: pg.Client): Promise<WorkerProcess> {
  await lock.query('BEGIN');
  await lock.query("SELECT * FROM inventory WHERE sku = 'hot' FOR UPDATE");
  const worker = spawnWorker(ctx.env.env);
  ctx.procs.push(worker);
  await lockWaiters(ctx.db, 1);
  return worker;
}

function hotOrders(n: number, hotEvery: number): QueuedOrder[] {
  return Array.from({ length: n }, (_, i) => ({
    client: 'c1',
    key: `k-${i}`,
    order: simpleOrder(i, [{ sku: i % hotEvery === 0 ? 'hot' : `cold-${i}`, qty: 1, unit_price_cents: 10 }]),
  }));
}

describe('worker processes', () => {
  test('a worker killed with SIGKILL mid-batch, another started → all orders applied exactly once', async () => {
    const ctx = await setup({
      SURGE_SHARDS: '2',
      SURGE_BATCH_SIZE: '100',
      SURGE_CLAIM_TIMEOUT_MS: '1000',
      SURGE_CLAIM_INTERVAL_MS: '100',
    });
    try {
      const lock = await hotRowStage(ctx, hotOrders(1000, 2));
      const a = await workerBlockedOnHotRow(ctx, lock);
      const aConsumer = consumerName(hostname(), a.pid);
      const aPending = await pendingOf(ctx.redis, ctx.env.prefix, 2, aConsumer);
      assert.ok(aPending > 0, 'the killed worker holds entries mid-batch');
      a.child.kill('SIGKILL');
      assert.equal((await a.exited).signal, 'SIGKILL');
      await lock.query('COMMIT');
      const b = spawnWorker(ctx.env.env);
      ctx.procs.push(b);
      await waitForDrained(ctx.redis, ctx.env.prefix, 2);
      assert.equal(await count(ctx.db, 'SELECT count(*) AS n FROM orders'), 1000);
      assert.equal(await count(ctx.db, 'SELECT count(DISTINCT idempotency_key) AS n FROM orders'), 1000);
      assert.equal(await count(ctx.db, 'SELECT count(*) AS n FROM order_items'), 1000);
      assert.equal(await count(ctx.db, "SELECT available AS n FROM inventory WHERE sku = 'hot'"), 10000 - 500);
      assert.equal(
        await pendingOf(ctx.redis, ctx.env.prefix, 2, aConsumer),
        0,
        "the dead worker's entries were claimed",
      );
    } finally {
      await teardown(ctx);
    }
  });

  test('flash sale: 100 units, 1,000 single-unit orders across three worker processes → 100 applied, 900 rejected, available 0', async () => {
    const ctx = await setup({ SURGE_SHARDS: '4', SURGE_BATCH_SIZE: '25', SURGE_BATCH_LINGER_MS: '0' });
    try {
      await ctx.db.query("INSERT INTO inventory (sku, available) VALUES ('hot', 100)");
      await enqueue(ctx.redis, ctx.env.prefix, 4, hotOrders(1000, 1));
      // One of them yields the cores, as under `surge up`: it works alike, at a lower priority.
      for (let i = 0; i < 3; i++) ctx.procs.push(spawnWorker(ctx.env.env, i === 0 ? { SURGE_WORKER_NICE: '7' } : {}));
      await waitForDrained(ctx.redis, ctx.env.prefix, 4);
      // The other two may drain the streams before the first has started: wait for its start.
      const first = defined(ctx.procs[0], 'the first worker').pid;
      const lowered = Math.min(19, getPriority() + 7);
      await waitFor('the first worker at its lower priority', () => getPriority(first) === lowered);
      assert.equal(await count(ctx.db, 'SELECT count(*) AS n FROM orders'), 1000);
      assert.equal(await count(ctx.db, "SELECT count(*) AS n FROM orders WHERE status = 'applied'"), 100);
      assert.equal(
        await count(ctx.db, "SELECT count(*) AS n FROM orders WHERE status = 'rejected' AND reason = 'out_of_stock'"),
        900,
      );
      assert.equal(await count(ctx.db, "SELECT available AS n FROM inventory WHERE sku = 'hot'"), 0);
      // Several processes really took part.
      let consumers = 0;
      for (let s = 0; s < 4; s++)
        consumers = Math.max(
          consumers,
          ((await ctx.redis.xinfo('CONSUMERS', streamKey(ctx.env.prefix, s), GROUP)) as unknown[]).length,
        );
      assert.ok(consumers >= 2, `consumers per shard: ${consumers}`);
    } finally {
      await teardown(ctx);
    }
  });

  test('SIGTERM stops reading, finishes and acks in-flight batches, exits 0; a second signal exits at once', async () => {
    const ctx = await setup({
      SURGE_SHARDS: '1',
      SURGE_BATCH_SIZE: '50',
      SURGE_LOG_LEVEL: 'info',
      SURGE_CLAIM_TIMEOUT_MS: '1000',
      SURGE_CLAIM_INTERVAL_MS: '100',
    });
    try {
      const lock = await hotRowStage(ctx, hotOrders(2000, 1));
      const a = await workerBlockedOnHotRow(ctx, lock);
      a.child.kill('SIGTERM');
      await waitFor('worker A draining', () => a.output().includes('worker stopping'));
      assert.equal(a.child.exitCode, null, 'A waits for its in-flight batches');
      await lock.query('COMMIT');
      assert.deepEqual(await a.exited, { code: 0, signal: null });
      const aConsumer = consumerName(hostname(), a.pid);
      assert.equal(await pendingOf(ctx.redis, ctx.env.prefix, 1, aConsumer), 0, 'A acked everything it read');
      const appliedByA = await count(ctx.db, 'SELECT count(*) AS n FROM orders');
      assert.ok(appliedByA > 0 && appliedByA < 2000, `A applied ${appliedByA} and stopped reading`);

      // A second signal while a batch hangs: exit at once (code 1), entries left for others.
      const b = await workerBlockedOnHotRow(ctx, lock);
      b.child.kill('SIGTERM');
      await waitFor('worker B draining', () => b.output().includes('worker stopping'));
      b.child.kill('SIGTERM');
      assert.deepEqual(await b.exited, { code: 1, signal: null });
      await lock.query('COMMIT');

      const c = spawnWorker(ctx.env.env);
      ctx.procs.push(c);
      await waitForDrained(ctx.redis, ctx.env.prefix, 1);
      assert.equal(await count(ctx.db, 'SELECT count(*) AS n FROM orders'), 2000);
      assert.equal(await count(ctx.db, 'SELECT count(DISTINCT idempotency_key) AS n FROM orders'), 2000);
      assert.equal(await count(ctx.db, "SELECT available AS n FROM inventory WHERE sku = 'hot'"), 10000 - 2000);
    } finally {
      await teardown(ctx);
    }
  });
});
