// The worker's parts one by one: the in-flight limit, the batch former, the held entries, the
// loop, and against a real Redis the shard reader, the acker, reclaim and the heartbeat.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { dlqKey, GROUP, streamKey } from '../common/keys.js';
import { createRedis, type RedisClient } from '../common/redis.js';
import { ensureGroups } from '../common/streams.js';
import { createRegistry, workerMetrics } from '../metrics/definitions.js';
import { createTestEnv, type TestEnv } from '../devkit/scratch.js';
import { waitFor } from '../devkit/wait.js';
import { acknowledge } from '../workers/acker.js';
import { AdaptiveLimit } from '../workers/adaptive.js';
import type { TaskEntry } from '../workers/apply.js';
import { formBatch } from '../workers/batch-former.js';
import type { ConsumerContext } from '../workers/context.js';
import { HeldEntries } from '../workers/held.js';
import { heartbeat } from '../workers/heartbeat.js';
import { InFlightLimit, MAX_PAUSE_MS, pauseAfter } from '../workers/in-flight.js';
import { backoffMs, runUntilStopped } from '../workers/loop.js';
import { reclaimShard } from '../workers/reclaim.js';
import type { StreamEntry } from '../workers/redis-ops.js';
import { readShard } from '../workers/shard-reader.js';

const silent = pino({ level: 'silent' });

describe('in-flight limit', () => {
  test('acquire never passes the limit and says whether it waited', async () => {
    const limit = new InFlightLimit(1);
    assert.equal(await limit.acquire(), false);
    const second = limit.acquire();
    assert.equal(limit.count, 1);
    limit.release();
    assert.equal(await second, true);
    assert.equal(limit.count, 1);
  });

  test('room waits until a batch is released; busy holds readers back too', async () => {
    let busy = false;
    const limit = new InFlightLimit(2, () => busy);
    limit.take();
    limit.take();
    assert.equal(limit.hasRoom(), false);
    let woke = false;
    const waiting = limit.room().then(() => {
      woke = true;
    });
    await Promise.resolve();
    assert.equal(woke, false);
    busy = true;
    limit.release();
    await Promise.resolve();
    assert.equal(woke, false, 'still busy');
    busy = false;
    limit.wake();
    await waiting;
    assert.equal(limit.count, 1);
  });

  test('raising the limit wakes the readers; it never drops below 1', async () => {
    const limit = new InFlightLimit(1);
    limit.take();
    const waiting = limit.room();
    limit.limit = 2;
    await waiting;
    limit.limit = 0;
    assert.equal(limit.limit, 1);
  });

  test('a released slot may stay taken for a pause; close ends the pauses at once', async () => {
    const limit = new InFlightLimit(1);
    limit.take();
    const t0 = performance.now();
    limit.release(40);
    assert.equal(limit.hasRoom(), false);
    await limit.room();
    assert.ok(performance.now() - t0 >= 35, 'the slot came back after the pause');
    limit.take();
    limit.release(60_000);
    const waiting = limit.room();
    limit.close();
    await waiting;
    assert.equal(limit.count, 0);
    limit.take();
    limit.release(60_000);
    assert.equal(limit.count, 0, 'closed: no more pauses');
  });

  test('the pause follows how long the batch held its slot and how far from full it was', () => {
    assert.equal(pauseAfter(30, 0, 1000), 30);
    assert.equal(pauseAfter(30, 500, 1000), 15);
    assert.equal(pauseAfter(30, 1000, 1000), 0);
    assert.equal(pauseAfter(10_000, 1, 1000), MAX_PAUSE_MS);
  });
});

describe('adaptive in-flight limit', () => {
  test('starts at 1; full batches at steady latency raise it, up to max', () => {
    const a = new AdaptiveLimit({ min: 1, max: 3, batchSize: 100 });
    assert.equal(a.limit, 1);
    const limits = Array.from({ length: 10 }, () => a.sample(100, 50));
    assert.deepEqual(limits.slice(0, 4), [2, 2, 3, 3]);
    assert.equal(a.limit, 3);
  });

  test('latency far above its floor backs off multiplicatively; short batches step down to 1', () => {
    const a = new AdaptiveLimit({ min: 1, max: 8, batchSize: 100 });
    for (let i = 0; i < 40; i++) a.sample(100, 50);
    assert.equal(a.limit, 8);
    assert.equal(a.sample(100, 500), 6);
    assert.equal(a.sample(100, 500), 4);
    assert.equal(a.sample(60, 50), 4, 'a batch over half full keeps the limit');
    assert.equal(a.sample(10, 5), 3);
    for (let i = 0; i < 5; i++) a.sample(10, 5);
    assert.equal(a.limit, 1);
  });
});

