// Forms one batch of new entries from blocking reads: a full batch goes at once; a partial one
// waits up to the linger for more (further reads with the remaining time as BLOCK). With no
// linger, a batch is whatever has accumulated since the last read: it grows with load while the
// in-flight limit holds the reader back.
import type { StreamEntry } from './redis-ops.js';

/** Reads up to `count` new entries, blocking up to `blockMs` for the first. */
export type ReadNew = (count: number, blockMs: number) => Promise<StreamEntry[]>;

export interface BatchShape {
  batchSize: number;
  lingerMs: number;
  /** Longest block for the first entry. */
  blockMs: number;
  stopped(): boolean;
}

export async function formBatch(read: ReadNew, shape: BatchShape): Promise<StreamEntry[]> {
  const got = await read(shape.batchSize, shape.blockMs);
  if (got.length === 0 || got.length >= shape.batchSize || shape.lingerMs === 0) return got;
  const deadline = Date.now() + shape.lingerMs;
  while (got.length < shape.batchSize && !shape.stopped()) {
    const left = deadline - Date.now();
    if (left < 1) break;
    for (const e of await read(shape.batchSize - got.length, left)) got.push(e);
  }
  return got;
}
