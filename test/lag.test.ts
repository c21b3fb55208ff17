// The lag exporter tells the truth: real Redis is driven into known states with XADD, XREADGROUP,
// XACK, XDEL and XGROUP SETID, and the values on /metrics are compared with what we built.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { dlqKey, GROUP, streamKey } from '../common/keys.js';
import { ensureGroups } from '../common/streams.js';
import { type LagExporter, startLagExporter } from '../metrics/exporter.js';
import { readLag } from '../metrics/lag.js';
import { createTestEnv, type TestEnv } from '../devkit/scratch.js';
import { startRedisServer } from '../devkit/redis-server.js';
import { waitFor } from '../devkit/wait.js';
import type { Sample } from '../devkit/prom.js';
import { scrape, select, value } from './support/prom.js';
import { defined } from './support/defined.js';

// Entry IDs are built from BASE so every age is known exactly: the exporter's clock is BASE + 100 s.
const BASE = Date.now() - 3_600_000;
const NOW = BASE + 100_000;
const id = (i: number) => `${BASE + i * 1000}-0`;

async function addEntries(r: Redis, key: string, n: number): Promise<void> {
  for (let i = 0; i < n; i++) await r.xadd(key, id(i), 'v', '1', 'c', 'test', 'k', `k${i}`, 'o', '{}');
}

async function readGroup(r: Redis, key: string, consumer: string, count: number): Promise<string[]> {
  const res = (await r.xreadgroup('GROUP', GROUP, consumer, 'COUNT', count, 'STREAMS', key, '>')) as Array<
    [string, Array<[string, string[]]>]
  > | null;
  return (res?.[0]?.[1] ?? []).map(([entryId]) => entryId);
}

async function consumerIdleMs(r: Redis, key: string, consumer: string): Promise<number> {
  const list = (await r.xinfo('CONSUMERS', key, GROUP)) as unknown[][];
  for (const c of list) {
    const i = c.indexOf('name');
    if (c[i + 1] === consumer) return Number(c[c.indexOf('idle') + 1]);
  }
  throw new Error(`no consumer ${consumer}`);
}

