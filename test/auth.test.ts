// The API-key cache of ingest (ingest/auth.ts): settled answers are served without a query (and
// without a promise, for the hot path); unknown keys are cached too; a failed lookup (PostgreSQL
// down) is not cached, so the next request asks again.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import pg from 'pg';
import { type CreatedClient, createClient } from '../common/clients.js';
import { idemKey, shardFor } from '../common/keys.js';
import { createLogger } from '../common/log.js';
import { Authenticator } from '../ingest/auth.js';
import { startIngest } from '../ingest/server.js';
import { createTestEnv, type TestEnv } from '../devkit/scratch.js';
import { waitFor } from '../devkit/wait.js';
import { http } from './support/http.js';

describe('ingest API-key cache', () => {
  let env: TestEnv;
  let pool: pg.Pool;
  let alice: CreatedClient;
  let queries = 0;

  before(async () => {
    env = await createTestEnv();
    pool = new pg.Pool({ connectionString: env.db.url, max: 2 });
    alice = await createClient(pool, 'alice');
    // Count the lookups that reach PostgreSQL.
    const query = pool.query.bind(pool) as (...args: unknown[]) => unknown;
    (pool as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
      queries++;
      return query(...args);
    };
  });
  after(async () => {
    await pool?.end();
    await env?.cleanup();
  });

  test('a settled answer is served from the cache, synchronously; unknown keys too', async () => {
    const auth = new Authenticator(pool, { ttlMs: 60_000 });
    assert.equal(auth.cached(alice.apiKey), undefined, 'nothing before the first lookup');
    const before = queries;
    const [a, b] = await Promise.all([auth.lookup(alice.apiKey), auth.lookup(alice.apiKey)]);
    assert.equal(a?.id, alice.id);
    assert.equal(b?.id, alice.id);
    assert.equal(queries - before, 1, 'concurrent lookups of one key share one query');
    assert.equal(auth.cached(alice.apiKey)?.client?.id, alice.id);
    assert.equal(await auth.lookup('sk_unknown'), undefined);
    assert.deepEqual(auth.cached('sk_unknown'), { client: undefined });
    assert.equal(queries - before, 2);
  });

  test('nothing is served once the entry is older than the TTL', async () => {
    const auth = new Authenticator(pool, { ttlMs: 50 });
    await auth.lookup(alice.apiKey);
    assert.ok(auth.cached(alice.apiKey));
    await waitFor('the entry expires', async () => auth.cached(alice.apiKey) === undefined);
  });

  test('a failed lookup (PostgreSQL unreachable) is not cached: the next lookup asks again', async () => {
    // Port 1 on loopback: the connection is refused at once.
    const down = new pg.Pool({
      connectionString: 'postgres://postgres@127.0.0.1:1/none',
      max: 1,
      connectionTimeoutMillis: 1000,
    });
    let attempts = 0;
    const query = down.query.bind(down) as (...args: unknown[]) => unknown;
    (down as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
      attempts++;
      return query(...args);
    };
    try {
      const auth = new Authenticator(down, { ttlMs: 60_000 });
      await assert.rejects(auth.lookup(alice.apiKey));
      assert.equal(auth.cached(alice.apiKey), undefined);
      await assert.rejects(auth.lookup(alice.apiKey));
      assert.equal(attempts, 2, 'asked again, not a cached failure');
    } finally {
      await down.end();
    }
  });

  test('through HTTP: the key store unreachable → 503 with Retry-After, nothing written', async () => {
    const ingest = await startIngest(
      { ...env.config, databaseUrl: 'postgres://postgres@127.0.0.1:1/none' },
      { logger: createLogger('silent', 'auth-test') },
    );
    try {
      const res = await http(ingest.url, {
        method: 'POST',
        path: '/v1/orders',
        headers: {
          authorization: `Bearer ${alice.apiKey}`,
          'idempotency-key': 'auth-down-1',
          'content-type': 'application/json',
        },
        body: JSON.stringify({ customer_id: 'c', currency: 'EUR', items: [{ sku: 's', qty: 1, unit_price_cents: 1 }] }),
      });
      assert.equal(res.status, 503);
      assert.ok(Number(res.headers['retry-after']) >= 1);
      assert.equal((res.json as { title: string }).title, 'Authentication unavailable');
      const redis = new Redis(env.redisUrl);
      try {
        assert.equal(
          await redis.exists(
            idemKey(env.prefix, shardFor(alice.id, 'auth-down-1', env.config.shards), alice.id, 'auth-down-1'),
          ),
          0,
        );
      } finally {
        redis.disconnect();
      }
    } finally {
      await ingest.stop();
    }
  });
});
