// Reads how far the consumer group is behind on every shard stream: the figures behind the lag
// exporter and `surge status`. docs/metrics.md explains each field and the NULL-lag rule.
//
// Per shard, round 1 is one MULTI (a consistent instant; every key carries the shard's hash tag,
// so on Redis Cluster it runs on the node that owns the shard):
//   XINFO STREAM · XINFO GROUPS · XPENDING <group> (summary) · XINFO CONSUMERS <group> · XLEN <dlq>
// Round 2 needs the group's last-delivered-id L: XRANGE key (L + COUNT 1 (the oldest undelivered
// entry) and, only when Redis reports lag as NULL, a count of the entries after L (below).
import { Cluster } from 'ioredis';
import { dlqKey, entryIdMillis, GROUP, streamKey } from '../common/keys.js';
import type { RedisClient } from '../common/redis.js';

export interface ConsumerLag {
  name: string;
  /** Entries delivered to this consumer and not yet acknowledged. */
  pending: number;
  /** Milliseconds since the consumer last tried to read or claim (XINFO CONSUMERS `idle`). */
  idleMs: number;
}

/**
 * How `undelivered` was obtained:
 * - `redis`: Redis' own `lag` (exact whenever Redis reports it).
 * - `counted`: Redis' lag was NULL; the entries after last-delivered-id were counted.
 * - `complement`: Redis' lag was NULL and more than `countLimit` entries follow last-delivered-id;
 *   undelivered = length − (entries at or before last-delivered-id, counted).
 * - `lower_bound`: both sides exceed `countLimit`; `undelivered` is `countLimit`, a lower bound.
 */
export type UndeliveredSource = 'redis' | 'counted' | 'complement' | 'lower_bound';

export interface GroupLag {
  name: string;
  lastDeliveredId: string;
  /** XINFO GROUPS `entries-read` (null when Redis does not know it, e.g. after SETID). */
  entriesRead: number | null;
  /** XINFO GROUPS `lag` exactly as Redis reports it: entries not yet delivered, or null. */
  lag: number | null;
  /** Entries after last-delivered-id: `lag` when Redis knows it, else counted (see `undeliveredSource`). */
  undelivered: number;
  undeliveredSource: UndeliveredSource;
  /** Entries delivered and not yet acknowledged (the group's PEL). */
  pending: number;
  /** undelivered + pending: entries not yet applied. */
  backlog: number;
  oldestUndeliveredId: string | null;
  /** Age of the oldest undelivered entry, from its ID's milliseconds; 0 when none. */
  oldestUndeliveredAgeSeconds: number;
  oldestPendingId: string | null;
  /** Age of the oldest pending entry, from its ID's milliseconds (receive time, not delivery time); 0 when none. */
  oldestPendingAgeSeconds: number;
  consumers: ConsumerLag[];
}

export interface ShardLag {
  shard: number;
  stream: string;
  /** False when the stream key does not exist (no group either). */
  exists: boolean;
  /** XLEN. */
  length: number;
  lastGeneratedId: string | null;
  /** XINFO STREAM `entries-added` (every entry ever added). */
  entriesAdded: number | null;
  /** XINFO STREAM `max-deleted-entry-id` (XDEL's high-water mark; deletions after L make lag NULL). */
  maxDeletedEntryId: string | null;
  dlqStream: string;
  /** XLEN of the shard's dead-letter stream. */
  dlqDepth: number;
  /** The `appliers` group; null when it does not exist (no worker has started yet). */
  group: GroupLag | null;
}

export interface RedisMemory {
  /** host:port of the node. */
  node: string;
  usedBytes: number;
  /** 0 = no limit. */
  maxBytes: number;
}

export interface LagSnapshot {
  /** The `now` the ages were computed against (ms since the epoch). */
  at: number;
  group: string;
  shards: ShardLag[];
  /** One entry per node (per master on Cluster). */
  memory: RedisMemory[];
}

export interface ReadLagOptions {
  /** Most entries counted on either side of last-delivered-id when Redis' lag is NULL. Default 100,000. */
  countLimit?: number;
  /** Entries counted per Lua call (the server is busy for one page at a time). Default 1,000. */
  pageSize?: number;
}

const DEFAULT_COUNT_LIMIT = 100_000;
const DEFAULT_PAGE_SIZE = 1_000;

