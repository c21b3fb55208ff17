// Scale-out path on a real Redis Cluster: 3 masters with a replica each on loopback
// (`redis-server --cluster-enabled yes` ×6, joined by test/support/cluster.ts),
// `surge ingest` + 2 `surge work` with REDIS_CLUSTER_NODES and SURGE_SHARDS=8. Fast mode: shows
// where each shard stream lives (CLUSTER KEYSLOT → owning node), checks every order is applied
// exactly once, then restarts one master (SIGKILL + same port and dir, AOF always, nodes.conf
// kept) under load and checks again. Durable mode (WAIT 1 on each shard's master): the same
// check, then a master killed under load, its replica promoted and the master restarted. And
// durable mode refusing to start on a cluster whose masters have no replica.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { SurgeClient } from '../../client/index.js';
import { allStreamKeys, idemKey, shardFor, streamKey } from '../../common/keys.js';
import { createLogger } from '../../common/log.js';
import { keySlot } from '../../common/redis.js';
import { startIngest } from '../../ingest/server.js';
import { createTestEnv } from '../../devkit/scratch.js';
import { type RedisClusterHandle, startRedisCluster } from '../support/cluster.js';
import { assertExactlyOnce, FaultStack, formatRow, TABLE_HEADER } from './stack.js';
import { waitFor } from '../../devkit/wait.js';
import { defined, parseOrderRef } from '../support/defined.js';
import { http } from '../support/http.js';
import { sampleOrder } from '../support/deadletters.js';

/** A plain connection to one node (READONLY, so a replica answers reads of its slots). */
async function nodeClient(port: number): Promise<Redis> {
  const r = new Redis(port, '127.0.0.1', { maxRetriesPerRequest: 1 });
  r.on('error', () => {});
  await r.call('READONLY');
  return r;
}

/** Calls of `command` a node has served (INFO commandstats). */
async function commandCalls(port: number, command: string): Promise<number> {
  const r = new Redis(port, '127.0.0.1', { maxRetriesPerRequest: 1 });
  r.on('error', () => {});
  try {
    const stats = await r.info('commandstats');
    return Number(new RegExp(`^cmdstat_${command}:calls=(\\d+)`, 'm').exec(stats)?.[1] ?? 0);
  } finally {
    r.disconnect();
  }
}

