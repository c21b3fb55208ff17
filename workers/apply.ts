// The apply step: check each stream entry's own fields and stage its order's canonical JSON as is
// with one COPY that also opens the transaction; PostgreSQL unpacks the orders, inserts the new
// ones (deduplicated in the batch; a key already in `orders` fails a first try, the batch is then
// applied with ON CONFLICT DO NOTHING) and their lines in one statement, reserves stock (in
// one statement when the whole batch fits, else in stream order), COMMIT. The order is not
// parsed nor validated again here: ingest validated it under the entry's version.
// Transient PostgreSQL errors retry the batch with jittered backoff; permanent ones split the
// batch until the bad entry is alone, and only it is dead-lettered — after the full decode and
// validation of that one entry, so its dead letter says what is wrong with it. Used inside the
// piscina threads (workers/thread.ts) or on the main thread (placement `main`).
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import copyStreams from 'pg-copy-streams';
import { type Pool, type PoolClient, timestamptzIso } from '../common/db.js';
import { entryIdMillis } from '../common/keys.js';
import { decodeEntry, ENTRY_FIELD, entryField, readEntryHeader } from '../common/entry.js';
import { sqlFile } from '../common/sql.js';
import { copyBuffer, copyRow } from './copy.js';
import { type BatchSteps, StepRecorder } from './steps.js';

const { from: copyFrom } = copyStreams;

/** One stream entry handed to the apply step. `fields` is null when its payload was deleted. */
export interface TaskEntry {
  id: string;
  fields: string[] | null;
  /** Times Redis delivered it (1 for a first read). */
  deliveries: number;
  /** Set by the main thread when the entry must be dead-lettered without trying (max deliveries). */
  deadLetter?: { reason: string; message: string };
}

export interface ApplyTask {
  stream: string;
  entries: TaskEntry[];
  /** Record the steps for tracing (set only when tracing is on and an entry carries a trace context). */
  traced?: boolean;
}

/** An entry of a batch that will not be applied, and why (it becomes a DLQ entry and a `dead_letters` row). */
export interface BatchDeadLetter {
  id: string;
  /** `undecodable`, `permanent_error` or `max_deliveries`. */
  reason: string;
  message: string;
  sqlstate?: string;
}

/**
 * A batch encoded for COPY: the staged entries' IDs in stream order, their rows in one buffer,
 * where each entry's row ends (to split the batch at any entry), and what was set aside.
 */
export interface EncodedBatch {
  rows: string[];
  copy: Uint8Array;
  rowEnds: number[];
  deadLetters: BatchDeadLetter[];
}

export interface ApplyStats {
  /** Entries in the task. */
  entries: number;
  inserted: number;
  duplicate: number;
  rejected: number;
  deadLettered: number;
  /** Transactions committed (more than 1 when the batch was split). */
  commits: number;
  /** Transient failures retried, by SQLSTATE (`connection` when the error had none). */
  retries: Record<string, number>;
  encodeMs: number;
  /** Wall time of the PostgreSQL work, retries included. */
  applyMs: number;
  /** received (entry ID) → COMMIT, ms, for every order this batch inserted. */
  endToEndMs: number[];
}

export interface BatchOutcome {
  /**
   * Set when transient errors outlasted the retry budget: nothing is to be acked, the caller
   * tries the whole batch again later (what was committed meanwhile comes back as duplicates).
   */
  gaveUp?: { sqlstate: string; message: string };
  /** Entries to XACK (applied, rejected, duplicates). */
  ack: string[];
  /** Entries to move to the DLQ stream (their dead_letters rows are committed). */
  deadLetters: BatchDeadLetter[];
  stats: ApplyStats;
  /**
   * The orders this batch's transactions inserted, as committed: the outcome publisher reads
   * PostgreSQL only for the rest (duplicates of orders committed before).
   */
  committed: CommittedOrder[];
  /** What the batch did, for its spans (traced tasks only). */
  steps?: BatchSteps;
}

