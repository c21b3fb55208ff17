// Dead letters: inspection, replay (one, a filter, or all) and purge. The `dead_letters` table is
// what operators query; the DLQ stream `<prefix>:{s<i>}:dlq` holds the same entries on the Redis
// side (`syncDeadLetterStreams` creates any row a crashed worker did not get to write).
//
// Replay re-enqueues the original entry (v, c, k, o) to the shard stream of its (client, key), so
// the normal apply path handles it; PostgreSQL's unique (client_id, idempotency_key) makes a replay
// of an already-applied order a no-op (counted `duplicate` by the worker).
import { randomBytes } from 'node:crypto';
import { type Job, type JobsOptions, type Queue, Worker } from 'bullmq';
import type { Config } from '../common/config.js';
import type { Pool } from '../common/db.js';
import { decodeEntry, ENTRY_FIELD, encodeEntry, entryField as field } from '../common/entry.js';
import { dlqKey, dlqSyncedKey, shardFor, shardOfStream, streamKey } from '../common/keys.js';
import type { Logger } from '../common/log.js';
import type { RedisClient } from '../common/redis.js';
import { sqlFile } from '../common/sql.js';
import type { MaintenanceMetrics } from '../metrics/definitions.js';
import { bullConnection, bullPrefix, createQueue, REPLAY_HISTORY, REPLAY_QUEUE } from './queues.js';

export interface DlqDeps {
  pool: Pool;
  redis: RedisClient;
  prefix: string;
  shards: number;
  metrics?: Pick<MaintenanceMetrics, 'replays'>;
}

/** A stored dead letter: one `dead_letters` row, as operators inspect and replay it. */
export interface DeadLetterRecord {
  id: number;
  clientId: string | null;
  idempotencyKey: string | null;
  stream: string;
  entryId: string;
  reason: string;
  sqlstate: string | null;
  message: string | null;
  /** The original entry's `o` field (order JSON) as dead-lettered. */
  payload: string | null;
  deliveries: number;
  firstSeenAt: Date;
  lastSeenAt: Date;
  replayedAt: Date | null;
  replays: number;
  replayStream: string | null;
  replayEntryId: string | null;
  /** The original entry's `t` field (the accepting request's traceparent), re-emitted by a replay. */
  traceContext: string | null;
}

/** Every field is optional; an empty filter matches every dead letter. */
export interface DeadLetterFilter {
  ids?: number[];
  reason?: string;
  client?: string;
  /** first_seen_at ≥ since */
  since?: Date;
  /** first_seen_at < until */
  until?: Date;
  /** true: only replayed ones; false: only never replayed. */
  replayed?: boolean;
}

interface Row {
  id: string;
  client_id: string | null;
  idempotency_key: string | null;
  stream: string;
  entry_id: string;
  reason: string;
  sqlstate: string | null;
  message: string | null;
  payload: string | null;
  deliveries: number;
  first_seen_at: Date;
  last_seen_at: Date;
  replayed_at: Date | null;
  replays: number;
  replay_stream: string | null;
  replay_entry_id: string | null;
  trace_context: string | null;
}

function fromRow(r: Row): DeadLetterRecord {
  return {
    id: Number(r.id),
    clientId: r.client_id,
    idempotencyKey: r.idempotency_key,
    stream: r.stream,
    entryId: r.entry_id,
    reason: r.reason,
    sqlstate: r.sqlstate,
    message: r.message,
    payload: r.payload,
    deliveries: r.deliveries,
    firstSeenAt: r.first_seen_at,
    lastSeenAt: r.last_seen_at,
    replayedAt: r.replayed_at,
    replays: r.replays,
    replayStream: r.replay_stream,
    replayEntryId: r.replay_entry_id,
    traceContext: r.trace_context,
  };
}

function filterParams(f: DeadLetterFilter): unknown[] {
  return [f.ids ?? null, f.reason ?? null, f.client ?? null, f.since ?? null, f.until ?? null, f.replayed ?? null];
}