describe('Redis Cluster: 3 masters with a replica each, 8 shards', () => {
  let cluster: RedisClusterHandle;
  before(async () => {
    cluster = await startRedisCluster({ masters: 3, replicas: 1 });
  });
  after(async () => {
    await cluster?.stop();
  });

  /** 1 ingest and 2 workers on the cluster, 8 shards, `env` for every process. */
  const startClusterStack = async (env?: Record<string, string>): Promise<FaultStack> => {
    const stack = new FaultStack({
      cluster,
      shards: 8,
      ingests: 1,
      workers: 2,
      privatePostgres: false,
      progress: 60,
      ...(env ? { env } : {}),
      log: process.env.SURGE_FAULTS_VERBOSE ? (l) => console.log(l) : undefined,
    });
    await stack.start();
    return stack;
  };

  describe('fast mode', () => {
    let stack: FaultStack;
    before(async () => {
      stack = await startClusterStack();
    });
    after(async () => {
      if (stack?.rows.length) console.log(`${TABLE_HEADER}\n${stack.rows.map(formatRow).join('\n')}`);
      await stack?.stop();
    });

    test('the 8 shard streams (and their idempotency records) spread over the 3 masters; every order applied exactly once', async () => {
      const row = await stack.phase('none');
      const prefix = stack.prefix;
      const placement = await Promise.all(
        allStreamKeys(prefix, 8).map(async (key) => ({ key, ...(await cluster.locate(key)) })),
      );
      console.log(
        placement
          .map((p) => `${p.key} → slot ${p.slot} → node ${p.node} (port ${cluster.nodes[p.node]?.port})`)
          .join('\n'),
      );
      const nodes = new Set(placement.map((p) => p.node));
      assert.equal(nodes.size, 3, 'shards on every master');
      // Durable mode routes each accept call itself by this slot.
      for (const p of placement) assert.equal(keySlot(p.key), p.slot, `${p.key}: slot computed as Redis does`);
      assert.ok(placement.every((p) => p.node >= 0));
      // An idempotency record shares its stream's slot (one Lua call touches both).
      const someKey = defined(stack.load.records.keys().next().value, 'an accepted order');
      const shard = shardFor(stack.client.id, someKey, 8);
      const rec = await cluster.locate(idemKey(prefix, shard, stack.client.id, someKey));
      assert.equal(rec.slot, placement[shard]?.slot);
      // Each master holds entries of its shards (XLEN through the cluster client).
      for (const p of placement) assert.ok((await stack.admin.xlen(p.key)) > 0, `${p.key} has entries`);
      assert.equal(row.lost, 0);
      assert.equal(row.duplicates, 0);
      assert.equal(row.phantoms, 0);
      assert.ok(row.check.ok, JSON.stringify({ ...row.check, lost: row.check.lost.length }));
      assert.equal(row.applied, row.accepted);
    });

    test('one master SIGKILLed and restarted (same port and dir, AOF always) under load: nothing lost or doubled', async () => {
      const row = await stack.phase('cluster-master-restart');
      assertExactlyOnce(row, false);
      assert.ok(row.requests > row.sent, 'the restart was felt: some requests were retried');
    });

    // Last: its orders are none of the load's, which the phases above would count as phantoms.
    test('?wait answers when the outcome is published, though the shards sit in different slots', async () => {
      const ingest = defined(stack.ingests[0], 'the ingest process');
      const client = new SurgeClient({ baseUrl: ingest.url, apiKey: stack.client.apiKey });
      const waitSeconds = 30;
      for (let i = 0; i < 4; i++) {
        const key = `wait-${i}`;
        // Workers held while the order is queued: the answer must come from the outcome stream once
        // they resume, not from the lookup at the wait's end (which would also say applied).
        for (const w of stack.workers) w.signal('SIGSTOP');
        let asked = 0;
        let state: Awaited<ReturnType<SurgeClient['waitFor']>> | Error;
        try {
          await client.submit(sampleOrder(`wait-${i}`), { key });
          asked = Date.now();
          const answer = client.waitFor(key, { timeoutMs: waitSeconds * 1000 }).catch((e: Error) => e);
          await waitFor('the ingest to hold the wait', async () => (await client.getOrder(key)).status === 'queued');
          for (const w of stack.workers) w.signal('SIGCONT');
          state = await answer;
        } finally {
          for (const w of stack.workers) w.signal('SIGCONT');
        }
        assert.ok(!(state instanceof Error), String(state));
        assert.equal(state.status, 'applied');
        assert.ok(Date.now() - asked < (waitSeconds * 1000) / 2, 'answered by the outcome, not at the timeout');
      }
    });
  });

  describe('durable mode: WAIT 1 on the master of each shard', () => {
    let stack: FaultStack;
    before(async () => {
      stack = await startClusterStack({ SURGE_DURABILITY: 'durable', SURGE_DURABLE_TIMEOUT_MS: '1000' });
    });
    after(async () => {
      if (stack?.rows.length) console.log(`${TABLE_HEADER}\n${stack.rows.map(formatRow).join('\n')}`);
      await stack?.stop();
    });

    test('every order applied exactly once; each master ran the WAITs of its shards', async () => {
      const masters = new Set<number>();
      for (const key of allStreamKeys(stack.prefix, 8)) masters.add((await cluster.locate(key)).node);
      const before = new Map<number, number>();
      for (const m of masters) before.set(m, await commandCalls(defined(cluster.nodes[m], 'a master').port, 'wait'));
      const row = await stack.phase('none');
      assert.equal(row.lost, 0);
      assert.equal(row.duplicates, 0);
      assert.equal(row.phantoms, 0);
      assert.ok(row.check.ok, JSON.stringify({ ...row.check, lost: row.check.lost.length }));
      assert.equal(row.applied, row.accepted);
      for (const m of masters) {
        const port = defined(cluster.nodes[m], 'a master').port;
        assert.ok((await commandCalls(port, 'wait')) > (before.get(m) ?? 0), `WAIT ran on the master on port ${port}`);
      }
    });

    test('the master of shard 0 SIGKILLed under load, its replica promoted, the master restarted as a replica: nothing lost or doubled', async () => {
      const key = streamKey(stack.prefix, 0);
      const owner = (await cluster.locate(key)).node;
      const row = await stack.phase('cluster-failover');
      assert.notEqual((await cluster.locate(key)).node, owner, 'shard 0 is served by the promoted replica');
      assertExactlyOnce(row, false);
      assert.ok(row.requests > row.sent, 'the failover was felt: some requests were retried');
    });

    // Last: its orders are none of the load's, which a phase after it would count as phantoms.
    test('a shard whose master lost its replica answers 503; a shard on another master answers 202, already on that master’s replica', async () => {
      const ingest = defined(stack.ingests[0], 'the ingest process');
      const post = (key: string) =>
        http(ingest.url, {
          method: 'POST',
          path: '/v1/orders',
          headers: {
            authorization: `Bearer ${stack.client.apiKey}`,
            'content-type': 'application/json',
            'idempotency-key': key,
          },
          body: JSON.stringify(sampleOrder(key)),
        });
      const replicaOf = async (master: number): Promise<number> => {
        const node = await nodeClient(defined(cluster.nodes[master], 'a master').port);
        try {
          const port = Number(/^slave0:.*port=(\d+)/m.exec(await node.info('replication'))?.[1]);
          return cluster.nodes.findIndex((n) => n.port === port);
        } finally {
          node.disconnect();
        }
      };
      const ownerOfShard = async (shard: number) => (await cluster.locate(streamKey(stack.prefix, shard))).node;
      // Two keys: one on a shard of the master whose replica goes down, one on another master's shard.
      const victimMaster = await ownerOfShard(0);
      let blocked: string | undefined;
      let open: { key: string; master: number } | undefined;
      for (let i = 0; (blocked === undefined || open === undefined) && i < 1000; i++) {
        const key = `replica-${i}`;
        const master = await ownerOfShard(shardFor(stack.client.id, key, 8));
        if (master === victimMaster) blocked ??= key;
        else open ??= { key, master };
      }
      const blockedKey = defined(blocked, 'a key on the victim master');
      const { key: openKey, master: openMaster } = defined(open, 'a key on another master');
      const victimReplica = await replicaOf(victimMaster);
      assert.ok(victimReplica >= 0, 'the master has a replica');
      await cluster.kill(victimReplica);
      try {
        const refused = await post(blockedKey);
        assert.equal(refused.status, 503, refused.text);
        const accepted = await post(openKey);
        assert.equal(accepted.status, 202, accepted.text);
        const ref = parseOrderRef((accepted.json as { order_ref: string }).order_ref);
        const replica = await nodeClient(defined(cluster.nodes[await replicaOf(openMaster)], 'a replica').port);
        try {
          // WAIT 1 returned on that master's connection, so its replica already holds the entry.
          const onReplica = await replica.xrange(streamKey(stack.prefix, ref.shard), ref.entryId, ref.entryId);
          assert.equal(onReplica.length, 1, 'the accepted entry is on the replica');
        } finally {
          replica.disconnect();
        }
      } finally {
        await cluster.restart(victimReplica);
      }
      const retried = await post(blockedKey);
      assert.equal(retried.status, 202, retried.text);
    });
  });
});

describe('Redis Cluster whose masters have no replica: durable mode', () => {
  test('refuses to start, naming each master and what it lacks', async () => {
    const bare = await startRedisCluster({ masters: 3 });
    const env = await createTestEnv(
      { REDIS_CLUSTER_NODES: bare.seeds, SURGE_DURABILITY: 'durable' },
      `redis://${bare.seeds.split(',')[0]}`,
    );
    try {
      await assert.rejects(startIngest(env.config, { logger: createLogger('silent', 'ingest') }), (e: Error) => {
        assert.match(e.message, /cannot be honoured by this Redis Cluster/);
        for (const n of bare.nodes)
          assert.match(
            e.message,
            new RegExp(`master 127\\.0\\.0\\.1:${n.port}: .*WAIT 1 needs a connected replica \\(connected_slaves:0\\)`),
          );
        assert.match(e.message, /SURGE_DURABILITY=fast/);
        return true;
      });
    } finally {
      await env.cleanup();
      await bare.stop();
    }
  });
});