/** An order a batch inserted, as committed. */
export interface CommittedOrder {
  /** The entry its row was inserted from. */
  entryId: string;
  status: 'applied' | 'rejected';
  /** Why it was rejected. */
  reason?: string;
  /** The orders row's applied_at, ISO 8601. */
  appliedAt: string;
}

export interface ApplyOptions {
  /** Stop retrying transient errors after this long and throw (the entries stay pending). */
  retryBudgetMs: number;
  /** First backoff ceiling; doubles per attempt up to maxBackoffMs (full jitter). */
  baseBackoffMs?: number;
  maxBackoffMs?: number;
}

const STOCK_REASON = 'out_of_stock';

/** Error classes the data of one entry can cause: split the batch and dead-letter the culprit. */
const PERMANENT_CLASSES = new Set(['22', '23', 'P0']);

export interface ErrorClass {
  kind: 'transient' | 'permanent';
  /** The SQLSTATE, or `connection` for errors without one (socket closed, refused, timeout). */
  sqlstate: string;
}

/**
 * Classifies an error by SQLSTATE. Permanent = data exceptions (22), integrity violations (23),
 * raised exceptions (P0): retrying cannot help, the entry is at fault. Everything else —
 * connection (08), serialization (40001), deadlock (40P01), admin/crash shutdown (57P0x),
 * resources (53), but also undefined objects (42, a schema not migrated yet) and errors without a
 * SQLSTATE — is retried: the entry is not at fault, and dead-lettering every order because an
 * operator forgot `surge migrate` would be worse than waiting.
 */
export function classifyError(error: unknown): ErrorClass {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) {
    return { kind: PERMANENT_CLASSES.has(code.slice(0, 2)) ? 'permanent' : 'transient', sqlstate: code };
  }
  return { kind: 'transient', sqlstate: 'connection' };
}

/**
 * A key already in `orders` met by the insert without its arbiter (committed before the statement,
 * or by a concurrent batch it waited for): not the entry's fault, the batch goes again with
 * insert_orders.sql as written, which skips such keys.
 */
function isKeyConflict(error: unknown): boolean {
  const e = error as { code?: unknown; constraint?: unknown } | null;
  return e?.code === '23505' && e.constraint === 'orders_client_key';
}

/** Raised inside applyBatch when transient errors outlast the retry budget. */
class RetryBudgetExceeded extends Error {
  constructor(
    readonly sqlstate: string,
    cause: unknown,
  ) {
    const reason = (cause as Error)?.message ?? String(cause);
    super(`transient PostgreSQL error ${sqlstate} outlasted the retry budget: ${reason}`, { cause });
    this.name = 'RetryBudgetExceeded';
  }
}

/** The staging columns encodeBatch writes, in sql/apply/copy_stage.sql's order. */
export const STAGE_COLUMNS = ['seq', 'entry_id', 'received_at', 'client_id', 'idempotency_key', 'body'] as const;

// Entries of one batch mostly share their millisecond (an entry ID is ms-seq): format each once.
let lastMs = Number.NaN;
let lastIso = '';
function receivedAt(ms: number): string {
  if (ms !== lastMs) {
    lastMs = ms;
    lastIso = new Date(ms).toISOString();
  }
  return lastIso;
}

/**
 * Encodes the entries as COPY rows (one Buffer): their own fields checked (readEntryHeader), the
 * order's JSON as the entry holds it. Entries whose own fields are wrong, or that the main thread
 * marked, are set aside as dead letters.
 */
