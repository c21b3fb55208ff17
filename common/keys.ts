// Redis key names: the one place they are spelled. Everything one Lua call touches for shard i
// carries the hash tag `{s<i>}` so the same code works on Redis Cluster.

export const GROUP = 'appliers';

function shardTag(shard: number): string {
  return `{s${shard}}`;
}

export function streamKey(prefix: string, shard: number): string {
  return `${prefix}:${shardTag(shard)}:orders`;
}

export function dlqKey(prefix: string, shard: number): string {
  return `${prefix}:${shardTag(shard)}:dlq`;
}

export function idemKey(prefix: string, shard: number, clientId: string, idempotencyKey: string): string {
  return `${prefix}:${shardTag(shard)}:idem:${clientId}:${idempotencyKey}`;
}

/**
 * Shard i's outcome stream: each order's final state after COMMIT (workers/outcomes.ts), the
 * outbox downstream services read with their own consumer group and ingest's long-poll watches.
 */
export function outcomeKey(prefix: string, shard: number): string {
  return `${prefix}:${shardTag(shard)}:outcomes`;
}

export function allOutcomeKeys(prefix: string, shards: number): string[] {
  return Array.from({ length: shards }, (_, i) => outcomeKey(prefix, i));
}

export function allStreamKeys(prefix: string, shards: number): string[] {
  return Array.from({ length: shards }, (_, i) => streamKey(prefix, i));
}

/** Inverse of streamKey: the shard number of a stream key, or undefined. */
export function shardOfStream(prefix: string, key: string): number | undefined {
  const head = `${prefix}:{s`;
  if (!key.startsWith(head) || !key.endsWith('}:orders')) return undefined;
  const n = Number(key.slice(head.length, key.length - '}:orders'.length));
  return Number.isInteger(n) && n >= 0 ? n : undefined;
}

/**
 * shard = FNV-1a-32(client + NUL + key) mod N. Stable across processes and versions: a retry
 * of the same order lands on the same shard and so meets its idempotency record.
 */
export function shardFor(clientId: string, idempotencyKey: string, shards: number): number {
  // The two strings are hashed in turn rather than joined: no string to build on the hot path.
  let h = 0x811c9dc5;
  for (let i = 0; i < clientId.length; i++) h = Math.imul(h ^ clientId.charCodeAt(i), 0x01000193) >>> 0;
  h = Math.imul(h, 0x01000193) >>> 0; // the NUL between them (h ^ 0 = h)
  for (let i = 0; i < idempotencyKey.length; i++) h = Math.imul(h ^ idempotencyKey.charCodeAt(i), 0x01000193) >>> 0;
  return h % shards;
}

/** Milliseconds part of a stream entry ID: the time Redis received the entry. */
export function entryIdMillis(id: string): number {
  const dash = id.indexOf('-');
  return Number(dash < 0 ? id : id.slice(0, dash));
}

/** Consumer name of this process: `<host>-<pid>`. */
export function consumerName(hostname: string, pid: number): string {
  return `${hostname}-${pid}`;
}

/** Maintenance's cursor over shard i's DLQ stream: entries up to it have a `dead_letters` row. */
export function dlqSyncedKey(prefix: string, shard: number): string {
  return `${prefix}:${shardTag(shard)}:dlq:synced`;
}
