// What the worker's parts share: settings, the command connection, the consumer name, metrics,
// the entries in flight and stop.
import type { Config } from '../common/config.js';
import type { RedisClient } from '../common/redis.js';
import type { workerMetrics } from '../metrics/definitions.js';
import type { HeldEntries } from './held.js';
import type { LoopControl } from './loop.js';

export interface ConsumerContext extends LoopControl {
  config: Config;
  /** Commands (acks, claims, lookups); readers have their own connections. */
  redis: RedisClient;
  consumer: string;
  metrics: ReturnType<typeof workerMetrics>;
  held: HeldEntries;
}
