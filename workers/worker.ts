// `surge work`: the main thread of a worker process. Per shard it reads the stream with
// XREADGROUP (own pending list first, then new entries), forms batches by size and linger and
// hands them to a piscina pool; after the COMMIT it XACKs (and dead-letters what must be). A
// timer reclaims entries other consumers left pending (XAUTOCLAIM). Metrics of the threads come
// back in the task results and are recorded here. See docs/workers.md.
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { Piscina } from 'piscina';
import type { Config } from '../common/config.js';
import { createPool, type Pool } from '../common/db.js';
import { consumerName as defaultConsumerName, dlqKey, GROUP, streamKey } from '../common/keys.js';
import { createLogger, type Logger } from '../common/log.js';
import { createRedis, type RedisClient, redisReady } from '../common/redis.js';
import { dlqEntryFields, ensureGroups } from '../common/streams.js';
import { createRegistry, workerMetrics } from '../metrics/definitions.js';
import { startMetricsServer } from '../metrics/server.js';
import { type ApplyStats, applyBatch, type BatchOutcome, type TaskEntry } from './apply.js';
import { autoClaim, deadLetterEntry, deliveryCounts, readGroup, type StreamEntry } from './redis-ops.js';
import type { ThreadData, ThreadResult, ThreadTask } from './thread.js';

/**
 * Where the PostgreSQL work runs. `threads`: each piscina thread holds its own connection and
 * applies the batch it encoded. `main`: threads only decode/encode; the main thread's pool
 * (SURGE_PG_POOL_SIZE connections) runs COPY and the statements. The two perform alike on two
 * cores, so `threads` is the default: it leaves the main thread to Redis, acks and /metrics, and
 * keeps a batch's connection and transaction in one place (docs/workers.md; the runs behind it
 * are in bench/results/HISTORY.md).
 */
export type PgPlacement = 'threads' | 'main';
const DEFAULT_PG_PLACEMENT: PgPlacement = 'threads';

export interface WorkerOptions {
  /** Default: a pino logger at SURGE_LOG_LEVEL. */
  logger?: Logger;
  /** Consumer name in the group. Default `<host>-<pid>`. */
  consumerName?: string;
  /** Default DEFAULT_PG_PLACEMENT (why: docs/workers.md). */
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
  const placement = options.pgPlacement ?? DEFAULT_PG_PLACEMENT;
  const readBlockMs = options.readBlockMs ?? 1000;
  const shards = Array.from({ length: config.shards }, (_, i) => i);
  // A batch retries transient errors for a quarter of the claim timeout, then comes back to the
  // main thread, which refreshes its entries' idle time and submits it again: entries of a live
  // worker are never idle long enough to be claimed by another.
  const retryBudgetMs = Math.max(25, Math.floor(config.claimTimeoutMs / 4));

  const registry = createRegistry({ defaultMetrics: true, role: 'worker' });
  const metrics = workerMetrics(registry);

  const redis = createRedis(config, { connectionName: `surge-worker:${consumer}` });
  // A blocked XREADGROUP holds its connection: one reader connection per shard.
  const readers: RedisClient[] = [];
  let piscina: Piscina<ThreadTask, ThreadResult> | undefined;
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

  const threads = config.workerThreads;
  // SURGE_PG_POOL_SIZE is the process's connection budget in both placements. With threads, each
  // thread holds an equal share (at least one) and runs that many batches at once.
  const connectionsPerThread = placement === 'threads' ? Math.max(1, Math.floor(config.pgPoolSize / threads)) : 1;
  // Batches handed out and not yet acked: every connection busy plus one batch waiting per thread.
  const maxInFlight = placement === 'threads' ? threads * connectionsPerThread + threads : config.pgPoolSize + threads;
  const threadData: ThreadData = { databaseUrl: config.databaseUrl, connections: connectionsPerThread, retryBudgetMs };
  piscina = new Piscina<ThreadTask, ThreadResult>({
    filename: new URL('./thread.js', import.meta.url).href,
    minThreads: threads,
    maxThreads: threads,
    // Threads that hold connections must not churn or park (SEMANTICS 5.1).
    idleTimeout: 60 * 60 * 1000,
    atomics: 'async',
    // Readers stop on needsDrain / the in-flight bound (waitForCapacity); the queue can hold that
    // bound plus one batch per shard, so run() never rejects a batch that was already read.
    maxQueue: maxInFlight + config.shards + 1,
    concurrentTasksPerWorker: connectionsPerThread,
    closeTimeout: config.shutdownTimeoutMs,
    workerData: threadData,
  });
  const pool = piscina;
  if (placement === 'main')
    pgPool = createPool(config.databaseUrl, {
      max: config.pgPoolSize,
      applicationName: 'surge-worker',
      sessionTimeoutMs: retryBudgetMs,
    });

