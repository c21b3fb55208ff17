// The Lua scripts of the ingest path. Each call touches only keys of one shard (the record and
// the stream share the `{s<i>}` hash tag), so they run unchanged on Redis Cluster. ioredis
// `defineCommand` sends them with EVALSHA and falls back to EVAL after NOSCRIPT (e.g. after a
// Redis restart emptied the script cache).
import type { Result } from 'ioredis';
import type { RedisClient } from '../common/redis.js';

/** Record states: `done` = answered 202 (replayable); `pending` = durable mode, not yet confirmed. */
export const STATE_DONE = 'done';
export const STATE_PENDING = 'pending';

/**
 * The accept call: for each order, one after the other in the order given, check its
 * idempotency record; if absent, XADD the entry and store the record (fingerprint, state, the
 * exact 202 body) with a TTL. Each order is handled by exactly one call, atomically (a script
 * runs alone), so the check and the XADD cannot interleave with another writer (SEMANTICS 1).
 * One call carries the orders of one shard that are ready in the same event-loop turn — a
 * single POST alone at low load, several concurrent POSTs under load, up to
 * ORDERS_PER_SCRIPT_CALL of a `:batch` — so a surge costs one EVALSHA per group, not per order.
 * A key repeated within a call meets the record the earlier order stored.
 *
 * KEYS[1] shard stream  KEYS[2..n+1] the orders' idempotency records (hash: f = fingerprint,
 * s = state, b = 202 body), all on the stream's shard
 * ARGV[1] record TTL (s)  ARGV[2] state to store  ARGV[3] order_ref prefix (`s<i>-`)
 * ARGV[4] entry field v (schema version)
 * then 5 per order: fingerprint, rest of the 202 body after `"order_ref":"…",`, entry fields
 * c (client), k (key), o (order)
 *
 * Returns a flat list, two per order: outcome, body — `new` (entry added; body = the 202 body),
 * `replay` (body = the stored 202 body), `mismatch` (another fingerprint), `pending` (same key
 * still being confirmed), or `error` (body = Redis's error) when a command failed for that
 * order; the other orders go on.
 */
export const ACCEPT_LUA = `
local ttl, state, refPrefix, v = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local out = {}
local n = 0
local a = 5
for i = 2, #KEYS do
  local fp = ARGV[a]
  local outcome, body = 'error', ''
  local rec = redis.pcall('HMGET', KEYS[i], 'f', 's', 'b')
  if rec.err then
    body = rec.err
  elseif rec[1] then
    if rec[1] ~= fp then outcome = 'mismatch'
    elseif rec[2] ~= '${STATE_DONE}' then outcome = 'pending'
    else outcome, body = 'replay', rec[3] end
  else
    local id = redis.pcall('XADD', KEYS[1], '*', 'v', v, 'c', ARGV[a + 2], 'k', ARGV[a + 3], 'o', ARGV[a + 4])
    if type(id) == 'table' then
      body = id.err
    else
      local b = '{"order_ref":"' .. refPrefix .. id .. '",' .. ARGV[a + 1]
      local r = redis.pcall('HSET', KEYS[i], 'f', fp, 's', state, 'b', b)
      if type(r) == 'table' and r.err then body = r.err else
        r = redis.pcall('EXPIRE', KEYS[i], ttl)
        if type(r) == 'table' and r.err then body = r.err else outcome, body = 'new', b end
      end
    end
  end
  out[n + 1] = outcome
  out[n + 2] = body
  n = n + 2
  a = a + 5
end
return out
`;

/** Arguments per order in ACCEPT_LUA (after the 4 shared ones). */
export const ACCEPT_ARGS_PER_ORDER = 5;

/** Durable mode, after WAITAOF/WAIT confirmed: mark our pending record done with the full TTL. */
export const CONFIRM_LUA = `
if redis.call('HGET', KEYS[1], 'b') == ARGV[1] then
  redis.call('HSET', KEYS[1], 's', '${STATE_DONE}')
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`;

/** Durable mode, when the write could not be confirmed: drop our pending record (cache nothing). */
export const RELEASE_LUA = `
if redis.call('HGET', KEYS[1], 'b') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
`;

/** Outcomes of ACCEPT_LUA, per order. */
export type AcceptOutcome = 'new' | 'replay' | 'mismatch' | 'pending' | 'error';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** numKeys = 1 + the number of orders; see ACCEPT_LUA. Replies [outcome, body, outcome, body, …]. */
    surgeAccept(numKeys: number, ...keysAndArgs: string[]): Result<string[], Context>;
    surgeConfirm(recordKey: string, body: string, ttlSeconds: string): Result<number, Context>;
    surgeRelease(recordKey: string, body: string): Result<number, Context>;
  }
}

/** Registers the scripts on a connection (idempotent per connection). */
export function defineIngestCommands(redis: RedisClient): void {
  redis.defineCommand('surgeAccept', { lua: ACCEPT_LUA });
  redis.defineCommand('surgeConfirm', { numberOfKeys: 1, lua: CONFIRM_LUA });
  redis.defineCommand('surgeRelease', { numberOfKeys: 1, lua: RELEASE_LUA });
}
