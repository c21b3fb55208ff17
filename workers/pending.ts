// Entries read back from a pending list (own pending at start, or claimed from others): those
// whose payload is gone are counted lost and acked; the others get their delivery count, and
// those delivered too often are marked for the DLQ without being tried (SEMANTICS 2.1, 2.3).
import { GROUP, streamKey } from '../common/keys.js';
import type { TaskEntry } from './apply.js';
import type { ConsumerContext } from './context.js';
import { deliveryCounts, type StreamEntry } from './redis-ops.js';

/** Acks and counts as lost the IDs whose payload was deleted while pending. */
export async function dropLost(ctx: ConsumerContext, shard: number, ids: readonly string[], how: string) {
  if (ids.length === 0) return;
  const key = streamKey(ctx.config.redisPrefix, shard);
  ctx.metrics.lost.inc({ stream: key }, ids.length);
  await ctx.redis.xack(key, GROUP, ...ids);
  ctx.logger.warn({ stream: key, ids: ids.slice(0, 10), count: ids.length }, `${how}: counted lost and acked`);
}

export async function pendingTasks(
  ctx: ConsumerContext,
  shard: number,
  found: readonly StreamEntry[],
): Promise<TaskEntry[]> {
  const { config } = ctx;
  await dropLost(
    ctx,
    shard,
    found.filter(([, f]) => f === null).map(([id]) => id),
    'pending entries without payload',
  );
  const live = found.filter((e): e is [string, string[]] => e[1] !== null);
  const counts = await deliveryCounts(
    ctx.redis,
    streamKey(config.redisPrefix, shard),
    live.map(([id]) => id),
  );
  return live.map(([id, fields]) => {
    const deliveries = counts.get(id) ?? 1;
    const task: TaskEntry = { id, fields, deliveries };
    if (deliveries > config.maxDeliveries) {
      task.deadLetter = {
        reason: 'max_deliveries',
        message: `delivered ${deliveries} times (SURGE_MAX_DELIVERIES=${config.maxDeliveries})`,
      };
    }
    return task;
  });
}