  let stopping = false;
  const abort = new AbortController();
  const pause = (ms: number) => sleep(ms, undefined, { signal: abort.signal }).catch(() => {});

  // In-flight bookkeeping: batches and the entry IDs they hold (per shard, with the time each was
  // handed to a thread), plus capacity waiters.
  let inFlight = 0;
  const running = new Set<Promise<void>>();
  const heldIds = shards.map(() => new Map<string, number>());
  const heldOf = (shard: number): Map<string, number> => {
    const held = heldIds[shard];
    if (held === undefined) throw new Error(`no shard ${shard} (${config.shards} shards)`);
    return held;
  };
  let waiters: Array<() => void> = [];
  const wake = () => {
    const w = waiters;
    waiters = [];
    for (const f of w) f();
  };
  pool.on('drain', wake);
  /**
   * Backpressure: readers wait here while every thread is busy (piscina's needsDrain) or the
   * in-flight bound is reached, and read nothing meanwhile. A reader never holds capacity while it
   * blocks on an empty stream (that starved busy shards), so after a wake-up each waiting shard
   * may hand over one batch: the overshoot is bounded by the shard count.
   */
  const waitForCapacity = async () => {
    while (inFlight >= maxInFlight || pool.needsDrain) await new Promise<void>((r) => waiters.push(r));
  };

  const apply = async (task: ThreadTask): Promise<BatchOutcome> => {
    if (placement === 'threads') {
      const r = await pool.run({ ...task, kind: 'apply' });
      if (r.kind !== 'applied') throw new Error('thread returned an unexpected result');
      return r.outcome;
    }
    const r = await pool.run({ ...task, kind: 'encode' });
    if (r.kind !== 'encoded') throw new Error('thread returned an unexpected result');
    if (pgPool === undefined) throw new Error('main placement without its PostgreSQL pool');
    const outcome = await applyBatch(pgPool, task, r.encoded, { retryBudgetMs });
    outcome.stats.encodeMs = r.encodeMs;
    return outcome;
  };

  const record = (stats: ApplyStats) => {
    metrics.batchSize.observe(stats.entries);
    metrics.batchDuration.observe(stats.applyMs / 1000);
    if (stats.inserted) metrics.applied.inc({ result: 'inserted' }, stats.inserted);
    if (stats.duplicate) metrics.applied.inc({ result: 'duplicate' }, stats.duplicate);
    if (stats.rejected) metrics.applied.inc({ result: 'rejected' }, stats.rejected);
    if (stats.deadLettered) metrics.applied.inc({ result: 'dead_lettered' }, stats.deadLettered);
    for (const ms of stats.endToEndMs) metrics.endToEnd.observe(Math.max(0, ms) / 1000);
    for (const [sqlstate, n] of Object.entries(stats.retries)) metrics.retries.inc({ sqlstate }, n);
  };

  /** XACK after COMMIT; dead letters move to the DLQ stream. Retries Redis errors for a while. */
  const acknowledge = async (shard: number, entries: readonly TaskEntry[], outcome: BatchOutcome) => {
    const key = streamKey(config.redisPrefix, shard);
    const dlq = dlqKey(config.redisPrefix, shard);
    const byId = new Map(entries.map((e) => [e.id, e]));
    const deadline = Date.now() + retryBudgetMs;
    // Dead letters already moved to the DLQ stream: a retry goes on after them.
    let moved = 0;
    let acked = outcome.ack.length === 0;
    for (let attempt = 0; ; attempt++) {
      try {
        if (!acked) {
          await redis.xack(key, GROUP, ...outcome.ack);
          acked = true;
        }
        for (const d of outcome.deadLetters.slice(moved)) {
          const entry = byId.get(d.id);
          const fields = dlqEntryFields(entry?.fields ?? null, {
            stream: key,
            entryId: d.id,
            reason: d.reason,
            message: d.message,
            sqlstate: d.sqlstate,
            deliveries: entry?.deliveries ?? 1,
          });
          await deadLetterEntry(redis, key, dlq, d.id, fields);
          moved++;
        }
        return;
      } catch (e) {
        if (Date.now() > deadline) {
          logger.error(
            { err: e, stream: key },
            'could not ack a committed batch; its entries will be redelivered (duplicates, no-ops)',
          );
          return;
        }
        await sleep(Math.min(2000, 50 * 2 ** attempt) * Math.random());
      }
    }
  };

