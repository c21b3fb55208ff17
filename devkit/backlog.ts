// How much of the shard streams is not yet applied, read straight from Redis: tests and
// benchmarks wait on it to know the workers are done.
import { allStreamKeys, GROUP } from '../common/keys.js';
import type { RedisClient } from '../common/redis.js';

function infoMap(raw: unknown[]): Map<string, unknown> {
  const m = new Map<string, unknown>();
  for (let i = 0; i + 1 < raw.length; i += 2) m.set(String(raw[i]), raw[i + 1]);
  return m;
}

/** Pending entries of the group plus 1 per shard that still has undelivered entries (0 = drained). */
export async function backlog(redis: RedisClient, prefix: string, shards: number): Promise<number> {
  let total = 0;
  for (const key of allStreamKeys(prefix, shards)) {
    const groups = (await redis.xinfo('GROUPS', key)) as unknown[][];
    const g = groups.map(infoMap).find((m) => m.get('name') === GROUP);
    if (!g) throw new Error(`no group on ${key}`);
    const next = await redis.xrange(key, `(${String(g.get('last-delivered-id'))}`, '+', 'COUNT', 1);
    total += Number(g.get('pending')) + next.length;
  }
  return total;
}
