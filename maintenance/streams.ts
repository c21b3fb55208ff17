// Stream maintenance: safe trimming (SEMANTICS 2.6) and removal of idle consumers (SEMANTICS 3.4).
// Both decisions are made inside one Lua call on one stream key, so nothing can change between
// reading the group state and acting on it (and one key = one slot on Redis Cluster).
import { allOutcomeKeys, allStreamKeys, GROUP } from '../common/keys.js';
import type { RedisClient } from '../common/redis.js';

// Lua: one entry of an XINFO GROUPS or CONSUMERS reply (a flat name, value, … array) as a table.
const XINFO_FIELDS = `
local function fields(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end
`;

// The trim point T of a stream: per group the smallest pending ID, else its last-delivered-id;
// T = the minimum over groups. `XTRIM MINID ~ T` then removes only entries below T, which every
// group has delivered and acknowledged. No group → no trim (nobody has read anything). ARGV[2], when
// not empty, is a retention floor (outcome streams): T is raised to it, group or not. IDs are
// compared as (ms, seq) pairs of decimal strings, exactly, without floating point.
const SAFE_TRIM = `${XINFO_FIELDS}
local function cmp(a, b)
  local da, db = string.find(a, '-', 1, true), string.find(b, '-', 1, true)
  local am, as = string.sub(a, 1, da - 1), string.sub(a, da + 1)
  local bm, bs = string.sub(b, 1, db - 1), string.sub(b, db + 1)
  if #am ~= #bm then return #am < #bm and -1 or 1 end
  if am ~= bm then return am < bm and -1 or 1 end
  if #as ~= #bs then return #as < #bs and -1 or 1 end
  if as ~= bs then return as < bs and -1 or 1 end
  return 0
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, ''} end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
local t = nil
for _, raw in ipairs(groups) do
  local g = fields(raw)
  local candidate = g['last-delivered-id']
  if g['pending'] > 0 then candidate = redis.call('XPENDING', KEYS[1], g['name'])[2] end
  if t == nil or cmp(candidate, t) < 0 then t = candidate end
end
local floor = ARGV[2]
if floor ~= '' and (t == nil or cmp(floor, t) > 0) then t = floor end
if t == nil then return {0, ''} end
if t == '0-0' then return {0, t} end
local removed = redis.call('XTRIM', KEYS[1], 'MINID', '~', t, 'LIMIT', tonumber(ARGV[1]))
return {removed, t}
`;

// Removes consumers of the group idle for at least ARGV[2] ms that hold no pending entries.
// The pending check and DELCONSUMER happen in one call: a consumer with pending entries is never
// deleted (its entries would be orphaned). Returns the removed names.
const DELETE_IDLE_CONSUMERS = `${XINFO_FIELDS}
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok then return {} end
local removed = {}
local minIdle = tonumber(ARGV[2])
for _, raw in ipairs(consumers) do
  local c = fields(raw)
  if c['pending'] == 0 and c['idle'] >= minIdle then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], c['name'])
    removed[#removed + 1] = c['name']
  end
end
return removed
`;

export interface TrimResult {
  stream: string;
  /** Entries removed. */
  trimmed: number;
  /** The trim point (entries below it were eligible); '' when the stream has no group. */
  trimPoint: string;
}

export interface TrimOptions {
  /** Most entries one XTRIM may remove (its LIMIT; bounds the time Redis spends per call). */
  limitPerCall?: number;
  /** Entries with an ID older than this ID are trimmed whatever the groups have read. */
  floor?: string;
  /** Most XTRIM calls per stream per run. */
  maxCallsPerStream?: number;
}

/** Safe trim of one stream; loops while whole nodes are being removed, within the bounds. */
export async function safeTrimStream(
  redis: RedisClient,
  stream: string,
  options: TrimOptions = {},
): Promise<TrimResult> {
  const limit = options.limitPerCall ?? 10_000;
  const maxCalls = options.maxCallsPerStream ?? 100;
  let trimmed = 0;
  let trimPoint = '';
  for (let call = 0; call < maxCalls; call++) {
    const [removed, t] = (await redis.eval(SAFE_TRIM, 1, stream, String(limit), options.floor ?? '')) as [
      number,
      string,
    ];
    trimmed += removed;
    trimPoint = t;
    if (removed < limit) break;
  }
  return { stream, trimmed, trimPoint };
}

