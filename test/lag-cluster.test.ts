// The lag reader and exporter on a real 3-master Redis Cluster: each shard's commands must reach
// the node that owns the shard's hash tag, and memory is reported per master.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Cluster } from 'ioredis';
import { loadConfig } from '../common/config.js';
import { GROUP, streamKey } from '../common/keys.js';
import { createRedis, redisReady } from '../common/redis.js';
import { ensureGroups } from '../common/streams.js';
import { type LagExporter, startLagExporter } from '../metrics/exporter.js';
import { readLag } from '../metrics/lag.js';
import { uniquePrefix } from '../devkit/scratch.js';
import { waitFor } from '../devkit/wait.js';
import { type RedisClusterHandle, startRedisCluster } from './support/cluster.js';
import { scrape, select, value } from './support/prom.js';

const BASE = Date.now() - 3_600_000;
const NOW = BASE + 60_000;
const id = (i: number) => `${BASE + i * 1000}-0`;
const SHARDS = 4;

describe('lag on Redis Cluster (3 masters)', () => {
  let rc: RedisClusterHandle | undefined;
  let servers: { port: number }[] = [];
  let cluster: Cluster;
  let exporter: LagExporter | undefined;
  const prefix = uniquePrefix();

  before(async () => {
    rc = await startRedisCluster({ masters: 3 });
    servers = rc.nodes;
    const config = loadConfig({
      REDIS_CLUSTER_NODES: `127.0.0.1:${servers[0]?.port}`,
      SURGE_REDIS_PREFIX: prefix,
      SURGE_SHARDS: String(SHARDS),
    });
    cluster = createRedis(config) as Cluster;
    await redisReady(cluster, 10_000);
    await ensureGroups(cluster, prefix, SHARDS);
    // Shard i: 5 + i entries, i + 1 delivered to consumer c<i>; shard 3 also loses an undelivered entry (NULL lag).
    for (let shard = 0; shard < SHARDS; shard++) {
      const key = streamKey(prefix, shard);
      for (let e = 0; e < 5 + shard; e++) await cluster.xadd(key, id(e), 'v', '1');
      await cluster.xreadgroup('GROUP', GROUP, `c${shard}`, 'COUNT', shard + 1, 'STREAMS', key, '>');
    }
    await cluster.xdel(streamKey(prefix, 3), id(6));
  });

  after(async () => {
    await exporter?.stop();
    cluster?.disconnect();
    await rc?.stop();
  });

  test('the shards really are spread over several nodes', async () => {
    const owners = new Set<string>();
    for (let shard = 0; shard < SHARDS; shard++) {
      const slot = (await cluster.cluster('KEYSLOT', streamKey(prefix, shard))) as number;
      owners.add(String(cluster.slots[slot]?.[0]));
    }
    assert.ok(owners.size >= 2, `shards on ${[...owners].join(', ')}`);
  });

  test('readLag: every shard equals the truth, memory for every master', async () => {
    const snap = await readLag(cluster, prefix, SHARDS, NOW);
    for (let shard = 0; shard < 3; shard++) {
      const s = snap.shards[shard];
      const total = 5 + shard;
      const delivered = shard + 1;
      assert.equal(s?.length, total);
      assert.equal(s?.group?.lag, total - delivered, `shard ${shard}`);
      assert.equal(s?.group?.pending, delivered);
      assert.equal(s?.group?.backlog, total);
      assert.equal(s?.group?.oldestUndeliveredAgeSeconds, 60 - delivered);
      assert.equal(s?.group?.oldestPendingAgeSeconds, 60);
      assert.deepEqual(
        s?.group?.consumers.map((c) => [c.name, c.pending]),
        [[`c${shard}`, delivered]],
      );
    }
    // Shard 3: 8 entries, 4 delivered, entry 6 deleted: lag NULL, 3 undelivered counted.
    const s3 = snap.shards[3]?.group;
    assert.equal(s3?.lag, null);
    assert.deepEqual([s3?.undelivered, s3?.undeliveredSource, s3?.backlog], [3, 'counted', 7]);
    assert.equal(snap.memory.length, 3);
    assert.deepEqual(new Set(snap.memory.map((m) => m.node)), new Set(servers.map((s) => `127.0.0.1:${s.port}`)));
  });

  test('the exporter serves the same figures from a Cluster config', async () => {
    const config = loadConfig({
      REDIS_CLUSTER_NODES: servers.map((s) => `127.0.0.1:${s.port}`).join(','),
      SURGE_REDIS_PREFIX: prefix,
      SURGE_SHARDS: String(SHARDS),
      SURGE_LAG_EXPORTER_PORT: '0',
      SURGE_LAG_CACHE_MS: '0',
      SURGE_LOG_LEVEL: 'silent',
    });
    exporter = await startLagExporter(config, { now: () => NOW, defaultMetrics: false });
    const m = await waitFor('a successful reading', async () => {
      const s = await scrape(`http://127.0.0.1:${exporter?.port}/metrics`);
      return value(s, 'surge_lag_exporter_redis_up') === 1 ? s : undefined;
    });
    for (let shard = 0; shard < SHARDS; shard++) {
      const stream = streamKey(prefix, shard);
      const expected = shard === 3 ? 7 : 5 + shard;
      assert.equal(value(m, 'surge_consumer_group_backlog', { stream, group: GROUP }), expected, stream);
    }
    assert.equal(value(m, 'surge_consumer_group_lag', { stream: streamKey(prefix, 3), group: GROUP }), undefined);
    assert.equal(select(m, 'surge_redis_used_memory_bytes').length, 3);
  });
});
