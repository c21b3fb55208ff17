// One shard's reader, on its own Redis connection (a blocked XREADGROUP holds it; one stream per
// call keeps every call on one Cluster slot, SEMANTICS 2.8): first this consumer's own pending
// list (a restart under the same name, SEMANTICS 2.1), then new entries, batch after batch.
import { streamKey } from '../common/keys.js';
import type { RedisClient } from '../common/redis.js';
import { ensureGroups } from '../common/streams.js';
import type { TaskEntry } from './apply.js';
import { formBatch } from './batch-former.js';
import type { ConsumerContext } from './context.js';
import type { InFlightLimit } from './in-flight.js';
import { runUntilStopped } from './loop.js';
import { pendingTasks } from './pending.js';
import { readGroup } from './redis-ops.js';

/**
 * Hands a batch of one shard to the apply step (returns at once). `slot`: the caller already
 * holds an in-flight slot for it (acquired); otherwise one is taken.
 */
export type Submit = (shard: number, entries: TaskEntry[], slot?: 'acquired') => void;

export interface ShardReader {
  ctx: ConsumerContext;
  shard: number;
  /** This reader's own connection. */
  reader: RedisClient;
  limit: InFlightLimit;
  submit: Submit;
  /** Longest XREADGROUP BLOCK; also how long a stop may wait for this reader. */
  blockMs: number;
}

/** A stream deleted under us (NOGROUP) gets its groups back. */
export function recreateGroups(ctx: ConsumerContext): (e: unknown) => Promise<void> {
  return async (e) => {
    if (String((e as Error)?.message).startsWith('NOGROUP')) {
      await ensureGroups(ctx.redis, ctx.config.redisPrefix, ctx.config.shards);
    }
  };
}

export async function readShard(r: ShardReader): Promise<void> {
  const { ctx, shard, reader, limit } = r;
  const { config } = ctx;
  const key = streamKey(config.redisPrefix, shard);
  const onError = recreateGroups(ctx);
  let after = '0';
  await runUntilStopped(
    ctx,
    () => `reading own pending entries of ${key}`,
    async () => {
      const found = await readGroup(reader, key, ctx.consumer, after, config.batchSize);
      const last = found.at(-1);
      if (last === undefined) return 'done';
      after = last[0];
      const fresh = found.filter(([id]) => !ctx.held.has(shard, id));
      const tasks = await pendingTasks(ctx, shard, fresh);
      if (tasks.length > 0) r.submit(shard, tasks);
      await limit.room();
      return undefined;
    },
    onError,
  );
  const read = (count: number, blockMs?: number) => readGroup(reader, key, ctx.consumer, '>', count, blockMs);
  const shape = {
    batchSize: config.batchSize,
    lingerMs: config.batchLingerMs,
    blockMs: r.blockMs,
    stopped: ctx.stopped,
  };
  await runUntilStopped(
    ctx,
    () => `XREADGROUP on ${key}`,
    async () => {
      await limit.room();
      if (ctx.stopped()) return 'done';
      const batch = await formBatch(read, shape);
      if (batch.length === 0) return undefined;
      // Another reader may have taken the room meanwhile: wait for a slot, holding what was read
      // (the heartbeat covers it), and top the batch up with what arrived while waiting.
      ctx.held.add(
        shard,
        batch.map(([id]) => id),
      );
      if ((await limit.acquire()) && batch.length < config.batchSize) {
        try {
          for (const e of await read(config.batchSize - batch.length)) batch.push(e);
        } catch (e) {
          ctx.logger.debug({ err: e }, 'topping a batch up failed; it goes as it is');
        }
      }
      r.submit(
        shard,
        batch.map(([id, fields]) => ({ id, fields, deliveries: 1 })),
        'acquired',
      );
      return undefined;
    },
    onError,
  );
}