/**
 * Safe trim of every shard stream and every outcome stream. An outcome stream is trimmed below
 * what each downstream consumer group has read and acknowledged, and in any case below the
 * retention (`outcomeRetentionMs`): it is an outbox that nobody may read, and must not grow
 * without bound. The order streams have no such floor: their entries are orders not yet applied.
 */
export async function trimStreams(
  redis: RedisClient,
  prefix: string,
  shards: number,
  options: TrimOptions & { outcomeRetentionMs: number },
): Promise<TrimResult[]> {
  const { outcomeRetentionMs, ...trim } = options;
  const out: TrimResult[] = [];
  for (const stream of allStreamKeys(prefix, shards)) out.push(await safeTrimStream(redis, stream, trim));
  const floor = `${Math.max(0, Date.now() - outcomeRetentionMs)}-0`;
  for (const stream of allOutcomeKeys(prefix, shards))
    out.push(await safeTrimStream(redis, stream, { ...trim, floor }));
  return out;
}

export interface ConsumerInfo {
  name: string;
  pending: number;
  idleMs: number;
}

export async function listConsumers(
  redis: RedisClient,
  stream: string,
  group: string = GROUP,
): Promise<ConsumerInfo[]> {
  let raw: unknown[];
  try {
    raw = (await redis.xinfo('CONSUMERS', stream, group)) as unknown[];
  } catch (e) {
    if (/no such key|NOGROUP/i.test((e as Error).message)) return [];
    throw e;
  }
  return raw.map((entry) => {
    const flat = entry as Array<string | number>;
    const m = new Map<string, string | number>();
    for (let i = 0; i + 1 < flat.length; i += 2) {
      const value = flat[i + 1];
      if (value !== undefined) m.set(String(flat[i]), value);
    }
    return { name: String(m.get('name')), pending: Number(m.get('pending')), idleMs: Number(m.get('idle')) };
  });
}

export interface ConsumerCleanupOptions {
  /** A consumer idle at least this long is a removal candidate. */
  idleMs: number;
  /** A consumer idle less than this counts as live (may receive claimed entries). */
  liveMs: number;
  group?: string;
}

export interface ConsumerCleanupResult {
  stream: string;
  removed: string[];
  /** Pending entries moved from idle consumers to a live one. */
  claimed: number;
  /** Idle consumers kept because they hold pending entries and no live consumer could take them. */
  keptWithPending: string[];
}

/**
 * Claims the pending entries of idle consumers to the most recently active live consumer
 * (XCLAIM … IDLE keeps their idle time, so that consumer's next XAUTOCLAIM picks them up at
 * once), then removes every idle consumer left with no pending entries. Without a live consumer
 * the idle consumer keeps its entries and is not removed (workers claim them when they start).
 */
export async function cleanupConsumers(
  redis: RedisClient,
  stream: string,
  options: ConsumerCleanupOptions,
): Promise<ConsumerCleanupResult> {
  const group = options.group ?? GROUP;
  const consumers = await listConsumers(redis, stream, group);
  const live = consumers.filter((c) => c.idleMs < options.liveMs).sort((a, b) => a.idleMs - b.idleMs)[0];
  const result: ConsumerCleanupResult = { stream, removed: [], claimed: 0, keptWithPending: [] };
  for (const c of consumers) {
    if (c.idleMs < options.idleMs || c.pending === 0) continue;
    if (!live) {
      result.keptWithPending.push(c.name);
      continue;
    }
    for (;;) {
      // Extended XPENDING filtered by consumer and idle time (SEMANTICS 2.4): only entries this
      // idle consumer has not touched for idleMs.
      const page = (await redis.xpending(stream, group, 'IDLE', options.idleMs, '-', '+', 100, c.name)) as Array<
        [string, string, number, number]
      >;
      if (page.length === 0) break;
      const ids = page.map((p) => p[0]);
      const claimed = (await redis.xclaim(
        stream,
        group,
        live.name,
        options.idleMs,
        ...ids,
        'IDLE',
        options.idleMs,
        'JUSTID',
      )) as string[];
      result.claimed += claimed.length;
      if (claimed.length === 0) break;
    }
  }
  result.removed = (await redis.eval(DELETE_IDLE_CONSUMERS, 1, stream, group, String(options.idleMs))) as string[];
  const removedSet = new Set(result.removed);
  result.keptWithPending = result.keptWithPending.filter((n) => !removedSet.has(n));
  return result;
}
