// Ingest against the real Redis and PostgreSQL: every "bad input" rule of the API (docs/ingest.md,
// Errors), idempotency, batch, order state, backpressure, metrics.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { Agent } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import pg from 'pg';
import { pino } from 'pino';
import { type CreatedClient, createClient } from '../common/clients.js';
import { allStreamKeys, GROUP, idemKey, shardFor, streamKey } from '../common/keys.js';
import { createLogger } from '../common/log.js';
import { decodeEntry, encodeEntry } from '../common/entry.js';
import { canonicalOrderJson, type Order, orderFingerprint } from '../common/order.js';
import { ensureGroups } from '../common/streams.js';
import { parseRecord, STATE_DONE } from '../ingest/scripts.js';
import { type IngestService, startIngest } from '../ingest/server.js';
import { createTestEnv, type TestEnv } from '../devkit/scratch.js';
import { waitFor } from '../devkit/wait.js';
import { http } from './support/http.js';
import { parseOrderRef } from './support/defined.js';

const silent = createLogger('silent', 'ingest-test');

function order(overrides: Partial<Order> & Record<string, unknown> = {}): Order {
  return {
    customer_id: 'cust-1',
    currency: 'EUR',
    items: [{ sku: 'sku-1', qty: 2, unit_price_cents: 1250 }],
    ...overrides,
  } as Order;
}

interface Problem {
  type: string;
  title: string;
  status: number;
  detail?: string;
  errors?: Array<{ path: string; message: string }>;
}