export function encodeBatch(entries: readonly TaskEntry[]): EncodedBatch {
  const rows: string[] = [];
  const text: string[] = [];
  const deadLetters: BatchDeadLetter[] = [];
  // One row's values (STAGE_COLUMNS), refilled per entry.
  const rowValues: string[] = new Array(STAGE_COLUMNS.length);
  for (const entry of entries) {
    if (entry.deadLetter) {
      deadLetters.push({ id: entry.id, reason: entry.deadLetter.reason, message: entry.deadLetter.message });
      continue;
    }
    const read = readEntryHeader(entry.fields);
    if (!read.ok) {
      deadLetters.push({ id: entry.id, reason: 'undecodable', message: read.reason });
      continue;
    }
    const { clientId, idempotencyKey, orderJson } = read.header;
    rowValues[0] = String(rows.length);
    rowValues[1] = entry.id;
    rowValues[2] = receivedAt(entryIdMillis(entry.id));
    rowValues[3] = clientId;
    rowValues[4] = idempotencyKey;
    // COPY escaping doubles the JSON's own backslashes (SEMANTICS 6.3).
    rowValues[5] = orderJson;
    text.push(copyRow(rowValues));
    rows.push(entry.id);
  }
  const orders = copyBuffer(text);
  return { rows, copy: orders.buffer, rowEnds: orders.rowEnds, deadLetters };
}

// Connections that already have the staging tables (they live as long as the session), and those
// that also have the wide one (create_stage_wide.sql).
const hasStage = new WeakSet<PoolClient>();
const hasWideStage = new WeakSet<PoolClient>();

/** insert_orders.sql's arbiter, the one line its first try of a batch leaves out. */
const ARBITER_LINE = '  ON CONFLICT (client_id, idempotency_key) DO NOTHING\n';

/**
 * How a batch is staged and inserted. `arbiter`: insert_orders.sql as written (ON CONFLICT DO
 * NOTHING), else without its ON CONFLICT line — the first try of a batch of first deliveries,
 * whose keys are almost always new, so the arbiter's per-order check costs more than the rare
 * second try. `wide`: staged in surge_stage_wide, for a batch with a row surge_stage (no TOAST)
 * cannot hold.
 */
interface Variant {
  arbiter: boolean;
  wide: boolean;
}

interface Statements {
  copy: string;
  /** A named (prepared once per connection) statement: parsed and analysed once, not per batch. */
  insert: { name: string; text: string };
}

const statements = new Map<string, Statements>();

/** Replaces `from` in `text`, and throws if it is not there (the SQL files and this code disagree). */
function derive(text: string, from: string | RegExp, to: string, what: string): string {
  const out = text.replace(from, to);
  if (out === text) throw new Error(`${what}: the SQL no longer has what the worker rewrites`);
  return out;
}

/**
 * The stage COPY and the insert for a variant, derived from the one file of each so that every
 * variant inserts the same rows.
 */
function statementsFor(v: Variant): Statements {
  const key = `${v.arbiter ? 'a' : 'n'}${v.wide ? 'w' : 's'}`;
  let found = statements.get(key);
  if (found === undefined) {
    let copy = sqlFile('apply/copy_stage');
    let insert = sqlFile('apply/insert_orders');
    if (!v.arbiter) insert = derive(insert, ARBITER_LINE, '', 'insert_orders.sql without its ON CONFLICT line');
    if (v.wide) {
      copy = derive(copy, /\bsurge_stage\b/g, 'surge_stage_wide', 'copy_stage.sql into surge_stage_wide');
      insert = derive(insert, /\bsurge_stage\b/g, 'surge_stage_wide', 'insert_orders.sql from surge_stage_wide');
    }
    found = { copy, insert: { name: `surge_insert_orders_${key}`, text: insert } };
    statements.set(key, found);
  }
  return found;
}

/** A row longer than this cannot be a PLAIN heap row (MaxHeapTupleSize): such a batch goes wide at once. */
const PLAIN_ROW_LIMIT = 8160;

/**
 * 54000 (program limit exceeded) from the stage: a row too big for surge_stage's PLAIN columns.
 * The batch is tried again staged wide (if the error came from elsewhere, that try fails the same
 * way and the error is handled as before).
 */
function isRowTooBig(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === '54000';
}

