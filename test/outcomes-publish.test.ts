// The outcome publisher's one Lua call, on the real Redis: every pending entry's outcome is on the
// outcome stream field for field as outcomeFields gives it (the fields travel as one JSON
// argument, so characters JSON escapes must come back as they were), applied entries are acked
// with it, and entries no longer pending are neither published nor acked.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { ENTRY_FIELD } from '../common/entry.js';
import { GROUP, outcomeKey, streamKey } from '../common/keys.js';
import { outcomeFields } from '../common/outcome.js';
import { ensureGroups } from '../common/streams.js';
import { createTestEnv, type TestEnv } from '../devkit/scratch.js';
import type { TaskEntry } from '../workers/apply.js';
import { encodeOutcomes, OutcomePublisher, PUBLISH_CHUNK } from '../workers/outcomes.js';

describe('outcome publisher', () => {
  let env: TestEnv;
  let redis: Redis;
  let publisher: OutcomePublisher;

  before(async () => {
    env = await createTestEnv({ SURGE_SHARDS: '1' });
    redis = new Redis(env.redisUrl);
    await ensureGroups(redis, env.prefix, 1);
    publisher = new OutcomePublisher(env.config, redis);
  });

  after(async () => {
    await publisher.close();
    redis.disconnect();
    await env.cleanup();
  });

  test('publishes each pending entry once, with its fields as they were, and acks the applied ones', async () => {
    const stream = streamKey(env.prefix, 0);
    // Keys JSON escapes or writes raw: quote, backslash, control characters, NUL, non-ASCII, a
    // surrogate pair and a lone surrogate (which a Redis argument carries as U+FFFD).
    const keys = ['plain', 'q"uo\\te/', 'ctl\u0001\t\n\r\u001f', 'nul\u0000x', 'é€✓', 'emoji😀', 'lone\ud800x'];
    const ids: string[] = [];
    for (const key of keys)
      ids.push(String(await redis.xadd(stream, '*', ENTRY_FIELD.client, 'client-1', ENTRY_FIELD.key, key)));
    // One more entry that is read but acked before the publish: no longer pending.
    const gone = String(await redis.xadd(stream, '*', ENTRY_FIELD.client, 'client-1', ENTRY_FIELD.key, 'gone'));
    // And a duplicate of the first key in the same batch: published with the first one's order_ref.
    const dup = String(await redis.xadd(stream, '*', ENTRY_FIELD.client, 'client-1', ENTRY_FIELD.key, 'plain'));
    await redis.xreadgroup('GROUP', GROUP, 'me', 'COUNT', 100, 'STREAMS', stream, '>');
    await redis.xack(stream, GROUP, gone);
    const entries: TaskEntry[] = [...ids, gone, dup].map((id, i) => ({
      id,
      fields: [ENTRY_FIELD.client, 'client-1', ENTRY_FIELD.key, keys[i] ?? (id === gone ? 'gone' : 'plain')],
      deliveries: 1,
    }));
    const appliedAt = '2026-12-07T12:00:00.000Z';
    // The last key is dead-lettered (published, not acked here); the others applied or rejected.
    const dead = ids.at(-1) ?? '';
    const applied = [...ids.slice(0, -1), gone];
    const unacked = await publisher.publish(0, entries, {
      ack: [...applied, dup],
      deadLetters: [{ id: dead, reason: 'permanent_error', message: 'x' }],
      committed: applied.map((entryId, i) =>
        i === 1
          ? { entryId, status: 'rejected', reason: 'out_of_stock', appliedAt }
          : { entryId, status: 'applied', appliedAt },
      ),
    });

    const published = (await redis.xrange(outcomeKey(env.prefix, 0), '-', '+')).map(([, f]) => f);
    const expected = [...keys, 'plain'].map((key, i) =>
      outcomeFields(
        i === keys.length - 1
          ? {
              clientId: 'client-1',
              idempotencyKey: 'lone\ufffdx',
              status: 'dead_lettered',
              reason: 'permanent_error',
              orderRef: `s0-${dead}`,
            }
          : {
              clientId: 'client-1',
              idempotencyKey: key,
              status: i === 1 ? 'rejected' : 'applied',
              ...(i === 1 ? { reason: 'out_of_stock' } : {}),
              orderRef: `s0-${ids[i] ?? ids[0]}`,
              appliedAt,
            },
      ),
    );
    assert.deepEqual(unacked, [], 'every applied entry had a state: nothing left to the acker');
    // Published in ack order: the dead letter's call comes after the applied ones'.
    expected.push(...expected.splice(keys.length - 1, 1));
    assert.deepEqual(published, expected);
    // Applied entries acked by the call; the dead letter is left to the acker's move to the DLQ.
    const pending = (await redis.xpending(stream, GROUP, '-', '+', 100)) as [string][];
    assert.deepEqual(
      pending.map((p) => p[0]),
      [dead],
    );

    // A second publish of the same entries adds nothing: the applied ones are no longer pending.
    await publisher.publish(0, entries.slice(0, -2), {
      ack: ids.slice(0, -1),
      deadLetters: [],
      committed: ids.slice(0, -1).map((entryId) => ({ entryId, status: 'applied', appliedAt })),
    });
    assert.equal(await redis.xlen(outcomeKey(env.prefix, 0)), keys.length + 1);
  });

  test('a batch goes in calls of at most PUBLISH_CHUNK entries; a failed call leaves only its entries and later ones pending', async () => {
    const stream = streamKey(env.prefix, 0);
    const outcomes = outcomeKey(env.prefix, 0);
    await redis.del(outcomes);
    const n = PUBLISH_CHUNK * 2 + 7;
    const ids: string[] = [];
    for (let i = 0; i < n; i++)
      ids.push(String(await redis.xadd(stream, '*', ENTRY_FIELD.client, 'client-2', ENTRY_FIELD.key, `chunk-${i}`)));
    await redis.xreadgroup('GROUP', GROUP, 'me', 'COUNT', n, 'STREAMS', stream, '>');
    const entries: TaskEntry[] = ids.map((id, i) => ({
      id,
      fields: [ENTRY_FIELD.client, 'client-2', ENTRY_FIELD.key, `chunk-${i}`],
      deliveries: 1,
    }));
    const appliedAt = '2026-12-08T00:00:00.000Z';
    const outcome = {
      ack: ids,
      deadLetters: [],
      committed: ids.map((entryId) => ({ entryId, status: 'applied' as const, appliedAt })),
    };
    // Each call's entry count, read from its JSON argument; the second call fails before Redis sees it.
    const sizes: number[] = [];
    const evalOf = redis.eval.bind(redis);
    const counting = (failAt: number) =>
      ((...args: Parameters<typeof redis.eval>) => {
        sizes.push((JSON.parse(String(args[6])) as unknown[]).length);
        if (sizes.length === failAt) return Promise.reject(new Error('connection lost'));
        return evalOf(...args);
      }) as typeof redis.eval;
    // This test's entries only (the test before leaves its dead letter pending).
    const pendingIds = async () =>
      ((await redis.xpending(stream, GROUP, ids[0] ?? '-', '+', n)) as [string][]).map((p) => p[0]);
    try {
      redis.eval = counting(2);
      await assert.rejects(publisher.publish(0, entries, outcome), /connection lost/);
      assert.deepEqual(sizes, [PUBLISH_CHUNK, PUBLISH_CHUNK]);
      // The first call's entries are acked and published; the rest wait, pending, for their redelivery.
      assert.equal(await redis.xlen(outcomes), PUBLISH_CHUNK);
      assert.deepEqual(await pendingIds(), ids.slice(PUBLISH_CHUNK));

      // Published again (as a redelivery would be): each outcome once, in calls of at most PUBLISH_CHUNK.
      sizes.length = 0;
      redis.eval = counting(0);
      assert.deepEqual(await publisher.publish(0, entries, outcome), []);
      assert.deepEqual(sizes, [PUBLISH_CHUNK, PUBLISH_CHUNK, 7]);
    } finally {
      redis.eval = evalOf;
    }
    const published = (await redis.xrange(outcomes, '-', '+')).map(([, f]) => f[3]);
    assert.deepEqual(
      published,
      ids.map((_, i) => `chunk-${i}`),
    );
    assert.deepEqual(await pendingIds(), []);
  });

  test('a lone surrogate is written as U+FFFD, anything else as JSON.stringify writes it', () => {
    assert.equal(encodeOutcomes([['1-0', 'k', 'a\ud800b']]), JSON.stringify([['1-0', 'k', 'a\ufffdb']]));
    assert.equal(
      encodeOutcomes([['1-0', 'k', 'a\ud83d\ude00b\\ud800']]),
      JSON.stringify([['1-0', 'k', 'a😀b\\ud800']]),
    );
  });
});
