// After the COMMIT: XACK what the batch applied (SEMANTICS 2.2) and move its dead letters to the
// DLQ stream. Redis errors are retried for the retry budget; past it the entries stay pending and
// come back as duplicates, which the apply step turns into no-ops.
import { setTimeout as sleep } from 'node:timers/promises';
import { dlqKey, GROUP, streamKey } from '../common/keys.js';
import { dlqEntryFields } from '../common/streams.js';
import type { BatchOutcome, TaskEntry } from './apply.js';
import type { ConsumerContext } from './context.js';
import { deadLetterEntry } from './redis-ops.js';

export async function acknowledge(
  ctx: Pick<ConsumerContext, 'config' | 'redis' | 'logger'>,
  shard: number,
  entries: readonly TaskEntry[],
  outcome: Pick<BatchOutcome, 'ack' | 'deadLetters'>,
  retryBudgetMs: number,
): Promise<boolean> {
  const key = streamKey(ctx.config.redisPrefix, shard);
  const dlq = dlqKey(ctx.config.redisPrefix, shard);
  const byId = new Map(entries.map((e) => [e.id, e]));
  const deadline = Date.now() + retryBudgetMs;
  // Dead letters already moved to the DLQ stream: a retry goes on after them.
  let moved = 0;
  let acked = outcome.ack.length === 0;
  for (let attempt = 0; ; attempt++) {
    try {
      if (!acked) {
        await ctx.redis.xack(key, GROUP, ...outcome.ack);
        acked = true;
      }
      for (const d of outcome.deadLetters.slice(moved)) {
        const entry = byId.get(d.id);
        const fields = dlqEntryFields(entry?.fields ?? null, {
          stream: key,
          entryId: d.id,
          reason: d.reason,
          message: d.message,
          sqlstate: d.sqlstate,
          deliveries: entry?.deliveries ?? 1,
        });
        await deadLetterEntry(ctx.redis, key, dlq, d.id, fields);
        moved++;
      }
      return true;
    } catch (e) {
      if (Date.now() > deadline) {
        ctx.logger.error(
          { err: e, stream: key },
          'could not ack a committed batch; its entries will be redelivered (duplicates, no-ops)',
        );
        return false;
      }
      await sleep(Math.min(2000, 50 * 2 ** attempt) * Math.random());
    }
  }
}