/** Whether any row of the batch is too long for surge_stage (its COPY text; the jsonb may differ). */
function hasWideRow(ends: readonly number[]): boolean {
  let start = 0;
  for (const end of ends) {
    if (end - start > PLAIN_ROW_LIMIT) return true;
    start = end;
  }
  return false;
}

interface StagedBatch {
  /** Entry IDs in stream order. */
  rows: readonly string[];
  orders: Buffer;
  rowEnds: readonly number[];
}

/** COPYs one buffer. */
async function copyIn(client: PoolClient, sql: string, data: Buffer): Promise<void> {
  await pipeline(Readable.from([data]), client.query(copyFrom(sql)));
}

/** Rows [lo, hi) of a buffer whose row ends are `ends` (lo < hi). */
function slice(buffer: Buffer, ends: readonly number[], lo: number, hi: number): Buffer {
  const end = ends[hi - 1];
  if (end === undefined) throw new Error(`row ${hi - 1} is past the batch's ${ends.length} rows`);
  // ends[-1] is undefined: the first row starts at 0.
  return buffer.subarray(ends[lo - 1] ?? 0, end);
}

/**
 * Applies an encoded batch. Returns which entries to ack and which to dead-letter (their
 * dead_letters rows committed), or `gaveUp` when PostgreSQL stayed unavailable for the budget.
 */
export async function applyBatch(
  pool: Pool,
  task: ApplyTask,
  encoded: EncodedBatch,
  options: ApplyOptions,
): Promise<BatchOutcome> {
  const started = performance.now();
  const stats: ApplyStats = {
    entries: task.entries.length,
    inserted: 0,
    duplicate: 0,
    rejected: 0,
    deadLettered: 0,
    commits: 0,
    retries: {},
    encodeMs: 0,
    applyMs: 0,
    endToEndMs: [],
  };
  const deadLetters = [...encoded.deadLetters];
  const committed: CommittedOrder[] = [];
  // After a structured clone (main-thread placement) the buffers arrive as plain Uint8Arrays.
  const asBuffer = (u: Uint8Array) => Buffer.from(u.buffer, u.byteOffset, u.byteLength);
  const staged: StagedBatch = { rows: encoded.rows, orders: asBuffer(encoded.copy), rowEnds: encoded.rowEnds };
  const base = options.baseBackoffMs ?? 50;
  const cap = options.maxBackoffMs ?? 2000;
  const deadline = Date.now() + options.retryBudgetMs;
  const rec = task.traced ? new StepRecorder() : undefined;
  // First deliveries are inserted without the ON CONFLICT arbiter; a redelivered entry's order is
  // likely committed already, so such a batch skips that try. Once a key conflict is met the rest
  // of the batch (its bisection included) keeps the arbiter; once a row was too big for
  // surge_stage, the rest of the batch is staged wide.
  const variant: Variant = {
    arbiter: task.entries.some((e) => e.deliveries > 1),
    wide: hasWideRow(staged.rowEnds),
  };

  const withRetry = async <T>(fn: () => Promise<T>): Promise<T> => {
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn();
      } catch (e) {
        const c = classifyError(e);
        if (c.kind === 'permanent') throw e;
        stats.retries[c.sqlstate] = (stats.retries[c.sqlstate] ?? 0) + 1;
        rec?.event('retry', { 'db.response.status_code': c.sqlstate, attempt: attempt + 1 });
        if (Date.now() >= deadline) throw new RetryBudgetExceeded(c.sqlstate, e);
        await sleep(Math.random() * Math.min(cap, base * 2 ** Math.min(attempt, 16)));
      }
    }
  };

  const applyRange = async (lo: number, hi: number): Promise<void> => {
    if (lo >= hi) return;
    try {
      await withRetry(async () => {
        // Each flag turns at most once: at most three tries before an error is the batch's own.
        for (;;) {
          try {
            return await transaction(pool, task.stream, staged, lo, hi, stats, rec, committed, variant);
          } catch (e) {
            if (!variant.wide && isRowTooBig(e)) {
              variant.wide = true;
              rec?.event('wide_stage', { from: lo, to: hi });
            } else if (!variant.arbiter && isKeyConflict(e)) {
              variant.arbiter = true;
              rec?.event('key_conflict', { from: lo, to: hi });
            } else throw e;
          }
        }
      });
    } catch (e) {
      const c = classifyError(e);
      if (c.kind !== 'permanent') throw e;
      if (hi - lo === 1) {
        const id = encoded.rows[lo];
        if (id === undefined) throw new Error(`row ${lo} is past the batch's ${encoded.rows.length} rows`);
        deadLetters.push(refused(task, id, e, c.sqlstate));
        rec?.event('dead_letter', { 'messaging.message.id': id, 'db.response.status_code': c.sqlstate });
        return;
      }
      rec?.event('bisect', { from: lo, to: hi, 'db.response.status_code': c.sqlstate });
      // Halves in order, so stock is still served in stream order.
      const mid = lo + Math.ceil((hi - lo) / 2);
      await applyRange(lo, mid);
      await applyRange(mid, hi);
    }
  };

  try {
    await applyRange(0, encoded.rows.length);
    if (deadLetters.length > 0) {
      rec?.step('dead_letters', deadLetters.length);
      await withRetry(() => insertDeadLetters(pool, task, deadLetters));
      rec?.done();
    }
  } catch (e) {
    if (!(e instanceof RetryBudgetExceeded)) throw e;
    stats.applyMs = performance.now() - started;
    const gaveUp = { gaveUp: { sqlstate: e.sqlstate, message: e.message }, ack: [], deadLetters: [], stats, committed };
    return rec ? { ...gaveUp, steps: rec.finish() } : gaveUp;
  }
  stats.deadLettered = deadLetters.length;
  stats.applyMs = performance.now() - started;
  const dead = new Set(deadLetters.map((d) => d.id));
  const ack = task.entries.filter((e) => !dead.has(e.id)).map((e) => e.id);
  return rec ? { ack, deadLetters, stats, committed, steps: rec.finish() } : { ack, deadLetters, stats, committed };
}

