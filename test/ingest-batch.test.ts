// POST /v1/orders:batch writes each shard's orders with ACCEPT_LUA (many orders per script
// call; concurrent single orders share calls the same way). Every order must get what
// POST /v1/orders would have answered, call by call: new, replayed (byte for byte), mismatched
// (422), repeated within the batch, across script calls.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Command, Redis } from 'ioredis';
import pg from 'pg';
import { type CreatedClient, createClient } from '../common/clients.js';
import { allStreamKeys, idemKey, shardFor, streamKey } from '../common/keys.js';
import { createLogger } from '../common/log.js';
import type { Order } from '../common/order.js';
import { createRedis, type RedisClient, redisReady } from '../common/redis.js';
import { defineIngestCommands } from '../ingest/scripts.js';
import { THREAD_MIN_BODY_BYTES } from '../ingest/batch.js';
import { OrderIntake } from '../ingest/intake.js';
import { INGEST_REDIS_OPTIONS, type IngestService, startIngest } from '../ingest/server.js';
import { ORDERS_PER_SCRIPT_CALL, OrderWriter } from '../ingest/writer.js';
import { startRedisCluster } from './support/cluster.js';
import { createTestEnv, type TestEnv } from '../devkit/scratch.js';
import { http } from './support/http.js';
import { defined } from './support/defined.js';

const silent = createLogger('silent', 'ingest-batch-test');

/** A connection for an OrderWriter under test, as ingest's: the accept scripts defined, no offline queue, no resend. */
async function writerConnection(env: TestEnv): Promise<RedisClient> {
  const conn = createRedis(env.config, { offlineQueue: false, maxRetriesPerRequest: 0 });
  defineIngestCommands(conn);
  await redisReady(conn);
  return conn;
}

function order(n: number, customer = 'cust-1'): Order {
  return {
    customer_id: customer,
    currency: 'EUR',
    items: [{ sku: `sku-${n % 7}`, qty: 1 + (n % 5), unit_price_cents: 100 * n }],
  };
}

interface Result {
  index: number;
  idempotency_key: string;
  status: number;
  replayed?: boolean;
  location?: string;
  body?: { order_ref: string; idempotency_key: string; status: string };
  problem?: { type: string };
}

