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
  /**
   * ioredis auto-pipelining: commands issued in the same event-loop turn leave in one socket
   * write (one syscall) instead of one write each. Each command stays its own command with its
   * own reply; only the transport is shared. Ingest turns it on (a write per request cost more
   * than the request's Lua call). Single Redis only: on Cluster, ioredis's auto-pipeline for a
   * master stalled for good after that master was killed and restarted (test/faults/
   * redis-cluster), so Cluster connections never use it.
   */
  autoPipelining?: boolean;
  /** Commands sent on their own even with auto-pipelining (each auto-pipeline is an ioredis Pipeline object). */
  autoPipeliningIgnoredCommands?: string[];
}

/** The error of a command whose connection closed before its reply arrived: it may or may not have run. */
export const IN_FLIGHT_LOST = 'Redis connection closed before the reply arrived; the command may or may not have run';

/**
 * With `autoResendUnfulfilledCommands: false`, ioredis (5.x) keeps the commands that were in
 * flight when the connection dropped and, once it reconnects, discards them without settling
 * their promises: the caller waits forever (a worker's blocked XREADGROUP, an XACK, XAUTOCLAIM).
 * The caller must get an error instead, so that it decides (SEMANTICS pitfall 5). ioredis emits
 * `close` on the next tick after moving the in-flight queue aside (the same array), so rejecting
 * the command queue there settles exactly those commands; commands issued while disconnected
 * stay in the offline queue.
 */
function rejectInFlightOnClose(client: Redis): void {
  client.on('close', () => {
    const flush = (
      client as unknown as { flushQueue?: (e: Error, o: { offlineQueue: boolean; commandQueue: boolean }) => void }
    ).flushQueue;
    flush?.call(client, new Error(IN_FLIGHT_LOST), { offlineQueue: false, commandQueue: true });
  });
}

export function createRedis(
  config: Pick<Config, 'redisUrl' | 'redisClusterNodes'>,
  options: RedisConnectOptions = {},
): RedisClient {
  const base: RedisOptions = {
    connectionName: options.connectionName ?? 'surge',
    enableOfflineQueue: options.offlineQueue ?? true,
    maxRetriesPerRequest: options.maxRetriesPerRequest === undefined ? 20 : options.maxRetriesPerRequest,
    // An XADD whose reply was lost must not be sent again by the client library: the caller
    // decides (ingest answers 503; the PostgreSQL unique key absorbs the client's retry).
    autoResendUnfulfilledCommands: false,
    lazyConnect: options.lazyConnect ?? false,
    enableAutoPipelining: options.autoPipelining ?? false,
    autoPipeliningIgnoredCommands: options.autoPipeliningIgnoredCommands ?? [],
    retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 6), 2000),
  };
  if (config.redisClusterNodes.length > 0) {
    const url = new URL(config.redisUrl);
    const cluster = new Cluster(config.redisClusterNodes, {
      redisOptions: {
        ...base,
        enableAutoPipelining: false,
        username: url.username ? decodeURIComponent(url.username) : undefined,
        password: url.password ? decodeURIComponent(url.password) : undefined,
        tls: url.protocol === 'rediss:' ? {} : undefined,
      },
      enableOfflineQueue: base.enableOfflineQueue,
      lazyConnect: base.lazyConnect,
      clusterRetryStrategy: (times) => Math.min(100 * times, 2000),
    });
    // Each node connection is a Redis instance with the same problem.
    cluster.on('+node', (node: Redis) => rejectInFlightOnClose(node));
    return cluster;
  }
  const client = new Redis(config.redisUrl, base);
  rejectInFlightOnClose(client);
  return client;
}

/**
 * The Redis Cluster hash slot of a key: CRC16 (XMODEM) of the key, or of its hash tag (the bytes
 * between the first `{` and the next `}`, when not empty), modulo 16384.
 */
export function keySlot(key: string): number {
  const bytes = Buffer.from(key);
  let start = 0;
  let end = bytes.length;
  const open = bytes.indexOf(0x7b);
  if (open !== -1) {
    const close = bytes.indexOf(0x7d, open + 1);
    if (close > open + 1) {
      start = open + 1;
      end = close;
    }
  }
  let crc = 0;
  for (let i = start; i < end; i++) {
    crc ^= bytes[i]! << 8; // in bounds: end <= bytes.length
    for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc & 16383;
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
