// `surge work`: the main thread of a worker process, assembled from its parts — one shard reader
// per shard (shard-reader.ts, forming batches with batch-former.ts), the in-flight limit
// (in-flight.ts), the acker (acker.ts), reclaim (reclaim.ts) and heartbeat (heartbeat.ts). Here:
// the pools, submitting a batch to the apply step and stop. Metrics of the threads come back in
// the task results and are recorded here. See docs/workers.md.
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { Piscina } from 'piscina';
import type { Config } from '../common/config.js';
import { createPool, type Pool } from '../common/db.js';
import { consumerName as defaultConsumerName, streamKey } from '../common/keys.js';
import { createLogger, type Logger } from '../common/log.js';
import { createRedis, type RedisClient, redisReady } from '../common/redis.js';
import { ensureGroups } from '../common/streams.js';
import { activeTracing } from '../common/tracing.js';
import { createRegistry, workerMetrics } from '../metrics/definitions.js';
import { startMetricsServer } from '../metrics/server.js';
import { acknowledge } from './acker.js';
import { AdaptiveLimit } from './adaptive.js';
import { BatchTracer } from './batch-trace.js';
import { type ApplyStats, type ApplyTask, type BatchOutcome, encodeAndApply } from './apply.js';
import type { ConsumerContext } from './context.js';
import { HeldEntries } from './held.js';
import { heartbeatLoop, keepEntries } from './heartbeat.js';
import { InFlightLimit, pauseAfter } from './in-flight.js';
import { lowerPriority } from './priority.js';
import { OutcomePublisher } from './outcomes.js';
import { reclaimLoop } from './reclaim.js';
import { readShard, type Submit } from './shard-reader.js';
import type { ThreadData } from './thread.js';

/**
 * Where the apply step runs. `threads`: each piscina thread holds its own connections and encodes
 * and applies the batches it is handed. `main`: no threads; the main thread encodes (little
 * work since PostgreSQL unpacks the orders) and its pool (SURGE_PG_POOL_SIZE connections) runs
 * COPY and the statements. Why the default is what it is: docs/workers.md (the runs behind it
 * are in bench/results/HISTORY.md).
 */
export type PgPlacement = 'threads' | 'main';

export interface WorkerOptions {
  /** Default: a pino logger at SURGE_LOG_LEVEL. */
  logger?: Logger;
  /** Consumer name in the group. Default `<host>-<pid>`. */
  consumerName?: string;
  /** Default: `main` when SURGE_WORKER_THREADS is 0, else `threads` (why: docs/workers.md). */
  pgPlacement?: PgPlacement;
  /** Longest XREADGROUP BLOCK; also how long a stop may wait for a reader. Default 1000 ms. */
  readBlockMs?: number;
}

export interface WorkerHandle {
  /** Port of the /metrics, /healthz, /readyz server. */
  port: number;
  consumer: string;
  /** Stop reading, finish and ack in-flight batches, close threads and connections. Idempotent. */
  stop(): Promise<void>;
}

