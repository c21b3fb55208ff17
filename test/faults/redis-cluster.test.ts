// Scale-out path on a real Redis Cluster: 3 masters on loopback (`redis-server --cluster-enabled
// yes` ×3, `redis-cli --cluster create … --cluster-replicas 0`), `surge ingest` + 2 `surge work`
// with REDIS_CLUSTER_NODES and SURGE_SHARDS=8. Shows where each shard stream lives (CLUSTER
// KEYSLOT → owning node), checks every order is applied exactly once, then restarts one master
// (SIGKILL + same port and dir, AOF always, nodes.conf kept) under load and checks again.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { SurgeClient } from '../../client/index.js';
import { allStreamKeys, idemKey, shardFor } from '../../common/keys.js';
import { type RedisClusterHandle, startRedisCluster } from '../support/cluster.js';
import { FaultStack, formatRow, TABLE_HEADER } from './stack.js';
import { waitFor } from '../../devkit/wait.js';
import { defined } from '../support/defined.js';
import { sampleOrder } from '../support/deadletters.js';

describe('Redis Cluster: 3 masters, 8 shards', () => {
  let cluster: RedisClusterHandle;
  let stack: FaultStack;
  before(async () => {
    cluster = await startRedisCluster({ masters: 3 });
    stack = new FaultStack({
      cluster,
      shards: 8,
      ingests: 1,
      workers: 2,
      privatePostgres: false,
      progress: 60,
      log: process.env.SURGE_FAULTS_VERBOSE ? (l) => console.log(l) : undefined,
    });
    await stack.start();
  });
  after(async () => {
    if (stack?.rows.length) console.log(`${TABLE_HEADER}\n${stack.rows.map(formatRow).join('\n')}`);
    await stack?.stop();
    await cluster?.stop();
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
    assert.equal(row.lost, 0, `lost: ${row.check.lost.slice(0, 5).join(', ')}`);
    assert.equal(row.duplicates, 0);
    assert.equal(row.phantoms, 0);
    assert.deepEqual(row.check.altered, []);
    assert.deepEqual(row.check.stockErrors, []);
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