describe('lag exporter against real Redis', () => {
  let env: TestEnv;
  let redis: Redis;
  let exporter: LagExporter;
  let url: string;
  const s0 = () => streamKey(env.prefix, 0);
  const s1 = () => streamKey(env.prefix, 1);
  const s2 = () => streamKey(env.prefix, 2);
  const sg = (stream: string) => ({ stream, group: GROUP });

  before(async () => {
    env = await createTestEnv({ SURGE_SHARDS: '4', SURGE_LAG_CACHE_MS: '0' });
    redis = new Redis(env.redisUrl);
    await ensureGroups(redis, env.prefix, 3); // shard 3: no stream at all

    // Shard 0: 10 entries; c-busy takes 4 and acks the first; c-idle takes 2. 4 undelivered, 5 pending.
    await addEntries(redis, s0(), 10);
    const busy = await readGroup(redis, s0(), 'c-busy', 4);
    assert.equal(await redis.xack(s0(), GROUP, defined(busy[0], 'the first entry read')), 1);
    await readGroup(redis, s0(), 'c-idle', 2);
    await redis.xadd(dlqKey(env.prefix, 0), '*', 'dl_reason', 'test');
    await redis.xadd(dlqKey(env.prefix, 0), '*', 'dl_reason', 'test');

    // Shard 1: 8 entries, 3 delivered, then entries 3 and 5 (undelivered) deleted: Redis' lag is NULL.
    await addEntries(redis, s1(), 8);
    await readGroup(redis, s1(), 'c1', 3);
    assert.equal(await redis.xdel(s1(), id(3), id(5)), 2);

    // Shard 2: 8 entries, group moved with SETID to entry 1 (no ENTRIESREAD): lag NULL, no deletions.
    await addEntries(redis, s2(), 8);
    await redis.xgroup('SETID', s2(), GROUP, id(1));

    exporter = await startLagExporter(env.config, { now: () => NOW, defaultMetrics: false });
    url = `http://127.0.0.1:${exporter.port}/metrics`;
  });

  after(async () => {
    await exporter?.stop();
    redis?.disconnect();
    await env?.cleanup();
  });

  test('Redis itself reports the states we built (so the NULL cases really are NULL)', async () => {
    const lagOf = async (key: string) => {
      const g = (await redis.xinfo('GROUPS', key)) as unknown[][];
      const [row] = g;
      assert.ok(row, `no group on ${key}`);
      return row[row.indexOf('lag') + 1];
    };
    assert.equal(await lagOf(s0()), 4);
    assert.equal(await lagOf(s1()), null);
    assert.equal(await lagOf(s2()), null);
  });

  test('undelivered, pending, backlog, length and ages equal the truth on every shard', async () => {
    const m = await scrape(url);
    // Shard 0: Redis' lag is known.
    assert.equal(value(m, 'surge_stream_length', { stream: s0() }), 10);
    assert.equal(value(m, 'surge_consumer_group_lag', sg(s0())), 4);
    assert.equal(value(m, 'surge_consumer_group_lag_null', sg(s0())), 0);
    assert.equal(value(m, 'surge_consumer_group_pending', sg(s0())), 5);
    assert.equal(value(m, 'surge_consumer_group_backlog', sg(s0())), 9);
    assert.equal(value(m, 'surge_consumer_group_lag_seconds', sg(s0())), 94, 'oldest undelivered is entry 6');
    assert.equal(
      value(m, 'surge_oldest_pending_age_seconds', sg(s0())),
      99,
      'oldest pending is entry 1 (entry 0 acked)',
    );
    assert.equal(value(m, 'surge_consumer_group_consumers', sg(s0())), 2);
    assert.equal(value(m, 'surge_consumer_pending', { ...sg(s0()), consumer: 'c-busy' }), 3);
    assert.equal(value(m, 'surge_consumer_pending', { ...sg(s0()), consumer: 'c-idle' }), 2);
    assert.equal(value(m, 'surge_dlq_depth', { stream: dlqKey(env.prefix, 0) }), 2);
    assert.equal(value(m, 'surge_dlq_depth', { stream: dlqKey(env.prefix, 1) }), 0);

    // Shard 1: lag NULL after deletions. Undelivered = entries 4, 6, 7; pending = 0, 1, 2.
    assert.equal(value(m, 'surge_stream_length', { stream: s1() }), 6);
    assert.equal(value(m, 'surge_consumer_group_lag', sg(s1())), undefined, 'NULL lag is absent, never 0');
    assert.equal(select(m, 'surge_consumer_group_lag', sg(s1())).length, 0);
    assert.equal(value(m, 'surge_consumer_group_lag_null', sg(s1())), 1);
    assert.equal(value(m, 'surge_consumer_group_pending', sg(s1())), 3);
    assert.equal(value(m, 'surge_consumer_group_backlog', sg(s1())), 6);
    assert.equal(
      value(m, 'surge_consumer_group_lag_seconds', sg(s1())),
      96,
      'entry 3 was deleted: the oldest undelivered is entry 4',
    );
    assert.equal(value(m, 'surge_oldest_pending_age_seconds', sg(s1())), 100);

    // Shard 2: lag NULL after SETID. Undelivered = entries 2..7, nothing pending, no consumers.
    assert.equal(value(m, 'surge_consumer_group_lag', sg(s2())), undefined);
    assert.equal(value(m, 'surge_consumer_group_lag_null', sg(s2())), 1);
    assert.equal(value(m, 'surge_consumer_group_pending', sg(s2())), 0);
    assert.equal(value(m, 'surge_consumer_group_backlog', sg(s2())), 6);
    assert.equal(value(m, 'surge_consumer_group_lag_seconds', sg(s2())), 98);
    assert.equal(value(m, 'surge_oldest_pending_age_seconds', sg(s2())), 0);
    assert.equal(value(m, 'surge_consumer_group_consumers', sg(s2())), 0);

    // Shard 3: no stream, no group: length 0, and no group series at all.
    const s3 = streamKey(env.prefix, 3);
    assert.equal(value(m, 'surge_stream_length', { stream: s3 }), 0);
    assert.equal(select(m, 'surge_consumer_group_backlog', { stream: s3 }).length, 0);

    assert.equal(value(m, 'surge_lag_exporter_redis_up'), 1);
    assert.ok((value(m, 'surge_lag_exporter_read_duration_seconds') ?? 0) > 0);
  });

  test('an idle consumer: its idle time is the one Redis reports at the scrape', async () => {
    // Wait until c-idle has been idle a while (c-idle does nothing more in this file).
    await waitFor('c-idle idle ≥ 300 ms', async () => (await consumerIdleMs(redis, s0(), 'c-idle')) >= 300);
    const before = await consumerIdleMs(redis, s0(), 'c-idle');
    const m = await scrape(url);
    const afterMs = await consumerIdleMs(redis, s0(), 'c-idle');
    const exported = value(m, 'surge_consumer_idle_seconds', { ...sg(s0()), consumer: 'c-idle' });
    assert.ok(exported !== undefined);
    assert.ok(
      exported * 1000 >= before && exported * 1000 <= afterMs,
      `idle ${exported} s between ${before} and ${afterMs} ms`,
    );
  });

  test('Redis memory per node', async () => {
    const m = await scrape(url);
    const used = select(m, 'surge_redis_used_memory_bytes');
    assert.equal(used.length, 1);
    assert.equal(used[0]?.labels.node, '127.0.0.1:6379');
    assert.ok((used[0]?.value ?? 0) > 0);
    const max = Number(((await redis.config('GET', 'maxmemory')) as string[])[1]);
    assert.equal(value(m, 'surge_redis_maxmemory_bytes', { node: '127.0.0.1:6379' }), max);
  });

  test('NULL-lag counting: paging, the complement, and the lower bound', async () => {
    const read = async (countLimit: number, pageSize: number) => {
      const snap = await readLag(redis, env.prefix, 3, NOW, { countLimit, pageSize });
      return snap.shards[2]?.group;
    };
    // Shard 2: 8 entries, last-delivered = entry 1: 6 after, 2 at or before.
    for (const pageSize of [1, 3, 4, 1000]) {
      const g = await read(100, pageSize);
      assert.equal(g?.undelivered, 6, `pageSize ${pageSize}`);
      assert.equal(g?.undeliveredSource, 'counted');
    }
    const c = await read(3, 2);
    assert.deepEqual([c?.undelivered, c?.undeliveredSource, c?.backlog], [6, 'complement', 6]);
    const lb = await read(1, 1);
    assert.deepEqual([lb?.undelivered, lb?.undeliveredSource], [1, 'lower_bound']);
    // Shard 0: Redis' lag is used as is.
    const snap = await readLag(redis, env.prefix, 3, NOW);
    assert.equal(snap.shards[0]?.group?.undeliveredSource, 'redis');
  });

  test('as the group catches up: lag 0 is exported as 0, ages drop to 0, NULL lag comes back', async () => {
    assert.deepEqual(await readGroup(redis, s0(), 'c-busy', 100), [id(6), id(7), id(8), id(9)]);
    await readGroup(redis, s1(), 'c1', 100);
    let m: Sample[] = await scrape(url);
    assert.equal(value(m, 'surge_consumer_group_lag', sg(s0())), 0);
    assert.equal(value(m, 'surge_consumer_group_lag_seconds', sg(s0())), 0);
    assert.equal(value(m, 'surge_consumer_group_pending', sg(s0())), 9);
    assert.equal(value(m, 'surge_consumer_group_backlog', sg(s0())), 9);
    // Shard 1 read past the deletions: Redis knows the lag again, and it is 0.
    assert.equal(value(m, 'surge_consumer_group_lag', sg(s1())), 0);
    assert.equal(value(m, 'surge_consumer_group_lag_null', sg(s1())), 0);
    assert.equal(value(m, 'surge_consumer_group_backlog', sg(s1())), 6);

    const pending = ((await redis.xpending(s0(), GROUP, '-', '+', 100)) as Array<[string]>).map((p) => p[0]);
    assert.equal(await redis.xack(s0(), GROUP, ...pending), 9);
    m = await scrape(url);
    assert.equal(value(m, 'surge_consumer_group_pending', sg(s0())), 0);
    assert.equal(value(m, 'surge_consumer_group_backlog', sg(s0())), 0);
    assert.equal(value(m, 'surge_oldest_pending_age_seconds', sg(s0())), 0);
    assert.equal(value(m, 'surge_consumer_pending', { ...sg(s0()), consumer: 'c-idle' }), 0);

    // A consumer deleted from the group disappears from /metrics (no stale series).
    await redis.xgroup('DELCONSUMER', s0(), GROUP, 'c-idle');
    m = await scrape(url);
    assert.equal(select(m, 'surge_consumer_idle_seconds', { consumer: 'c-idle' }).length, 0);
    assert.equal(value(m, 'surge_consumer_group_consumers', sg(s0())), 1);
  });
});