/** encodeBatch then applyBatch, the encoding's time in the stats: one batch, in a thread or on the main thread. */
export async function encodeAndApply(pool: Pool, task: ApplyTask, options: ApplyOptions): Promise<BatchOutcome> {
  const t0 = performance.now();
  const encoded = encodeBatch(task.entries);
  const encodeMs = performance.now() - t0;
  const outcome = await applyBatch(pool, task, encoded, options);
  outcome.stats.encodeMs = encodeMs;
  return outcome;
}

/**
 * The dead letter of an entry PostgreSQL refused alone. Only now is its order decoded and
 * validated as ingest does: an invalid order is named by its field paths (`undecodable`), a valid
 * one keeps PostgreSQL's error (`permanent_error`).
 */
function refused(task: ApplyTask, id: string, error: unknown, sqlstate: string): BatchDeadLetter {
  const decoded = decodeEntry(task.entries.find((e) => e.id === id)?.fields);
  if (!decoded.ok) return { id, reason: 'undecodable', message: decoded.reason, sqlstate };
  return { id, reason: 'permanent_error', message: (error as Error).message, sqlstate };
}

/**
 * One transaction over rows [lo, hi): BEGIN + COPY, insert orders and lines, reserve stock, COMMIT.
 * `variant.arbiter`: insert with ON CONFLICT DO NOTHING (insert_orders.sql), else without it (a key
 * already in `orders` fails the transaction with 23505); `variant.wide`: staged in surge_stage_wide.
 */
