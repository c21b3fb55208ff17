// Reclaim (SEMANTICS 2.3): every SURGE_CLAIM_INTERVAL_MS, per shard, XAUTOCLAIM the entries other
// consumers left pending longer than the claim timeout, page by page until the cursor is 0-0.
import { streamKey } from '../common/keys.js';
import type { ConsumerContext } from './context.js';
import type { InFlightLimit } from './in-flight.js';
import { runUntilStopped } from './loop.js';
import { dropLost, pendingTasks } from './pending.js';
import { autoClaim } from './redis-ops.js';
import { recreateGroups, type Submit } from './shard-reader.js';

export async function reclaimShard(
  ctx: ConsumerContext,
  shard: number,
  submit: Submit,
  limit: InFlightLimit,
): Promise<number> {
  const { config } = ctx;
  const key = streamKey(config.redisPrefix, shard);
  let cursor = '0-0';
  let claimed = 0;
  do {
    const page = await autoClaim(ctx.redis, key, ctx.consumer, config.claimTimeoutMs, cursor, config.batchSize);
    cursor = page.next;
    await dropLost(ctx, shard, page.deleted, 'claimed entries whose payload was trimmed');
    // Our own in-flight entries may come back too (a batch older than the claim timeout): skip them.
    const taken = page.entries.filter(([id]) => !ctx.held.has(shard, id));
    if (taken.length === 0) continue;
    ctx.metrics.claimed.inc({ stream: key }, taken.length);
    const tasks = await pendingTasks(ctx, shard, taken);
    ctx.logger.info({ stream: key, count: tasks.length }, 'claimed idle entries');
    claimed += tasks.length;
    if (tasks.length > 0) submit(shard, tasks);
    await limit.room();
  } while (cursor !== '0-0' && !ctx.stopped());
  return claimed;
}

export async function reclaimLoop(ctx: ConsumerContext, submit: Submit, limit: InFlightLimit): Promise<void> {
  const onError = recreateGroups(ctx);
  while (!ctx.stopped()) {
    await ctx.pause(ctx.config.claimIntervalMs);
    for (let shard = 0; shard < ctx.config.shards && !ctx.stopped(); shard++) {
      await runUntilStopped(
        ctx,
        () => `XAUTOCLAIM on ${streamKey(ctx.config.redisPrefix, shard)}`,
        async () => {
          await reclaimShard(ctx, shard, submit, limit);
          return 'done';
        },
        onError,
      );
    }
  }
}
