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
 * The one atomic call per order: check the idempotency record; if absent, XADD the entry and
 * store the record (fingerprint, state, the exact 202 body) with a TTL.
 *
 * KEYS[1] idempotency record (hash: f = fingerprint, s = state, b = 202 body)
 * KEYS[2] shard stream
 * ARGV[1] fingerprint  ARGV[2] record TTL (s)  ARGV[3] state to store
 * ARGV[4] order_ref prefix (`s<i>-`)  ARGV[5] rest of the 202 body after `"order_ref":"…",`
 * ARGV[6..] entry fields (v, c, k, o)
 *
 * Returns {outcome, body}: `new` (entry added; body = the 202 body), `replay` (body = the stored
 * 202 body), `mismatch` (another fingerprint), `pending` (same key still being confirmed).
 */
export const ACCEPT_LUA = `
local rec = redis.call('HMGET', KEYS[1], 'f', 's', 'b')
if rec[1] then
  if rec[1] ~= ARGV[1] then return {'mismatch', ''} end
  if rec[2] ~= '${STATE_DONE}' then return {'pending', ''} end
  return {'replay', rec[3]}
end
local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 6))
local body = '{"order_ref":"' .. ARGV[4] .. id .. '",' .. ARGV[5]
redis.call('HSET', KEYS[1], 'f', ARGV[1], 's', ARGV[3], 'b', body)
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {'new', body}
`;

/**
 * `:batch`: the accept call for many orders of one shard at once. Each order gets exactly what
 * ACCEPT_LUA would have done to it (the orders run one after the other, in request order, so
 * a key repeated within the call meets the record the first one stored), inside one script
 * call: one EVALSHA and one reply instead of one per order.
 *
 * KEYS[1] shard stream  KEYS[2..n+1] the orders' idempotency records (all on the stream's shard)
 * ARGV[1] record TTL (s)  ARGV[2] state to store  ARGV[3] order_ref prefix (`s<i>-`)
 * ARGV[4] entry field v  ARGV[5] entry field c (client)
 * then 4 per order: fingerprint, rest of the 202 body, entry field k (key), entry field o (order)
 *
 * Returns a flat list, two per order: outcome, body — the outcomes of ACCEPT_LUA, plus `error`
 * (body = Redis's error) when a command failed for that order; the other orders go on.
 */
export const ACCEPT_MANY_LUA = `
local ttl, state, refPrefix, v, c = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local out = {}
local n = 0
local a = 6
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
    local id = redis.pcall('XADD', KEYS[1], '*', 'v', v, 'c', c, 'k', ARGV[a + 2], 'o', ARGV[a + 3])
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
  a = a + 4
end
return out
`;

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

export type AcceptOutcome = 'new' | 'replay' | 'mismatch' | 'pending';
/** Outcomes of ACCEPT_MANY_LUA: those of ACCEPT_LUA, or `error` when Redis refused a command for that order. */
export type AcceptManyOutcome = AcceptOutcome | 'error';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    surgeAccept(recordKey: string, streamKey: string, ...args: string[]): Result<[AcceptOutcome, string], Context>;
    /** numKeys = 1 + the number of orders; see ACCEPT_MANY_LUA. Replies [outcome, body, outcome, body, …]. */
    surgeAcceptMany(numKeys: number, ...keysAndArgs: string[]): Result<string[], Context>;
    surgeConfirm(recordKey: string, body: string, ttlSeconds: string): Result<number, Context>;
    surgeRelease(recordKey: string, body: string): Result<number, Context>;
  }
}

/** Registers the scripts on a connection (idempotent per connection). */
export function defineIngestCommands(redis: RedisClient): void {
  redis.defineCommand('surgeAccept', { numberOfKeys: 2, lua: ACCEPT_LUA });
  redis.defineCommand('surgeAcceptMany', { lua: ACCEPT_MANY_LUA });
  redis.defineCommand('surgeConfirm', { numberOfKeys: 1, lua: CONFIRM_LUA });
  redis.defineCommand('surgeRelease', { numberOfKeys: 1, lua: RELEASE_LUA });
}
