// The Lua scripts of the ingest path. Each call touches only keys of one shard (the record and
// the stream share the `{s<i>}` hash tag), so they run unchanged on Redis Cluster. ioredis
// `defineCommand` sends them with EVALSHA and falls back to EVAL after NOSCRIPT (e.g. after a
// Redis restart emptied the script cache); the accept call on a single Redis goes as a
// DirectScript, which does the same without ioredis's copies of its arguments.
import { createHash } from 'node:crypto';
import { Command, type Redis, type Result } from 'ioredis';
import { ENTRY_VALUE_COUNT, entryTraceArgLua, entryXaddLua } from '../common/entry.js';
import type { RedisClient } from '../common/redis.js';

/**
 * The idempotency record is one string: state (1 character), fingerprint (64 hex digits), then
 * the stream entry id — e.g. `d3f79…6dea1795326383087-0`. The 202 body is rebuilt from it (see
 * acceptedBody), so a record holds no copy of the body and takes about half the Redis memory of
 * a hash holding it (docs/performance.md, `npm run bench:record-memory`).
 */
export const STATE_DONE = 'd';
/** Durable mode: written, not yet confirmed by WAITAOF/WAIT. */
export const STATE_PENDING = 'p';
const FINGERPRINT_LENGTH = 64;

export interface IdempotencyRecord {
  state: string;
  fingerprint: string;
  entryId: string;
}

/** Reads a record's value (undefined when it is not one). */
export function parseRecord(value: string | null | undefined): IdempotencyRecord | undefined {
  if (!value || value.length <= 1 + FINGERPRINT_LENGTH) return undefined;
  return {
    state: value.slice(0, 1),
    fingerprint: value.slice(1, 1 + FINGERPRINT_LENGTH),
    entryId: value.slice(1 + FINGERPRINT_LENGTH),
  };
}

/** A record's value. */
export function recordValue(state: string, fingerprint: string, entryId: string): string {
  return state + fingerprint + entryId;
}

/**
 * The 202 body of an accepted order: a function of its shard, entry id and key, so a replay
 * rebuilds the first answer byte for byte.
 */
export function acceptedBody(shard: number, entryId: string, idempotencyKey: string): string {
  return `{"order_ref":"s${shard}-${entryId}","idempotency_key":${JSON.stringify(idempotencyKey)},"status":"queued"}`;
}

/** Arguments per order in ACCEPT_LUA (after the shared ones): its fingerprint and its entry's values. */
export const ACCEPT_ARGS_PER_ORDER = 1 + ENTRY_VALUE_COUNT;

/** Arguments per order in the traced accept call: one more, the trace context ('' for none). */
export const TRACED_ACCEPT_ARGS_PER_ORDER = ACCEPT_ARGS_PER_ORDER + 1;

/** Arguments of ACCEPT_LUA before the first order's: record TTL and state. */
export const ACCEPT_SHARED_ARGS = 2;

/** The first character of ACCEPT_LUA's reply for an order: its outcome. */
export const ACCEPT_REPLY = { new: 'n', replay: 'r', mismatch: 'm', pending: 'p', error: 'e' } as const;

/**
 * The accept call: for each order, one after the other in the order given, check its
 * idempotency record; if absent, XADD the entry and store the record (state, fingerprint, entry
 * id) with a TTL. Each order is handled by exactly one call, atomically (a script runs alone),
 * so the check and the XADD cannot interleave with another writer (SEMANTICS 1). One call
 * carries the orders of one shard that are ready in the same event-loop turn — a single POST
 * alone at low load, several concurrent POSTs under load, up to ORDERS_PER_SCRIPT_CALL of a
 * `:batch` — so a surge costs one EVALSHA per group, not per order. A key repeated within a
 * call meets the record the earlier order stored.
 *
 * KEYS[1] shard stream  KEYS[2..n+1] the orders' idempotency records, all on the stream's shard
 * ARGV[1] record TTL (s)  ARGV[2] state to store
 * then per order: fingerprint, then the entry's values (common/entry.ts putEntryValues); the
 * entry's field names and version are written into the script from common/entry.ts
 *
 * Returns one string per order, in order: its first character is the outcome (ACCEPT_REPLY),
 * the rest its result: `n` new and `r` replay → the entry id; `m` mismatch (another
 * fingerprint) and `p` pending (same key still being confirmed) → nothing; `e` → Redis's error,
 * when a command failed for that order (the others go on; a record that is not a string is
 * such an error). One string rather than two per order: less for Redis to build and ingest to
 * parse.
 *
 * The traced variant (tracing on) takes one more value per order, its `traceparent`, and adds
 * the entry's `t` field when it is not empty; the plain one is what runs with tracing off.
 */
