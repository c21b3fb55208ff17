// Stream plumbing shared by ingest, workers, the lag exporter and maintenance.
import { allStreamKeys, GROUP } from './keys.js';
import type { RedisClient } from './redis.js';

/**
 * Creates the consumer group on every shard stream (and the stream itself) if missing.
 * The group starts at ID 0, never `$`: entries written before the group existed must still be
 * applied. Safe to call from every process at every start.
 */
export async function ensureGroups(redis: RedisClient, prefix: string, shards: number): Promise<void> {
  await Promise.all(
    allStreamKeys(prefix, shards).map(async (key) => {
      try {
        await redis.xgroup('CREATE', key, GROUP, '0', 'MKSTREAM');
      } catch (e) {
        if (!String((e as Error).message).startsWith('BUSYGROUP')) throw e;
      }
    }),
  );
}

/** What a dead-letter stream entry carries besides the original entry's fields. */
export interface DeadLetterInfo {
  /** The shard stream the entry came from. */
  stream: string;
  /** Its ID there. */
  entryId: string;
  /** Short machine-readable reason: `undecodable`, `permanent_error`, `max_deliveries`. */
  reason: string;
  /** Human-readable detail (error message). */
  message: string;
  sqlstate?: string;
  deliveries: number;
}

/**
 * Fields of a DLQ stream entry: the original fields (v, c, k, o when present) followed by
 * `dl_stream`, `dl_id`, `dl_reason`, `dl_message`, `dl_sqlstate`, `dl_deliveries`, `dl_at`.
 */
export function dlqEntryFields(original: readonly string[] | null, info: DeadLetterInfo): string[] {
  return [
    ...(original ?? []),
    'dl_stream',
    info.stream,
    'dl_id',
    info.entryId,
    'dl_reason',
    info.reason,
    'dl_message',
    info.message,
    'dl_sqlstate',
    info.sqlstate ?? '',
    'dl_deliveries',
    String(info.deliveries),
    'dl_at',
    new Date().toISOString(),
  ];
}
