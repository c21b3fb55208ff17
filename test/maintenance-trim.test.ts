import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { Redis } from 'ioredis';
import { GROUP } from '../common/keys.js';
import { safeTrimStream } from '../maintenance/streams.js';
import { deleteRedisPrefix, TEST_REDIS_URL, uniquePrefix } from '../devkit/scratch.js';
import { defined } from './support/defined.js';

type Read = Array<[string, Array<[string, string[]]>]> | null;

async function read(redis: Redis, stream: string, group: string, consumer: string, count: number): Promise<string[]> {
  const r = (await redis.xreadgroup('GROUP', group, consumer, 'COUNT', count, 'STREAMS', stream, '>')) as Read;
  return (r?.[0]?.[1] ?? []).map(([id]) => id);
}

async function fill(redis: Redis, stream: string, n: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i += 500) {
    const p = redis.pipeline();
    for (let j = i; j < Math.min(n, i + 500); j++) p.xadd(stream, '*', 'v', '1', 'n', String(j), 'pad', 'x'.repeat(64));
    for (const [, id] of (await p.exec()) ?? []) ids.push(id as string);
  }
  return ids;
}

async function present(redis: Redis, stream: string, ids: string[]): Promise<string[]> {
  const missing: string[] = [];
  for (const id of ids) if ((await redis.xrange(stream, id, id)).length === 0) missing.push(id);
  return missing;
}

describe('safe trim', () => {
  const prefix = uniquePrefix();
  let redis: Redis;
  before(() => {
    redis = new Redis(TEST_REDIS_URL);
  });
  after(async () => {
    redis.disconnect();
    await deleteRedisPrefix(TEST_REDIS_URL, prefix);
  });

  test('with a slow consumer holding pending entries it never removes an unacked entry, and frees memory once all is acked', async () => {
    const stream = `${prefix}:{s0}:orders`;
    const ids = await fill(redis, stream, 3000);
    await redis.xgroup('CREATE', stream, GROUP, '0');
    await redis.xgroup('CREATE', stream, 'audit', '0');
    // appliers: `slow` takes 1010 and acks only the first 1000; `fast` takes and acks the rest.
    const slow = await read(redis, stream, GROUP, 'slow', 1010);
    await redis.xack(stream, GROUP, ...slow.slice(0, 1000));
    const pending = slow.slice(1000);
    const fast = await read(redis, stream, GROUP, 'fast', 5000);
    await redis.xack(stream, GROUP, ...fast);
    // audit: a second group that has read and acked only 2500 (500 undelivered to it).
    const audit = await read(redis, stream, 'audit', 'a1', 2500);
    await redis.xack(stream, 'audit', ...audit);

    const memBefore = Number(await redis.memory('USAGE', stream, 'SAMPLES', 0));
    const r = await safeTrimStream(redis, stream);
    assert.equal(r.trimPoint, pending[0], 'T = the oldest pending ID (below audit’s last-delivered-id)');
    assert.ok(r.trimmed > 0 && r.trimmed <= 1000, `trimmed ${r.trimmed}`);
    assert.deepEqual(await present(redis, stream, pending), [], 'every pending entry is still there');
    assert.equal(
      (await redis.xrange(stream, defined(pending[0], 'the oldest pending ID'), '+')).length,
      2000,
      'nothing at or after the oldest pending ID was removed',
    );
    assert.equal(await redis.xlen(stream), 3000 - r.trimmed);

    // The slow consumer acks; audit lags 500 behind → T = audit's last-delivered-id.
    await redis.xack(stream, GROUP, ...pending);
    const r2 = await safeTrimStream(redis, stream);
    assert.equal(r2.trimPoint, ids[2499]);
    assert.equal(
      (await redis.xrange(stream, defined(ids[2499], 'entry 2500'), '+')).length,
      501,
      'entries not yet delivered to audit remain',
    );

    // Everything acked by every group: all but the last node go, memory drops.
    await redis.xack(stream, 'audit', ...(await read(redis, stream, 'audit', 'a1', 1000)));
    const r3 = await safeTrimStream(redis, stream);
    assert.equal(r3.trimPoint, ids[2999]);
    const len = await redis.xlen(stream);
    const memAfter = Number(await redis.memory('USAGE', stream, 'SAMPLES', 0));
    assert.ok(len <= 100, `XLEN ${len} after trimming (approximate trim keeps at most one node)`);
    assert.ok(memAfter < memBefore / 10, `MEMORY USAGE ${memBefore} → ${memAfter} bytes`);
    assert.equal(
      (await redis.xrange(stream, defined(ids[2999], 'the last entry'), '+')).length,
      1,
      'the last-delivered entry itself stays',
    );
  });

  test('a stream without consumer groups is left alone', async () => {
    const stream = `${prefix}:{s1}:orders`;
    await fill(redis, stream, 300);
    assert.deepEqual(await safeTrimStream(redis, stream), { stream, trimmed: 0, trimPoint: '' });
    assert.equal(await redis.xlen(stream), 300);
  });

  test('property: for any reads and acks over up to three groups, no pending or undelivered entry is trimmed', async () => {
    let round = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 450 }),
        fc.array(
          fc.record({
            read: fc.nat({ max: 500 }),
            acks: fc.array(fc.boolean(), { maxLength: 500 }),
            consumers: fc.integer({ min: 1, max: 3 }),
          }),
          {
            minLength: 1,
            maxLength: 3,
          },
        ),
        async (n, groups) => {
          const stream = `${prefix}:{p${round++}}:orders`;
          try {
            const ids = await fill(redis, stream, n);
            const mustKeep = new Set<string>();
            for (const [gi, g] of groups.entries()) {
              const name = `g${gi}`;
              await redis.xgroup('CREATE', stream, name, '0');
              const got: string[] = [];
              for (let c = 0; got.length < g.read; c = (c + 1) % g.consumers) {
                const batch = await read(redis, stream, name, `c${c}`, Math.min(50, g.read - got.length));
                if (batch.length === 0) break;
                got.push(...batch);
              }
              const acked = got.filter((_, i) => g.acks[i] ?? false);
              if (acked.length > 0) await redis.xack(stream, name, ...acked);
              for (const id of got) if (!acked.includes(id)) mustKeep.add(id);
              for (const id of ids.slice(got.length)) mustKeep.add(id);
            }
            await safeTrimStream(redis, stream);
            const missing = await present(redis, stream, [...mustKeep]);
            assert.deepEqual(
              missing,
              [],
              `trimmed entries still pending or undelivered: ${missing.slice(0, 5).join(', ')}`,
            );
          } finally {
            await redis.del(stream);
          }
        },
      ),
      { numRuns: 25 },
    );
  });
});
