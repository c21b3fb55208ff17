// `surge maintenance`: BullMQ job schedulers for the stream and PostgreSQL upkeep, and the worker
// that runs them (plus the dead-letter replay queue). Every replica upserts the same schedulers
// (idempotent: one scheduler per id) and runs a worker; BullMQ hands each tick's job to exactly
// one worker, so each job runs once per tick across all replicas.
import { hostname } from 'node:os';
import { type Job, type Queue, Worker } from 'bullmq';
import type { Registry } from 'prom-client';
import type { Config } from '../common/config.js';
import { createPool } from '../common/db.js';
import { createLogger, type Logger } from '../common/log.js';
import { createRedis, redisReady } from '../common/redis.js';
import {
  createRegistry,
  MAINTENANCE_JOBS,
  type MaintenanceJobName,
  maintenanceMetrics,
} from '../metrics/definitions.js';
import { startMetricsServer } from '../metrics/server.js';
import { countDeadLetters, createReplayQueue, type DlqDeps, startReplayWorker, syncDeadLetterStreams } from './dlq.js';
import { bullConnection, bullPrefix, createMaintenanceQueue, MAINTENANCE_QUEUE } from './queues.js';
import { expireDeadLetters, expireOrders } from './retention.js';
import { cleanupConsumers, trimStreams } from './streams.js';
import { allStreamKeys } from '../common/keys.js';

export interface MaintenanceRun {
  job: MaintenanceJobName;
  /** BullMQ job id: `repeat:<scheduler>:<tick ms>`. */
  jobId: string;
  /** The scheduler tick this run belongs to (ms since epoch). */
  tick: number;
  instance: string;
  result: unknown;
}

export interface MaintenanceOptions {
  /** Default: a pino logger at the configured level, component `maintenance`. */
  logger?: Logger;
  /** Default: a new registry with process metrics (role `maintenance`). */
  registry?: Registry;
  /** Port of /metrics,/healthz,/readyz; default `config.maintenanceMetricsPort`; false: no server. */
  metricsPort?: number | false;
  /** Name of this instance in logs and runs. Default `<host>-<pid>`. */
  instance?: string;
  /** Called after each job run on this instance (logs and tests). */
  onRun?: (run: MaintenanceRun) => void;
  /** DLQ stream entries younger than this are left for their worker to record. Default max(60 s, claim timeout). */
  deadLetterGraceMs?: number;
  /** Run the dead-letter replay queue too (default true). */
  replayWorker?: boolean;
  /** How often `surge_dead_letters_unresolved` is recounted. Default 15 s. */
  deadLetterGaugeMs?: number;
}

export interface MaintenanceHandle {
  stop(): Promise<void>;
  registry: Registry;
  /** Port of the metrics server, when started. */
  metricsPort: number | undefined;
  instance: string;
}

/** The schedulers: job name → interval. */
function maintenanceSchedule(config: Config): Record<MaintenanceJobName, number> {
  return {
    'trim-streams': config.maintenanceIntervalMs,
    consumers: config.maintenanceIntervalMs,
    'expire-orders': config.retentionIntervalMs,
    'dead-letters': config.retentionIntervalMs,
  };
}

function tickOf(job: Job): number {
  const last = (job.id ?? '').split(':').at(-1);
  const n = Number(last);
  return Number.isFinite(n) ? n : job.timestamp;
}