const COLUMNS = () => sqlFile('maintenance/dlq_columns');
const WHERE = () => sqlFile('maintenance/dlq_filter');

/** Dead letters matching the filter, by id, `limit` at a time after `afterId`. */
export async function listDeadLetters(
  pool: Pool,
  filter: DeadLetterFilter = {},
  page: { limit?: number; afterId?: number } = {},
): Promise<DeadLetterRecord[]> {
  const r = await pool.query<Row>(
    `SELECT ${COLUMNS()} FROM dead_letters WHERE ${WHERE()} AND id > $7 ORDER BY id LIMIT $8`,
    [...filterParams(filter), page.afterId ?? 0, page.limit ?? 100],
  );
  return r.rows.map(fromRow);
}

export async function countDeadLetters(pool: Pool, filter: DeadLetterFilter = {}): Promise<number> {
  const r = await pool.query<{ n: string }>(
    `SELECT count(*) AS n FROM dead_letters WHERE ${WHERE()}`,
    filterParams(filter),
  );
  return Number(r.rows[0]?.n ?? 0);
}

/** IDs of every dead letter matching the filter (paged internally). */
export async function matchingIds(pool: Pool, filter: DeadLetterFilter): Promise<number[]> {
  const ids: number[] = [];
  for (;;) {
    const r = await pool.query<{ id: string }>(
      `SELECT id FROM dead_letters WHERE ${WHERE()} AND id > $7 ORDER BY id LIMIT 10000`,
      [...filterParams(filter), ids.at(-1) ?? 0],
    );
    for (const row of r.rows) ids.push(Number(row.id));
    if (r.rows.length < 10000) return ids;
  }
}

export async function getDeadLetter(pool: Pool, id: number): Promise<DeadLetterRecord | undefined> {
  return (await listDeadLetters(pool, { ids: [id] }, { limit: 1 }))[0];
}

export type ReplayOutcome =
  | { id: number; outcome: 'replayed'; stream: string; entryId: string }
  | { id: number; outcome: 'already_replayed' | 'missing' | 'not_replayable'; detail: string };

export interface ReplayOptions {
  /** Replay even if it was replayed before. */
  force?: boolean;
  /** lock_timeout while waiting for the row (another replay of the same ID), ms. Default 5000. */
  lockTimeoutMs?: number;
}

/**
 * Re-enqueues one dead letter. The row is locked (FOR UPDATE) while the entry is added and the
 * row marked, so concurrent replays of one ID add it once. If the COMMIT fails after the XADD the
 * row stays unmarked and a retry adds a second copy: the PostgreSQL unique key absorbs it.
 */
export async function replayDeadLetter(deps: DlqDeps, id: number, options: ReplayOptions = {}): Promise<ReplayOutcome> {
  const outcome = await replayLocked(deps, id, options);
  deps.metrics?.replays.inc({ outcome: outcome.outcome });
  return outcome;
}

