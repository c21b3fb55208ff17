// Where `:batch` bodies are prepared. Parsing, validating and fingerprinting 1,000 orders holds
// the event loop for milliseconds; with SURGE_INGEST_BATCH_THREADS > 0, bodies of at least
// THREAD_MIN_BODY_BYTES go to a piscina thread instead, so the main thread only talks to clients
// and Redis (and the batch's parsed objects are never on its heap). Smaller bodies are prepared
// in place: the hop to a thread (each prepared order is cloned back) would cost more than it
// saves (figures: docs/performance.md, bench/results/HISTORY.md).
import { Piscina } from 'piscina';
import type { Config } from '../common/config.js';
import type { IngestMetrics } from '../metrics/definitions.js';
import type { BatchTask } from './batch-thread.js';
import { type PreparedBatch, prepareBatch } from './requests.js';

/** Bodies from this size on (~100 typical orders) are prepared on a thread when threads are on. */
export const THREAD_MIN_BODY_BYTES = 16 * 1024;

export class BatchPreparer {
  private readonly pool: Piscina<BatchTask, PreparedBatch> | undefined;

  constructor(
    private readonly config: Pick<Config, 'redisPrefix' | 'shards' | 'ingestBatchThreads' | 'shutdownTimeoutMs'>,
    private readonly metrics?: Pick<IngestMetrics, 'batchesPrepared'>,
  ) {
    const threads = config.ingestBatchThreads;
    this.pool =
      threads > 0
        ? new Piscina<BatchTask, PreparedBatch>({
            filename: new URL('./batch-thread.js', import.meta.url).href,
            // Started on the first large batch, kept for a while: no thread for a process that never sees one.
            minThreads: 0,
            maxThreads: threads,
            idleTimeout: 10 * 60 * 1000,
            // A task is one request's body, already read; the request waits for it. Queue without a
            // bound of our own rather than answer 503: the number of open requests bounds it.
            maxQueue: Number.POSITIVE_INFINITY,
            closeTimeout: config.shutdownTimeoutMs,
          })
        : undefined;
  }

  prepare = async (body: Buffer, contentType: string, clientId: string): Promise<PreparedBatch> => {
    const { redisPrefix, shards } = this.config;
    if (!this.pool || body.byteLength < THREAD_MIN_BODY_BYTES) {
      this.metrics?.batchesPrepared.inc({ on: 'main' });
      return prepareBatch(body, contentType, clientId, { redisPrefix, shards });
    }
    this.metrics?.batchesPrepared.inc({ on: 'thread' });
    return this.pool.run({ body, contentType, clientId, redisPrefix, shards });
  };

  async close(): Promise<void> {
    await this.pool?.destroy();
  }
}