describe('batch former', () => {
  const entry = (i: number): StreamEntry => [`${i}-0`, ['k', String(i)]];
  test('a full first read goes at once; no linger returns what is there', async () => {
    let reads = 0;
    const read = async (count: number) => {
      reads++;
      return Array.from({ length: Math.min(count, 3) }, (_, i) => entry(i));
    };
    assert.equal((await formBatch(read, { batchSize: 3, lingerMs: 50, blockMs: 10, stopped: () => false })).length, 3);
    assert.equal((await formBatch(read, { batchSize: 10, lingerMs: 0, blockMs: 10, stopped: () => false })).length, 3);
    assert.equal(reads, 2);
  });

  test('a partial batch lingers for more, asking only for what is missing', async () => {
    const asked: number[] = [];
    const read = async (count: number) => {
      asked.push(count);
      return asked.length <= 2 ? [entry(asked.length)] : [];
    };
    const got = await formBatch(read, { batchSize: 5, lingerMs: 30, blockMs: 10, stopped: () => false });
    assert.equal(got.length, 2);
    assert.deepEqual(asked.slice(0, 2), [5, 4]);
  });
});

describe('held entries and the loop', () => {
  test('held entries per shard; stale ones are left out of a beat', () => {
    const held = new HeldEntries(2);
    held.add(0, ['1-0', '2-0'], 1000);
    held.add(1, ['3-0'], 5000);
    assert.equal(held.has(0, '1-0'), true);
    assert.equal(held.has(1, '1-0'), false);
    assert.deepEqual([...held.heldSince(2000)], [[1, ['3-0']]]);
    held.delete(0, ['1-0']);
    assert.deepEqual(
      [...held.heldSince(0)],
      [
        [0, ['2-0']],
        [1, ['3-0']],
      ],
    );
    assert.throws(() => held.add(2, ['x']));
  });

  test('the loop survives errors, backs off, and ends on done or stop', async () => {
    const pauses: number[] = [];
    let stopped = false;
    let calls = 0;
    const seen: unknown[] = [];
    await runUntilStopped(
      { stopped: () => stopped, pause: async (ms) => void pauses.push(ms), logger: silent },
      () => 'step',
      async () => {
        calls++;
        if (calls <= 2) throw new Error(`boom ${calls}`);
        return calls === 3 ? undefined : 'done';
      },
      async (e) => void seen.push(e),
    );
    assert.equal(calls, 4);
    assert.equal(seen.length, 2);
    assert.equal(pauses.length, 2);
    stopped = true;
    await runUntilStopped(
      { stopped: () => stopped, pause: async () => {}, logger: silent },
      () => 'x',
      async () => {
        throw new Error('never called');
      },
    );
    for (let a = 0; a < 20; a++) {
      const ms = backoffMs(a);
      assert.ok(ms >= 50 && ms <= 5000, String(ms));
    }
  });
});

