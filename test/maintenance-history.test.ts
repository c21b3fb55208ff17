// BullMQ's own state stays bounded: with a tiny tick the schedulers create hundreds of jobs in a
// few seconds, and the completed history, the job hashes and the events stream must stay at
// their caps (docs/maintenance.md "BullMQ's own memory").
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { ensureGroups } from '../common/streams.js';
import { bullPrefix, EVENTS_MAX_LEN, KEEP_COMPLETED, MAINTENANCE_QUEUE, REPLAY_QUEUE } from '../maintenance/queues.js';
import { startMaintenance } from '../maintenance/service.js';
import { createTestEnv, type TestEnv } from '../devkit/scratch.js';
import { waitFor } from '../devkit/wait.js';

/** docs/maintenance.md: the maintenance queue's worst case without failed jobs. */
const MAINTENANCE_QUEUE_BOUND_BYTES = 400 * 1024;

describe('maintenance: BullMQ history', () => {
  let t: TestEnv;
  let redis: Redis;

  before(async () => {
    t = await createTestEnv({
      SURGE_SHARDS: '2',
      SURGE_MAINTENANCE_INTERVAL_MS: '100',
      SURGE_RETENTION_INTERVAL_MS: '100',
    });
    redis = new Redis(t.redisUrl);
    await ensureGroups(redis, t.prefix, 2);
  });
  after(async () => {
    redis.disconnect();
    await t.cleanup();
  });

  test('completed jobs, job hashes and the events stream stay at their caps over many ticks', async () => {
    const q = `${bullPrefix(t.config)}:${MAINTENANCE_QUEUE}`;
    let runs = 0;
    const completedSeen: Promise<number>[] = [];
    const m = await startMaintenance(t.config, {
      metricsPort: false,
      onRun: () => {
        runs++;
        completedSeen.push(redis.zcard(`${q}:completed`));
      },
    });
    try {
      // 4 schedulers every 100 ms: 5× the cap in a few seconds.
      await waitFor(`${5 * KEEP_COMPLETED} maintenance runs`, () => runs >= 5 * KEEP_COMPLETED, { timeoutMs: 90_000 });
    } finally {
      await m.stop();
    }
    const seen = await Promise.all(completedSeen);
    assert.ok(
      Math.max(...seen) <= KEEP_COMPLETED,
      `completed history peaked at ${Math.max(...seen)} (cap ${KEEP_COMPLETED})`,
    );
    assert.equal(await redis.zcard(`${q}:completed`), KEEP_COMPLETED, 'the history reached its cap and stopped there');

    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await redis.scan(cursor, 'MATCH', `${bullPrefix(t.config)}:*`, 'COUNT', 1000);
      cursor = next;
      keys.push(...batch);
    } while (cursor !== '0');
    const jobHashes = keys.filter((k) => /^.+:maintenance:repeat:[a-z-]+:\d+$/.test(k));
    // The kept history plus at most one waiting/delayed job per scheduler.
    assert.ok(jobHashes.length <= KEEP_COMPLETED + 4, `${jobHashes.length} job hashes after ${runs} runs`);

    const events = await redis.xlen(`${q}:events`);
    assert.ok(
      events <= EVENTS_MAX_LEN + 100,
      `events stream holds ${events} entries (cap ${EVENTS_MAX_LEN}, ~ trimming)`,
    );
    for (const name of [MAINTENANCE_QUEUE, REPLAY_QUEUE]) {
      assert.equal(
        await redis.hget(`${bullPrefix(t.config)}:${name}:meta`, 'opts.maxLenEvents'),
        String(EVENTS_MAX_LEN),
        `${name} events cap`,
      );
    }

    let bytes = 0;
    for (const k of keys.filter((k) => k.startsWith(`${q}:`)))
      bytes += Number(await redis.memory('USAGE', k, 'SAMPLES', 0));
    assert.ok(
      bytes <= MAINTENANCE_QUEUE_BOUND_BYTES,
      `maintenance queue holds ${bytes} bytes (documented bound ${MAINTENANCE_QUEUE_BOUND_BYTES})`,
    );
    console.log(
      `# ${runs} runs: ${jobHashes.length} job hashes, ${events} events, ` +
        `${bytes} bytes in the maintenance queue's keys`,
    );
  });
});
