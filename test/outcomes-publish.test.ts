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
import { encodeOutcomes, OutcomePublisher } from '../workers/outcomes.js';

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

  test('a lone surrogate is written as U+FFFD, anything else as JSON.stringify writes it', () => {
    assert.equal(encodeOutcomes([['1-0', 'k', 'a\ud800b']]), JSON.stringify([['1-0', 'k', 'a\ufffdb']]));
    assert.equal(
      encodeOutcomes([['1-0', 'k', 'a\ud83d\ude00b\\ud800']]),
      JSON.stringify([['1-0', 'k', 'a😀b\\ud800']]),
    );
  });
});
