// Helpers for the worker suites: a scratch environment with its consumer groups, write orders to
// the shard streams as ingest does, watch the streams drain, read a worker's /metrics, run
// `surge work` as a child process.
import pg from 'pg';
import { shardFor, streamKey } from '../../common/keys.js';
import { encodeEntry } from '../../common/entry.js';
import { canonicalOrderJson, type Order } from '../../common/order.js';
import { createRedis, type RedisClient } from '../../common/redis.js';
import { ensureGroups } from '../../common/streams.js';
import { backlog } from '../../devkit/backlog.js';
import { createTestEnv, type TestEnv } from '../../devkit/scratch.js';
import { waitFor } from '../../devkit/wait.js';
import { type CliRun, spawnCli } from './procs.js';

/** A worker suite's scratch environment: its Redis (consumer groups made) and a small pool on its database. */
export interface WorkerEnv {
  env: TestEnv;
  redis: RedisClient;
  db: pg.Pool;
}

export async function openWorkerEnv(overrides: Record<string, string>): Promise<WorkerEnv> {
  const env = await createTestEnv(overrides);
  const redis = createRedis(env.config);
  await ensureGroups(redis, env.prefix, env.config.shards);
  return { env, redis, db: new pg.Pool({ connectionString: env.db.url, max: 2 }) };
}

export async function closeWorkerEnv(w: WorkerEnv): Promise<void> {
  w.redis.disconnect();
  await w.db.end();
  await w.env.cleanup();
}

/** The `n` column of a one-row count query. */
export async function count(db: pg.Pool, sql: string, params: unknown[] = []): Promise<number> {
  return Number((await db.query<{ n: string }>(sql, params)).rows[0]?.n);
}

export interface QueuedOrder {
  client: string;
  key: string;
  order: Order;
}

export function simpleOrder(
  i: number,
  items: Order['items'] = [{ sku: `sku-${i % 50}`, qty: 1 + (i % 3), unit_price_cents: 100 + i }],
): Order {
  return { customer_id: `cust-${i % 997}`, currency: 'EUR', items, order_id: `ord-${i}` };
}

/** XADDs the orders (pipelined, in the given order) to their shard streams; returns the entry IDs. */
export async function enqueue(
  redis: RedisClient,
  prefix: string,
  shards: number,
  orders: readonly QueuedOrder[],
): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < orders.length; i += 1000) {
    const pipe = redis.pipeline();
    for (const o of orders.slice(i, i + 1000)) {
      pipe.xadd(
        streamKey(prefix, shardFor(o.client, o.key, shards)),
        '*',
        ...encodeEntry({ clientId: o.client, idempotencyKey: o.key, canonical: canonicalOrderJson(o.order) }),
      );
    }
    for (const [err, id] of (await pipe.exec()) ?? []) {
      if (err) throw err;
      ids.push(id as string);
    }
  }
  return ids;
}

/** XADDs raw fields to one shard stream. */
export async function enqueueRaw(redis: RedisClient, prefix: string, shard: number, fields: string[]): Promise<string> {
  return (await redis.xadd(streamKey(prefix, shard), '*', ...fields)) as string;
}

export async function waitForDrained(
  redis: RedisClient,
  prefix: string,
  shards: number,
  timeoutMs = 60_000,
): Promise<void> {
  await waitFor(
    'streams drained (nothing pending or undelivered)',
    async () => (await backlog(redis, prefix, shards)) === 0,
    { timeoutMs, intervalMs: 50 },
  );
}

export async function scrape(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  return await res.text();
}

/** Sum of a metric's samples whose labels include all of `labels`. */
export function metricSum(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const wanted = Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`));
    if (wanted) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

export interface WorkerProcess extends CliRun {
  pid: number;
}

/** Spawns `node dist/cli/surge.js work` with the test env (plus overrides). */
export function spawnWorker(env: Record<string, string>, overrides: Record<string, string> = {}): WorkerProcess {
  const run = spawnCli(['work'], { ...env, ...overrides });
  return { ...run, pid: run.child.pid ?? -1 };
}
