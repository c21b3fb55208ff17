import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import pg from 'pg';
import { dlqKey, shardFor, streamKey } from '../common/keys.js';
import { encodeEntry } from '../common/entry.js';
import { canonicalOrderJson, type Order } from '../common/order.js';
import { PACKAGE_ROOT } from '../common/paths.js';
import {
  batchStatus,
  createReplayQueue,
  type DlqDeps,
  enqueueReplays,
  getDeadLetter,
  purgeDeadLetters,
  replayDeadLetter,
  startReplayWorker,
  syncDeadLetterStreams,
} from '../maintenance/dlq.js';
import { bullConnection } from '../maintenance/queues.js';
import { startMaintenance } from '../maintenance/service.js';
import { dlqEntryFields, ensureGroups } from '../common/streams.js';
import { applyAvailable, createDeadLetter, sampleOrder } from './support/deadletters.js';
import { createTestEnv, type TestEnv } from '../devkit/scratch.js';
import { waitFor } from '../devkit/wait.js';
import { defined } from './support/defined.js';

const run = promisify(execFile);
const CLI = join(PACKAGE_ROOT, 'dist', 'cli', 'surge.js');

/** An order's entry as the DLQ replay writes it (common/entry.ts encodeEntry). */
const entry = (clientId: string, idempotencyKey: string, order: Order) =>
  encodeEntry({ clientId, idempotencyKey, canonical: canonicalOrderJson(order) });

