// Starts ingest: Redis (no offline queue, no command retries: an outage is a fast 503), the
// PostgreSQL pool (API keys, order state), the durability check, the backpressure timer, the
// metrics listener (SURGE_INGEST_METRICS_PORT) and the API server (app.ts). `stop()` is graceful
// and safe to call twice: /readyz turns 503, the API listener stops accepting, in-flight requests
// finish, then the metrics listener, Redis and PostgreSQL are closed.
import type { RequestListener, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Cluster } from 'ioredis';
import type { Config } from '../common/config.js';
import { createPool } from '../common/db.js';
import { createLogger, type Logger } from '../common/log.js';
import { createRedis, type RedisConnectOptions, redisReady } from '../common/redis.js';
import { activeTracing } from '../common/tracing.js';
import { createRegistry, ingestMetrics } from '../metrics/definitions.js';
import { type MetricsServer, startMetricsServer } from '../metrics/server.js';
import { buildIngestApp } from './app.js';
import { Authenticator } from './auth.js';
import { Backpressure } from './backpressure.js';
import { BatchPreparer } from './batch.js';
import { Door } from './door.js';
import { checkDurability, ClusterDurability, DurabilityBarrier } from './durability.js';
import { copyListeners } from './listeners.js';
import { OutcomeWaiters } from './outcomes.js';
import { createIngestServer } from './pipeline.js';
import { defineIngestCommands } from './scripts.js';
import { LoopTimeline } from './timeline.js';
import { OrderWriter } from './writer.js';

export interface IngestOptions {
  /** Defaults to a pino logger at `config.logLevel` with component `ingest`. */
  logger?: Logger;
  /** How long start() waits for Redis before going on not-ready (fast mode) or failing (durable). Default 5000 ms. */
  redisConnectTimeoutMs?: number;
}

/**
 * Ingest's Redis connection: no offline queue and no retries (an outage is a fast 503, a lost
 * reply is never resent), auto-pipelined on a single Redis (SEMANTICS 1.5; docs/ingest.md, "Why
 * the hot path looks as it does"). The benchmark's baseline server uses the same options. GET
 * (an order's record, read by the order lookup) is sent on its own: lookups come one per
 * PostgreSQL answer, so each auto-pipeline would carry one GET, and an ioredis Pipeline is a
 * large object (a copy of every script's methods); a burst of long polls made thousands of them.
 */
export const INGEST_REDIS_OPTIONS = {
  connectionName: 'surge-ingest',
  offlineQueue: false,
  maxRetriesPerRequest: 0,
  autoPipelining: true,
  autoPipeliningIgnoredCommands: ['get'],
} satisfies RedisConnectOptions;

export interface IngestService {
  port: number;
  /** http://host:port of the API */
  url: string;
  /** http://host:port of /metrics (SURGE_INGEST_METRICS_PORT) */
  metricsUrl: string;
  stop(): Promise<void>;
}