// Counts the entries of KEYS[1] in (ARGV[1], ARGV[2]] (ARGV[1] = '-' for "from the start"), at
// most ARGV[3] of them; returns {count, last ID seen}. Only the count crosses the network.
const COUNT_PAGE = `
local first = ARGV[1]
if first ~= '-' then first = '(' .. first end
local r = redis.call('XRANGE', KEYS[1], first, ARGV[2], 'COUNT', tonumber(ARGV[3]))
local n = #r
if n == 0 then return {0, ARGV[1]} end
return {n, r[n][1]}
`;

/**
 * Counts entries with IDs in (after, until] (after = '-' means from the first entry), paging
 * `pageSize` at a time, stopping once more than `limit` are seen. Returns the count, or
 * undefined when it exceeds `limit`.
 */
async function countRange(
  redis: RedisClient,
  key: string,
  after: string,
  until: string,
  limit: number,
  pageSize: number,
): Promise<number | undefined> {
  let total = 0;
  let cursor = after;
  for (;;) {
    const [n, last] = (await redis.eval(COUNT_PAGE, 1, key, cursor, until, pageSize)) as [number, string];
    total += n;
    if (total > limit) return undefined;
    if (n < pageSize) return total;
    cursor = last;
  }
}

type Flat = Array<unknown>;

/** A flat [k1, v1, k2, v2, …] reply as a map. */
function fields(reply: unknown): Map<string, unknown> {
  const m = new Map<string, unknown>();
  if (!Array.isArray(reply)) return m;
  for (let i = 0; i + 1 < reply.length; i += 2) m.set(String(reply[i]), reply[i + 1]);
  return m;
}

function num(v: unknown): number {
  const n = Number(v);
  return Number.isFinite(n) ? n : 0;
}

function numOrNull(v: unknown): number | null {
  if (v === null || v === undefined) return null;
  const n = Number(v);
  return Number.isFinite(n) ? n : null;
}

function ageSeconds(id: string | null, now: number): number {
  if (id === null) return 0;
  return Math.max(0, (now - entryIdMillis(id)) / 1000);
}

/** The value of one exec() reply; its error is rethrown unless it matches `tolerate` (then undefined). */
function result(pair: [Error | null, unknown] | undefined, tolerate: RegExp): unknown {
  if (!pair) throw new Error('missing MULTI reply');
  const [err, value] = pair;
  if (err) {
    if (tolerate.test(err.message)) return undefined;
    throw err;
  }
  return value;
}

const NO_STREAM = /no such key/i;
const NO_GROUP = /NOGROUP|no such key/i;