async function replayLocked(deps: DlqDeps, id: number, options: ReplayOptions): Promise<ReplayOutcome> {
  const client = await deps.pool.connect();
  try {
    await client.query('BEGIN');
    try {
      await client.query(`SET LOCAL lock_timeout = ${Math.max(1, Math.floor(options.lockTimeoutMs ?? 5000))}`);
      const r = await client.query<Row>(`SELECT ${COLUMNS()} FROM dead_letters WHERE id = $1 FOR UPDATE`, [id]);
      const row = r.rows[0];
      let result: ReplayOutcome;
      if (!row) result = { id, outcome: 'missing', detail: 'no such dead letter' };
      else if (row.replayed_at && !options.force) {
        result = {
          id,
          outcome: 'already_replayed',
          detail: `replayed at ${row.replayed_at.toISOString()} as ${row.replay_entry_id}`,
        };
      } else if (row.client_id === null || row.idempotency_key === null || row.payload === null) {
        result = { id, outcome: 'not_replayable', detail: 'the dead letter has no client, idempotency key or payload' };
      } else {
        const fields = encodeEntry({
          clientId: row.client_id,
          idempotencyKey: row.idempotency_key,
          canonical: row.payload,
          // The replayed entry links its batch to the trace of the request that first accepted it.
          traceparent: row.trace_context ?? undefined,
        });
        const decoded = decodeEntry(fields);
        if (!decoded.ok) result = { id, outcome: 'not_replayable', detail: decoded.reason };
        else {
          const stream = streamKey(deps.prefix, shardFor(row.client_id, row.idempotency_key, deps.shards));
          const entryId = await deps.redis.xadd(stream, '*', ...fields);
          if (entryId === null) throw new Error(`XADD to ${stream} returned no entry id`);
          await client.query(sqlFile('maintenance/dlq_mark_replayed'), [id, stream, entryId]);
          result = { id, outcome: 'replayed', stream, entryId };
        }
      }
      await client.query('COMMIT');
      return result;
    } catch (e) {
      await client.query('ROLLBACK').catch(() => {});
      throw e;
    }
  } finally {
    client.release();
  }
}

export interface PurgeResult {
  rows: number;
  streamEntries: number;
}

/** Deletes the given dead letters: their rows and their DLQ stream entries. */
export async function purgeDeadLetters(deps: DlqDeps, ids: number[]): Promise<PurgeResult> {
  const result: PurgeResult = { rows: 0, streamEntries: 0 };
  // Which DLQ stream entries to delete, per shard: (original stream, original entry id).
  const byShard = new Map<number, Set<string>>();
  for (let i = 0; i < ids.length; i += 1000) {
    const r = await deps.pool.query<{ stream: string; entry_id: string }>(sqlFile('maintenance/dlq_delete'), [
      ids.slice(i, i + 1000),
    ]);
    result.rows += r.rowCount ?? 0;
    for (const row of r.rows) {
      const shard = shardOfStream(deps.prefix, row.stream);
      if (shard === undefined) continue;
      const set = byShard.get(shard) ?? new Set<string>();
      byShard.set(shard, set);
      set.add(`${row.stream}\n${row.entry_id}`);
    }
  }
  for (const [shard, wanted] of byShard) {
    const key = dlqKey(deps.prefix, shard);
    let start = '-';
    for (;;) {
      const page = await deps.redis.xrange(key, start, '+', 'COUNT', 500);
      if (page.length === 0) break;
      const doomed = page
        .filter(([, f]) => wanted.has(`${field(f, 'dl_stream')}\n${field(f, 'dl_id')}`))
        .map(([dlqId]) => dlqId);
      if (doomed.length > 0) result.streamEntries += await deps.redis.xdel(key, ...doomed);
      start = `(${page.at(-1)?.[0]}`;
    }
  }
  return result;
}

/**
 * Creates the `dead_letters` row of every DLQ stream entry that lacks one (a worker stopped
 * between its XADD and its INSERT). Only entries older than `graceMs` are looked at, so a worker
 * in the middle of dead-lettering writes its own row first. A per-shard cursor keeps each run
 * proportional to the new entries. Returns the rows created.
 */
