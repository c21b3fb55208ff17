// After COMMIT, before the ack: each order's final state goes to its shard's outcome stream
// (common/outcome.ts), exactly once per order entry.
//
// Why a crash cannot skip or repeat one: a Lua call (of up to PUBLISH_CHUNK entries), on the order
// stream and the outcome stream of the shard (one hash tag, one slot), publishes an entry's outcome
// and XACKs the entry together, and only while the entry is still pending in the group. Before
// that call the entry is pending: a crash leaves it to be reclaimed, applied again (a no-op:
// duplicates) and published then, with the state read back from PostgreSQL. After it, the entry
// is acknowledged and no one publishes it again. Dead letters are published here too (XADD only: the acker's
// move to the DLQ acknowledges them, and a dead letter can be redelivered, so its outcome may
// repeat after a crash in between; downstream dedupes on client + key, as for any replay).
import type { Config } from '../common/config.js';
import { createPool, type Pool, timestamptzIso } from '../common/db.js';
import { ENTRY_FIELD, entryField } from '../common/entry.js';
import { GROUP, outcomeKey, streamKey } from '../common/keys.js';
import type { RedisClient } from '../common/redis.js';
import { sqlFile } from '../common/sql.js';
import type { BatchOutcome, CommittedOrder, TaskEntry } from './apply.js';

// KEYS[1] order stream, KEYS[2] outcome stream; ARGV[1] group, ARGV[2] 1 = ack with the publish
// (applied orders), 0 = publish only while pending (dead letters); ARGV[3] the entries as one JSON
// array (encodeOutcomes), each the values of its outcome's fields (common/outcome.ts), which the
// script names: [id, client, key, applied_at] for an order applied from that very entry (the
// usual case), else [id, client, key, status, entry of the order_ref, applied_at or '', reason or
// '']; ARGV[4] the order_ref's prefix, `s<shard>-`. Returns how many outcomes were published.
// One argument rather than one per field: building and writing a command of a dozen arguments per
// entry was the larger part of the worker's cost of publishing; the names and the order_ref's
// repeated id are left out of it, since Redis' JSON decoding is a large part of the script's.
// With the ack, XACK's own answer (1: it was pending) decides the publish (SEMANTICS 9.1), which
// saves Redis an XPENDING per entry. A script is not undone when a call in it fails, so an XADD
// that fails after its XACK would lose the outcome: the outcome stream's type is checked first,
// and the XADD cannot then fail (under maxmemory Redis lets a script that has written go on).
const PUBLISH_LUA = `
local t = redis.call('TYPE', KEYS[2])['ok']
if t ~= 'stream' and t ~= 'none' then
  return redis.error_reply('WRONGTYPE outcome stream ' .. KEYS[2] .. ' is a ' .. t)
end
local n = 0
local ack = ARGV[2] == '1'
local ref = ARGV[4]
for _, e in ipairs(cjson.decode(ARGV[3])) do
  local id = e[1]
  local pending
  if ack then
    pending = redis.call('XACK', KEYS[1], ARGV[1], id) == 1
  else
    pending = #redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1) == 1
  end
  if pending then
    if #e == 4 then
      redis.call('XADD', KEYS[2], '*', 'client', e[2], 'key', e[3], 'status', 'applied', 'order_ref', ref .. id, 'applied_at', e[4])
    else
      local f = {'client', e[2], 'key', e[3], 'status', e[4]}
      if e[7] ~= '' then f[#f + 1] = 'reason'; f[#f + 1] = e[7] end
      f[#f + 1] = 'order_ref'; f[#f + 1] = ref .. e[5]
      if e[6] ~= '' then f[#f + 1] = 'applied_at'; f[#f + 1] = e[6] end
      redis.call('XADD', KEYS[2], '*', unpack(f))
    end
    n = n + 1
  end
end
return n`;

/**
 * Most entries per PUBLISH_LUA call. Redis runs nothing else while a script runs, ingest's accept
 * calls included, so a whole batch in one call held every accept behind it for as long as the
 * batch took; a call of this size takes about a millisecond. Each entry is still acked and
 * published in one call (SEMANTICS 9.1): a failure between two calls leaves the later entries
 * pending, published when they come back.
 */
export const PUBLISH_CHUNK = 100;

/**
 * The entries' outcomes as PUBLISH_LUA's one JSON argument. JSON.stringify writes a lone surrogate
 * as a `\udxxx` escape, which the script's cjson refuses; as a Redis argument it used to be
 * written as U+FFFD, so it is replaced by that here (the Buffer round trip does so).
 */
export function encodeOutcomes(list: readonly (readonly string[])[]): string {
  const json = JSON.stringify(list);
  return /\\ud[89a-f]/.test(json) ? JSON.stringify(list.map((e) => e.map((s) => Buffer.from(s).toString()))) : json;
}

interface OrderRow {
  client_id: string;
  idempotency_key: string;
  status: 'applied' | 'rejected';
  reason: string | null;
  /** Selected as text (timestamptzIso). */
  applied_at: string;
  entry_id: string;
}

export class OutcomePublisher {
  private readonly pool: Pool;

