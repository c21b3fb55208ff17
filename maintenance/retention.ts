// PostgreSQL retention: expired orders (which hold the idempotency keys) and old dead letters.
// Deletes run in batches of `batchSize` rows, each its own autocommit statement under a
// lock_timeout, so no transaction holds many row locks or runs long, and autovacuum can reclaim
// the space as it goes (no VACUUM FULL, no table lock).
import { dlqKey } from '../common/keys.js';
import type { Pool } from '../common/db.js';
import type { RedisClient } from '../common/redis.js';
import { sqlFile } from '../common/sql.js';

const DAY_MS = 24 * 3600 * 1000;

export interface BatchedDeleteOptions {
  batchSize: number;
  /** Most batches per run (bounds one run's duration; the next tick continues). Default 1000. */
  maxBatches?: number;
  /** lock_timeout of each batch, ms. Default 2000. */
  lockTimeoutMs?: number;
  /** The cut-off clock (tests); default Date.now(). */
  now?: number;
}

export interface BatchedDeleteResult {
  deleted: number;
  batches: number;
  /** True when the run stopped at maxBatches with rows possibly left. */
  more: boolean;
}

async function deleteInBatches(
  pool: Pool,
  sql: string,
  cutoff: Date,
  options: BatchedDeleteOptions,
): Promise<BatchedDeleteResult> {
  const maxBatches = options.maxBatches ?? 1000;
  const result: BatchedDeleteResult = { deleted: 0, batches: 0, more: false };
  const client = await pool.connect();
  try {
    await client.query(`SET lock_timeout = ${Math.max(1, Math.floor(options.lockTimeoutMs ?? 2000))}`);
    for (;;) {
      if (result.batches >= maxBatches) {
        result.more = true;
        break;
      }
      const r = await client.query(sql, [cutoff, options.batchSize]);
      result.batches++;
      result.deleted += r.rowCount ?? 0;
      if ((r.rowCount ?? 0) < options.batchSize) break;
    }
  } finally {
    await client.query('RESET lock_timeout').catch(() => {});
    client.release();
  }
  return result;
}

/** Deletes orders received more than `retentionDays` ago (0 = keep forever: does nothing). */
export async function expireOrders(
  pool: Pool,
  retentionDays: number,
  options: BatchedDeleteOptions,
): Promise<BatchedDeleteResult> {
  if (retentionDays <= 0) return { deleted: 0, batches: 0, more: false };
  const cutoff = new Date((options.now ?? Date.now()) - retentionDays * DAY_MS);
  return deleteInBatches(pool, sqlFile('maintenance/expire_orders'), cutoff, options);
}

export interface DeadLetterExpiryResult extends BatchedDeleteResult {
  /** DLQ stream entries removed (XTRIM MINID of the cut-off; DLQ entry IDs are dead-letter times). */
  streamEntries: number;
}

/** Deletes dead letters first seen more than `retentionDays` ago, rows and DLQ stream entries. */
export async function expireDeadLetters(
  pool: Pool,
  redis: RedisClient,
  prefix: string,
  shards: number,
  retentionDays: number,
  options: BatchedDeleteOptions,
): Promise<DeadLetterExpiryResult> {
  if (retentionDays <= 0) return { deleted: 0, batches: 0, more: false, streamEntries: 0 };
  const cutoffMs = (options.now ?? Date.now()) - retentionDays * DAY_MS;
  const rows = await deleteInBatches(pool, sqlFile('maintenance/expire_dead_letters'), new Date(cutoffMs), options);
  let streamEntries = 0;
  // Exact trim (no `~`): DLQ streams are small and an operator expects an entry past retention
  // to be gone. The DLQ stream has no consumer group, so MINID by time is the whole rule here.
  for (let shard = 0; shard < shards; shard++) {
    streamEntries += Number(await redis.xtrim(dlqKey(prefix, shard), 'MINID', `${cutoffMs}-0`));
  }
  return { ...rows, streamEntries };
}