describe('worker parts against Redis', () => {
  let env: TestEnv;
  let redis: RedisClient;
  let ctx: ConsumerContext;
  let stopped = false;
  const key = () => streamKey(env.prefix, 0);
  const pendingIds = async (consumer: string) =>
    (await redis.call('XPENDING', key(), GROUP, '-', '+', 1000, consumer)) as Array<[string, string, number, number]>;

  before(async () => {
    env = await createTestEnv({ SURGE_SHARDS: '1', SURGE_CLAIM_TIMEOUT_MS: '200', SURGE_MAX_DELIVERIES: '2' });
    redis = createRedis(env.config);
    await ensureGroups(redis, env.prefix, 1);
    ctx = {
      config: env.config,
      redis,
      consumer: 'me',
      metrics: workerMetrics(createRegistry({ defaultMetrics: false, role: 'worker' })),
      held: new HeldEntries(1),
      logger: silent,
      stopped: () => stopped,
      pause: (ms) => new Promise((r) => setTimeout(r, ms)),
    };
  });
  after(async () => {
    redis.disconnect();
    await env.cleanup();
  });

  test('shard reader: own pending entries first (with delivery counts), then new ones', async () => {
    await redis.del(key());
    await ensureGroups(redis, env.prefix, 1);
    const old = (await redis.xadd(key(), '*', 'n', 'old')) as string;
    await redis.xreadgroup('GROUP', GROUP, 'me', 'COUNT', 10, 'STREAMS', key(), '>');
    await redis.xreadgroup('GROUP', GROUP, 'me', 'STREAMS', key(), '0');
    const fresh = (await redis.xadd(key(), '*', 'n', 'new')) as string;
    const batches: TaskEntry[][] = [];
    const reader = createRedis(env.config, { maxRetriesPerRequest: null });
    stopped = false;
    const limit = new InFlightLimit(4);
    const loop = readShard({ ctx, shard: 0, reader, limit, blockMs: 50, submit: (_s, e) => void batches.push(e) });
    await waitFor('two batches', () => batches.length >= 2);
    stopped = true;
    await loop;
    reader.disconnect();
    assert.deepEqual(
      batches.map((b) => b.map((e) => [e.id, e.deliveries])),
      [[[old, 3]], [[fresh, 1]]],
    );
  });

  test('acker: XACK the applied, move dead letters to the DLQ once', async () => {
    const a = (await redis.xadd(key(), '*', 'n', 'a')) as string;
    const b = (await redis.xadd(key(), '*', 'n', 'b')) as string;
    await redis.xreadgroup('GROUP', GROUP, 'ack', 'STREAMS', key(), '>');
    const entries: TaskEntry[] = [
      { id: a, fields: ['n', 'a'], deliveries: 1 },
      { id: b, fields: ['n', 'b'], deliveries: 1 },
    ];
    const outcome = { ack: [a], deadLetters: [{ id: b, reason: 'undecodable', message: 'bad' }] };
    assert.equal(await acknowledge(ctx, 0, entries, outcome, 100), true);
    assert.equal(await acknowledge(ctx, 0, entries, outcome, 100), true);
    assert.deepEqual(await pendingIds('ack'), []);
    assert.equal(await redis.xlen(dlqKey(env.prefix, 0)), 1);
  });

  test('reclaim: idle entries of others are claimed; held ones skipped; over-delivered marked', async () => {
    await redis.del(key());
    await ensureGroups(redis, env.prefix, 1);
    const ids: string[] = [];
    for (const n of ['x', 'y', 'z']) ids.push((await redis.xadd(key(), '*', 'n', n)) as string);
    await redis.xreadgroup('GROUP', GROUP, 'gone', 'STREAMS', key(), '>');
    await redis.xclaim(key(), GROUP, 'gone', 0, ids[2] ?? '', 'RETRYCOUNT', 5);
    ctx.held.add(0, [ids[1] ?? '']);
    const got: TaskEntry[] = [];
    await waitFor('idle', async () => (await pendingIds('gone')).every((r) => r[2] >= 200));
    const n = await reclaimShard(ctx, 0, (_s, e) => void got.push(...e), new InFlightLimit(4));
    ctx.held.delete(0, [ids[1] ?? '']);
    assert.equal(n, 2);
    assert.deepEqual(
      got.map((e) => [e.id, e.deadLetter?.reason]),
      [
        [ids[0], undefined],
        [ids[2], 'max_deliveries'],
      ],
    );
  });

  test('heartbeat: held entries get their idle time reset without a delivery counted', async () => {
    const id = (await redis.xadd(key(), '*', 'n', 'hb')) as string;
    await redis.xreadgroup('GROUP', GROUP, 'me', 'STREAMS', key(), '>');
    ctx.held.add(0, [id]);
    await waitFor('idle', async () => ((await pendingIds('me')).find((r) => r[0] === id)?.[2] ?? 0) >= 120);
    stopped = false;
    await heartbeat(ctx);
    ctx.held.delete(0, [id]);
    const row = (await pendingIds('me')).find((r) => r[0] === id);
    assert.ok(row !== undefined && row[2] < 100, `idle ${row?.[2]}`);
    assert.equal(row[3], 1);
  });
});
