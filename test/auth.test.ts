// The API-key cache of ingest (ingest/auth.ts): settled answers are served without a query (and
// without a promise, for the hot path); unknown keys are cached too; a failed lookup (PostgreSQL
// down) is not cached, so the next request asks again; an entry in use is refreshed in the
// background before it expires, and no answer is served longer than the TTL.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import pg from 'pg';
import { type CreatedClient, createClient, disableClient } from '../common/clients.js';
import type { Pool } from '../common/db.js';
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
    let clock = 1_000_000;
    const auth = new Authenticator(pool, { ttlMs: 50, now: () => clock });
    await auth.lookup(alice.apiKey);
    assert.ok(auth.cached(alice.apiKey));
    clock += 50;
    assert.equal(auth.cached(alice.apiKey), undefined);
  });

  test('an entry in use is refreshed in the background: no request waits, and a disabled key stops within the TTL', async () => {
    const carol = await createClient(pool, 'carol');
    const ttlMs = 10_000;
    let clock = 1_000_000;
    // The key store, with a gate that holds its answers (a lookup under way) while `held` is set.
    let asked = 0;
    let held: Array<() => void> | undefined;
    const release = () => {
      const waiting = held ?? [];
      held = undefined;
      for (const go of waiting) go();
    };
    const store = {
      query: async (...args: unknown[]) => {
        asked++;
        if (held) await new Promise<void>((go) => held?.push(go));
        return (pool.query as (...a: unknown[]) => unknown)(...args);
      },
    } as unknown as Pool;
    const auth = new Authenticator(store, { ttlMs, now: () => clock });
    const served = () => auth.cached(carol.apiKey)?.client?.id;

    assert.equal((await auth.lookup(carol.apiKey))?.id, carol.id);
    assert.equal(asked, 1);
    clock += ttlMs * 0.4;
    assert.equal(served(), carol.id);
    assert.equal(asked, 1, 'in the first half of its life an entry is only served');

    // Past half its life: answered from the entry at once, and one refresh starts.
    held = [];
    clock += ttlMs * 0.2;
    assert.equal(served(), carol.id);
    assert.equal(served(), carol.id);
    assert.equal(asked, 2, 'one refresh, however many requests find the entry');
    release();
    // Past the first entry's expiry, before the refreshed one's half-life: served, nothing asked.
    clock += ttlMs * 0.45;
    await waitFor('the refreshed entry served', () => served() === carol.id, { timeoutMs: 5000 });
    assert.equal(asked, 2);

    // Disabled: the next refresh answers "unknown or disabled", well within the TTL.
    assert.ok(await disableClient(pool, 'carol'));
    clock += ttlMs * 0.1;
    assert.equal(served(), carol.id, 'still served while the refresh runs (within the TTL)');
    assert.equal(asked, 3);
    await waitFor('the disabled key refused', () => {
      const hit = auth.cached(carol.apiKey);
      return hit !== undefined && hit.client === undefined;
    });

    // A refresh that has not answered when its entry expires: the entry is no longer served, and a
    // lookup shares the refresh under way instead of asking again.
    held = [];
    clock += ttlMs * 0.5;
    assert.deepEqual(auth.cached(carol.apiKey), { client: undefined });
    assert.equal(asked, 4);
    clock += ttlMs * 0.6;
    assert.equal(auth.cached(carol.apiKey), undefined, 'nothing served past the TTL');
    const joined = auth.lookup(carol.apiKey);
    assert.equal(asked, 4);
    release();
    assert.equal(await joined, undefined);
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