  constructor(
    private readonly config: Pick<Config, 'redisPrefix' | 'databaseUrl'>,
    private readonly redis: RedisClient,
  ) {
    // The orders' states are read on the main thread, whichever placement applies them.
    this.pool = createPool(config.databaseUrl, { max: 1, applicationName: 'surge-worker-outcomes' });
  }

  /**
   * Publishes the outcome of every entry of a committed batch and acknowledges the applied ones
   * in the same call (the acker's XACK of them is then a no-op). The orders this batch inserted
   * are published as it committed them; PostgreSQL is read only for the others (duplicates of
   * orders committed before, dead letters). Throws when PostgreSQL or Redis fails: the entries
   * stay pending and come back. Returns the entries of `outcome.ack` it did not acknowledge
   * (none had a state to publish): the acker's to XACK.
   */
  async publish(
    shard: number,
    entries: readonly TaskEntry[],
    outcome: Pick<BatchOutcome, 'ack' | 'deadLetters' | 'committed'>,
  ) {
    const { redisPrefix: prefix } = this.config;
    const byId = new Map<string, TaskEntry>();
    for (const e of entries) byId.set(e.id, e);
    /** The entry's client and key, or undefined when it lacks one. */
    const keyOf = (id: string): readonly [client: string, key: string] | undefined => {
      const fields = byId.get(id)?.fields;
      const client = entryField(fields, ENTRY_FIELD.client);
      const key = entryField(fields, ENTRY_FIELD.key);
      return client === undefined || key === undefined ? undefined : [client, key];
    };
    // The orders this batch inserted, by the entry they were inserted from: in a backlog every
    // applied entry is one of them, and needs no key of its own to be published.
    const mine = new Map<string, CommittedOrder>();
    for (const c of outcome.committed) mine.set(c.entryId, c);
    // PUBLISH_LUA's entry for an order in its committed state: short when applied from this entry.
    const fieldsOf = (id: string, client: string, key: string, c: CommittedOrder): string[] =>
      c.status === 'applied' && c.entryId === id
        ? [id, client, key, c.appliedAt]
        : [id, client, key, c.status, c.entryId, c.appliedAt, c.reason ?? ''];
    // The others (duplicates of orders committed before or in this batch, dead letters) are
    // named by (client, key), lazily: the batch's own committed orders first, then PostgreSQL.
    // Dead letters are looked up too: an entry dead-lettered after its order committed (its
    // deliveries ran out while its ack kept failing) reports the committed state.
    let named: Map<string, CommittedOrder> | undefined;
    const others: string[] = [];
    for (const id of outcome.ack) if (!mine.has(id)) others.push(id);
    for (const d of outcome.deadLetters) others.push(d.id);
    if (others.length > 0) {
      named = new Map();
      for (const c of outcome.committed) {
        const k = keyOf(c.entryId);
        if (k !== undefined) named.set(`${k[0]}\n${k[1]}`, c);
      }
      const clients: string[] = [];
      const keys: string[] = [];
      const asked = new Set<string>();
      for (const id of others) {
        const k = keyOf(id);
        if (k === undefined) continue;
        const name = `${k[0]}\n${k[1]}`;
        if (asked.has(name) || named.has(name)) continue;
        asked.add(name);
        clients.push(k[0]);
        keys.push(k[1]);
      }
      if (clients.length > 0) {
        const rows = await this.pool.query<OrderRow>(sqlFile('outcomes/select_orders'), [clients, keys]);
        for (const row of rows.rows)
          named.set(`${row.client_id}\n${row.idempotency_key}`, {
            entryId: row.entry_id,
            status: row.status,
            ...(row.reason !== null ? { reason: row.reason } : {}),
            appliedAt: timestamptzIso(row.applied_at),
          });
      }
    }
    const applied: string[][] = [];
    const unacked: string[] = [];
    for (const id of outcome.ack) {
      const k = keyOf(id);
      const c = k === undefined ? undefined : (mine.get(id) ?? named?.get(`${k[0]}\n${k[1]}`));
      if (k === undefined || c === undefined) unacked.push(id);
      else applied.push(fieldsOf(id, k[0], k[1], c));
    }
    const dead: string[][] = [];
    for (const d of outcome.deadLetters) {
      const k = keyOf(d.id);
      if (k === undefined) continue;
      const [client, key] = k;
      const c = named?.get(`${client}\n${key}`);
      dead.push(
        c !== undefined ? fieldsOf(d.id, client, key, c) : [d.id, client, key, 'dead_lettered', d.id, '', d.reason],
      );
    }
    const stream = streamKey(prefix, shard);
    const outcomes = outcomeKey(prefix, shard);
    const ref = `s${shard}-`;
    // One call after the other, not pipelined: between two calls Redis serves the accept calls
    // that arrived meanwhile.
    for (const [mode, list] of [
      ['1', applied],
      ['0', dead],
    ] as const)
      for (let i = 0; i < list.length; i += PUBLISH_CHUNK)
        await this.redis.eval(
          PUBLISH_LUA,
          2,
          stream,
          outcomes,
          GROUP,
          mode,
          encodeOutcomes(list.slice(i, i + PUBLISH_CHUNK)),
          ref,
        );
    return unacked;
  }

  async close(): Promise<void> {
    await this.pool.end().catch(() => {});
  }
}
