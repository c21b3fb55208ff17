// A piscina thread (placement `threads`). Every task encodes one batch and applies it over the
// thread's own PostgreSQL connections, and returns the outcome.
// Threads never touch metrics: their figures travel back in the result (SEMANTICS 4.1).
import { workerData } from 'piscina';
import { createPool, type Pool } from '../common/db.js';
import { type ApplyTask, applyBatch, type BatchOutcome, encodeBatch } from './apply.js';

/** What the main thread passes to every thread at start. */
export interface ThreadData {
  databaseUrl: string;
  /** PostgreSQL connections this thread holds. */
  connections: number;
  retryBudgetMs: number;
}

const data = workerData as ThreadData;
let pool: Pool | undefined;

export default async function run(task: ApplyTask): Promise<BatchOutcome> {
  const t0 = performance.now();
  const encoded = encodeBatch(task.entries);
  const encodeMs = performance.now() - t0;
  // A frozen worker's locks are released by PostgreSQL after the retry budget (< claim timeout).
  pool ??= createPool(data.databaseUrl, {
    max: data.connections,
    applicationName: 'surge-worker',
    sessionTimeoutMs: data.retryBudgetMs,
  });
  const outcome = await applyBatch(pool, task, encoded, { retryBudgetMs: data.retryBudgetMs });
  outcome.stats.encodeMs = encodeMs;
  return outcome;
}