export async function startIngest(config: Config, options: IngestOptions = {}): Promise<IngestService> {
  const logger = options.logger ?? createLogger(config.logLevel, 'ingest');
  const redis = createRedis(config, INGEST_REDIS_OPTIONS);
  // Without a listener ioredis logs connection errors to stderr; the backpressure timer reports them.
  redis.on('error', () => {});
  defineIngestCommands(redis);
  const pool = createPool(config.databaseUrl, { max: 8, applicationName: 'surge-ingest' });
  const registry = createRegistry({ defaultMetrics: true, role: 'ingest' });
  const outcomes = new OutcomeWaiters(config, logger);
  const metrics = ingestMetrics(registry, { longPolls: () => outcomes.waiting });
  const backpressure = new Backpressure(redis, config, metrics, logger);
  const door = new Door(config);
  door.start();
  const timeline = config.ingestTimelineFile === '' ? undefined : new LoopTimeline();
  timeline?.start();
  // No thread starts until the first large batch.
  const batches = new BatchPreparer(config, metrics);
  let draining = false;
  let metricsServer: MetricsServer | undefined;
  const closeConnections = async () => {
    await metricsServer?.close();
    backpressure.stop();
    door.stop();
    timeline?.stop();
    await batches.close().catch(() => {});
    await outcomes.stop();
    await redis.quit().catch(() => redis.disconnect());
    await pool.end().catch(() => {});
  };

  let durable: { barrier: DurabilityBarrier } | { clusterDurability: ClusterDurability } | undefined;
  try {
    try {
      await redisReady(redis, options.redisConnectTimeoutMs ?? 5000);
    } catch (err) {
      if (config.durability === 'durable') throw err;
      logger.warn({ err }, 'redis not reachable yet: starting not-ready, answering 503 until it is');
    }
    if (config.durability === 'durable') {
      const command = await checkDurability(redis, config);
      durable =
        redis instanceof Cluster
          ? { clusterDurability: new ClusterDurability(redis, command) }
          : { barrier: new DurabilityBarrier(redis, command) };
      logger.info({ command: `${command.kind} ${command.args.join(' ')}` }, 'durable mode: every 202 waits for this');
    }
    await backpressure.start();
    outcomes.start();
    // /metrics alone: the probes stay on the API port, so they test the listener clients use.
    metricsServer = await startMetricsServer({
      registry,
      host: config.listenHost,
      port: config.ingestMetricsPort,
      probes: false,
    });
  } catch (err) {
    await closeConnections();
    throw err;
  }

  const tracing = activeTracing();
  const writer = new OrderWriter({
    redis,
    config,
    logger,
    metrics,
    traced: tracing !== undefined,
    ...durable,
  });
  const auth = new Authenticator(pool, { ttlMs: config.authCacheMs });

  const server = buildIngestApp({
    config,
    redis,
    pool,
    auth,
    backpressure,
    writer,
    metrics,
    logger,
    door,
    prepareBatch: batches.prepare,
    outcomes,
    draining: () => draining,
    tracing,
    onRequest: timeline?.request,
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // A burst of new connections must wait in the kernel's queue, not overflow it: on Linux an
      // overflowing connection is dropped, not refused, and its client tries again a second later.
      server.listen({ port: config.ingestPort, host: config.listenHost, backlog: config.ingestListenBacklog }, () => {
        server.removeListener('error', reject);
        resolve();
      });
    });
  } catch (err) {
    await closeConnections();
    throw err;
  }
  // Copies of the listener, so a burst of new connections is let in several per turn.
  let copies: Server[] = [];
  const listener = server.listeners('request')[0] as RequestListener;
  try {
    copies = await copyListeners(server, config.ingestListeners - 1, config.ingestListenBacklog, () =>
      createIngestServer(config, listener),
    );
  } catch (err) {
    logger.warn({ err }, 'could not add listeners: new connections are taken one per event-loop turn');
  }
  const servers = [server, ...copies];
  const port = (server.address() as AddressInfo).port;
  const host = config.listenHost.includes(':') ? `[${config.listenHost}]` : config.listenHost;

  let stopping: Promise<void> | undefined;
  return {
    port,
    url: `http://${host}:${port}`,
    metricsUrl: `http://${host}:${metricsServer.port}`,
    stop() {
      stopping ??= (async () => {
        draining = true;
        // Long polls answer now, with the state then, rather than hold the stop for their wait.
        void outcomes.stop();
        // Stop accepting; requests arriving on kept-alive connections get 503 + Connection:
        // close (pipeline.ts); in-flight requests finish. A connection goes idle once its
        // answer is sent: idle ones are closed until none is left.
        const closed = Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
        const closeIdle = () => {
          for (const s of servers) s.closeIdleConnections();
        };
        const idle = setInterval(closeIdle, 50);
        closeIdle();
        await closed;
        clearInterval(idle);
        await closeConnections();
        timeline?.write(config.ingestTimelineFile);
      })();
      return stopping;
    },
  };
}
