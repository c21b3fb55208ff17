// A piscina thread. Every task decodes and encodes one batch (the CPU part); in `threads` mode
// the thread also applies it over its own PostgreSQL connection and returns the outcome, in
// `main` mode it returns the encoded batch for the main thread's pool to apply.
// Threads never touch metrics: their figures travel back in the result (SEMANTICS 4.1).
import { workerData } from 'piscina';
import { createPool, type Pool } from '../common/db.js';
import { type ApplyTask, applyBatch, type BatchOutcome, type EncodedBatch, encodeBatch } from './apply.js';

/** What the main thread passes to every thread at start. */
export interface ThreadData {
  databaseUrl: string;
  /** PostgreSQL connections this thread holds (threads mode). */
  connections: number;
  retryBudgetMs: number;
}

export interface ThreadTask extends ApplyTask {
  kind: 'apply' | 'encode';
}

export type ThreadResult =
  | { kind: 'applied'; outcome: BatchOutcome }
  | { kind: 'encoded'; encoded: EncodedBatch; encodeMs: number };

const data = workerData as ThreadData;
let pool: Pool | undefined;

export default async function run(task: ThreadTask): Promise<ThreadResult> {
  const t0 = performance.now();
  const encoded = encodeBatch(task.entries);
  const encodeMs = performance.now() - t0;
  if (task.kind === 'encode') return { kind: 'encoded', encoded, encodeMs };
  // A frozen worker's locks are released by PostgreSQL after the retry budget (< claim timeout).
  pool ??= createPool(data.databaseUrl, {
    max: data.connections,
    applicationName: 'surge-worker',
    sessionTimeoutMs: data.retryBudgetMs,
  });
  const outcome = await applyBatch(pool, task, encoded, { retryBudgetMs: data.retryBudgetMs });
  outcome.stats.encodeMs = encodeMs;
  return { kind: 'applied', outcome };
}
