// piscina thread of ingest: prepares `:batch` bodies (parse, validate, canonical text,
// fingerprint, keys) off the event loop. Pure CPU work; no connections (SEMANTICS 5.1).
import { type PreparedBatch, prepareBatch } from './requests.js';

export interface BatchTask {
  body: Uint8Array;
  contentType: string;
  clientId: string;
  redisPrefix: string;
  shards: number;
}

export default function prepare(task: BatchTask): PreparedBatch {
  return prepareBatch(task.body, task.contentType, task.clientId, {
    redisPrefix: task.redisPrefix,
    shards: task.shards,
  });
}