  /** Runs one batch: apply, record, ack. Failures leave the entries pending (reclaimed later). */
  const submit = (shard: number, entries: TaskEntry[]) => {
    if (entries.length === 0) return;
    const held = heldOf(shard);
    const now = Date.now();
    for (const e of entries) held.set(e.id, now);
    inFlight++;
    metrics.inFlight.inc();
    const task: ThreadTask = { kind: 'apply', stream: streamKey(config.redisPrefix, shard), entries };
    const p = (async () => {
      try {
        for (let attempt = 0; ; attempt++) {
          const outcome = await apply(task);
          record(outcome.stats);
          if (!outcome.gaveUp) {
            await acknowledge(shard, entries, outcome);
            return;
          }
          // PostgreSQL is unavailable. Keep the entries (XCLAIM JUSTID resets their idle time
          // without counting a delivery, so nobody claims them and they never reach
          // max_deliveries because of an outage) and try again; on stop, leave them pending.
          logger.warn(
            { stream: task.stream, entries: entries.length, sqlstate: outcome.gaveUp.sqlstate, attempt },
            'PostgreSQL unavailable; batch kept and retried',
          );
          if (stopping) return;
          await keepEntries(task.stream, entries).catch(() => {});
          await pause(Math.min(retryBudgetMs / 2, 200 * 2 ** Math.min(attempt, 5)) * (0.5 + Math.random() / 2));
          if (stopping) return;
        }
      } catch (e) {
        logger.error(
          { err: e, stream: task.stream, entries: entries.length },
          'batch not applied; its entries stay pending and will be reclaimed',
        );
      } finally {
        for (const e of entries) held.delete(e.id);
        inFlight--;
        metrics.inFlight.dec();
        wake();
      }
    })();
    running.add(p);
    void p.finally(() => running.delete(p));
  };

  /** Resets the idle time of entries this consumer holds (no delivery counted). */
  const keepEntries = async (key: string, entries: readonly TaskEntry[]) => {
    await redis.xclaim(key, GROUP, consumer, 0, ...entries.map((e) => e.id), 'JUSTID');
  };

  /** Entries read from a pending list: drop (count, ack) deleted ones, look up delivery counts. */
  const pendingTasks = async (shard: number, found: readonly StreamEntry[]): Promise<TaskEntry[]> => {
    const key = streamKey(config.redisPrefix, shard);
    const gone = found.filter(([, f]) => f === null).map(([id]) => id);
    if (gone.length > 0) {
      metrics.lost.inc({ stream: key }, gone.length);
      await redis.xack(key, GROUP, ...gone);
      logger.warn(
        { stream: key, ids: gone.slice(0, 10), count: gone.length },
        'pending entries without payload: counted lost and acked',
      );
    }
    const live = found.filter((e): e is [string, string[]] => e[1] !== null);
    const counts = await deliveryCounts(
      redis,
      key,
      live.map(([id]) => id),
    );
    return live.map(([id, fields]) => {
      const deliveries = counts.get(id) ?? 1;
      const task: TaskEntry = { id, fields, deliveries };
      if (deliveries > config.maxDeliveries) {
        task.deadLetter = {
          reason: 'max_deliveries',
          message: `delivered ${deliveries} times (SURGE_MAX_DELIVERIES=${config.maxDeliveries})`,
        };
      }
      return task;
    });
  };

  const readBatch = async (reader: RedisClient, key: string): Promise<StreamEntry[]> => {
    const got = await readGroup(reader, key, consumer, '>', config.batchSize, readBlockMs);
    if (got.length === 0 || got.length >= config.batchSize || config.batchLingerMs === 0) return got;
    const deadline = Date.now() + config.batchLingerMs;
    while (got.length < config.batchSize && !stopping) {
      const left = deadline - Date.now();
      if (left < 1) break;
      for (const e of await readGroup(reader, key, consumer, '>', config.batchSize - got.length, left)) got.push(e);
    }
    return got;
  };

  const onRedisError = async (e: unknown, what: string, attempt: number) => {
    logger.error({ err: e }, `${what} failed; retrying`);
    if (String((e as Error)?.message).startsWith('NOGROUP')) {
      await ensureGroups(redis, config.redisPrefix, config.shards).catch(() => {});
    }
    await pause(Math.min(5000, 100 * 2 ** Math.min(attempt, 6)) * (0.5 + Math.random() / 2));
  };

  const shardLoop = async (shard: number, reader: RedisClient) => {
    const key = streamKey(config.redisPrefix, shard);
    const held = heldOf(shard);
    let errors = 0;
    // 1. Our own pending list first (a restart under the same name), SEMANTICS 2.1.
    let after = '0';
    while (!stopping) {
      try {
        const found = await readGroup(reader, key, consumer, after, config.batchSize);
        const last = found.at(-1);
        if (last === undefined) break;
        after = last[0];
        submit(
          shard,
          await pendingTasks(
            shard,
            found.filter(([id]) => !held.has(id)),
          ),
        );
        errors = 0;
        await waitForCapacity();
      } catch (e) {
        await onRedisError(e, `reading own pending entries of ${key}`, errors++);
      }
    }
    // 2. New entries.
    while (!stopping) {
      try {
        await waitForCapacity();
        if (stopping) break;
        const batch = await readBatch(reader, key);
        submit(
          shard,
          batch.map(([id, fields]) => ({ id, fields, deliveries: 1 })),
        );
        errors = 0;
      } catch (e) {
        await onRedisError(e, `XREADGROUP on ${key}`, errors++);
      }
    }
  };