export async function syncDeadLetterStreams(
  deps: DlqDeps,
  options: { graceMs: number; now?: number },
): Promise<number> {
  let created = 0;
  const end = String((options.now ?? Date.now()) - options.graceMs);
  for (let shard = 0; shard < deps.shards; shard++) {
    const key = dlqKey(deps.prefix, shard);
    const cursorKey = dlqSyncedKey(deps.prefix, shard);
    let cursor = (await deps.redis.get(cursorKey)) ?? '0-0';
    for (;;) {
      const page = await deps.redis.xrange(key, `(${cursor}`, end, 'COUNT', 500);
      if (page.length === 0) break;
      for (const [dlqId, f] of page) {
        const stream = field(f, 'dl_stream');
        const entryId = field(f, 'dl_id');
        if (!stream || !entryId) continue;
        const at = field(f, 'dl_at');
        const seen = at && !Number.isNaN(Date.parse(at)) ? new Date(at) : new Date(Number(dlqId.split('-')[0]));
        const r = await deps.pool.query(sqlFile('maintenance/dlq_backfill'), [
          field(f, ENTRY_FIELD.client) ?? null,
          field(f, ENTRY_FIELD.key) ?? null,
          stream,
          entryId,
          field(f, 'dl_reason') ?? 'unknown',
          field(f, 'dl_sqlstate') ?? '',
          field(f, 'dl_message') ?? null,
          field(f, ENTRY_FIELD.order) ?? null,
          Number(field(f, 'dl_deliveries') ?? 1) || 1,
          seen,
          field(f, ENTRY_FIELD.trace) ?? null,
        ]);
        created += r.rowCount ?? 0;
      }
      cursor = page.at(-1)?.[0] ?? cursor;
      await deps.redis.set(cursorKey, cursor);
    }
  }
  return created;
}

// ---- Bulk replays as BullMQ jobs -------------------------------------------------------------

export interface ReplayJobData {
  /** The batch this chunk belongs to (one `surge dlq replay` call). */
  batch: string;
  ids: number[];
  force: boolean;
}

export interface ReplayProgress {
  done: number;
  total: number;
  replayed: number;
  skipped: number;
}

export interface ReplayBatch {
  batch: string;
  jobIds: string[];
  total: number;
}

/** Retries of one chunk: 5 attempts, exponential backoff from 1 s (1, 2, 4, 8 s). */
const REPLAY_JOB_ATTEMPTS = 5;
const REPLAY_BACKOFF_MS = 1000;

export function createReplayQueue(config: Pick<Config, 'redisPrefix'>, connection: RedisClient): Queue<ReplayJobData> {
  return createQueue<ReplayJobData>(config, REPLAY_QUEUE, connection, {
    attempts: REPLAY_JOB_ATTEMPTS,
    backoff: { type: 'exponential', delay: REPLAY_BACKOFF_MS },
    ...REPLAY_HISTORY,
  });
}

/** Most dead-letter IDs per replay job: bounds the size of one job in Redis (docs/maintenance.md). */
export const MAX_REPLAY_CHUNK = 1000;

