// The BullMQ side of Surge: queue names, their key prefix and their connections. BullMQ runs
// beside the streams, never on the ingest path (SEMANTICS 7): dead-letter replays and the
// scheduled maintenance jobs.
import type { DefaultJobOptions } from 'bullmq';
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

/** BullMQ keeps finished jobs in Redis; bound them so completed work never fills memory. */
export const KEEP_FINISHED: Pick<DefaultJobOptions, 'removeOnComplete' | 'removeOnFail'> = {
  removeOnComplete: { age: 24 * 3600, count: 1000 },
  removeOnFail: { age: 7 * 24 * 3600, count: 1000 },
};

/** Events stream cap of BullMQ's own `events` stream (BullMQ's default is 10,000). */
export const EVENTS_MAX_LEN = 1000;