const acceptLua = (traced: boolean) => `
local ttl, state = ARGV[1], ARGV[2]
local out = {}
local n = 0
local a = ${ACCEPT_SHARED_ARGS + 1}
for i = 2, #KEYS do
  local fp = ARGV[a]
  local reply
  local rec = redis.pcall('GET', KEYS[i])
  if type(rec) == 'table' then
    reply = '${ACCEPT_REPLY.error}' .. tostring(rec.err)
  elseif rec then
    if string.sub(rec, 2, ${1 + FINGERPRINT_LENGTH}) ~= fp then reply = '${ACCEPT_REPLY.mismatch}'
    elseif string.sub(rec, 1, 1) ~= '${STATE_DONE}' then reply = '${ACCEPT_REPLY.pending}'
    else reply = '${ACCEPT_REPLY.replay}' .. string.sub(rec, ${2 + FINGERPRINT_LENGTH}) end
  else
    local id
    ${
      traced
        ? `if ${entryTraceArgLua('a', 1)} ~= '' then id = redis.pcall('XADD', KEYS[1], '*', ${entryXaddLua('a', 1, true)}) else `
        : ''
    }id = redis.pcall('XADD', KEYS[1], '*', ${entryXaddLua('a', 1)})${traced ? ' end' : ''}
    if type(id) == 'table' then
      reply = '${ACCEPT_REPLY.error}' .. tostring(id.err)
    else
      local r = redis.pcall('SET', KEYS[i], state .. fp .. id, 'EX', ttl)
      if type(r) == 'table' and r.err then
        reply = '${ACCEPT_REPLY.error}' .. tostring(r.err)
      else
        reply = '${ACCEPT_REPLY.new}' .. id
      end
    end
  end
  n = n + 1
  out[n] = reply
  a = a + ${traced ? TRACED_ACCEPT_ARGS_PER_ORDER : ACCEPT_ARGS_PER_ORDER}
end
return out
`;

const ACCEPT_LUA = acceptLua(false);
const ACCEPT_TRACED_LUA = acceptLua(true);

/**
 * A script sent as one hand-built ioredis Command, its argument list taken as it is. ioredis's
 * own script methods (`defineCommand`) copy the list three times on the way (a rest parameter,
 * two spreads) and flatten it with `Array.prototype.flat`, which V8 runs element by element on
 * its generic path: for the accept call, thousands of arguments a second, that was a visible
 * share of ingest's main thread (bench/results/HISTORY.md). The call behaves as ioredis's script
 * commands do: EVAL the first time on a connection (Redis then caches the script), EVALSHA after
 * that; a NOSCRIPT (the cache emptied) makes the connection send EVAL again and resends the call
 * as EVAL, which is safe: a NOSCRIPT call ran nothing.
 */
class DirectScript {
  readonly sha: string;
  /** The connections' sockets that have sent the script (so Redis caches it). */
  private readonly loaded = new WeakSet<object>();

  constructor(readonly lua: string) {
    this.sha = createHash('sha1').update(lua).digest('hex');
  }

  /**
   * Sends the script now on `redis` (in the order of the connection's other commands). `args`:
   * index 0 is left for the script (its text or sha), then numkeys, the keys and the values,
   * every one a string; the call owns the array from now on. Resolves with the reply (strings).
   */
  send(redis: Redis, args: string[]): Promise<unknown> {
    const call = new ScriptCall(this, this.loaded, args);
    return (redis.sendCommand(call) as Promise<unknown>).catch((err: unknown) => {
      if (!(err instanceof Error) || !err.message.includes('NOSCRIPT')) throw err;
      return redis.sendCommand(new ScriptCall(this, this.loaded, args)) as Promise<unknown>;
    });
  }
}

class ScriptCall extends Command {
  constructor(
    private readonly script: DirectScript,
    private readonly loaded: WeakSet<object>,
    args: string[],
  ) {
    super('evalsha', [], { replyEncoding: 'utf8' });
    this.args = args;
  }

  override toWritable(socket: object): string | Buffer {
    if (this.loaded.has(socket)) {
      this.name = 'evalsha';
      this.args[0] = this.script.sha;
    } else {
      this.loaded.add(socket);
      this.name = 'eval';
      this.args[0] = this.script.lua;
    }
    const reject = this.reject;
    this.reject = (err: Error) => {
      if (err.message.includes('NOSCRIPT')) this.loaded.delete(socket);
      reject(err);
    };
    return super.toWritable(socket);
  }
}

/** The accept scripts as DirectScripts, for the hot path on a single Redis (the same text, so the same sha). */
export const ACCEPT_SCRIPT = new DirectScript(ACCEPT_LUA);
export const ACCEPT_TRACED_SCRIPT = new DirectScript(ACCEPT_TRACED_LUA);

/** Durable mode, after WAITAOF/WAIT confirmed: mark our pending record done with the full TTL. */
const CONFIRM_LUA = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], '${STATE_DONE}' .. string.sub(ARGV[1], 2), 'EX', ARGV[2])
  return 1
end
return 0
`;

/** Durable mode, when the write could not be confirmed: drop our pending record (cache nothing). */
const RELEASE_LUA = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /**
     * numKeys = 1 + the number of orders; see ACCEPT_LUA. Replies one string per order (outcome
     * character, then result).
     */
    surgeAccept(...numKeysKeysAndArgs: string[]): Result<string[], Context>;
    /** surgeAccept with each order's `traceparent` after its entry values ('' for none). */
    surgeAcceptTraced(...numKeysKeysAndArgs: string[]): Result<string[], Context>;
    /** pendingValue: the record as ACCEPT_LUA stored it (state pending). */
    surgeConfirm(recordKey: string, pendingValue: string, ttlSeconds: string): Result<number, Context>;
    surgeRelease(recordKey: string, pendingValue: string): Result<number, Context>;
  }
}

/** Registers the scripts on a connection (idempotent per connection). */
export function defineIngestCommands(redis: RedisClient): void {
  redis.defineCommand('surgeAccept', { lua: ACCEPT_LUA });
  redis.defineCommand('surgeAcceptTraced', { lua: ACCEPT_TRACED_LUA });
  redis.defineCommand('surgeConfirm', { numberOfKeys: 1, lua: CONFIRM_LUA });
  redis.defineCommand('surgeRelease', { numberOfKeys: 1, lua: RELEASE_LUA });
}