async function readShard(
  redis: RedisClient,
  prefix: string,
  shard: number,
  now: number,
  options: Required<ReadLagOptions>,
): Promise<ShardLag> {
  const stream = streamKey(prefix, shard);
  const dlqStream = dlqKey(prefix, shard);
  // XLEN <dlq> goes first: it is the command ioredis can route by key (it knows no key for XINFO),
  // and every key here shares the shard's hash tag, so the whole MULTI runs on the shard's node.
  const replies = await redis
    .multi()
    .xlen(dlqStream)
    .xinfo('STREAM', stream)
    .xinfo('GROUPS', stream)
    .xpending(stream, GROUP)
    .xinfo('CONSUMERS', stream, GROUP)
    .exec();
  if (!replies) throw new Error(`MULTI on ${stream} was aborted`);
  const dlqDepth = num(result(replies[0], NO_STREAM));
  const info = result(replies[1], NO_STREAM);
  const base: ShardLag = {
    shard,
    stream,
    exists: info !== undefined,
    length: 0,
    lastGeneratedId: null,
    entriesAdded: null,
    maxDeletedEntryId: null,
    dlqStream,
    dlqDepth,
    group: null,
  };
  if (info === undefined) return base;
  const s = fields(info);
  base.length = num(s.get('length'));
  base.lastGeneratedId = s.has('last-generated-id') ? String(s.get('last-generated-id')) : null;
  base.entriesAdded = numOrNull(s.get('entries-added'));
  base.maxDeletedEntryId = s.has('max-deleted-entry-id') ? String(s.get('max-deleted-entry-id')) : null;

  const groups = (result(replies[2], NO_STREAM) as Flat | undefined) ?? [];
  const g = groups.map(fields).find((m) => String(m.get('name')) === GROUP);
  if (!g) return base;
  const lastDeliveredId = String(g.get('last-delivered-id') ?? '0-0');
  const lag = numOrNull(g.get('lag'));
  const pending = num(g.get('pending'));

  const summary = result(replies[3], NO_GROUP) as [unknown, unknown, unknown, unknown] | undefined;
  const oldestPendingId = summary && summary[1] !== null && summary[1] !== undefined ? String(summary[1]) : null;
  const consumersReply = (result(replies[4], NO_GROUP) as Flat | undefined) ?? [];
  const consumers = consumersReply.map((c) => {
    const m = fields(c);
    return { name: String(m.get('name')), pending: num(m.get('pending')), idleMs: num(m.get('idle')) };
  });
  consumers.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));

  const first = (await redis.xrange(stream, `(${lastDeliveredId}`, '+', 'COUNT', 1))[0];
  const oldestUndeliveredId = first ? first[0] : null;

  let undelivered: number;
  let undeliveredSource: UndeliveredSource;
  if (lag !== null) {
    undelivered = lag;
    undeliveredSource = 'redis';
  } else if (oldestUndeliveredId === null) {
    undelivered = 0;
    undeliveredSource = 'counted';
  } else {
    const after = await countRange(redis, stream, lastDeliveredId, '+', options.countLimit, options.pageSize);
    if (after !== undefined) {
      undelivered = after;
      undeliveredSource = 'counted';
    } else {
      const atOrBefore = await countRange(redis, stream, '-', lastDeliveredId, options.countLimit, options.pageSize);
      if (atOrBefore !== undefined) {
        undelivered = Math.max(0, base.length - atOrBefore);
        undeliveredSource = 'complement';
      } else {
        undelivered = options.countLimit;
        undeliveredSource = 'lower_bound';
      }
    }
  }

  base.group = {
    name: GROUP,
    lastDeliveredId,
    entriesRead: numOrNull(g.get('entries-read')),
    lag,
    undelivered,
    undeliveredSource,
    pending,
    backlog: undelivered + pending,
    oldestUndeliveredId,
    oldestUndeliveredAgeSeconds: ageSeconds(oldestUndeliveredId, now),
    oldestPendingId,
    oldestPendingAgeSeconds: ageSeconds(oldestPendingId, now),
    consumers,
  };
  return base;
}

function parseInfo(text: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of text.split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i > 0 && !line.startsWith('#')) m.set(line.slice(0, i), line.slice(i + 1));
  }
  return m;
}

/** INFO memory of the node (single node) or of every master (Cluster). */
async function readRedisMemory(redis: RedisClient): Promise<RedisMemory[]> {
  const nodes = redis instanceof Cluster ? redis.nodes('master') : [redis];
  return await Promise.all(
    nodes.map(async (node) => {
      const info = parseInfo(await node.info('memory'));
      return {
        node: `${node.options.host ?? 'localhost'}:${node.options.port ?? 6379}`,
        usedBytes: num(info.get('used_memory')),
        maxBytes: num(info.get('maxmemory')),
      };
    }),
  );
}

/**
 * One reading of every shard of the deployment (`prefix`, `shards`) plus Redis memory. Ages are
 * computed against `now` (ms; default: the local clock when the reading starts — entry IDs carry
 * the Redis server's clock, so keep the clocks in sync; ages are clamped at 0).
 */
export async function readLag(
  redis: RedisClient,
  prefix: string,
  shards: number,
  now: number = Date.now(),
  options: ReadLagOptions = {},
): Promise<LagSnapshot> {
  const opts: Required<ReadLagOptions> = {
    countLimit: options.countLimit ?? DEFAULT_COUNT_LIMIT,
    pageSize: options.pageSize ?? DEFAULT_PAGE_SIZE,
  };
  if (!(opts.countLimit >= 1 && opts.pageSize >= 1)) throw new RangeError('countLimit and pageSize must be ≥ 1');
  const [shardLags, memory] = await Promise.all([
    Promise.all(Array.from({ length: shards }, (_, i) => readShard(redis, prefix, i, now, opts))),
    readRedisMemory(redis),
  ]);
  return { at: now, group: GROUP, shards: shardLags, memory };
}
