// The lag exporter: one per deployment. Serves /metrics (plus /healthz, /readyz) with the figures
// of metrics/lag.ts. A reading is reused for `lagCacheMs` across scrapes, and concurrent scrapes
// share one reading in flight, so any number of scrapers cost Redis one reading per period.
import type { Config } from '../common/config.js';
import { createLogger, type Logger } from '../common/log.js';
import { createRedis, type RedisClient, redisReady } from '../common/redis.js';
import { createRegistry, type LagMetrics, lagMetrics } from './definitions.js';
import { type LagSnapshot, type ReadLagOptions, readLag } from './lag.js';
import { startMetricsServer } from './server.js';

export interface LagExporterOptions {
  /** Use this client instead of creating one (it is not closed by stop()). Default: a new client. */
  redis?: RedisClient;
  logger?: Logger;
  /** Clock for entry ages (ms). Default Date.now. */
  now?: () => number;
  /** A reading that takes longer fails the scrape's reading (surge_lag_exporter_redis_up 0). Default 5000 ms. */
  readTimeoutMs?: number;
  /** Passed to readLag (NULL-lag counting bounds). */
  read?: ReadLagOptions;
  /** Register Node's default process metrics (surge_process_*). Default true. */
  defaultMetrics?: boolean;
}

export interface LagExporter {
  port: number;
  /** The latest reading, or undefined before the first successful one. */
  lastSnapshot(): LagSnapshot | undefined;
  stop(): Promise<void>;
}

/** Copies a reading into the gauges. Label sets that the reading lacks are removed (reset first). */
function applySnapshot(m: LagMetrics, snap: LagSnapshot): void {
  for (const g of [
    m.streamLength,
    m.lag,
    m.lagSeconds,
    m.pending,
    m.backlog,
    m.oldestPendingAge,
    m.consumers,
    m.consumerPending,
    m.consumerIdle,
    m.dlqDepth,
    m.lagNull,
    m.redisUsedMemory,
    m.redisMaxMemory,
  ]) {
    g.reset();
  }
  for (const s of snap.shards) {
    m.streamLength.set({ stream: s.stream }, s.length);
    m.dlqDepth.set({ stream: s.dlqStream }, s.dlqDepth);
    const g = s.group;
    if (!g) continue;
    const labels = { stream: s.stream, group: g.name };
    // NULL lag is absent, never 0 (SEMANTICS 2.5): the series is simply not set.
    if (g.lag !== null) m.lag.set(labels, g.lag);
    m.lagNull.set(labels, g.lag === null ? 1 : 0);
    m.lagSeconds.set(labels, g.oldestUndeliveredAgeSeconds);
    m.pending.set(labels, g.pending);
    m.backlog.set(labels, g.backlog);
    m.oldestPendingAge.set(labels, g.oldestPendingAgeSeconds);
    m.consumers.set(labels, g.consumers.length);
    for (const c of g.consumers) {
      const cl = { ...labels, consumer: c.name };
      m.consumerPending.set(cl, c.pending);
      m.consumerIdle.set(cl, c.idleMs / 1000);
    }
  }
  for (const n of snap.memory) {
    m.redisUsedMemory.set({ node: n.node }, n.usedBytes);
    m.redisMaxMemory.set({ node: n.node }, n.maxBytes);
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Starts the lag exporter on `config.lagExporterPort` (0 = a free port) of `config.listenHost`. */
export async function startLagExporter(config: Config, options: LagExporterOptions = {}): Promise<LagExporter> {
  const logger = options.logger ?? createLogger(config.logLevel, 'lag-exporter');
  const now = options.now ?? Date.now;
  const readTimeoutMs = options.readTimeoutMs ?? 5000;
  const ownRedis = options.redis === undefined;
  // No offline queue: while Redis is down a reading fails at once (redis_up 0) instead of queueing.
  const redis =
    options.redis ??
    createRedis(config, { connectionName: 'surge-lag-exporter', offlineQueue: false, maxRetriesPerRequest: 1 });
  if (ownRedis) redis.on('error', (err: Error) => logger.debug({ err: err.message }, 'redis connection error'));
  const registry = createRegistry({ defaultMetrics: options.defaultMetrics ?? true, role: 'lag-exporter' });
  const metrics = lagMetrics(registry);

  let last: LagSnapshot | undefined;
  let readAt = Number.NEGATIVE_INFINITY;
  let inFlight: Promise<void> | undefined;
  let lastFailed = false;

  const refresh = async () => {
    const started = process.hrtime.bigint();
    try {
      const snap = await withTimeout(
        readLag(redis, config.redisPrefix, config.shards, now(), options.read),
        readTimeoutMs,
        'reading Redis',
      );
      applySnapshot(metrics, snap);
      metrics.up.set(1);
      last = snap;
      if (lastFailed) logger.info('reading Redis works again');
      lastFailed = false;
      for (const s of snap.shards) {
        if (s.group?.undeliveredSource === 'lower_bound') {
          logger.warn(
            { stream: s.stream, countLimit: options.read?.countLimit },
            'Redis lag is NULL and the backlog is too large to count: exporting a lower bound',
          );
        }
      }
    } catch (err) {
      // Stale figures would be worse than none: drop them, say Redis is unreadable.
      applySnapshot(metrics, { at: now(), group: '', shards: [], memory: [] });
      metrics.up.set(0);
      metrics.scrapeErrors.inc();
      if (!lastFailed) logger.warn({ err: (err as Error).message }, 'reading Redis failed');
      lastFailed = true;
    } finally {
      metrics.readDuration.set(Number(process.hrtime.bigint() - started) / 1e9);
      readAt = Date.now();
    }
  };

  const beforeScrape = async () => {
    if (inFlight) return await inFlight;
    if (Date.now() - readAt < config.lagCacheMs) return;
    inFlight = refresh().finally(() => {
      inFlight = undefined;
    });
    await inFlight;
  };

  if (ownRedis) await redisReady(redis, 2000).catch(() => {});
  let server: Awaited<ReturnType<typeof startMetricsServer>>;
  try {
    server = await startMetricsServer({
      registry,
      host: config.listenHost,
      port: config.lagExporterPort,
      beforeScrape,
      ready: () => redis.status === 'ready',
    });
  } catch (err) {
    if (ownRedis) redis.disconnect();
    throw err;
  }
  logger.info(
    { port: server.port, shards: config.shards, prefix: config.redisPrefix, cacheMs: config.lagCacheMs },
    'lag exporter listening',
  );

  let stopping: Promise<void> | undefined;
  return {
    port: server.port,
    lastSnapshot: () => last,
    stop() {
      stopping ??= (async () => {
        await server.close();
        if (inFlight) await inFlight.catch(() => {});
        if (ownRedis) redis.disconnect();
      })();
      return stopping;
    },
  };
}