export async function startWorker(config: Config, options: WorkerOptions = {}): Promise<WorkerHandle> {
  const logger = options.logger ?? createLogger(config.logLevel, 'worker');
  const consumer = options.consumerName ?? defaultConsumerName(hostname(), process.pid);
  const placement = options.pgPlacement ?? (config.workerThreads === 0 ? 'main' : 'threads');
  const readBlockMs = options.readBlockMs ?? 1000;
  // Before the threads start, so they inherit it (on Linux nice is per thread).
  if (config.workerNice > 0) lowerPriority(config.workerNice, logger);
  const shards = Array.from({ length: config.shards }, (_, i) => i);
  // A batch retries transient errors for a quarter of the claim timeout, then comes back to the
  // main thread, which refreshes its entries' idle time and submits it again: entries of a live
  // worker are never idle long enough to be claimed by another.
  const retryBudgetMs = Math.max(25, Math.floor(config.claimTimeoutMs / 4));

  const registry = createRegistry({ defaultMetrics: true, role: 'worker' });
  const tracing = activeTracing();
  const metrics = workerMetrics(registry, { exemplars: tracing !== undefined });

  const redis = createRedis(config, { connectionName: `surge-worker:${consumer}` });
  // A blocked XREADGROUP holds its connection: one reader connection per shard.
  const readers: RedisClient[] = [];
  let piscina: Piscina<ApplyTask, BatchOutcome> | undefined;
  let pgPool: Pool | undefined;
  const closeAll = async () => {
    await piscina?.destroy().catch(() => {});
    await pgPool?.end().catch(() => {});
    for (const r of readers) r.disconnect();
    redis.disconnect();
  };
  try {
    await redisReady(redis, 10_000);
    await ensureGroups(redis, config.redisPrefix, config.shards);
    for (const _ of shards)
      readers.push(createRedis(config, { connectionName: `surge-reader:${consumer}`, maxRetriesPerRequest: null }));
  } catch (e) {
    await closeAll();
    throw e;
  }

  const threads = Math.max(1, config.workerThreads);
  // SURGE_PG_POOL_SIZE is the process's connection budget in both placements. With threads, each
  // thread holds an equal share (at least one) and runs that many batches at once.
  const connectionsPerThread = placement === 'threads' ? Math.max(1, Math.floor(config.pgPoolSize / threads)) : 1;
  const connections = placement === 'threads' ? threads * connectionsPerThread : config.pgPoolSize;
  // Transactions in flight (handed out, not yet acked): SURGE_MAX_IN_FLIGHT, or adaptive between
  // one and every connection busy. Fewer at once means larger batches at the same arrival rate.
  const adaptive =
    config.maxInFlight > 0 ? undefined : new AdaptiveLimit({ min: 1, max: connections, batchSize: config.batchSize });
  const maxInFlight = Math.max(config.maxInFlight, connections);
  const threadData: ThreadData = { databaseUrl: config.databaseUrl, connections: connectionsPerThread, retryBudgetMs };
  if (placement === 'threads')
    piscina = new Piscina<ApplyTask, BatchOutcome>({
      filename: new URL('./thread.js', import.meta.url).href,
      minThreads: threads,
      maxThreads: threads,
      // Threads that hold connections must not churn or park (SEMANTICS 5.1).
      idleTimeout: 60 * 60 * 1000,
      atomics: 'async',
      // Readers stop on needsDrain / the in-flight limit (in-flight.ts); the queue can hold that
      // bound plus one batch per shard, so run() never rejects a batch that was already read.
      maxQueue: maxInFlight + config.shards + 1,
      concurrentTasksPerWorker: connectionsPerThread,
      closeTimeout: config.shutdownTimeoutMs,
      workerData: threadData,
    });
  else
    pgPool = createPool(config.databaseUrl, {
      max: config.pgPoolSize,
      applicationName: 'surge-worker',
      sessionTimeoutMs: retryBudgetMs,
    });
  const pool = piscina;

  let stopping = false;
  const abort = new AbortController();
  const ctx: ConsumerContext = {
    config,
    redis,
    consumer,
    metrics,
    held: new HeldEntries(config.shards),
    logger,
    stopped: () => stopping,
    pause: (ms) => sleep(ms, undefined, { signal: abort.signal }).catch(() => {}),
  };
  const outcomes = new OutcomePublisher(config, redis);
  const limit = new InFlightLimit(adaptive?.limit ?? config.maxInFlight, () => pool?.needsDrain ?? false);
  pool?.on('drain', () => limit.wake());
  const running = new Set<Promise<void>>();
  const batchTracer = tracing ? new BatchTracer(tracing, logger) : undefined;

  const apply = async (task: ApplyTask): Promise<BatchOutcome> => {
    if (pool !== undefined) return pool.run(task);
    if (pgPool === undefined) throw new Error('main placement without its PostgreSQL pool');
    return encodeAndApply(pgPool, task, { retryBudgetMs });
  };

  /** `traces` (tracing on): the trace id of each end-to-end time, '' when its order has none. */
  const record = (stats: ApplyStats, traces?: readonly string[]) => {
    metrics.batchSize.observe(stats.entries);
    metrics.batchDuration.observe(stats.applyMs / 1000);
    if (stats.inserted) metrics.applied.inc({ result: 'inserted' }, stats.inserted);
    if (stats.duplicate) metrics.applied.inc({ result: 'duplicate' }, stats.duplicate);
    if (stats.rejected) metrics.applied.inc({ result: 'rejected' }, stats.rejected);
    if (stats.deadLettered) metrics.applied.inc({ result: 'dead_lettered' }, stats.deadLettered);
    if (traces) BatchTracer.observeEndToEnd(metrics.endToEnd, stats.endToEndMs, traces);
    else for (const ms of stats.endToEndMs) metrics.endToEnd.observe(Math.max(0, ms) / 1000);
    for (const [sqlstate, n] of Object.entries(stats.retries)) metrics.retries.inc({ sqlstate }, n);
  };

  /** Runs one batch: apply, record, ack. Failures leave the entries pending (reclaimed later). */
  const submit: Submit = (shard, entries, slot) => {
    if (entries.length === 0) {
      if (slot === 'acquired') limit.release();
      return;
    }
    const ids = entries.map((e) => e.id);
    ctx.held.add(shard, ids);
    if (slot !== 'acquired') limit.take();
    metrics.inFlight.inc();
    const task: ApplyTask = { stream: streamKey(config.redisPrefix, shard), entries };
    if (batchTracer?.wants(entries)) task.traced = true;
    const heldFrom = performance.now();
    let pauseMs = 0;
    const p = (async () => {
      try {
        for (let attempt = 0; ; attempt++) {
          const outcome = await apply(task);
          record(outcome.stats, batchTracer?.traceIds(task, outcome));
          if (adaptive) limit.limit = adaptive.sample(outcome.stats.entries, outcome.stats.applyMs);
          pauseMs = pauseAfter(performance.now() - heldFrom, entries.length, config.batchSize);
          const { steps } = outcome;
          if (!outcome.gaveUp) {
            // Before the ack: a failure here leaves the entries pending (reclaimed, published then).
            const publishAndAck = async () => {
              // The publish acknowledged the entries it published; the acker does the rest.
              const ack = await outcomes.publish(shard, entries, outcome);
              await acknowledge(ctx, shard, entries, { ack, deadLetters: outcome.deadLetters }, retryBudgetMs);
            };
            if (batchTracer && steps) await batchTracer.traced(task, { ...outcome, steps }, publishAndAck);
            else await publishAndAck();
            return;
          }
          if (batchTracer && steps) await batchTracer.traced(task, { ...outcome, steps });
          // PostgreSQL is unavailable. Keep the entries (XCLAIM JUSTID resets their idle time
          // without counting a delivery, so nobody claims them and they never reach
          // max_deliveries because of an outage) and try again; on stop, leave them pending.
          logger.warn(
            { stream: task.stream, entries: entries.length, sqlstate: outcome.gaveUp.sqlstate, attempt },
            'PostgreSQL unavailable; batch kept and retried',
          );
          if (stopping) return;
          await keepEntries(ctx, shard, ids).catch(() => {});
          await ctx.pause(Math.min(retryBudgetMs / 2, 200 * 2 ** Math.min(attempt, 5)) * (0.5 + Math.random() / 2));
          if (stopping) return;
        }
      } catch (e) {
        logger.error(
          { err: e, stream: task.stream, entries: entries.length },
          'batch not applied; its entries stay pending and will be reclaimed',
        );
      } finally {
        ctx.held.delete(shard, ids);
        limit.release(pauseMs);
        metrics.inFlight.dec();
      }
    })();
    running.add(p);
    void p.finally(() => running.delete(p));
  };

  let server: Awaited<ReturnType<typeof startMetricsServer>>;
  try {
    // Warm up: every thread loads its modules before the first batch is read (readiness). An
    // empty batch touches no connection.
    if (pool !== undefined)
      await Promise.all(Array.from({ length: threads }, () => pool.run({ stream: '', entries: [] })));
    server = await startMetricsServer({
      registry,
      host: config.listenHost,
      port: config.workerMetricsPort,
      ready: () => !stopping,
      // Tracing on: the end-to-end histogram's exemplars (trace ids) need OpenMetrics.
      openMetrics: tracing !== undefined,
    });
  } catch (e) {
    await closeAll();
    throw e;
  }
  // readers holds one connection per shard, in shard order.
  const loops = [
    ...readers.map((reader, shard) => readShard({ ctx, shard, reader, limit, submit, blockMs: readBlockMs })),
    reclaimLoop(ctx, submit, limit),
    heartbeatLoop(ctx),
  ];
  logger.info(
    {
      consumer,
      shards: config.shards,
      threads: pool ? threads : 0,
      placement,
      batchSize: config.batchSize,
      port: server.port,
    },
    'worker started',
  );

  let stopped: Promise<void> | undefined;
  const stop = () => {
    stopped ??= (async () => {
      stopping = true;
      abort.abort();
      limit.close();
      logger.info({ inFlight: limit.count }, 'worker stopping: no new reads, finishing in-flight batches');
      await Promise.allSettled(loops);
      while (running.size > 0) await Promise.allSettled([...running]);
      await pool?.close().catch(() => {});
      await pgPool?.end().catch(() => {});
      await outcomes.close();
      for (const r of readers) r.disconnect();
      await redis.quit().catch(() => redis.disconnect());
      await server.close();
      logger.info('worker stopped');
    })();
    return stopped;
  };
  return { port: server.port, consumer, stop };
}