async function transaction(
  pool: Pool,
  stream: string,
  batch: StagedBatch,
  lo: number,
  hi: number,
  stats: ApplyStats,
  rec: StepRecorder | undefined,
  committed: CommittedOrder[],
  variant: Variant,
): Promise<void> {
  const client = await pool.connect();
  const orders = hi - lo;
  let broken = false;
  // A checked-out client whose connection dies emits 'error' besides rejecting the running query;
  // unheard, that event would kill the thread. The rejection is what we act on.
  const onError = () => {
    broken = true;
  };
  client.on('error', onError);
  try {
    if (!hasStage.has(client)) {
      await client.query(sqlFile('apply/create_stage'));
      await client.query(sqlFile('apply/create_need'));
      // The named statements save parsing; a plan cached for one batch's size is not reused for
      // another (a generic plan cost more in backlog drains of full batches).
      await client.query('SET plan_cache_mode = force_custom_plan');
      hasStage.add(client);
    }
    if (variant.wide && !hasWideStage.has(client)) {
      await client.query(sqlFile('apply/create_stage_wide'));
      hasWideStage.add(client);
    }
    const sql = statementsFor(variant);
    // copy_stage.sql opens the transaction too: from here on a failure must roll back.
    rec?.step('stage', orders);
    await copyIn(client, sql.copy, slice(batch.orders, batch.rowEnds, lo, hi));
    rec?.step('insert', orders);
    // applied_at as text: it is only republished (timestamptzIso), a Date per order cost more.
    const inserted = await client.query<{ id: string; entry_id: string; applied_at: string; stocked: boolean }>({
      ...sql.insert,
      values: [stream],
    });
    const idOf = new Map(inserted.rows.map((r) => [r.entry_id, r.id]));
    const rows = batch.rows.slice(lo, hi);
    rec?.done();
    const rejectedIds = inserted.rows[0]?.stocked ? await reserveStock(client, rows, idOf, rec) : NONE;
    rec?.step('commit', orders);
    await client.query('COMMIT');
    rec?.done();
    const committedAt = Date.now();
    const rejected = rejectedIds.size;
    for (const r of inserted.rows) {
      const appliedAt = timestamptzIso(r.applied_at);
      committed.push(
        rejectedIds.has(r.id)
          ? { entryId: r.entry_id, status: 'rejected', reason: STOCK_REASON, appliedAt }
          : { entryId: r.entry_id, status: 'applied', appliedAt },
      );
    }
    stats.commits++;
    stats.inserted += idOf.size - rejected;
    stats.rejected += rejected;
    stats.duplicate += hi - lo - idOf.size;
    for (const entryId of idOf.keys()) stats.endToEndMs.push(committedAt - entryIdMillis(entryId));
    rec?.committed(idOf.keys());
  } catch (e) {
    rec?.fail(e);
    // A connection that cannot even roll back is discarded, not returned to the pool.
    await client.query('ROLLBACK').catch(() => {
      broken = true;
    });
    throw e;
  } finally {
    client.off('error', onError);
    client.release(broken);
  }
}

/**
 * Called when the insert noted lines of stock-checked SKUs (else there is nothing to lock).
 * Locks the inventory rows of the inserted orders' SKUs (sku order) and takes the whole batch's
 * stock at once when it all fits (reserve_all.sql, from what insert_orders.sql noted). Otherwise
 * serves the orders in stream order all-or-nothing under those locks, writes the decrements and
 * marks the orders that could not be filled. Returns the ids of the rejected ones.
 */