describe('ingest', () => {
  let env: TestEnv;
  let ingest: IngestService;
  let redis: Redis;
  let pool: pg.Pool;
  let alice: CreatedClient;
  let bob: CreatedClient;

  const post = (
    key: string | undefined,
    body: unknown,
    opts: { client?: CreatedClient; raw?: string | Buffer; headers?: Record<string, string> } = {},
  ) =>
    http(ingest.url, {
      method: 'POST',
      path: '/v1/orders',
      headers: {
        authorization: `Bearer ${(opts.client ?? alice).apiKey}`,
        'content-type': 'application/json',
        ...(key !== undefined ? { 'idempotency-key': key } : {}),
        ...opts.headers,
      },
      body: opts.raw ?? JSON.stringify(body),
    });
  const get = (key: string, client: CreatedClient = alice) =>
    http(ingest.url, {
      path: `/v1/orders/${encodeURIComponent(key)}`,
      headers: { authorization: `Bearer ${client.apiKey}` },
    });
  const entries = async () => {
    let n = 0;
    for (const k of allStreamKeys(env.prefix, env.config.shards)) n += await redis.xlen(k);
    return n;
  };
  const assertProblem = (
    res: { status: number; headers: Record<string, unknown>; json: unknown },
    status: number,
  ): Problem => {
    assert.equal(res.status, status);
    assert.match(String(res.headers['content-type']), /^application\/problem\+json/);
    const p = res.json as Problem;
    assert.equal(p.status, status);
    assert.ok(p.type && p.title);
    return p;
  };

  before(async () => {
    env = await createTestEnv({ SURGE_SHARDS: '4', SURGE_BACKPRESSURE_INTERVAL_MS: '50' });
    redis = new Redis(env.redisUrl);
    pool = new pg.Pool({ connectionString: env.db.url, max: 2 });
    alice = await createClient(pool, 'alice');
    bob = await createClient(pool, 'bob');
    ingest = await startIngest(env.config, { logger: silent });
  });
  after(async () => {
    await ingest?.stop();
    await ingest?.stop(); // safe twice
    redis?.disconnect();
    await pool?.end();
    await env?.cleanup();
  });

  test('202 with Location; the entry is on the shard of (client, key) and decodes to the order; the record has the TTL', async () => {
    const o = order({ order_id: 'o-1', metadata: { note: 'x' } });
    const res = await post('happy-1', o);
    assert.equal(res.status, 202);
    assert.equal(res.headers.location, '/v1/orders/happy-1');
    assert.equal(res.headers['idempotent-replayed'], undefined);
    const body = res.json as { order_ref: string; idempotency_key: string; status: string };
    assert.equal(body.idempotency_key, 'happy-1');
    assert.equal(body.status, 'queued');
    const shard = shardFor(alice.id, 'happy-1', env.config.shards);
    const ref = parseOrderRef(body.order_ref);
    assert.equal(ref.shard, shard);
    const [[id, fields] = ['', []]] = await redis.xrange(streamKey(env.prefix, shard), ref.entryId, ref.entryId);
    assert.equal(id, ref.entryId);
    const decoded = decodeEntry(fields);
    assert.ok(decoded.ok);
    assert.deepEqual(decoded.entry, { clientId: alice.id, idempotencyKey: 'happy-1', order: o });
    // The accept script's XADD writes exactly the entry encodeEntry (the DLQ replay's) writes.
    assert.deepEqual(
      fields,
      encodeEntry({ clientId: alice.id, idempotencyKey: 'happy-1', canonical: canonicalOrderJson(o) }),
    );
    const recordKey = idemKey(env.prefix, shard, alice.id, 'happy-1');
    const ttl = await redis.ttl(recordKey);
    assert.ok(ttl > 86_000 && ttl <= 86_400, `ttl ${ttl}`);
    // The record: state done, the order's fingerprint, the entry id; no copy of the body.
    assert.deepEqual(parseRecord(await redis.get(recordKey)), {
      state: STATE_DONE,
      fingerprint: orderFingerprint(o),
      entryId: ref.entryId,
    });
    assert.ok(Number(await redis.memory('USAGE', recordKey)) < 300, 'a record is small');
    // The response also carries a request id; each request gets its own unless the client sent one.
    const other = await post('happy-1', o);
    assert.ok(
      res.headers['x-request-id'] &&
        other.headers['x-request-id'] &&
        res.headers['x-request-id'] !== other.headers['x-request-id'],
    );
  });

  test('a replay (same payload, other key order and spacing) answers the stored 202 with Idempotent-Replayed and adds no entry', async () => {
    const first = await post('replay-1', order());
    assert.equal(first.status, 202);
    const before = await entries();
    const raw =
      '{ "items": [ {"unit_price_cents":1250, "qty":2, "sku":"sku-1"} ], "currency":"EUR", "customer_id":"cust-1" }';
    const again = await post('replay-1', undefined, { raw });
    assert.equal(again.status, 202);
    assert.equal(again.headers['idempotent-replayed'], 'true');
    assert.equal(again.headers.location, '/v1/orders/replay-1');
    assert.equal(again.text, first.text);
    assert.equal(await entries(), before);
  });

  test('the same key with another payload → 422, no new entry', async () => {
    assert.equal((await post('reuse-1', order())).status, 202);
    const before = await entries();
    const p = assertProblem(await post('reuse-1', order({ customer_id: 'someone-else' })), 422);
    assert.match(p.type, /idempotency-key-reused/);
    assert.equal(await entries(), before);
  });

  test('50 concurrent requests with one key: exactly one entry, all 202 with the same body, exactly one not replayed', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 50 });
    const before = await entries();
    const o = order({ order_id: 'concurrent' });
    const results = await Promise.all(
      Array.from({ length: 50 }, () =>
        http(ingest.url, {
          method: 'POST',
          path: '/v1/orders',
          agent,
          headers: {
            authorization: `Bearer ${alice.apiKey}`,
            'content-type': 'application/json',
            'idempotency-key': 'same-key-50',
          },
          body: JSON.stringify(o),
        }),
      ),
    );
    agent.destroy();
    assert.deepEqual(
      results.map((r) => r.status),
      Array(50).fill(202),
    );
    assert.equal(new Set(results.map((r) => r.text)).size, 1, 'all bodies equal');
    assert.equal(results.filter((r) => r.headers['idempotent-replayed'] === undefined).length, 1);
    assert.equal(await entries(), before + 1);
  });

  test('missing, too long and non-ASCII Idempotency-Key → 400', async () => {
    const before = await entries();
    assert.match(assertProblem(await post(undefined, order()), 400).title, /required/);
    assert.match(assertProblem(await post('k'.repeat(256), order()), 400).detail ?? '', /256 characters; at most 255/);
    assert.equal((await post('k'.repeat(255), order())).status, 202, '255 characters are fine');
    assert.match(assertProblem(await post('clé', order()), 400).detail ?? '', /printable ASCII/);
    assert.match(assertProblem(await post('with space', order()), 400).detail ?? '', /printable ASCII/);
    assert.equal(await entries(), before + 1);
  });

  test('Idempotency-Key as an RFC 8941 sf-string: "abc" is the key abc; escapes \\" and \\\\ only; malformed → 400', async () => {
    const before = await entries();
    const quoted = await post('"sf-1"', order());
    assert.equal(quoted.status, 202);
    assert.equal(quoted.headers.location, '/v1/orders/sf-1', 'the quotes are not part of the key');
    const bare = await post('sf-1', order());
    assert.equal(bare.status, 202);
    assert.equal(bare.headers['idempotent-replayed'], 'true', 'bare sf-1 is the same key');
    assert.equal(bare.text, quoted.text);
    const escaped = await post('"sf-\\"2\\\\"', order());
    assert.equal(escaped.status, 202);
    assert.equal(escaped.headers.location, `/v1/orders/${encodeURIComponent('sf-"2\\')}`);
    assert.equal((await get('sf-"2\\')).status, 200);
    for (const malformed of ['"sf-3', '"sf-\\n"', '"sf-3"x', '"sf-3";a=1', '"with space"'])
      assertProblem(await post(malformed, order()), 400);
    assert.equal(await entries(), before + 2);
  });

  test('Location leads back to the order for any key a client resolves it against; "." and ".." are refused', async () => {
    const tricky = [
      '...',
      '.a',
      'a.',
      '..a',
      'a/b',
      '../x',
      '%2E%2E',
      '%2e',
      'a%2Fb',
      '?q=1',
      '#frag',
      "~!*'()",
      ';,=&+$@:[]{}|\\^`"<>',
    ];
    for (const key of tricky) {
      const res = await post(key, order());
      assert.equal(res.status, 202, `${key}: ${res.text}`);
      // As a client follows it: WHATWG URL resolution (dot segments removed, %2E%2E included).
      const target = new URL(String(res.headers.location), ingest.url);
      const found = await http(ingest.url, {
        path: target.pathname + target.search,
        headers: { authorization: `Bearer ${alice.apiKey}` },
      });
      assert.equal(found.status, 200, `${key} → ${res.headers.location} → ${target.pathname}: ${found.text}`);
      assert.equal((found.json as { idempotency_key: string }).idempotency_key, key);
    }
    const before = await entries();
    for (const key of ['.', '..']) {
      const p = assertProblem(await post(key, order()), 400);
      assert.match(p.type, /#invalid-idempotency-key$/);
      assert.match(p.detail ?? '', /"\." or "\.\."/);
    }
    const batch = await http(ingest.url, {
      method: 'POST',
      path: '/v1/orders:batch',
      headers: { authorization: `Bearer ${alice.apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify([{ idempotency_key: '..', ...order() }]),
    });
    const [only] = (batch.json as { results: Array<{ status: number; problem: Problem }> }).results;
    assert.equal(only?.status, 400);
    assert.deepEqual(
      only?.problem.errors?.map((e) => e.path),
      ['/idempotency_key'],
    );
    assert.equal(await entries(), before);
    // A lookup of such a key (an order accepted before the rule) is still answered, not refused.
    assert.equal(
      (await http(ingest.url, { path: '/v1/orders/%2E%2E', headers: { authorization: `Bearer ${alice.apiKey}` } }))
        .status,
      404,
    );
  });

  test('malformed JSON → 400', async () => {
    const p = assertProblem(await post('bad-json', undefined, { raw: '{"customer_id": "a", ' }), 400);
    assert.match(p.type, /malformed-json/);
  });

  test('wrong types, negative qty, unknown fields: every failing path in one 400', async () => {
    const p = assertProblem(
      await post('bad-types', {
        customer_id: 42,
        currency: 'euro',
        items: [
          { sku: 'a', qty: 'two', unit_price_cents: 1 },
          { sku: 'b', qty: -1, unit_price_cents: 1 },
        ],
        color: 'red',
      }),
      400,
    );
    const paths = (p.errors ?? []).map((e) => e.path).sort();
    assert.deepEqual(paths, ['/color', '/currency', '/customer_id', '/items/0/qty', '/items/1/qty']);
    const neg = assertProblem(
      await post('neg-qty', order({ items: [{ sku: 'a', qty: -1, unit_price_cents: 1 }] })),
      400,
    );
    assert.deepEqual(neg.errors, [{ path: '/items/0/qty', message: 'must be >= 1' }]);
  });

  test('a placed_at timestamptz cannot store as sent → 400 naming /placed_at, nothing written', async () => {
    const before = await entries();
    for (const placed_at of ['0000-01-01T00:00:00Z', '2024-01-01T00:00:00+23:59', '2024-01-01T00:00:00.1234567Z']) {
      const p = assertProblem(await post(`pa-${placed_at}`, order({ placed_at })), 400);
      assert.match(p.type, /#invalid-order$/);
      assert.deepEqual(
        p.errors?.map((e) => e.path),
        ['/placed_at'],
        placed_at,
      );
    }
    assert.equal(await entries(), before);
    assert.equal((await post('pa-ok', order({ placed_at: '0001-01-01T00:00:00+15:59' }))).status, 202);
  });

  test('numbers a double cannot hold → 400 naming each; bodies that store differently never replay each other', async () => {
    const raw = (metadata: string) =>
      `{"customer_id":"c","currency":"EUR","items":[{"sku":"a","qty":1,"unit_price_cents":1}],"metadata":${metadata}}`;
    const before = await entries();
    const p = assertProblem(
      await post('num-1', undefined, { raw: raw('{"big":1e400,"id":12345678901234567890}') }),
      400,
    );
    assert.deepEqual(
      p.errors?.map((e) => e.path),
      ['/metadata/big', '/metadata/id'],
    );
    const qty = assertProblem(
      await post('num-qty', undefined, { raw: raw('{}').replace('"qty":1', '"qty":1.00000000000000001') }),
      400,
    );
    assert.deepEqual(
      qty.errors?.map((e) => e.path),
      ['/items/0/qty'],
    );
    assert.equal(await entries(), before);
    // What the refused body would have been stored as is an order of its own, not a replay of it…
    const stored = await post('num-1', undefined, { raw: raw('{"big":null,"id":12345678901234567000}') });
    assert.equal(stored.status, 202);
    assert.equal(stored.headers['idempotent-replayed'], undefined);
    // …and the same values written otherwise (1.2345678901234567e19, 1.0) are the same order.
    const same = await post('num-1', undefined, { raw: raw('{"id":1.2345678901234567E+19,"big":null}') });
    assert.equal(same.headers['idempotent-replayed'], 'true');
    assert.equal((await post('num-2', undefined, { raw: raw('{"n":1}') })).status, 202);
    assert.equal((await post('num-2', undefined, { raw: raw('{"n":1.0}') })).headers['idempotent-replayed'], 'true');
    const batch = await http(ingest.url, {
      method: 'POST',
      path: '/v1/orders:batch',
      headers: { authorization: `Bearer ${alice.apiKey}`, 'content-type': 'application/json' },
      body: `[${raw('{"ok":1}').replace('{', '{"idempotency_key":"num-b0",')},${raw('{"x":[0.30000000000000001]}').replace('{', '{"idempotency_key":"num-b1",')}]`,
    });
    const results = (batch.json as { results: Array<{ status: number; problem?: Problem }> }).results;
    assert.deepEqual(
      results.map((r) => [r.status, r.problem?.errors?.map((e) => e.path)]),
      [
        [202, undefined],
        [400, ['/metadata/x/0']],
      ],
    );
  });

  test('a currency of the right shape that ISO 4217 does not list → 400 on /currency', async () => {
    const p = assertProblem(await post('cur-zzz', order({ currency: 'ZZZ' })), 400);
    assert.deepEqual(
      p.errors?.map((e) => e.path),
      ['/currency'],
    );
    assert.match(p.errors?.[0]?.message ?? '', /ISO 4217/);
    assert.equal((await post('cur-chf', order({ currency: 'CHF' }))).status, 202);
  });

  test('101 items → 400 on /items (100 are accepted)', async () => {
    const items = (n: number) => Array.from({ length: n }, (_, i) => ({ sku: `s${i}`, qty: 1, unit_price_cents: 1 }));
    const p = assertProblem(await post('items-101', order({ items: items(101) })), 400);
    assert.deepEqual(
      p.errors?.map((e) => e.path),
      ['/items'],
    );
    assert.equal((await post('items-100', order({ items: items(100) }))).status, 202);
  });

  test('a 5 MiB body → 413 problem+json; so is 64 KiB + 1 byte', async () => {
    const before = await entries();
    const huge = JSON.stringify(order({ metadata: { pad: 'x'.repeat(5 * 1024 * 1024) } }));
    const p = assertProblem(await post('huge', undefined, { raw: huge }), 413);
    assert.match(p.detail ?? '', /65536 bytes/);
    const justOver = Buffer.alloc(64 * 1024 + 1, 0x20);
    Buffer.from(JSON.stringify(order())).copy(justOver);
    assertProblem(await post('just-over', undefined, { raw: justOver }), 413);
    assert.equal(await entries(), before);
  });

  test('NUL in a string and invalid UTF-8 bytes → 400', async () => {
    const nul = assertProblem(await post('nul', order({ customer_id: 'a\u0000b' })), 400);
    assert.deepEqual(
      nul.errors?.map((e) => e.path),
      ['/customer_id'],
    );
    const raw = Buffer.concat([
      Buffer.from('{"customer_id":"ab'),
      Buffer.from([0xc3, 0x28, 0xff]),
      Buffer.from('","currency":"EUR","items":[{"sku":"a","qty":1,"unit_price_cents":1}]}'),
    ]);
    const bad = assertProblem(await post('bad-utf8', undefined, { raw }), 400);
    assert.match(bad.type, /invalid-utf8/);
    const lone = assertProblem(
      await post('lone-surrogate', undefined, {
        raw: '{"customer_id":"a\\ud800","currency":"EUR","items":[{"sku":"a","qty":1,"unit_price_cents":1}]}',
      }),
      400,
    );
    assert.deepEqual(
      lone.errors?.map((e) => e.path),
      ['/customer_id'],
    );
  });

  test('unknown, missing or malformed API key → 401 with WWW-Authenticate, before the body is looked at', async () => {
    const before = await entries();
    const unknown = await http(ingest.url, {
      method: 'POST',
      path: '/v1/orders',
      headers: { authorization: 'Bearer sk_not_a_key', 'idempotency-key': 'k', 'content-type': 'application/json' },
      body: '{not json',
    });
    assertProblem(unknown, 401);
    assert.match(String(unknown.headers['www-authenticate']), /^Bearer/);
    assertProblem(
      await http(ingest.url, {
        method: 'POST',
        path: '/v1/orders',
        headers: { 'content-type': 'application/json' },
        body: '{}',
      }),
      401,
    );
    assertProblem(
      await http(ingest.url, { path: '/v1/orders/x', headers: { authorization: `Basic ${alice.apiKey}` } }),
      401,
    );
    assert.equal(await entries(), before);
    // Early answers, errors and 404s carry the request id too; a client's own id is echoed.
    assert.ok(unknown.headers['x-request-id']);
    const notFound = await http(ingest.url, { path: '/nowhere', headers: { 'x-request-id': 'client-trace-42' } });
    assert.equal(notFound.status, 404);
    assert.equal(notFound.headers['x-request-id'], 'client-trace-42');
    const tooBig = await post('big-id', order(), { raw: 'x'.repeat(70 * 1024) });
    assert.equal(tooBig.status, 413);
    assert.ok(tooBig.headers['x-request-id']);
  });

  test('a non-JSON Content-Type → 415', async () => {
    assertProblem(await post('ct', order(), { headers: { 'content-type': 'text/plain' } }), 415);
  });

  test('keys are scoped by client: another client can use the same key and cannot see the order', async () => {
    const a = await post('shared-key', order());
    assert.equal(a.status, 202);
    assertProblem(await get('shared-key', bob), 404);
    const b = await post('shared-key', order({ customer_id: 'bobs-customer' }), { client: bob });
    assert.equal(b.status, 202);
    assert.equal(b.headers['idempotent-replayed'], undefined);
    assert.notEqual((a.json as { order_ref: string }).order_ref, (b.json as { order_ref: string }).order_ref);
  });

  test('GET /v1/orders/:key: queued → applied / rejected from PostgreSQL, dead_lettered, 404', async () => {
    const res = await post('state/with?odd#chars', order());
    assert.equal(res.status, 202);
    assert.equal(res.headers.location, `/v1/orders/${encodeURIComponent('state/with?odd#chars')}`);
    const ref = (res.json as { order_ref: string }).order_ref;
    const queued = await http(ingest.url, {
      path: String(res.headers.location),
      headers: { authorization: `Bearer ${alice.apiKey}` },
    });
    assert.equal(queued.status, 200);
    assert.deepEqual(queued.json, { idempotency_key: 'state/with?odd#chars', status: 'queued', order_ref: ref });

    const { shard, entryId } = parseOrderRef(ref);
    const insert = (key: string, status: string, reason: string | null) =>
      pool.query(
        `INSERT INTO orders (client_id, idempotency_key, customer_id, currency, total_cents, status, reason, received_at, stream, entry_id)
         VALUES ($1, $2, 'c', 'EUR', 100, $3, $4, now(), $5, $6)`,
        [alice.id, key, status, reason, streamKey(env.prefix, shard), entryId],
      );
    await insert('state/with?odd#chars', 'applied', null);
    const applied = (await get('state/with?odd#chars')).json as Record<string, unknown>;
    assert.equal(applied.status, 'applied');
    assert.equal(applied.order_ref, ref);

    await insert('rejected-1', 'rejected', 'out_of_stock');
    assert.deepEqual(
      { ...((await get('rejected-1')).json as Record<string, unknown>), applied_at: undefined },
      {
        idempotency_key: 'rejected-1',
        status: 'rejected',
        reason: 'out_of_stock',
        order_ref: ref,
        applied_at: undefined,
      },
    );

    await pool.query(
      `INSERT INTO dead_letters (client_id, idempotency_key, stream, entry_id, reason) VALUES ($1, 'dead-1', $2, '1-0', 'permanent_error')`,
      [alice.id, streamKey(env.prefix, 1)],
    );
    assert.deepEqual((await get('dead-1')).json, {
      idempotency_key: 'dead-1',
      status: 'dead_lettered',
      order_ref: 's1-1-0',
      reason: 'permanent_error',
    });
    assertProblem(await get('dead-1', bob), 404);
    assertProblem(await get('never-sent'), 404);
    assertProblem(await get('k'.repeat(256)), 400);
  });

  test('POST /v1/orders:batch (JSON array): 207, one result per order in order; bad ones do not fail the rest', async () => {
    assert.equal((await post('batch-existing', order())).status, 202);
    const before = await entries();
    const res = await http(ingest.url, {
      method: 'POST',
      path: '/v1/orders:batch',
      headers: { authorization: `Bearer ${alice.apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify([
        { idempotency_key: 'batch-new-1', ...order() },
        { idempotency_key: 'batch-bad', ...order({ items: [] }) },
        { idempotency_key: 'batch-existing', ...order() },
        { idempotency_key: 'batch-existing', ...order({ customer_id: 'other' }) },
        { ...order() },
        'not an object',
      ]),
    });
    assert.equal(res.status, 207);
    const results = (res.json as { results: Array<Record<string, unknown>> }).results;
    assert.deepEqual(
      results.map((r) => [r.index, r.status, r.replayed]),
      [
        [0, 202, false],
        [1, 400, undefined],
        [2, 202, true],
        [3, 422, undefined],
        [4, 400, undefined],
        [5, 400, undefined],
      ],
    );
    const [r0, r1, , , r4] = results as Array<Record<string, unknown>> as [
      Record<string, unknown>,
      Record<string, unknown>,
      unknown,
      unknown,
      Record<string, unknown>,
    ];
    assert.equal((r1.problem as Problem).errors?.[0]?.path, '/items');
    assert.equal((r4.problem as Problem).errors?.[0]?.path, '/idempotency_key');
    assert.equal((r0.body as Record<string, unknown>).idempotency_key, 'batch-new-1');
    assert.equal(await entries(), before + 1);
    // The same order via the single route is a replay: both routes share the fingerprint.
    const single = await post('batch-new-1', order());
    assert.equal(single.headers['idempotent-replayed'], 'true');
    assert.deepEqual(single.json, results[0]?.body);
  });

  test(':batch as NDJSON, and 1,000 orders in one request (a body far over 64 KiB); 1,001 → 400', async () => {
    const nd = await http(ingest.url, {
      method: 'POST',
      path: '/v1/orders:batch',
      headers: { authorization: `Bearer ${alice.apiKey}`, 'content-type': 'application/x-ndjson' },
      body: [
        JSON.stringify({ idempotency_key: 'nd-1', ...order() }),
        '{oops',
        JSON.stringify({ idempotency_key: 'nd-2', ...order() }),
        '',
      ].join('\n'),
    });
    assert.equal(nd.status, 207);
    assert.deepEqual(
      (nd.json as { results: Array<{ status: number }> }).results.map((r) => r.status),
      [202, 400, 202],
    );
    const before = await entries();
    const many = Array.from({ length: 1000 }, (_, i) => ({
      idempotency_key: `bulk-${i}`,
      ...order({ metadata: { i, pad: 'y'.repeat(100) } }),
    }));
    const body = JSON.stringify(many);
    assert.ok(body.length > 64 * 1024);
    const res = await http(ingest.url, {
      method: 'POST',
      path: '/v1/orders:batch',
      headers: { authorization: `Bearer ${alice.apiKey}`, 'content-type': 'application/json' },
      body,
    });
    assert.equal(res.status, 207);
    const results = (res.json as { results: Array<{ index: number; status: number; idempotency_key: string }> })
      .results;
    assert.equal(results.length, 1000);
    assert.ok(results.every((r, i) => r.status === 202 && r.index === i && r.idempotency_key === `bulk-${i}`));
    assert.equal(await entries(), before + 1000);
    const tooMany = await http(ingest.url, {
      method: 'POST',
      path: '/v1/orders:batch',
      headers: { authorization: `Bearer ${alice.apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify([...many, { idempotency_key: 'bulk-1000', ...order() }]),
    });
    assert.match(assertProblem(tooMany, 400).detail ?? '', /1 to 1000 orders; this one has 1001/);
  });

  test('/healthz and /readyz on the API port, /metrics only on the metrics port (SURGE_INGEST_METRICS_PORT)', async () => {
    assert.notEqual(ingest.metricsUrl, ingest.url);
    assert.equal((await http(ingest.url, { path: '/healthz' })).status, 200);
    assert.equal((await http(ingest.url, { path: '/readyz' })).status, 200);
    const onApi = await http(ingest.url, { path: '/metrics' });
    assert.equal(onApi.status, 404);
    assert.match(onApi.text, /problems#not-found/);
    assert.doesNotMatch(onApi.text, /surge_ingest_/);
    assert.equal((await http(ingest.metricsUrl, { path: '/healthz' })).status, 404, 'probes stay on the API port');
    assert.equal((await http(ingest.metricsUrl, { path: '/readyz' })).status, 404, 'probes stay on the API port');
    assert.equal((await http(ingest.metricsUrl, { path: '/v1/orders', method: 'POST' })).status, 405);
  });

  test('/metrics: request counts by route and code, orders by result, duration histogram', async () => {
    const m = await http(ingest.metricsUrl, { path: '/metrics' });
    assert.equal(m.status, 200);
    assert.match(m.headers['content-type'] ?? '', /^text\/plain; version=0\.0\.4/);
    assert.match(m.text, /surge_ingest_requests_total\{route="other",code="404",role="ingest"\} [1-9]/);
    assert.match(m.text, /surge_ingest_requests_total\{route="POST \/v1\/orders",code="202",role="ingest"\} \d+/);
    assert.match(m.text, /surge_ingest_requests_total\{route="POST \/v1\/orders",code="422",role="ingest"\} [1-9]/);
    assert.match(m.text, /surge_ingest_orders_total\{result="replayed",role="ingest"\} [1-9]/);
    assert.match(
      m.text,
      /surge_ingest_request_duration_seconds_bucket\{le="0.005",role="ingest",route="POST \/v1\/orders:batch"\}/,
    );
    // Orders per accept call: every order went through one, so the sum counts them all.
    const count = Number(/surge_ingest_accept_call_orders_count\{role="ingest"\} (\d+)/.exec(m.text)?.[1]);
    const sum = Number(/surge_ingest_accept_call_orders_sum\{role="ingest"\} (\d+)/.exec(m.text)?.[1]);
    assert.ok(count > 0 && sum >= count, `accept calls ${count}, orders ${sum}`);
    assert.doesNotMatch(m.text, /same-key-50|cust-1/, 'no key or customer in label values');
  });

  test('logs: a JSON line per client error, bound to the request id; accepted orders log nothing; no order contents', async () => {
    const lines: string[] = [];
    const logger = pino(
      { level: 'info', base: { component: 'ingest' } },
      { write: (line: string) => void lines.push(line) },
    );
    const svc = await startIngest(env.config, { logger });
    try {
      const secret = 'customer-who-must-not-be-logged';
      const send = (key: string, body: unknown) =>
        http(svc.url, {
          method: 'POST',
          path: '/v1/orders',
          headers: {
            authorization: `Bearer ${alice.apiKey}`,
            'content-type': 'application/json',
            'idempotency-key': key,
          },
          body: JSON.stringify(body),
        });
      const started = lines.length;
      const good = await send('log-ok-1', order({ customer_id: secret }));
      assert.equal(good.status, 202);
      const bad = await send('log-bad-1', order({ customer_id: secret, items: [] }));
      assert.equal(bad.status, 400);
      const logged = await waitFor('the client error line', () => {
        const found = lines
          .slice(started)
          .map((l) => JSON.parse(l) as Record<string, unknown>)
          .filter((l) => l.msg === 'client error');
        return found.length > 0 ? found : undefined;
      });
      assert.equal(logged.length, 1, 'one line, for the 400 only');
      assert.equal(logged[0]?.reqId, bad.headers['x-request-id'], 'the line carries the request id the client got');
      assert.equal(logged[0]?.code, 400);
      assert.equal(logged[0]?.level, 30);
      assert.ok(!lines.some((l) => l.includes(secret)), 'no order contents in the logs');
    } finally {
      await svc.stop();
    }
  });
});

describe('ingest backpressure', () => {
  let env: TestEnv;
  let redis: Redis;
  let pool: pg.Pool;
  let client: CreatedClient;
  const services: IngestService[] = [];

  before(async () => {
    env = await createTestEnv({ SURGE_SHARDS: '2', SURGE_BACKPRESSURE_INTERVAL_MS: '50' });
    redis = new Redis(env.redisUrl);
    pool = new pg.Pool({ connectionString: env.db.url, max: 1 });
    client = await createClient(pool, 'loader');
  });
  after(async () => {
    for (const s of services) await s.stop();
    redis?.disconnect();
    await pool?.end();
    await env?.cleanup();
  });

  const postTo = (svc: IngestService, key: string) =>
    http(svc.url, {
      method: 'POST',
      path: '/v1/orders',
      headers: { authorization: `Bearer ${client.apiKey}`, 'content-type': 'application/json', 'idempotency-key': key },
      body: JSON.stringify(order()),
    });

  test('backlog (lag + pending) over SURGE_MAX_BACKLOG → 503 + Retry-After; /readyz stays 200; accepted again once drained', async () => {
    await ensureGroups(redis, env.prefix, env.config.shards);
    const svc = await startIngest({ ...env.config, maxBacklog: 3 }, { logger: silent });
    services.push(svc);
    for (let i = 0; i < 4; i++) assert.equal((await postTo(svc, `bp-${i}`)).status, 202);
    // Deliver every entry without acking: lag is 0 now, the backlog is all pending and must still count.
    for (const key of allStreamKeys(env.prefix, env.config.shards))
      await redis.xreadgroup('GROUP', GROUP, 'test-consumer', 'COUNT', 100, 'STREAMS', key, '>');
    let probe = '';
    let n = 0;
    const shed = await waitFor('a 503', async () => {
      probe = `bp-probe-${n++}`;
      const r = await postTo(svc, probe);
      return r.status === 503 ? r : undefined;
    });
    assert.equal(shed.headers['retry-after'], '1');
    assert.match((shed.json as Problem).type, /overloaded/);
    assert.equal((await http(svc.url, { path: '/readyz' })).status, 200);
    assert.match(
      (await http(svc.metricsUrl, { path: '/metrics' })).text,
      /surge_ingest_overloaded\{reason="backlog",role="ingest"\} 1/,
    );
    assert.equal(
      await redis.exists(idemKey(env.prefix, shardFor(client.id, probe, 2), client.id, probe)),
      0,
      'nothing recorded',
    );
    // Workers catch up: read and ack everything.
    for (const key of allStreamKeys(env.prefix, env.config.shards)) {
      // The consumer's pending entries first ('0'), then the new ones ('>').
      const ids: string[] = [];
      for (const from of ['0', '>']) {
        const read = (await redis.xreadgroup(
          'GROUP',
          GROUP,
          'test-consumer',
          'COUNT',
          100,
          'STREAMS',
          key,
          from,
        )) as Array<[string, Array<[string, string[]]>]> | null;
        for (const [id] of read?.[0]?.[1] ?? []) ids.push(id);
      }
      if (ids.length > 0) await redis.xack(key, GROUP, ...ids);
    }
    await waitFor('accepting again', async () => (await postTo(svc, probe)).status === 202);
  });

  test('the API listener queues SURGE_INGEST_LISTEN_BACKLOG connections (ss shows it as Send-Q)', async (t) => {
    const svc = await startIngest({ ...env.config, ingestListenBacklog: 37 }, { logger: silent });
    services.push(svc);
    const ss = spawnSync('ss', ['-ltnH', `sport = :${svc.port}`], { encoding: 'utf8' });
    if (ss.error || ss.status !== 0) {
      t.skip('ss (iproute2) is not available');
      return;
    }
    // LISTEN  Recv-Q  Send-Q  Local  Peer: for a listening socket Send-Q is its backlog.
    const [state, , backlog] = ss.stdout.trim().split(/\s+/);
    assert.equal(state, 'LISTEN');
    assert.equal(backlog, '37');
  });

  test('with SURGE_INGEST_LISTENERS listeners every connection is served, and stop() closes them all', async () => {
    const svc = await startIngest({ ...env.config, ingestListeners: 3 }, { logger: silent });
    try {
      const answers = await Promise.all(
        Array.from({ length: 30 }, () =>
          http(svc.url, { path: '/healthz', agent: new Agent({ keepAlive: false }) }).then((r) => r.status),
        ),
      );
      assert.deepEqual(new Set(answers), new Set([200]));
    } finally {
      await svc.stop();
    }
    await assert.rejects(http(svc.url, { path: '/healthz' }), /ECONNREFUSED/);
  });

  test('Redis used_memory over the limit → 503 reason memory', async () => {
    const svc = await startIngest({ ...env.config, maxBacklog: 0, maxRedisMemoryBytes: 1 }, { logger: silent });
    services.push(svc);
    const res = await postTo(svc, 'mem-1');
    assert.equal(res.status, 503);
    assert.match((res.json as Problem).detail ?? '', /memory/);
    assert.ok(Number(res.headers['retry-after']) >= 1);
  });
});
