// A piscina thread (placement `threads`). Every task encodes one batch and applies it over the
// thread's own PostgreSQL connections, and returns the outcome.
// Threads never touch metrics: their figures travel back in the result (SEMANTICS 4.1).
import { workerData } from 'piscina';
import { createPool, type Pool } from '../common/db.js';
import { type ApplyTask, type BatchOutcome, encodeAndApply } from './apply.js';

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
  // A frozen worker's locks are released by PostgreSQL after the retry budget (< claim timeout).
  pool ??= createPool(data.databaseUrl, {
    max: data.connections,
    applicationName: 'surge-worker',
    sessionTimeoutMs: data.retryBudgetMs,
  });
  return encodeAndApply(pool, task, { retryBudgetMs: data.retryBudgetMs });
}