describe('dead letters', () => {
  let t: TestEnv;
  let redis: Redis;
  let pool: pg.Pool;
  let deps: DlqDeps;
  const surge = (args: string[]) => run(process.execPath, [CLI, ...args], { env: { ...process.env, ...t.env } });

  before(async () => {
    t = await createTestEnv({ SURGE_SHARDS: '4', SURGE_MAINTENANCE_METRICS_PORT: '0' });
    redis = new Redis(t.redisUrl);
    pool = new pg.Pool({ connectionString: t.db.url, max: 4 });
    deps = { pool, redis, prefix: t.prefix, shards: t.config.shards };
    await ensureGroups(redis, t.prefix, t.config.shards);
  });
  after(async () => {
    redis.disconnect();
    await pool.end();
    await t.cleanup();
  });

  test('list filters by reason, client and time; show gives the whole record', async () => {
    const a = await createDeadLetter(redis, pool, t.prefix, 4, {
      client: 'list-a',
      key: 'k-1',
      reason: 'permanent_error',
      sqlstate: '23514',
    });
    const b = await createDeadLetter(redis, pool, t.prefix, 4, {
      client: 'list-b',
      key: 'k-2',
      reason: 'max_deliveries',
      sqlstate: undefined,
      deliveries: 6,
    });
    const c = await createDeadLetter(redis, pool, t.prefix, 4, {
      client: 'list-a',
      key: 'k-3',
      reason: 'undecodable',
      fields: ['v', '9', 'c', 'list-a', 'k', 'k-3', 'o', '{}'],
    });
    await pool.query(`UPDATE dead_letters SET first_seen_at = now() - interval '3 days' WHERE id = $1`, [c.id]);

    const ids = (out: string) =>
      (JSON.parse(out) as Array<{ id: number }>).map((r) => r.id).filter((id) => [a.id, b.id, c.id].includes(id));
    assert.deepEqual(ids((await surge(['dlq', 'list', '--json'])).stdout), [a.id, b.id, c.id]);
    assert.deepEqual(ids((await surge(['dlq', 'list', '--json', '--client', 'list-a'])).stdout), [a.id, c.id]);
    assert.deepEqual(ids((await surge(['dlq', 'list', '--json', '--reason', 'max_deliveries'])).stdout), [b.id]);
    assert.deepEqual(ids((await surge(['dlq', 'list', '--json', '--since', '1d'])).stdout), [a.id, b.id]);
    assert.deepEqual(ids((await surge(['dlq', 'list', '--json', '--until', '2d', '--client', 'list-a'])).stdout), [
      c.id,
    ]);

    const shown = JSON.parse((await surge(['dlq', 'show', String(b.id), '--json'])).stdout) as Record<string, unknown>;
    assert.equal(shown.clientId, 'list-b');
    assert.equal(shown.idempotencyKey, 'k-2');
    assert.equal(shown.reason, 'max_deliveries');
    assert.equal(shown.deliveries, 6);
    assert.equal(shown.stream, b.stream);
    assert.equal(shown.entryId, b.entryId);
    assert.ok(shown.firstSeenAt && shown.lastSeenAt);
    assert.deepEqual(JSON.parse(shown.payload as string), sampleOrder());
    const text = (await surge(['dlq', 'show', String(a.id)])).stdout;
    assert.match(text, /sqlstate: 23514/);
    assert.match(text, /"customer_id": "cust-1"/);
    await assert.rejects(surge(['dlq', 'show', '999999']), /no dead letter 999999/);

    // The undecodable one is listed but refused on replay, with the decoder's reason.
    const r = await surge(['dlq', 'replay', String(c.id), '--json']).catch((e: { stdout: string; code: number }) => e);
    assert.equal((r as { code?: number }).code, 1);
    assert.equal(JSON.parse(r.stdout).outcome, 'not_replayable');
    assert.deepEqual(await purgeDeadLetters(deps, [a.id, b.id, c.id]), { rows: 3, streamEntries: 3 });
  });

  test('replaying a dead letter after fixing its cause applies it exactly once; replaying an applied one changes nothing', async () => {
    // The cause: a constraint the order violates (a real SQLSTATE 23514 from PostgreSQL).
    await pool.query(`ALTER TABLE orders ADD CONSTRAINT test_block CHECK (customer_id <> 'blocked')`);
    const client = 'replay-c';
    const key = 'order-42';
    const stream = streamKey(t.prefix, shardFor(client, key, 4));
    await redis.xadd(stream, '*', ...entry(client, key, sampleOrder('blocked')));
    const first = await applyAvailable(redis, pool, t.prefix, 4);
    assert.deepEqual(first, { inserted: 0, duplicate: 0, deadLettered: 1 });
    const row = (
      await pool.query<{ id: string; sqlstate: string }>('SELECT id, sqlstate FROM dead_letters WHERE client_id = $1', [
        client,
      ])
    ).rows;
    assert.equal(row.length, 1);
    assert.equal(row[0]?.sqlstate, '23514');
    const id = Number(row[0]?.id);
    const shard = shardFor(client, key, 4);
    assert.equal((await redis.xlen(dlqKey(t.prefix, shard))) > 0, true, 'the DLQ stream has the entry');

    // Fix the cause, replay through the CLI.
    await pool.query('ALTER TABLE orders DROP CONSTRAINT test_block');
    const lenBefore = await redis.xlen(stream);
    const out = JSON.parse((await surge(['dlq', 'replay', String(id), '--json'])).stdout) as {
      outcome: string;
      stream: string;
      entryId: string;
    };
    assert.equal(out.outcome, 'replayed');
    assert.equal(out.stream, stream, 're-enqueued to the order’s own shard');
    assert.equal(await redis.xlen(stream), lenBefore + 1);
    const [replayed] = await redis.xrange(stream, out.entryId, out.entryId);
    assert.ok(replayed, 'the replayed entry is in the stream');
    assert.deepEqual(replayed[1], entry(client, key, sampleOrder('blocked')), 'the original v,c,k,o');
    const marked = await getDeadLetter(pool, id);
    assert.ok(marked?.replayedAt);
    assert.equal(marked?.replays, 1);
    assert.equal(marked?.replayEntryId, out.entryId);

    // A second replay without --force is refused and adds nothing.
    const again = JSON.parse((await surge(['dlq', 'replay', String(id), '--json'])).stdout) as { outcome: string };
    assert.equal(again.outcome, 'already_replayed');
    assert.equal(await redis.xlen(stream), lenBefore + 1);

    assert.deepEqual(await applyAvailable(redis, pool, t.prefix, 4), { inserted: 1, duplicate: 0, deadLettered: 0 });
    const orders = async () =>
      (await pool.query('SELECT id, status, entry_id, applied_at FROM orders WHERE client_id = $1', [client])).rows;
    const applied = await orders();
    assert.equal(applied.length, 1, 'applied exactly once');
    assert.equal(applied[0].entry_id, out.entryId);

    // Replaying the now-applied order (forced) re-enqueues it, and applying it changes nothing.
    const forced = JSON.parse((await surge(['dlq', 'replay', String(id), '--force', '--json'])).stdout) as {
      outcome: string;
    };
    assert.equal(forced.outcome, 'replayed');
    assert.deepEqual(await applyAvailable(redis, pool, t.prefix, 4), { inserted: 0, duplicate: 1, deadLettered: 0 });
    assert.deepEqual(await orders(), applied);
  });

  test('bulk replay runs as BullMQ jobs, retries a transient failure with backoff, and enqueues each entry once', async () => {
    const made: Array<{ id: number; client: string; key: string }> = [];
    for (let i = 0; i < 120; i++) {
      const client = `bulk-${i % 3}`;
      const key = `bulk-key-${i}`;
      const d = await createDeadLetter(redis, pool, t.prefix, 4, {
        client,
        key,
        reason: 'max_deliveries',
        deliveries: 6,
      });
      made.push({ id: d.id, client, key });
    }
    const lengths = async () => Promise.all([0, 1, 2, 3].map((s) => redis.xlen(streamKey(t.prefix, s))));
    const before = await lengths();

    // A transient failure: another session holds one row's lock; replays time out on it.
    const blocker = new pg.Client({ connectionString: t.db.url });
    await blocker.connect();
    await blocker.query('BEGIN');
    await blocker.query('SELECT 1 FROM dead_letters WHERE id = $1 FOR UPDATE', [made[70]?.id]);

    const connection = bullConnection(t.config, 'test-replay');
    const queue = createReplayQueue(t.config, connection);
    const worker = startReplayWorker(t.config, deps, { lockTimeoutMs: 100 });
    try {
      const batch = await enqueueReplays(
        queue,
        made.map((m) => m.id),
        { chunkSize: 25, backoffMs: 100 },
      );
      assert.equal(batch.jobIds.length, 5);
      const job = await waitFor('a failed attempt of the chunk holding the locked row', async () => {
        const j = await queue.getJob(defined(batch.jobIds[2], 'the third job'));
        return j && j.attemptsMade >= 1 ? j : undefined;
      });
      assert.match(job.failedReason, /lock timeout/);
      assert.equal((job.progress as { done: number }).done, 20, 'progress kept the 20 replayed before the locked row');
      await blocker.query('ROLLBACK');
      const status = await waitFor('the batch to finish', async () => {
        const s = await batchStatus(queue, batch);
        return s.finished ? s : undefined;
      });
      assert.equal(status.failedJobs.length, 0);
      assert.equal(status.total, 120);
      assert.equal(status.done, 120);
      assert.equal(status.replayed, 120);
    } finally {
      await blocker.end().catch(() => {});
      await worker.close();
      await queue.close();
      connection.disconnect();
    }
    const rows = (
      await pool.query<{
        id: string;
        replays: number;
        replay_stream: string;
        client_id: string;
        idempotency_key: string;
      }>('SELECT id, replays, replay_stream, client_id, idempotency_key FROM dead_letters WHERE id = ANY($1)', [
        made.map((m) => m.id),
      ])
    ).rows;
    assert.equal(rows.length, 120);
    for (const r of rows) {
      assert.equal(r.replays, 1, `dead letter ${r.id} replayed once`);
      assert.equal(r.replay_stream, streamKey(t.prefix, shardFor(r.client_id, r.idempotency_key, 4)));
    }
    const afterLens = await lengths();
    assert.equal(
      afterLens.reduce((a, b) => a + b, 0) - before.reduce((a, b) => a + b, 0),
      120,
      'exactly one new entry per dead letter',
    );
    await applyAvailable(redis, pool, t.prefix, 4);
  });

  test('the CLI replays a filter as BullMQ jobs and shows progress', async () => {
    for (let i = 0; i < 5; i++)
      await createDeadLetter(redis, pool, t.prefix, 4, {
        client: 'cli-bulk',
        key: `cli-${i}`,
        reason: 'permanent_error',
      });
    await createDeadLetter(redis, pool, t.prefix, 4, { client: 'cli-other', key: 'cli-x', reason: 'permanent_error' });
    const r = await surge(['dlq', 'replay', '--client', 'cli-bulk', '--chunk-size', '2']);
    assert.match(r.stderr, /replay r\w+: 5\/5 done \(replayed 5, skipped 0\)/);
    assert.match(r.stdout, /replayed 5, skipped 0/);
    const replayed = (
      await pool.query(`SELECT client_id, replays FROM dead_letters WHERE client_id LIKE 'cli-%' ORDER BY id`)
    ).rows;
    assert.deepEqual(
      replayed.map((x) => x.replays),
      [1, 1, 1, 1, 1, 0],
    );
    // Again: nothing left to replay unless --force.
    assert.match((await surge(['dlq', 'replay', '--client', 'cli-bulk'])).stdout, /no matching dead letters/);
    await applyAvailable(redis, pool, t.prefix, 4);
    assert.equal((await pool.query(`SELECT count(*)::int AS n FROM orders WHERE client_id = 'cli-bulk'`)).rows[0].n, 5);
  });

  test('purge asks for confirmation, then deletes rows and DLQ stream entries', async () => {
    const d = [];
    for (let i = 0; i < 3; i++)
      d.push(await createDeadLetter(redis, pool, t.prefix, 4, { client: 'purge-me', key: `p-${i}` }));
    const dlqEntries = async () => {
      let n = 0;
      for (let s = 0; s < 4; s++) {
        for (const [, f] of await redis.xrange(dlqKey(t.prefix, s), '-', '+')) if (f.includes('purge-me')) n++;
      }
      return n;
    };
    assert.equal(await dlqEntries(), 3);
    await assert.rejects(surge(['dlq', 'purge', '--client', 'purge-me']), (e: { code: number; stderr: string }) => {
      assert.equal(e.code, 1);
      assert.match(e.stderr, /would delete 3 dead letter\(s\); not a terminal, so pass --yes/);
      return true;
    });
    assert.equal(
      (await pool.query(`SELECT count(*)::int AS n FROM dead_letters WHERE client_id = 'purge-me'`)).rows[0].n,
      3,
    );
    const r = await surge(['dlq', 'purge', '--client', 'purge-me', '--yes']);
    assert.match(r.stdout, /deleted 3 dead letter\(s\) and 3 DLQ stream entries/);
    assert.equal(
      (await pool.query(`SELECT count(*)::int AS n FROM dead_letters WHERE client_id = 'purge-me'`)).rows[0].n,
      0,
    );
    assert.equal(await dlqEntries(), 0);
  });

  test('a DLQ stream entry whose row was never written gets one (once)', async () => {
    const stream = streamKey(t.prefix, 1);
    const fields = entry('orphan', 'o-1', sampleOrder());
    await redis.xadd(
      dlqKey(t.prefix, 1),
      '*',
      ...dlqEntryFields(fields, {
        stream,
        entryId: '1-1',
        reason: 'max_deliveries',
        message: 'delivered 6 times',
        deliveries: 6,
      }),
    );
    assert.equal(
      await syncDeadLetterStreams(deps, { graceMs: 60_000 }),
      0,
      'younger than the grace period: left to its worker',
    );
    assert.equal(await syncDeadLetterStreams(deps, { graceMs: 0, now: Date.now() + 1 }), 1);
    assert.equal(await syncDeadLetterStreams(deps, { graceMs: 0, now: Date.now() + 1 }), 0);
    const row = (
      await pool.query(
        'SELECT client_id, idempotency_key, reason, deliveries, payload FROM dead_letters WHERE stream = $1 AND entry_id = $2',
        [stream, '1-1'],
      )
    ).rows[0];
    assert.deepEqual(
      { ...row, payload: JSON.parse(row.payload) },
      { client_id: 'orphan', idempotency_key: 'o-1', reason: 'max_deliveries', deliveries: 6, payload: sampleOrder() },
    );
  });

  test('maintenance counts unresolved dead letters; the count drops when one is replayed or purged', async () => {
    const unresolved = async () =>
      Number((await pool.query(`SELECT count(*) AS n FROM dead_letters WHERE replayed_at IS NULL`)).rows[0].n);
    const a = await createDeadLetter(redis, pool, t.prefix, 4, { client: 'gauge', key: 'g-1' });
    const b = await createDeadLetter(redis, pool, t.prefix, 4, { client: 'gauge', key: 'g-2' });
    const m = await startMaintenance(t.config, { metricsPort: 0, replayWorker: false, deadLetterGaugeMs: 20 });
    const gauge = async () => {
      const body = await (await fetch(`http://127.0.0.1:${m.metricsPort}/metrics`)).text();
      const line = body.split('\n').find((l) => l.startsWith('surge_dead_letters_unresolved'));
      return Number(line?.split(' ').at(-1));
    };
    try {
      const before = await unresolved();
      assert.ok(before >= 2);
      await waitFor('the gauge at the unresolved count', async () => (await gauge()) === before);
      assert.equal((await replayDeadLetter(deps, a.id)).outcome, 'replayed');
      await waitFor('the gauge one lower after a replay', async () => (await gauge()) === before - 1);
      // The DLQ stream keeps the replayed entry: its depth does not say what is resolved.
      const entries = await redis.xrange(dlqKey(t.prefix, shardFor('gauge', 'g-1', 4)), '-', '+');
      assert.ok(entries.some(([, f]) => f.includes('g-1')));
      await purgeDeadLetters(deps, [b.id]);
      await waitFor('the gauge one lower again after a purge', async () => (await gauge()) === before - 2);
    } finally {
      await m.stop();
    }
  });
});
