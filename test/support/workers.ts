// Helpers for the worker suites: write orders to the shard streams as ingest does, watch the
// streams drain, read a worker's /metrics, run `surge work` as a child process.
import { shardFor, streamKey } from '../../common/keys.js';
import { encodeEntry } from '../../common/entry.js';
import { canonicalOrderJson, type Order } from '../../common/order.js';
import type { RedisClient } from '../../common/redis.js';
import { backlog } from '../../devkit/backlog.js';
import { waitFor } from '../../devkit/wait.js';
import { type CliRun, spawnCli } from './procs.js';

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
