// Heartbeat of the entries in flight: a batch that runs long (hot-SKU lock queues, PostgreSQL
// retries, a loaded machine) must not be claimed — by another consumer or by our own XAUTOCLAIM,
// which would also count a delivery. XCLAIM JUSTID resets their idle time without counting one.
import { GROUP, streamKey } from '../common/keys.js';
import type { ConsumerContext } from './context.js';

/**
 * One beat: every entry held, of every shard, handed over within the last 10 claim timeouts and
 * idle for half of one gets its idle time reset. Older ones are taken as stuck and left to be
 * claimed, so a live process cannot hold entries forever. Errors are logged; the next beat retries.
 */
export async function heartbeat(ctx: ConsumerContext): Promise<void> {
  const { config } = ctx;
  const minIdle = Math.floor(config.claimTimeoutMs / 2);
  for (const [shard, ids] of ctx.held.heldSince(Date.now() - 10 * config.claimTimeoutMs)) {
    if (ctx.stopped()) return;
    await ctx.redis
      .xclaim(streamKey(config.redisPrefix, shard), GROUP, ctx.consumer, minIdle, ...ids, 'JUSTID')
      .catch((e: unknown) => ctx.logger.debug({ err: e }, 'heartbeat XCLAIM failed; retried next beat'));
  }
}

/** Beats every quarter of the claim timeout until stop; independent of reads and reclaim. */
export async function heartbeatLoop(ctx: ConsumerContext): Promise<void> {
  const every = Math.max(10, Math.floor(ctx.config.claimTimeoutMs / 4));
  while (!ctx.stopped()) {
    await ctx.pause(every);
    await heartbeat(ctx);
  }
}

/** Resets the idle time of entries this consumer keeps while PostgreSQL is away (no delivery counted). */
export async function keepEntries(ctx: ConsumerContext, shard: number, ids: readonly string[]): Promise<void> {
  if (ids.length === 0) return;
  await ctx.redis.xclaim(streamKey(ctx.config.redisPrefix, shard), GROUP, ctx.consumer, 0, ...ids, 'JUSTID');
}
