// Outcomes without polling, on the real stack: `GET /v1/orders/:key?wait=` answers when the worker
// publishes the order's outcome (and at the end of the wait with the state then); the outcome
// streams carry every committed order exactly once, also when publishing failed after COMMIT
// (the entries stay pending and the outcome is published when they come back); maintenance's
// safe trim keeps what a downstream group has not acknowledged.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import pg from 'pg';
import { SurgeClient } from '../client/index.js';
import { type CreatedClient, createClient } from '../common/clients.js';
import { allOutcomeKeys, GROUP, outcomeKey, streamKey } from '../common/keys.js';
import { createLogger } from '../common/log.js';
import { parseOutcome } from '../common/outcome.js';
import { trimStreams } from '../maintenance/streams.js';
import { type IngestService, startIngest } from '../ingest/server.js';
import { startWorker, type WorkerHandle } from '../workers/worker.js';
import { createTestEnv, type TestEnv } from '../devkit/scratch.js';
import { waitFor } from '../devkit/wait.js';
import { http } from './support/http.js';

const order = (sku = 'free-1') => ({
  customer_id: 'c-1',
  currency: 'EUR',
  items: [{ sku, qty: 1, unit_price_cents: 100 }],
});

describe('order outcomes without polling', () => {
  let env: TestEnv;
  let ingest: IngestService;
  let worker: WorkerHandle | undefined;
  let pool: pg.Pool;
  let redis: Redis;
  let alice: CreatedClient;
  let surge: SurgeClient;
  const logger = createLogger('silent', 'outcomes-test');

  const outcomes = async () => {
    const out: Array<{ key: string; status: string }> = [];
    for (const stream of allOutcomeKeys(env.prefix, env.config.shards))
      for (const [, fields] of await redis.xrange(stream, '-', '+')) {
        const o = parseOutcome(fields);
        assert.ok(o, `an outcome entry: ${fields.join(' ')}`);
        out.push({ key: o.idempotencyKey, status: o.status });
      }
    return out;
  };

  before(async () => {
    env = await createTestEnv({
      SURGE_SHARDS: '2',
      SURGE_WORKER_THREADS: '1',
      SURGE_PG_POOL_SIZE: '2',
      SURGE_CLAIM_TIMEOUT_MS: '1000',
      SURGE_CLAIM_INTERVAL_MS: '200',
    });
    pool = new pg.Pool({ connectionString: env.db.url, max: 1 });
    redis = new Redis(env.redisUrl);
    alice = await createClient(pool, 'alice');
    await pool.query("INSERT INTO inventory (sku, available) VALUES ('scarce', 1)");
    ingest = await startIngest(env.config, { logger });
    surge = new SurgeClient({ baseUrl: ingest.url, apiKey: alice.apiKey });
  });
  after(async () => {
    await ingest?.stop();
    await worker?.stop();
    redis?.disconnect();
    await pool?.end();
    await env?.cleanup();
  });

  test('a held long poll whose client goes away is forgotten at once, not at the end of its wait', async () => {
    await surge.submit(order(), { key: 'gone-1' });
    const held = async () => {
      const text = await (await fetch(`${ingest.metricsUrl}/metrics`)).text();
      return Number(/^surge_ingest_long_polls(?:\{[^}]*\})? (\S+)$/m.exec(text)?.[1] ?? Number.NaN);
    };
    assert.equal(await held(), 0);
    // No worker yet: the order stays queued, so the poll waits (held out of node:http, held.ts).
    const socket = connect(new URL(ingest.url).port ? Number(new URL(ingest.url).port) : 80, '127.0.0.1');
    await once(socket, 'connect');
    socket.write(`GET /v1/orders/gone-1?wait=30 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${alice.apiKey}\r\n\r\n`);
    await waitFor('the poll held', async () => (await held()) === 1);
    socket.destroy();
    await waitFor('the poll forgotten', async () => (await held()) === 0, { timeoutMs: 5000 });
  });

  test('?wait answers as soon as the order is applied, or at the end of the wait with the state then', async () => {
    await surge.submit(order(), { key: 'w-1' });
    // No worker yet: the wait ends, queued.
    const started = Date.now();
    const queued = await surge.getOrder('w-1', 1);
    assert.equal(queued.status, 'queued');
    assert.ok(Date.now() - started >= 950, 'waited the second');
    // A long poll in flight, then the worker applies the order: the answer comes at once.
    const long = http(ingest.url, {
      path: '/v1/orders/w-1?wait=30',
      headers: { authorization: `Bearer ${alice.apiKey}` },
    });
    const asked = Date.now();
    worker = await startWorker(env.config, { logger });
    const res = await long;
    assert.equal(res.status, 200);
    assert.equal((res.json as { status: string }).status, 'applied');
    // Held out of node:http while it waited (ingest/held.ts): answered by hand, then closed.
    assert.equal(res.headers.connection, 'close');
    assert.match(String(res.headers['x-request-id']), /./);
    assert.equal(res.headers['content-type'], 'application/json; charset=utf-8');
    assert.ok(Date.now() - asked < 15_000, `answered after ${Date.now() - asked} ms, not at the end of the wait`);
    // Final already: answered at once.
    const t = Date.now();
    assert.equal((await surge.getOrder('w-1', 30)).status, 'applied');
    assert.ok(Date.now() - t < 1000);
    // Rejected, through the client's waitFor.
    await surge.submit(order('scarce'), { key: 'w-2' });
    await surge.submit(order('scarce'), { key: 'w-3' });
    const [a, b] = await Promise.all([surge.waitFor('w-2'), surge.waitFor('w-3')]);
    assert.deepEqual([a.status, b.status].sort(), ['applied', 'rejected']);
    // A bad wait is a 400.
    const bad = await http(ingest.url, {
      path: '/v1/orders/w-1?wait=soon',
      headers: { authorization: `Bearer ${alice.apiKey}` },
    });
    assert.equal(bad.status, 400);
  });

  test('every committed order is on the outcome streams exactly once, also when publishing failed after COMMIT', async () => {
    assert.ok(worker);
    // Publishing fails: one shard's outcome stream is a key of the wrong type. Its batches commit,
    // then stay pending (not acknowledged), like a worker that died between COMMIT and publish.
    const broken = outcomeKey(env.prefix, 0);
    const kept = await redis.xrange(broken, '-', '+');
    await redis.del(broken);
    await redis.set(broken, 'not a stream');
    const keys = Array.from({ length: 40 }, (_, i) => `x-${i}`);
    for (const key of keys) await surge.submit(order(), { key });
    await waitFor(
      'every order committed',
      async () => {
        const n = await pool.query<{ n: string }>("SELECT count(*) AS n FROM orders WHERE idempotency_key LIKE 'x-%'");
        return Number(n.rows[0]?.n) === keys.length;
      },
      { timeoutMs: 20_000 },
    );
    const published = (await redis.xrange(outcomeKey(env.prefix, 1), '-', '+')).filter(([, f]) =>
      parseOutcome(f)?.idempotencyKey.startsWith('x-'),
    ).length;
    assert.ok(published < keys.length, `shard 0's orders are committed but not published (${published} published)`);
    assert.ok((await redis.xpending(streamKey(env.prefix, 0), GROUP))[0] !== 0, "shard 0's entries stay pending");
    // Repaired: the pending entries are claimed again, applied as duplicates and published then.
    await redis.del(broken);
    for (const [, fields] of kept) await redis.xadd(broken, '*', ...fields);
    await waitFor(
      'every outcome published',
      async () => (await outcomes()).filter((o) => o.key.startsWith('x-')).length >= keys.length,
      { timeoutMs: 30_000 },
    );
    const all = await outcomes();
    const counts = new Map<string, number>();
    for (const o of all) counts.set(o.key, (counts.get(o.key) ?? 0) + 1);
    const committed = await pool.query<{ idempotency_key: string }>('SELECT idempotency_key FROM orders');
    for (const { idempotency_key: key } of committed.rows) assert.equal(counts.get(key), 1, `${key} published once`);
    assert.equal(all.length, committed.rows.length, 'nothing but committed orders');
    assert.ok(
      all.filter((o) => o.key.startsWith('x-')).every((o) => o.status === 'applied'),
      'published as applied',
    );
  });

  test("maintenance's trim keeps what a downstream group has not acknowledged", async () => {
    const stream = outcomeKey(env.prefix, 1);
    const before = await redis.xlen(stream);
    assert.ok(before > 0);
    const hour = { outcomeRetentionMs: 3_600_000 };
    // No group, nothing older than the retention: nothing is trimmed.
    await trimStreams(redis, env.prefix, env.config.shards, hour);
    assert.equal(await redis.xlen(stream), before);
    // A downstream group that has read and acknowledged nothing yet: nothing is trimmed either.
    await redis.xgroup('CREATE', stream, 'billing', '0');
    await trimStreams(redis, env.prefix, env.config.shards, hour);
    assert.equal(await redis.xlen(stream), before);
    const read = (await redis.xreadgroup('GROUP', 'billing', 'b-1', 'STREAMS', stream, '>')) as Array<
      [string, Array<[string, string[]]>]
    >;
    const ids = read[0]?.[1].map(([id]) => id) ?? [];
    assert.equal(ids.length, before);
    await redis.xack(stream, 'billing', ...ids);
    await trimStreams(redis, env.prefix, env.config.shards, { ...hour, limitPerCall: 1 });
    assert.ok((await redis.xlen(stream)) <= before);
  });

  test('an outcome stream without a reader is trimmed by age, so it cannot grow without bound', async () => {
    const stream = outcomeKey(env.prefix, 0);
    assert.deepEqual(await redis.xinfo('GROUPS', stream), [], 'no downstream group on this stream');
    // Old enough to be past a minute's retention: IDs set explicitly, from an hour ago.
    const hourAgo = Date.now() - 3_600_000;
    const pipe = redis.pipeline();
    for (let i = 0; i < 300; i++) pipe.xadd(stream, `${hourAgo + i}-0`, 'status', 'applied');
    // Rebuilt from scratch: old IDs can only be added below nothing newer.
    await redis.del(stream);
    await pipe.exec();
    for (let i = 0; i < 50; i++) await redis.xadd(stream, '*', 'status', 'applied');
    assert.equal(await redis.xlen(stream), 350);
    await trimStreams(redis, env.prefix, env.config.shards, { outcomeRetentionMs: 3_600_000 * 2 });
    assert.equal(await redis.xlen(stream), 350, 'within the retention: kept');
    await trimStreams(redis, env.prefix, env.config.shards, { outcomeRetentionMs: 60_000 });
    const left = await redis.xlen(stream);
    // `~` removes whole radix nodes (100 entries by default): the old entries go but part of one node.
    assert.ok(left >= 50 && left < 150, `old entries trimmed, recent ones kept (${left} left)`);
  });
});