describe('ingest :batch (many orders per script call)', () => {
  let env: TestEnv;
  let ingest: IngestService;
  let redis: Redis;
  let pool: pg.Pool;
  let alice: CreatedClient;

  const auth = () => ({ authorization: `Bearer ${alice.apiKey}` });
  const single = (key: string, o: Order) =>
    http(ingest.url, {
      method: 'POST',
      path: '/v1/orders',
      headers: { ...auth(), 'content-type': 'application/json', 'idempotency-key': key },
      body: JSON.stringify(o),
    });
  const batch = (items: Array<{ key: string; order: Order }>) =>
    http(ingest.url, {
      method: 'POST',
      path: '/v1/orders:batch',
      headers: { ...auth(), 'content-type': 'application/json' },
      body: JSON.stringify(items.map((i) => ({ idempotency_key: i.key, ...i.order }))),
    });
  const entries = async () => {
    let n = 0;
    for (const k of allStreamKeys(env.prefix, env.config.shards)) n += await redis.xlen(k);
    return n;
  };

  before(async () => {
    env = await createTestEnv({ SURGE_SHARDS: '2' });
    redis = new Redis(env.redisUrl);
    pool = new pg.Pool({ connectionString: env.db.url, max: 2 });
    alice = await createClient(pool, 'alice');
    ingest = await startIngest(env.config, { logger: silent });
  });
  after(async () => {
    await ingest?.stop();
    redis?.disconnect();
    await pool?.end();
    await env?.cleanup();
  });

  test('a batch mixing new, replayed, mismatched and repeated keys answers each order as single calls would', async () => {
    // 700 items on 2 shards: every shard needs more than one script call.
    assert.ok(700 / 2 > ORDERS_PER_SCRIPT_CALL);
    const plan = (prefix: string) => {
      const items: Array<{ key: string; order: Order }> = [];
      for (let i = 0; i < 700; i++) {
        if (i % 10 === 3)
          items.push({ key: `${prefix}-old-${i}`, order: order(i) }); // sent before: replay
        else if (i % 10 === 6)
          items.push({ key: `${prefix}-old-${i}`, order: order(i, 'someone-else') }); // other order sent before: 422
        else if (i % 50 === 9 && i > 100)
          items.push({ key: `${prefix}-new-${i - 100}`, order: order(i - 100) }); // repeats an earlier item: replay
        else if (i % 50 === 19 && i > 100)
          items.push({ key: `${prefix}-new-${i - 100}`, order: order(i) }); // repeats an earlier key, other order: 422
        else items.push({ key: `${prefix}-new-${i}`, order: order(i) });
      }
      return items;
    };
    const previous = new Map<string, string>();
    for (const prefix of ['s', 'b']) {
      for (let i = 3; i < 700; i += 10) {
        const res = await single(`${prefix}-old-${i}`, order(i));
        assert.equal(res.status, 202);
        previous.set(`${prefix}-old-${i}`, res.text);
      }
      for (let i = 6; i < 700; i += 10) assert.equal((await single(`${prefix}-old-${i}`, order(i))).status, 202);
    }

    // Reference: the same plan, one POST /v1/orders per item, in order.
    const expected: Array<{ status: number; replayed: boolean; text: string }> = [];
    const firstBody = new Map<string, string>();
    for (const item of plan('s')) {
      const res = await single(item.key, item.order);
      expected.push({ status: res.status, replayed: res.headers['idempotent-replayed'] === 'true', text: res.text });
      if (res.status === 202 && !firstBody.has(item.key)) firstBody.set(item.key, previous.get(item.key) ?? res.text);
    }

    const before = await entries();
    const items = plan('b');
    const res = await batch(items);
    assert.equal(res.status, 207);
    assert.match(String(res.headers['content-type']), /^application\/json; charset=utf-8/);
    const results = (res.json as { results: Result[] }).results;
    assert.equal(results.length, items.length);
    const bodies = new Map<string, string>();
    results.forEach((r, i) => {
      const want = expected[i] as { status: number; replayed: boolean; text: string };
      const item = items[i] as { key: string };
      assert.equal(r.index, i);
      assert.equal(r.idempotency_key, item.key);
      assert.equal(r.status, want.status, `item ${i}`);
      if (r.status === 202) {
        assert.equal(r.replayed, want.replayed, `item ${i} replayed`);
        assert.equal(r.location, `/v1/orders/${item.key}`);
        const text = JSON.stringify(r.body);
        if (r.replayed)
          assert.equal(text, previous.get(item.key) ?? bodies.get(item.key), `item ${i}: the stored 202 body`);
        else bodies.set(item.key, text);
      } else {
        // The single answer's instance is its own request id; an item's problem has none.
        const { instance: _, ...single } = JSON.parse(want.text) as { instance?: string };
        assert.deepEqual(r.problem, single, `item ${i} problem`);
      }
    });
    const created = expected.filter((e) => e.status === 202 && !e.replayed).length;
    assert.equal(
      await entries(),
      before + created,
      'one entry per new order, none for replays, mismatches and repeats',
    );

    // Each new batch order replays through the single route, byte for byte.
    for (const [key, text] of [...bodies].slice(0, 20)) {
      const again = await single(
        key,
        defined(
          items.find((i) => i.key === key),
          key,
        ).order,
      );
      assert.equal(again.status, 202);
      assert.equal(again.headers['idempotent-replayed'], 'true');
      assert.equal(again.text, text);
    }
  });

  test('a batch prepared on the thread and the same batch prepared in place: the same orders (the second is all replays, byte for byte)', async () => {
    // 300 orders: well above THREAD_MIN_BODY_BYTES, so `ingest` (1 thread, the default) prepares it on its thread.
    const items = Array.from({ length: 300 }, (_, i) => ({
      key: `tp-${i}`,
      order: order(i, i % 3 === 0 ? 'cust-é€🛒' : 'cust-1'),
    }));
    const body = JSON.stringify(items.map((i) => ({ idempotency_key: i.key, ...i.order })));
    assert.ok(Buffer.byteLength(body) >= THREAD_MIN_BODY_BYTES);
    assert.equal(env.config.ingestBatchThreads, 1);
    const inPlace = await startIngest({ ...env.config, ingestBatchThreads: 0 }, { logger: silent });
    try {
      const send = (url: string) =>
        http(url, {
          method: 'POST',
          path: '/v1/orders:batch',
          headers: { ...auth(), 'content-type': 'application/json' },
          body,
        });
      const prepared = async (url: string, on: string) =>
        Number(
          new RegExp(`surge_ingest_batches_prepared_total\\{on="${on}",role="ingest"\\} (\\d+)`).exec(
            (await http(url, { path: '/metrics' })).text,
          )?.[1] ?? 0,
        );
      const before = await entries();
      const onThread = await prepared(ingest.metricsUrl, 'thread');
      const first = (await send(ingest.url)).json as { results: Result[] };
      assert.equal(await prepared(ingest.metricsUrl, 'thread'), onThread + 1, 'prepared on the thread');
      const second = (await send(inPlace.url)).json as { results: Result[] };
      assert.equal(await prepared(inPlace.metricsUrl, 'main'), 1, 'prepared in place');
      assert.equal(await entries(), before + 300);
      assert.deepEqual(
        first.results.map((r) => [r.status, r.replayed]),
        items.map(() => [202, false]),
      );
      assert.deepEqual(
        second.results.map((r) => [r.status, r.replayed]),
        items.map(() => [202, true]),
      );
      assert.deepEqual(
        second.results.map((r) => r.body),
        first.results.map((r) => r.body),
      );
    } finally {
      await inPlace.stop();
    }
  });

  test('concurrent single writes of one turn share script calls per shard; each is still checked, added and recorded once', async () => {
    const conn = await writerConnection(env);
    // Count the script calls this writer sends, as they reach the connection (pipelined or not;
    // the calls themselves go to the real Redis): the orders in each, from its numKeys.
    const calls: number[] = [];
    const send = conn.sendCommand.bind(conn);
    conn.sendCommand = ((command: Command, stream?: unknown) => {
      if (command.name === 'evalsha' || command.name === 'eval') calls.push(Number(command.args[1]) - 1);
      return send(command, stream as never);
    }) as typeof conn.sendCommand;
    try {
      const writer = new OrderWriter({ redis: conn, config: env.config, logger: silent });
      // 60 distinct keys, then the first 10 again with the same order and 5 again with another
      // order, all started in the same turn: repeats meet the record of the first write.
      const keys = Array.from({ length: 60 }, (_, i) => `co-${i}`);
      const before = await entries();
      const outcomes = await Promise.all([
        ...keys.map((k, i) => writer.write(writer.prepare(alice.id, k, order(i)))),
        ...keys.slice(0, 10).map((k, i) => writer.write(writer.prepare(alice.id, k, order(i)))),
        ...keys.slice(10, 15).map((k, i) => writer.write(writer.prepare(alice.id, k, order(i, 'someone-else')))),
      ]);
      const shardsUsed = new Set(keys.map((k) => shardFor(alice.id, k, env.config.shards))).size;
      assert.equal(calls.length, shardsUsed, 'one call per shard for the whole turn');
      assert.equal(
        calls.reduce((a, b) => a + b, 0),
        75,
      );
      assert.deepEqual(
        outcomes.map((o) => o.kind),
        [
          ...keys.map(() => 'accepted'),
          ...keys.slice(0, 10).map(() => 'replayed'),
          ...keys.slice(10, 15).map(() => 'mismatch'),
        ],
      );
      for (let i = 0; i < 10; i++)
        assert.deepEqual((outcomes[60 + i] as { body: string }).body, (outcomes[i] as { body: string }).body);
      assert.equal(await entries(), before + 60, 'one entry per key');

      // Writes of later turns make calls of their own.
      calls.length = 0;
      const one = await writer.write(writer.prepare(alice.id, 'co-late', order(1)));
      assert.equal(one.kind, 'accepted');
      assert.deepEqual(calls, [1]);
    } finally {
      conn.disconnect();
    }
  });

  test('single orders of one turn are checked and written together (OrderIntake): each gets its own outcome; bad ones cost the others nothing', async () => {
    const conn = await writerConnection(env);
    try {
      const intake = new OrderIntake(new OrderWriter({ redis: conn, config: env.config, logger: silent }));
      const json = (o: unknown) => Buffer.from(JSON.stringify(o));
      const before = await entries();
      // All submitted in the same turn: one check-and-write pass handles them.
      const outcomes = await Promise.all([
        intake.submit(json(order(1)), alice.id, 'in-1'),
        intake.submit(Buffer.from('{"customer_id":'), alice.id, 'in-2'),
        intake.submit(json({ ...order(3), items: [] }), alice.id, 'in-3'),
        intake.submit(Buffer.from([0x7b, 0xff, 0x7d]), alice.id, 'in-4'),
        intake.submit(json(order(5)), alice.id, 'in-5'),
        intake.submit(json(order(1)), alice.id, 'in-1'),
        intake.submit(json(order(2)), alice.id, 'in-5'),
      ]);
      assert.deepEqual(
        outcomes.map((o) => o.kind),
        ['accepted', 'invalid', 'invalid', 'invalid', 'accepted', 'replayed', 'mismatch'],
      );
      const problemOf = (i: number) =>
        (outcomes[i] as { problem: { type: string; errors?: Array<{ path: string }> } }).problem;
      assert.match(problemOf(1).type, /malformed-json$/);
      assert.match(problemOf(2).type, /invalid-order$/);
      assert.deepEqual(
        problemOf(2).errors?.map((e) => e.path),
        ['/items'],
      );
      assert.match(problemOf(3).type, /invalid-utf8$/);
      const bodyOf = (i: number) =>
        JSON.parse((outcomes[i] as { body: string }).body) as { idempotency_key: string; order_ref: string };
      assert.equal(bodyOf(0).idempotency_key, 'in-1');
      assert.equal(bodyOf(4).idempotency_key, 'in-5');
      assert.deepEqual(bodyOf(5), bodyOf(0), 'the replay in the same turn answers the first write');
      assert.equal(await entries(), before + 2, 'one entry per accepted key');

      // A throw while preparing one order (a bug) fails that order alone; its turn goes on.
      const writer = new OrderWriter({ redis: conn, config: env.config, logger: silent });
      const prepare = writer.prepare.bind(writer);
      writer.prepare = (clientId, key, o) => {
        if (key === 'in-boom') throw new Error('boom');
        return prepare(clientId, key, o);
      };
      const failing = new OrderIntake(writer);
      const settled = await Promise.allSettled([
        failing.submit(json(order(6)), alice.id, 'in-6'),
        failing.submit(json(order(7)), alice.id, 'in-boom'),
        failing.submit(json(order(8)), alice.id, 'in-8'),
      ]);
      assert.deepEqual(
        settled.map((r) => (r.status === 'fulfilled' ? r.value.kind : (r.reason as Error).message)),
        ['accepted', 'boom', 'accepted'],
      );
    } finally {
      conn.disconnect();
    }
  });

  test('a record Redis cannot read fails only its own order (503 unavailable); the others are written', async () => {
    const conn = await writerConnection(env);
    try {
      const writer = new OrderWriter({ redis: conn, config: env.config, logger: silent });
      const keys = ['w-1', 'w-2', 'w-3', 'w-4', 'w-5'];
      const broken = 'w-3';
      // A record of another type (here a hash) makes GET fail with WRONGTYPE inside the script.
      await redis.hset(
        idemKey(env.prefix, shardFor(alice.id, broken, env.config.shards), alice.id, broken),
        'x',
        'not a record',
      );
      const outcomes = await writer.writeMany(keys.map((k, i) => writer.prepare(alice.id, k, order(i))));
      assert.deepEqual(
        outcomes.map((o) => o.kind),
        ['accepted', 'accepted', 'unavailable', 'accepted', 'accepted'],
      );
      const again = await writer.writeMany(keys.map((k, i) => writer.prepare(alice.id, k, order(i))));
      assert.deepEqual(
        again.map((o) => o.kind),
        ['replayed', 'replayed', 'unavailable', 'replayed', 'replayed'],
      );
    } finally {
      conn.disconnect();
    }
  });
});