/** Splits the IDs into chunk jobs (default 100 IDs each, at most MAX_REPLAY_CHUNK) of one batch. */
export async function enqueueReplays(
  queue: Queue<ReplayJobData>,
  ids: number[],
  options: { force?: boolean; chunkSize?: number; backoffMs?: number } = {},
): Promise<ReplayBatch> {
  const chunk = options.chunkSize ?? 100;
  if (!Number.isInteger(chunk) || chunk < 1 || chunk > MAX_REPLAY_CHUNK)
    throw new RangeError(`chunk size must be 1–${MAX_REPLAY_CHUNK}, got ${chunk}`);
  const batch = `r${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
  const jobs: Array<{ name: string; data: ReplayJobData; opts: JobsOptions & { jobId: string } }> = [];
  for (let i = 0; i < ids.length; i += chunk) {
    jobs.push({
      name: 'replay',
      data: { batch, ids: ids.slice(i, i + chunk), force: options.force ?? false },
      opts: {
        jobId: `${batch}-${i / chunk}`,
        ...(options.backoffMs !== undefined ? { backoff: { type: 'exponential', delay: options.backoffMs } } : {}),
      },
    });
  }
  await queue.addBulk(jobs);
  // BullMQ keeps a job id given in its options: these are the ids the jobs were added under.
  return { batch, jobIds: jobs.map((j) => j.opts.jobId), total: ids.length };
}

/**
 * The replay job: replays its IDs in order, reporting progress after each. A retry resumes after
 * the last ID the failed attempt finished (progress is stored with the job), so even `force`
 * replays add each entry once per batch.
 */
function replayProcessor(deps: DlqDeps, options: { lockTimeoutMs?: number } = {}) {
  return async (job: Job<ReplayJobData>): Promise<ReplayProgress> => {
    const prior = job.progress as Partial<ReplayProgress> | number;
    const progress: ReplayProgress =
      typeof prior === 'object' && prior !== null && typeof prior.done === 'number'
        ? { done: prior.done, total: job.data.ids.length, replayed: prior.replayed ?? 0, skipped: prior.skipped ?? 0 }
        : { done: 0, total: job.data.ids.length, replayed: 0, skipped: 0 };
    for (const id of job.data.ids.slice(progress.done)) {
      const r = await replayDeadLetter(deps, id, {
        force: job.data.force,
        lockTimeoutMs: options.lockTimeoutMs,
      });
      if (r.outcome === 'replayed') progress.replayed++;
      else progress.skipped++;
      progress.done++;
      await job.updateProgress({ ...progress });
    }
    return progress;
  };
}

export interface ReplayWorkerHandle {
  worker: Worker<ReplayJobData, ReplayProgress>;
  close(): Promise<void>;
}

/** A BullMQ worker for the replay queue (in `surge maintenance`, or in the CLI for one batch). */
export function startReplayWorker(
  config: Config,
  deps: DlqDeps,
  options: { logger?: Logger; lockTimeoutMs?: number; onFailed?: () => void } = {},
): ReplayWorkerHandle {
  const connection = bullConnection(config, 'surge-dlq-replay');
  const worker = new Worker<ReplayJobData, ReplayProgress>(REPLAY_QUEUE, replayProcessor(deps, options), {
    connection,
    prefix: bullPrefix(config),
    concurrency: 1,
  });
  worker.on('failed', (job, err) => {
    options.onFailed?.();
    options.logger?.warn(
      { jobId: job?.id, attemptsMade: job?.attemptsMade, err: err.message },
      'dlq replay job attempt failed',
    );
  });
  worker.on('error', (err) => options.logger?.error({ err: err.message }, 'dlq replay worker error'));
  return {
    worker,
    async close() {
      await worker.close();
      connection.disconnect();
    },
  };
}

export interface BatchStatus {
  total: number;
  done: number;
  replayed: number;
  skipped: number;
  completedJobs: number;
  failedJobs: Array<{ jobId: string; reason: string }>;
  /** Jobs that failed an attempt and wait for their retry. */
  retrying: number;
  finished: boolean;
}

/** The state of a replay batch, summed over its chunk jobs. */
export async function batchStatus(queue: Queue<ReplayJobData>, batch: ReplayBatch): Promise<BatchStatus> {
  const s: BatchStatus = {
    total: batch.total,
    done: 0,
    replayed: 0,
    skipped: 0,
    completedJobs: 0,
    failedJobs: [],
    retrying: 0,
    finished: false,
  };
  for (const id of batch.jobIds) {
    const job = await queue.getJob(id);
    if (!job) {
      // Only finished jobs are removed (REPLAY_HISTORY keeps the last 1,000 completed).
      s.completedJobs++;
      continue;
    }
    const state = await job.getState();
    const p = (typeof job.progress === 'object' ? job.progress : {}) as Partial<ReplayProgress>;
    s.done += p.done ?? 0;
    s.replayed += p.replayed ?? 0;
    s.skipped += p.skipped ?? 0;
    if (state === 'completed') s.completedJobs++;
    else if (state === 'failed') s.failedJobs.push({ jobId: id, reason: job.failedReason });
    else if (job.attemptsMade > 0) s.retrying++;
  }
  s.finished = s.completedJobs + s.failedJobs.length === batch.jobIds.length;
  return s;
}