describe('lag exporter: caching and Redis outages (private redis-server)', () => {
  test('one Redis reading per cache period, however many scrapes', async () => {
    const server = await startRedisServer();
    const r = new Redis(server.url);
    let env: TestEnv | undefined;
    let exporter: LagExporter | undefined;
    try {
      env = await createTestEnv({ SURGE_SHARDS: '2', SURGE_LAG_CACHE_MS: '60000' }, server.url);
      await ensureGroups(r, env.prefix, 2);
      await r.xadd(streamKey(env.prefix, 0), '*', 'v', '1');
      exporter = await startLagExporter(env.config, { defaultMetrics: false });
      const url = `http://127.0.0.1:${exporter.port}/metrics`;
      await r.config('RESETSTAT');
      const all = await Promise.all(Array.from({ length: 10 }, () => scrape(url)));
      for (let i = 0; i < 5; i++) all.push(await scrape(url));
      for (const m of all) assert.equal(value(m, 'surge_stream_length', { stream: streamKey(env.prefix, 0) }), 1);
      const stats = await r.info('commandstats');
      // One reading = one XLEN (of the DLQ) per shard.
      assert.match(stats, /cmdstat_xlen:calls=2,/, stats);
      // A new entry is not seen while the cached reading is fresh.
      await r.xadd(streamKey(env.prefix, 0), '*', 'v', '1');
      assert.equal(value(await scrape(url), 'surge_stream_length', { stream: streamKey(env.prefix, 0) }), 1);
    } finally {
      await exporter?.stop();
      r.disconnect();
      await env?.cleanup().catch(() => {});
      await server.stop();
    }
  });

  test('Redis down: redis_up 0, no stale figures, /readyz 503; back up: figures return', async () => {
    const server = await startRedisServer();
    const r = new Redis(server.url);
    r.on('error', () => {});
    let env: TestEnv | undefined;
    let exporter: LagExporter | undefined;
    try {
      env = await createTestEnv({ SURGE_SHARDS: '1', SURGE_LAG_CACHE_MS: '0' }, server.url);
      await ensureGroups(r, env.prefix, 1);
      await r.xadd(streamKey(env.prefix, 0), '*', 'v', '1');
      exporter = await startLagExporter(env.config, { defaultMetrics: false });
      const base = `http://127.0.0.1:${exporter.port}`;
      let m = await scrape(`${base}/metrics`);
      assert.equal(value(m, 'surge_lag_exporter_redis_up'), 1);
      assert.equal(value(m, 'surge_consumer_group_backlog', { stream: streamKey(env.prefix, 0), group: GROUP }), 1);
      assert.equal((await fetch(`${base}/readyz`)).status, 200);

      await server.kill();
      m = await waitFor('redis_up 0', async () => {
        const s = await scrape(`${base}/metrics`);
        return value(s, 'surge_lag_exporter_redis_up') === 0 ? s : undefined;
      });
      assert.equal(select(m, 'surge_consumer_group_backlog').length, 0, 'no stale backlog while Redis is unreadable');
      assert.equal(select(m, 'surge_stream_length').length, 0);
      assert.ok((value(m, 'surge_lag_exporter_errors_total') ?? 0) >= 1);
      await waitFor('/readyz 503', async () => (await fetch(`${base}/readyz`)).status === 503);
      assert.equal((await fetch(`${base}/healthz`)).status, 200);

      await server.restart();
      // The server ran without persistence: the stream is gone, and the exporter says so.
      m = await waitFor('redis_up 1 again', async () => {
        const s = await scrape(`${base}/metrics`);
        return value(s, 'surge_lag_exporter_redis_up') === 1 ? s : undefined;
      });
      assert.equal(value(m, 'surge_stream_length', { stream: streamKey(env.prefix, 0) }), 0);
    } finally {
      await exporter?.stop();
      r.disconnect();
      await env?.cleanup().catch(() => {});
      await server.stop();
    }
  });
});