describe('ingest :batch on Redis Cluster (3 masters, 8 shards)', () => {
  test('many-order script calls and single calls route by shard; replays and one entry per key', async () => {
    const cluster = await startRedisCluster({ masters: 3 });
    const config = {
      redisUrl: 'redis://127.0.0.1',
      redisClusterNodes: cluster.nodes.map((n) => ({ host: '127.0.0.1', port: n.port })),
      redisPrefix: `surge-batch-cluster-${Date.now().toString(36)}`,
      shards: 8,
      idempotencyTtlSeconds: 3600,
      durableTimeoutMs: 1000,
    };
    const conn = createRedis(config, INGEST_REDIS_OPTIONS);
    conn.on('error', () => {});
    defineIngestCommands(conn);
    try {
      await redisReady(conn, 20_000);
      const writer = new OrderWriter({ redis: conn, config, logger: silent });
      const keys = Array.from({ length: 600 }, (_, i) => `c-${i % 500}`); // the last 100 repeat earlier keys
      const outcomes = await writer.writeMany(
        keys.map((k) => writer.prepare('client-1', k, order(Number(k.slice(2))))),
      );
      assert.deepEqual(
        outcomes.map((o) => o.kind),
        keys.map((_, i) => (i < 500 ? 'accepted' : 'replayed')),
      );
      const again = await Promise.all(
        keys.slice(0, 50).map((k) => writer.write(writer.prepare('client-1', k, order(Number(k.slice(2)))))),
      );
      assert.ok(again.every((o, i) => o.kind === 'replayed' && o.body === (outcomes[i] as { body: string }).body));
      let n = 0;
      for (let shard = 0; shard < 8; shard++) n += await conn.xlen(streamKey(config.redisPrefix, shard));
      assert.equal(n, 500, 'one entry per key');
    } finally {
      conn.disconnect();
      await cluster.stop();
    }
  });
});
