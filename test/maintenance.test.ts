import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import pg from 'pg';
import { dlqKey, GROUP, streamKey } from '../common/keys.js';
import { PACKAGE_ROOT } from '../common/paths.js';
import { ensureGroups } from '../common/streams.js';
import { bullConnection, bullPrefix, MAINTENANCE_QUEUE } from '../maintenance/queues.js';
import { expireDeadLetters, expireOrders } from '../maintenance/retention.js';
import { startMaintenance } from '../maintenance/service.js';
import { cleanupConsumers, listConsumers } from '../maintenance/streams.js';
import { createTestEnv, type TestEnv } from '../devkit/scratch.js';
import { waitFor } from '../devkit/wait.js';

const CLI = join(PACKAGE_ROOT, 'dist', 'cli', 'surge.js');
const DAY = 86_400_000;

interface RunLine {
  msg: string;
  job: string;
  jobId: string;
  tick: number;
  instance: string;
}

describe('maintenance', () => {
  let t: TestEnv;
  let redis: Redis;
  let pool: pg.Pool;

  before(async () => {
    t = await createTestEnv({
      SURGE_SHARDS: '2',
      SURGE_MAINTENANCE_METRICS_PORT: '0',
      SURGE_MAINTENANCE_INTERVAL_MS: '300',
      SURGE_RETENTION_INTERVAL_MS: '300',
      SURGE_CLAIM_TIMEOUT_MS: '100',
      SURGE_CONSUMER_IDLE_MS: '60000',
    });
    redis = new Redis(t.redisUrl);
    pool = new pg.Pool({ connectionString: t.db.url, max: 4 });
    await ensureGroups(redis, t.prefix, 2);
  });
  after(async () => {
    redis.disconnect();
    await pool.end();
    await t.cleanup();
  });

  test('two maintenance processes running together execute each scheduled job once per tick', async () => {
    const runs: RunLine[] = [];
    const started: string[] = [];
    const spawnOne = (): ChildProcess => {
      const child = spawn(process.execPath, [CLI, 'maintenance'], {
        env: { ...process.env, ...t.env, SURGE_LOG_LEVEL: 'info' },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let buf = '';
      child.stdout?.on('data', (chunk: Buffer) => {
        buf += chunk.toString();
        let nl = buf.indexOf('\n');
        while (nl >= 0) {
          const line = JSON.parse(buf.slice(0, nl)) as RunLine;
          buf = buf.slice(nl + 1);
          if (line.msg === 'maintenance job done') runs.push(line);
          if (line.msg === 'maintenance started') started.push(String(child.pid));
          nl = buf.indexOf('\n');
        }
      });
      return child;
    };
    const children = [spawnOne(), spawnOne()];
    const exits = children.map((c) => new Promise<number | null>((resolve) => c.once('exit', (code) => resolve(code))));
    try {
      await waitFor('both processes started', () => started.length === 2);
      await waitFor(
        '6 ticks of every job',
        () => {
          const jobs = ['trim-streams', 'consumers', 'expire-orders', 'dead-letters'];
          return jobs.every((j) => new Set(runs.filter((r) => r.job === j).map((r) => r.tick)).size >= 6);
        },
        { timeoutMs: 30_000 },
      );
    } finally {
      for (const c of children) c.kill('SIGTERM');
    }
    assert.deepEqual(await Promise.all(exits), [0, 0], 'both stop gracefully on SIGTERM');
    const perTick = new Map<string, string[]>();
    for (const r of runs) perTick.set(`${r.job}@${r.tick}`, [...(perTick.get(`${r.job}@${r.tick}`) ?? []), r.instance]);
    const twice = [...perTick].filter(([, who]) => who.length > 1);
    assert.deepEqual(twice, [], 'no job ran twice for one tick');
    assert.equal(new Set(runs.map((r) => r.jobId)).size, runs.length);
    const connection = bullConnection(t.config, 'test-schedulers');
    const queue = new Queue(MAINTENANCE_QUEUE, { connection, prefix: bullPrefix(t.config) });
    try {
      assert.equal(await queue.getJobSchedulersCount(), 4, 'both replicas upserted the same four schedulers');
    } finally {
      await queue.close();
      connection.disconnect();
    }
  });

  test('startMaintenance trims acknowledged entries on schedule and exports its metrics', async () => {
    const stream = streamKey(t.prefix, 0);
    const p = redis.pipeline();
    for (let i = 0; i < 1000; i++) p.xadd(stream, '*', 'v', '1', 'n', String(i));
    await p.exec();
    const got = (await redis.xreadgroup('GROUP', GROUP, 'w1', 'COUNT', 2000, 'STREAMS', stream, '>')) as Array<
      [string, Array<[string]>]
    >;
    await redis.xack(stream, GROUP, ...(got[0]?.[1] ?? []).map(([id]) => id));
    const before = await redis.xlen(stream);
    const m = await startMaintenance(t.config, { metricsPort: 0, replayWorker: false });
    try {
      await waitFor('the scheduled trim', async () => (await redis.xlen(stream)) <= 100);
      const sample = (body: string, name: string, has: string) =>
        body
          .split('\n')
          .find((l) => l.startsWith(`${name}{`) && l.includes(has))
          ?.split(' ')
          .at(-1);
      const text = await waitFor('trim metrics', async () => {
        const body = await (await fetch(`http://127.0.0.1:${m.metricsPort}/metrics`)).text();
        return sample(body, 'surge_maintenance_trimmed_entries_total', `${stream}"`) ? body : undefined;
      });
      const trimmed = Number(sample(text, 'surge_maintenance_trimmed_entries_total', `${stream}"`));
      assert.equal(trimmed, before - (await redis.xlen(stream)));
      assert.match(text, /surge_maintenance_runs_total\{[^}]*job="trim-streams"[^}]*result="ok"[^}]*\} [1-9]/);
    } finally {
      await m.stop();
    }
  });

  test('retention deletes expired orders and old dead letters in batches and keeps the rest', async () => {
    const insertOrders = async (n: number, ageDays: number, tag: string) => {
      await pool.query(
        `WITH o AS (
           INSERT INTO orders (client_id, idempotency_key, customer_id, currency, total_cents, status, received_at, stream, entry_id)
           SELECT 'ret', $3 || g, 'c', 'EUR', 100, 'applied', now() - make_interval(days => $2), 's', g || '-0'
           FROM generate_series(1, $1) g RETURNING id)
         INSERT INTO order_items (order_pk, line, sku, qty, unit_price_cents) SELECT id, 1, 'S', 1, 100 FROM o`,
        [n, ageDays, tag],
      );
    };
    await insertOrders(1200, 10, 'old-');
    await insertOrders(300, 1, 'new-');
    assert.deepEqual(
      await expireOrders(pool, 0, { batchSize: 500 }),
      { deleted: 0, batches: 0, more: false },
      '0 keeps forever',
    );
    const r = await expireOrders(pool, 7, { batchSize: 500 });
    assert.deepEqual(r, { deleted: 1200, batches: 3, more: false });
    const left = (
      await pool.query(
        `SELECT count(*)::int AS n, count(*) FILTER (WHERE idempotency_key LIKE 'new-%')::int AS fresh FROM orders WHERE client_id = 'ret'`,
      )
    ).rows[0];
    assert.deepEqual(left, { n: 300, fresh: 300 });
    assert.equal(
      (await pool.query('SELECT count(*)::int AS n FROM order_items')).rows[0].n,
      300,
      'items went with their orders',
    );
    const capped = await expireOrders(pool, 0.5, { batchSize: 100, maxBatches: 2 });
    assert.deepEqual(
      capped,
      { deleted: 200, batches: 2, more: true },
      'a run stops at maxBatches; the next tick continues',
    );

    // Dead letters: 25 old (rows + DLQ entries with old IDs), 5 recent.
    const oldMs = Date.now() - 40 * DAY;
    for (let i = 0; i < 30; i++) {
      const old = i < 25;
      await pool.query(
        `INSERT INTO dead_letters (client_id, idempotency_key, stream, entry_id, reason, first_seen_at, last_seen_at)
         VALUES ('ret', $1, 's', $1, 'permanent_error', $2, $2)`,
        [`dl-${i}`, new Date(old ? oldMs + i : Date.now())],
      );
      await redis.xadd(dlqKey(t.prefix, i % 2), old ? `${oldMs + i}-0` : '*', 'dl_id', `dl-${i}`);
    }
    const d = await expireDeadLetters(pool, redis, t.prefix, 2, 30, { batchSize: 10 });
    assert.deepEqual(d, { deleted: 25, batches: 3, more: false, streamEntries: 25 });
    assert.equal(
      (await pool.query(`SELECT count(*)::int AS n FROM dead_letters WHERE client_id = 'ret'`)).rows[0].n,
      5,
    );
    assert.equal((await redis.xlen(dlqKey(t.prefix, 0))) + (await redis.xlen(dlqKey(t.prefix, 1))), 5);
  });

  test('idle consumers: removed when they hold nothing; their pending entries go to a live consumer first; kept when none is live', async () => {
    const stream = streamKey(t.prefix, 1);
    for (let i = 0; i < 8; i++) await redis.xadd(stream, '*', 'v', '1', 'n', String(i));
    const readAs = async (consumer: string, count: number) =>
      (
        (await redis.xreadgroup('GROUP', GROUP, consumer, 'COUNT', count, 'STREAMS', stream, '>')) as Array<
          [string, Array<[string]>]
        > | null
      )?.[0]?.[1]?.map(([id]) => id) ?? [];
    await redis.xack(stream, GROUP, ...(await readAs('gone-empty', 3)));
    const held = await readAs('gone-pending', 5);
    const opts = { idleMs: 300, liveMs: 100 };
    await waitFor('both consumers idle ≥ 300 ms', async () =>
      (await listConsumers(redis, stream)).every((c) => c.idleMs >= 300),
    );

    const first = await cleanupConsumers(redis, stream, opts);
    assert.deepEqual(first.removed, ['gone-empty']);
    assert.deepEqual(first.keptWithPending, ['gone-pending'], 'no live consumer: entries and consumer kept');
    assert.equal(first.claimed, 0);

    await redis.xadd(stream, '*', 'v', '1', 'n', 'new');
    assert.equal((await readAs('live', 1)).length, 1, 'a live consumer reads (idle 0)');
    const second = await cleanupConsumers(redis, stream, opts);
    assert.equal(second.claimed, 5);
    assert.deepEqual(second.removed, ['gone-pending']);
    const pendingNow = (await redis.xpending(stream, GROUP, '-', '+', 100)) as Array<[string, string, number, number]>;
    const moved = pendingNow.filter((p) => held.includes(p[0]));
    assert.deepEqual(
      moved.map((p) => p[0]),
      held,
    );
    for (const [, owner, idle, deliveries] of moved) {
      assert.equal(owner, 'live');
      assert.ok(idle >= 300, 'claimed with their idle time kept, so the live worker’s XAUTOCLAIM takes them at once');
      assert.equal(deliveries, 1, 'moving ownership is not a delivery');
    }
    assert.deepEqual(
      (await listConsumers(redis, stream)).map((c) => c.name),
      ['live'],
    );
  });
});