export async function startMaintenance(config: Config, options: MaintenanceOptions = {}): Promise<MaintenanceHandle> {
  const logger = options.logger ?? createLogger(config.logLevel, 'maintenance');
  const registry = options.registry ?? createRegistry({ defaultMetrics: true, role: 'maintenance' });
  const metrics = maintenanceMetrics(registry);
  const instance = options.instance ?? `${hostname()}-${process.pid}`;
  const graceMs = options.deadLetterGraceMs ?? Math.max(60_000, config.claimTimeoutMs);

  const redis = createRedis(config, { connectionName: 'surge-maintenance' });
  const pool = createPool(config.databaseUrl, { max: 2, applicationName: 'surge-maintenance' });
  const queueConnection = bullConnection(config, 'surge-maintenance-queue');
  const workerConnection = bullConnection(config, 'surge-maintenance-worker');
  const deps: DlqDeps = { pool, redis, prefix: config.redisPrefix, shards: config.shards, metrics };
  let queue: Queue | undefined;
  let replayQueue: Queue | undefined;
  let worker: Worker | undefined;
  let replay: ReturnType<typeof startReplayWorker> | undefined;
  let server: Awaited<ReturnType<typeof startMetricsServer>> | undefined;
  let ready = false;
  let gaugeTimer: NodeJS.Timeout | undefined;
  let counting: Promise<void> | undefined;

  // Dead letters no replay has resolved yet: the SurgeDeadLetters alert watches this rather than
  // the DLQ streams, whose entries stay after a replay until retention or a purge. Every replica
  // counts (a cheap query), so the figure survives any one of them.
  const countUnresolved = (): Promise<void> => {
    counting ??= countDeadLetters(pool, { replayed: false })
      .then((n) => metrics.deadLettersUnresolved.set(n))
      .catch((e: Error) => logger.warn({ err: e.message }, 'could not count unresolved dead letters'))
      .finally(() => {
        counting = undefined;
      });
    return counting;
  };

  // A job's result is stored with it (BullMQ's `returnvalue`), so it is a few counters whatever
  // the shard count; per-stream figures go to the metrics (and consumer names to the log).
  const run = async (name: MaintenanceJobName): Promise<unknown> => {
    switch (name) {
      case 'trim-streams': {
        const results = await trimStreams(redis, config.redisPrefix, config.shards, {
          outcomeRetentionMs: config.outcomeRetentionSeconds * 1000,
        });
        for (const r of results) if (r.trimmed > 0) metrics.trimmed.inc({ stream: r.stream }, r.trimmed);
        return { trimmed: results.reduce((n, r) => n + r.trimmed, 0), streams: results.length };
      }
      case 'consumers': {
        const total = { removed: 0, claimed: 0, keptWithPending: 0 };
        for (const stream of allStreamKeys(config.redisPrefix, config.shards)) {
          const r = await cleanupConsumers(redis, stream, {
            idleMs: config.consumerIdleMs,
            liveMs: config.claimTimeoutMs,
          });
          if (r.removed.length > 0) {
            metrics.consumersRemoved.inc({ stream }, r.removed.length);
            logger.info({ stream, consumers: r.removed }, 'removed idle consumers');
          }
          if (r.claimed > 0) metrics.entriesReassigned.inc({ stream }, r.claimed);
          metrics.idleWithPending.set({ stream }, r.keptWithPending.length);
          if (r.keptWithPending.length > 0) {
            logger.warn(
              { stream, consumers: r.keptWithPending },
              'idle consumers hold pending entries and no live consumer can take them; kept',
            );
          }
          total.removed += r.removed.length;
          total.claimed += r.claimed;
          total.keptWithPending += r.keptWithPending.length;
        }
        return total;
      }
      case 'expire-orders': {
        const r = await expireOrders(pool, config.orderRetentionDays, { batchSize: config.retentionBatchSize });
        if (r.deleted > 0) metrics.expired.inc({ table: 'orders' }, r.deleted);
        return r;
      }
      case 'dead-letters': {
        const backfilled = await syncDeadLetterStreams(deps, { graceMs });
        if (backfilled > 0) {
          metrics.deadLettersBackfilled.inc(backfilled);
          logger.warn({ backfilled }, 'created dead_letters rows for DLQ stream entries that had none');
        }
        const r = await expireDeadLetters(
          pool,
          redis,
          config.redisPrefix,
          config.shards,
          config.deadLetterRetentionDays,
          {
            batchSize: config.retentionBatchSize,
          },
        );
        if (r.deleted > 0) metrics.expired.inc({ table: 'dead_letters' }, r.deleted);
        if (r.streamEntries > 0) metrics.dlqEntriesExpired.inc(r.streamEntries);
        return { backfilled, ...r };
      }
    }
  };

  const stop = async () => {
    ready = false;
    clearInterval(gaugeTimer);
    await counting;
    await server?.close();
    await replay?.close();
    await worker?.close();
    await queue?.close();
    await replayQueue?.close();
    queueConnection.disconnect();
    workerConnection.disconnect();
    redis.disconnect();
    await pool.end();
  };

  try {
    await redisReady(redis);
    // The schedulers' job template takes the queue's default job options (attempts, bounded history).
    queue = createMaintenanceQueue(config, queueConnection);
    const schedule = maintenanceSchedule(config);
    for (const name of MAINTENANCE_JOBS) await queue.upsertJobScheduler(name, { every: schedule[name] }, { name });
    // Only to write the replay queue's meta (its events cap) before this process's replay worker
    // touches the queue: BullMQ's scripts would otherwise set BullMQ's default cap (10,000).
    replayQueue = createReplayQueue(config, queueConnection);
    worker = new Worker(
      MAINTENANCE_QUEUE,
      async (job: Job) => {
        const name = job.name as MaintenanceJobName;
        if (!MAINTENANCE_JOBS.includes(name)) throw new Error(`unknown maintenance job ${job.name}`);
        const end = metrics.duration.startTimer({ job: name });
        try {
          const result = await run(name);
          metrics.runs.inc({ job: name, result: 'ok' });
          const record: MaintenanceRun = { job: name, jobId: job.id ?? '', tick: tickOf(job), instance, result };
          logger.info({ job: name, jobId: record.jobId, tick: record.tick, instance, result }, 'maintenance job done');
          options.onRun?.(record);
          return result;
        } catch (e) {
          metrics.runs.inc({ job: name, result: 'failed' });
          throw e;
        } finally {
          end();
        }
      },
      { connection: workerConnection, prefix: bullPrefix(config), concurrency: 1 },
    );
    worker.on('failed', (job, err) => {
      metrics.failures.inc({ job: job?.name ?? 'unknown' });
      logger.error(
        { job: job?.name, jobId: job?.id, attemptsMade: job?.attemptsMade, err: err.message },
        'maintenance job failed',
      );
    });
    worker.on('error', (err) => logger.error({ err: err.message }, 'maintenance worker error'));
    if (options.replayWorker !== false) {
      replay = startReplayWorker(config, deps, { logger, onFailed: () => metrics.failures.inc({ job: 'dlq-replay' }) });
    }
    await countUnresolved();
    gaugeTimer = setInterval(() => void countUnresolved(), options.deadLetterGaugeMs ?? 15_000);
    gaugeTimer.unref();
    const port = options.metricsPort === undefined ? config.maintenanceMetricsPort : options.metricsPort;
    if (port !== false) {
      server = await startMetricsServer({ registry, host: config.listenHost, port, ready: () => ready });
    }
    ready = true;
    logger.info({ instance, schedule, metricsPort: server?.port }, 'maintenance started');
  } catch (e) {
    await stop().catch(() => {});
    throw e;
  }
  let stopping: Promise<void> | undefined;
  return {
    stop: () => {
      stopping ??= stop();
      return stopping;
    },
    registry,
    metricsPort: server?.port,
    instance,
  };
}