  const reclaimShard = async (shard: number) => {
    const key = streamKey(config.redisPrefix, shard);
    let cursor = '0-0';
    do {
      const page = await autoClaim(redis, key, consumer, config.claimTimeoutMs, cursor, config.batchSize);
      cursor = page.next;
      if (page.deleted.length > 0) {
        metrics.lost.inc({ stream: key }, page.deleted.length);
        await redis.xack(key, GROUP, ...page.deleted);
        logger.warn(
          { stream: key, count: page.deleted.length },
          'claimed entries whose payload was trimmed: counted lost and acked',
        );
      }
      // Our own in-flight entries may come back too (a batch older than the claim timeout): skip them.
      const held = heldOf(shard);
      const taken = page.entries.filter(([id]) => !held.has(id));
      if (taken.length === 0) continue;
      metrics.claimed.inc({ stream: key }, taken.length);
      const tasks = await pendingTasks(shard, taken);
      logger.info({ stream: key, count: tasks.length }, 'claimed idle entries');
      submit(shard, tasks);
      await waitForCapacity();
    } while (cursor !== '0-0' && !stopping);
  };

  const reclaimLoop = async () => {
    let errors = 0;
    while (!stopping) {
      await pause(config.claimIntervalMs);
      for (const shard of shards) {
        if (stopping) break;
        try {
          await reclaimShard(shard);
          errors = 0;
        } catch (e) {
          await onRedisError(e, `XAUTOCLAIM on ${streamKey(config.redisPrefix, shard)}`, errors++);
        }
      }
    }
  };

  /**
   * Heartbeat of the entries in flight: a batch that runs long (hot-SKU lock queues, PostgreSQL
   * retries, a loaded machine) must not be claimed — by another consumer or by our own
   * XAUTOCLAIM, which would also count a delivery. Every quarter of the claim timeout, the entries
   * this process holds that have been idle for half of it get their idle time reset (XCLAIM
   * JUSTID: no delivery counted). Independent of the reclaim loop, which can wait for capacity.
   * A batch held for more than 10 claim timeouts is considered stuck and left to be claimed.
   */
  const heartbeatLoop = async () => {
    const every = Math.max(10, Math.floor(config.claimTimeoutMs / 4));
    const minIdle = Math.floor(config.claimTimeoutMs / 2);
    while (!stopping) {
      await pause(every);
      for (const [shard, held] of heldIds.entries()) {
        if (stopping || held.size === 0) continue;
        const since = Date.now() - 10 * config.claimTimeoutMs;
        const ids: string[] = [];
        for (const [id, at] of held) if (at > since) ids.push(id);
        if (ids.length === 0) continue;
        await redis
          .xclaim(streamKey(config.redisPrefix, shard), GROUP, consumer, minIdle, ...ids, 'JUSTID')
          .catch((e: unknown) => {
            logger.debug({ err: e }, 'heartbeat XCLAIM failed; retried next beat');
          });
      }
    }
  };

  let server: Awaited<ReturnType<typeof startMetricsServer>>;
  try {
    // Warm up: every thread loads its modules before the first batch is read (readiness).
    await Promise.all(Array.from({ length: threads }, () => pool.run({ kind: 'encode', stream: '', entries: [] })));
    server = await startMetricsServer({
      registry,
      host: config.listenHost,
      port: config.workerMetricsPort,
      ready: () => !stopping,
    });
  } catch (e) {
    await closeAll();
    throw e;
  }
  // readers holds one connection per shard, in shard order.
  const loops = [...readers.map((reader, shard) => shardLoop(shard, reader)), reclaimLoop(), heartbeatLoop()];
  logger.info(
    { consumer, shards: config.shards, threads, placement, batchSize: config.batchSize, port: server.port },
    'worker started',
  );

  let stopped: Promise<void> | undefined;
  const stop = () => {
    stopped ??= (async () => {
      stopping = true;
      abort.abort();
      logger.info({ inFlight }, 'worker stopping: no new reads, finishing in-flight batches');
      await Promise.allSettled(loops);
      while (running.size > 0) await Promise.allSettled([...running]);
      await pool.close().catch(() => {});
      await pgPool?.end().catch(() => {});
      for (const r of readers) r.disconnect();
      await redis.quit().catch(() => redis.disconnect());
      await server.close();
      logger.info('worker stopped');
    })();
    return stopped;
  };
  return { port: server.port, consumer, stop };
}
