// The BullMQ side of Surge: queue names, their key prefix, their connections and how much history
// they keep. BullMQ runs beside the streams, never on the ingest path (SEMANTICS 7): dead-letter
// replays and the scheduled maintenance jobs.
import { type DefaultJobOptions, Queue } from 'bullmq';
import type { Config } from '../common/config.js';
import { createRedis, type RedisClient } from '../common/redis.js';

/** Scheduled maintenance (one job per scheduler tick). */
export const MAINTENANCE_QUEUE = 'maintenance';
/** Dead-letter replays of many entries (chunks of IDs). */
export const REPLAY_QUEUE = 'dlq-replay';

/**
 * BullMQ key prefix: `<SURGE_REDIS_PREFIX>:{bull}`. Every BullMQ key then starts with the Surge
 * prefix (tests and tenants stay apart) and carries one hash tag, so BullMQ's multi-key Lua
 * scripts work on Redis Cluster.
 */
export function bullPrefix(config: Pick<Config, 'redisPrefix'>): string {
  return `${config.redisPrefix}:{bull}`;
}

/**
 * A connection for BullMQ. Workers block (BZPOPMIN), so BullMQ wants `maxRetriesPerRequest: null`
 * on its connections; the caller disconnects it after closing the queue/worker that uses it.
 */
export function bullConnection(config: Pick<Config, 'redisUrl' | 'redisClusterNodes'>, name: string): RedisClient {
  return createRedis(config, { connectionName: name, maxRetriesPerRequest: null });
}

type History = Pick<DefaultJobOptions, 'removeOnComplete' | 'removeOnFail'>;

/** Completed maintenance jobs kept (the newest; docs/maintenance.md "BullMQ's own memory"). */
export const KEEP_COMPLETED = 100;
/** Failed jobs kept per queue: rare, and what an operator looks at (7 days at most). */
const KEEP_FAILED = 1000;
const FAILED: History['removeOnFail'] = { age: 7 * 24 * 3600, count: KEEP_FAILED };

/**
 * History of the `maintenance` queue. Its schedulers create a job every tick forever (4 jobs per
 * `SURGE_MAINTENANCE_INTERVAL_MS` at worst), so completed jobs are kept by count alone: the last
 * 100, whatever the tick.
 */
const MAINTENANCE_HISTORY: History = { removeOnComplete: { count: KEEP_COMPLETED }, removeOnFail: FAILED };

/**
 * Completed `dlq-replay` jobs kept: jobs only come from an operator's `surge dlq replay`, and the
 * CLI sums a batch's result from its completed jobs, so a batch of up to 1,000 chunk jobs (100,000
 * dead letters at the default chunk size) is reported whole.
 */
const KEEP_COMPLETED_REPLAYS = 1000;
export const REPLAY_HISTORY: History = {
  removeOnComplete: { age: 24 * 3600, count: KEEP_COMPLETED_REPLAYS },
  removeOnFail: FAILED,
};

/**
 * Cap of BullMQ's own `events` stream per queue (BullMQ's default is 10,000). BullMQ trims with
 * `XADD … MAXLEN ~`, so the stream may exceed it by up to one radix node (100 entries).
 */
export const EVENTS_MAX_LEN = 1000;

/**
 * A Queue of Surge's: the `{bull}` prefix, the events cap (written to the queue's meta hash, which
 * BullMQ's scripts read; a Queue built without it would reset the cap to 10,000) and the queue's
 * default job options, which BullMQ applies to `add`, `addBulk` and job-scheduler templates alike.
 */
export function createQueue<T = unknown>(
  config: Pick<Config, 'redisPrefix'>,
  name: string,
  connection: RedisClient,
  defaultJobOptions: DefaultJobOptions,
): Queue<T> {
  return new Queue<T>(name, {
    connection,
    prefix: bullPrefix(config),
    streams: { events: { maxLen: EVENTS_MAX_LEN } },
    defaultJobOptions,
  });
}

/** The `maintenance` queue: two attempts (a job is safe to repeat), its history bounded. */
export function createMaintenanceQueue(config: Pick<Config, 'redisPrefix'>, connection: RedisClient): Queue {
  return createQueue(config, MAINTENANCE_QUEUE, connection, {
    attempts: 2,
    backoff: { type: 'exponential', delay: 1000 },
    ...MAINTENANCE_HISTORY,
  });
}
