// Redis connections: single node or Cluster, chosen by the config.
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import type { Config } from './config.js';

export type RedisClient = Redis | Cluster;

export interface RedisConnectOptions {
  /** Name shown by CLIENT LIST. */
  connectionName?: string;
  /**
   * Queue commands while disconnected (ioredis default). Ingest turns it off so a Redis outage
   * is a fast 503, not a request that hangs and is resent later (SEMANTICS pitfall 5).
   */
  offlineQueue?: boolean;
  /** Retries of one command across reconnects; null = forever (blocking readers). */
  maxRetriesPerRequest?: number | null;
  /** Don't connect until the first command. */
  lazyConnect?: boolean;
}

export function createRedis(config: Pick<Config, 'redisUrl' | 'redisClusterNodes'>, options: RedisConnectOptions = {}): RedisClient {
  const base: RedisOptions = {
    connectionName: options.connectionName ?? 'surge',
    enableOfflineQueue: options.offlineQueue ?? true,
    maxRetriesPerRequest: options.maxRetriesPerRequest === undefined ? 20 : options.maxRetriesPerRequest,
    // An XADD whose reply was lost must not be sent again by the client library: the caller
    // decides (ingest answers 503; the PostgreSQL unique key absorbs the client's retry).
    autoResendUnfulfilledCommands: false,
    lazyConnect: options.lazyConnect ?? false,
    retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 6), 2000),
  };
  if (config.redisClusterNodes.length > 0) {
    const url = new URL(config.redisUrl);
    return new Cluster(config.redisClusterNodes, {
      redisOptions: {
        ...base,
        username: url.username ? decodeURIComponent(url.username) : undefined,
        password: url.password ? decodeURIComponent(url.password) : undefined,
        tls: url.protocol === 'rediss:' ? {} : undefined,
      },
      enableOfflineQueue: base.enableOfflineQueue,
      lazyConnect: base.lazyConnect,
      clusterRetryStrategy: (times) => Math.min(100 * times, 2000),
    });
  }
  return new Redis(config.redisUrl, base);
}

/** Resolves once the client is ready (or rejects after timeoutMs). */
export async function redisReady(client: RedisClient, timeoutMs = 5000): Promise<void> {
  if (client.status === 'ready') return;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`Redis not ready after ${timeoutMs} ms (status ${client.status})`));
    }, timeoutMs);
    const onReady = () => {
      cleanup();
      resolve();
    };
    const cleanup = () => {
      clearTimeout(timer);
      client.off('ready', onReady);
    };
    client.on('ready', onReady);
    if (client.status === 'wait') client.connect().catch(() => {});
  });
}