async function reserveStock(
  client: PoolClient,
  rows: readonly string[],
  idOf: ReadonlyMap<string, string>,
  rec: StepRecorder | undefined,
): Promise<ReadonlySet<string>> {
  if (idOf.size === 0) return NONE;
  // One statement locks the SKUs and, when every one has stock for the whole batch, takes it.
  rec?.step('reserve', idOf.size);
  const locked = await client.query<{ sku: string; available: string; reserved: boolean }>({
    name: 'surge_reserve_all',
    text: sqlFile('apply/reserve_all'),
  });
  rec?.done();
  if (locked.rows.length === 0 || locked.rows[0]?.reserved) return NONE;
  rec?.step('reserve_each', idOf.size);
  const ids = [...idOf.values()];
  const available = new Map(locked.rows.map((r) => [r.sku, BigInt(r.available)]));
  // What each order needs of the locked SKUs.
  const needs = await client.query<{ id: string; sku: string; qty: string }>(sqlFile('apply/order_needs'), [
    ids,
    [...available.keys()],
  ]);
  const needOf = new Map<string, Array<{ sku: string; qty: bigint }>>();
  for (const r of needs.rows) {
    const need = { sku: r.sku, qty: BigInt(r.qty) };
    const list = needOf.get(r.id);
    if (list === undefined) needOf.set(r.id, [need]);
    else list.push(need);
  }
  const taken = new Map<string, bigint>();
  const rejectedIds: string[] = [];
  for (const entryId of rows) {
    const id = idOf.get(entryId);
    if (id === undefined) continue;
    const need = needOf.get(id);
    if (need === undefined) continue;
    if (need.some(({ sku, qty }) => stockOf(available, sku) < qty)) {
      rejectedIds.push(id);
      continue;
    }
    for (const { sku, qty } of need) {
      available.set(sku, stockOf(available, sku) - qty);
      taken.set(sku, (taken.get(sku) ?? 0n) + qty);
    }
  }
  if (taken.size > 0) {
    await client.query(sqlFile('apply/reserve_stock'), [[...taken.keys()], [...taken.values()].map(String)]);
  }
  if (rejectedIds.length > 0) await client.query(sqlFile('apply/reject_orders'), [rejectedIds, STOCK_REASON]);
  rec?.done();
  return new Set(rejectedIds);
}

const NONE: ReadonlySet<string> = new Set();

/** The stock left of a locked SKU: order_needs.sql returns only those. */
function stockOf(available: ReadonlyMap<string, bigint>, sku: string): bigint {
  const left = available.get(sku);
  if (left === undefined) throw new Error(`no locked inventory row for SKU ${sku}`);
  return left;
}

/** PostgreSQL text cannot hold NUL; a dead letter's raw payload may (it was never validated). */
function storable(value: string | null): string | null {
  return value === null ? null : value.replaceAll('\u0000', '\ufffd');
}

/** Writes (or refreshes) the dead_letters rows of a batch, autocommitted. */
async function insertDeadLetters(pool: Pool, task: ApplyTask, deadLetters: readonly BatchDeadLetter[]): Promise<void> {
  const byId = new Map(task.entries.map((e) => [e.id, e]));
  // One array per column, in sql/apply/insert_dead_letters.sql's parameter order.
  const clientIds: Array<string | null> = [];
  const keys: Array<string | null> = [];
  const entryIds: Array<string | null> = [];
  const reasons: Array<string | null> = [];
  const sqlstates: Array<string | null> = [];
  const messages: Array<string | null> = [];
  const payloads: Array<string | null> = [];
  const deliveries: number[] = [];
  const traces: Array<string | null> = [];
  for (const d of deadLetters) {
    const entry = byId.get(d.id);
    const field = (name: string): string | null => storable(entryField(entry?.fields, name) ?? null);
    clientIds.push(field(ENTRY_FIELD.client));
    keys.push(field(ENTRY_FIELD.key));
    entryIds.push(storable(d.id));
    reasons.push(storable(d.reason));
    sqlstates.push(storable(d.sqlstate ?? null));
    messages.push(storable(d.message));
    payloads.push(field(ENTRY_FIELD.order));
    deliveries.push(entry?.deliveries ?? 1);
    traces.push(field(ENTRY_FIELD.trace));
  }
  await pool.query(sqlFile('apply/insert_dead_letters'), [
    task.stream,
    clientIds,
    keys,
    entryIds,
    reasons,
    sqlstates,
    messages,
    payloads,
    deliveries,
    traces,
  ]);
}
