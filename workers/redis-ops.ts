// The worker's Redis Streams calls, each for one shard stream (one slot on Redis Cluster).
import { GROUP } from '../common/keys.js';
import type { RedisClient } from '../common/redis.js';

/** An entry as Redis returns it; fields are null when the payload was deleted while pending. */
export type StreamEntry = [id: string, fields: string[] | null];

function entries(raw: unknown): StreamEntry[] {
  if (!Array.isArray(raw)) return [];
  return raw.map((e) => {
    const [id, fields] = e as [string, string[] | null];
    return [id, Array.isArray(fields) ? fields : null];
  });
}

/**
 * XREADGROUP on one stream. `id` is `>` for new entries or an ID to re-read this consumer's own
 * pending entries after it. `blockMs` undefined = do not block.
 */
export async function readGroup(
  redis: RedisClient,
  key: string,
  consumer: string,
  id: string,
  count: number,
  blockMs?: number,
): Promise<StreamEntry[]> {
  const args: Array<string | number> = ['GROUP', GROUP, consumer, 'COUNT', count];
  if (blockMs !== undefined) args.push('BLOCK', Math.max(1, Math.round(blockMs)));
  args.push('STREAMS', key, id);
  const reply = (await redis.call('XREADGROUP', ...args)) as Array<[string, unknown]> | null;
  return reply && reply.length > 0 ? entries(reply[0]?.[1]) : [];
}

export interface AutoClaimPage {
  next: string;
  entries: StreamEntry[];
  /** IDs that were pending but whose payload is gone (Redis ≥ 7.0): lost. */
  deleted: string[];
}

/** One XAUTOCLAIM page (SEMANTICS 2.3): claims entries idle ≥ minIdleMs for `consumer`. */
export async function autoClaim(
  redis: RedisClient,
  key: string,
  consumer: string,
  minIdleMs: number,
  cursor: string,
  count: number,
): Promise<AutoClaimPage> {
  const reply = (await redis.xautoclaim(key, GROUP, consumer, minIdleMs, cursor, 'COUNT', count)) as [
    string,
    unknown,
    unknown?,
  ];
  return {
    next: reply[0],
    entries: entries(reply[1]),
    deleted: Array.isArray(reply[2]) ? (reply[2] as string[]) : [],
  };
}

/** Delivery counts of pending entries (XPENDING per ID, pipelined). Entries no longer pending count 1. */
export async function deliveryCounts(
  redis: RedisClient,
  key: string,
  ids: readonly string[],
): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  if (ids.length === 0) return out;
  const pipe = redis.pipeline();
  for (const id of ids) pipe.xpending(key, GROUP, id, id, 1);
  const replies = (await pipe.exec()) ?? [];
  ids.forEach((id, i) => {
    const [err, rows] = replies[i] ?? [null, null];
    if (err) throw err;
    const row = (rows as Array<[string, string, number, number]> | null)?.[0];
    out.set(id, row ? Number(row[3]) : 1);
  });
  return out;
}

/**
 * Moves one entry to the DLQ stream: XACK the original and, only if it was still pending, XADD
 * the dead-letter entry — atomically, in one Lua call on the shard's slot. (SEMANTICS 3.1 says
 * MULTI; Lua does the same atomically and also skips the XADD when another consumer already
 * dead-lettered and acked the entry, so the DLQ never holds it twice.) Returns true if added.
 */
const DEAD_LETTER_LUA = `
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
  return 1
end
return 0`;

export async function deadLetterEntry(
  redis: RedisClient,
  key: string,
  dlq: string,
  id: string,
  dlqFields: readonly string[],
): Promise<boolean> {
  return (await redis.eval(DEAD_LETTER_LUA, 2, key, dlq, GROUP, id, ...dlqFields)) === 1;
}
