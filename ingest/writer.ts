// Writes accepted orders to their shard streams: one Lua call per order (check the idempotency
// record, XADD, store the record); for batches one call per shard per chunk of orders, plus the durable-mode
// confirmation. Every Redis failure becomes `unavailable` (the caller answers 503 and caches
// nothing, SEMANTICS 1.5): the XADD may have happened, and PostgreSQL's unique
// (client_id, idempotency_key) absorbs the duplicate a retry may then add.
import type { Config } from '../common/config.js';
import { ENTRY_SCHEMA_VERSION, idemKey, shardFor, streamKey } from '../common/keys.js';
import type { Logger } from '../common/log.js';
import { canonicalJson, type Order, orderFingerprint } from '../common/order.js';
import type { RedisClient } from '../common/redis.js';
import type { DurabilityBarrier } from './durability.js';
import { type AcceptManyOutcome, type AcceptOutcome, STATE_DONE, STATE_PENDING } from './scripts.js';

export interface PreparedOrder {
  clientId: string;
  idempotencyKey: string;
  shard: number;
  recordKey: string;
  streamKey: string;
  fingerprint: string;
  /** The 202 body after `"order_ref":"…",`. */
  bodyRest: string;
  /** canonicalJson(order): the entry's `o` field. */
  canonical: string;
}

/**
 * Orders per ACCEPT_MANY_LUA call. A script blocks Redis while it runs (~5 µs per order), so a
 * 1,000-order batch is cut into calls of this size: each shard's calls still go in one pipeline
 * (one round trip), and other clients wait at most ~1 ms behind one call.
 */
export const ORDERS_PER_SCRIPT_CALL = 200;

export type WriteOutcome =
  | { kind: 'accepted'; body: string }
  | { kind: 'replayed'; body: string }
  | { kind: 'mismatch' }
  | { kind: 'pending' }
  | { kind: 'unavailable'; reason: string; err?: unknown };

export interface OrderWriterOptions {
  redis: RedisClient;
  config: Pick<Config, 'redisPrefix' | 'shards' | 'idempotencyTtlSeconds' | 'durableTimeoutMs'>;
  /** Present in durable mode. */
  barrier?: DurabilityBarrier;
  logger: Logger;
}

/** `order_ref` = `s<shard>-<stream entry id>`: the shard stream and the entry in it. */
export function parseOrderRef(ref: string): { shard: number; entryId: string } | undefined {
  const m = /^s(\d+)-(\d+-\d+)$/.exec(ref);
  return m ? { shard: Number(m[1]), entryId: m[2] as string } : undefined;
}

export class OrderWriter {
  private readonly ttl: string;
  private readonly pendingTtl: string;

  constructor(private readonly options: OrderWriterOptions) {
    this.ttl = String(options.config.idempotencyTtlSeconds);
    // A pending record outlives the WAIT by a margin; if this process dies before confirming,
    // the record expires and a retry writes again (PostgreSQL absorbs the duplicate).
    this.pendingTtl = String(Math.ceil(options.config.durableTimeoutMs / 1000) + 10);
  }

  prepare(clientId: string, idempotencyKey: string, order: Order): PreparedOrder {
    const { redisPrefix, shards } = this.options.config;
    const shard = shardFor(clientId, idempotencyKey, shards);
    // One canonical text per order: the fingerprint and the stream entry share it.
    const canonical = canonicalJson(order);
    return {
      clientId,
      idempotencyKey,
      shard,
      recordKey: idemKey(redisPrefix, shard, clientId, idempotencyKey),
      streamKey: streamKey(redisPrefix, shard),
      fingerprint: orderFingerprint(order, canonical),
      bodyRest: `"idempotency_key":${JSON.stringify(idempotencyKey)},"status":"queued"}`,
      canonical,
    };
  }

  private get recordTtl(): string {
    return this.options.barrier ? this.pendingTtl : this.ttl;
  }

  private get recordState(): string {
    return this.options.barrier ? STATE_PENDING : STATE_DONE;
  }

  /** One order: one atomic ACCEPT_LUA call. */
  async write(p: PreparedOrder): Promise<WriteOutcome> {
    let reply: [AcceptOutcome, string];
    try {
      reply = await this.options.redis.surgeAccept(
        p.recordKey,
        p.streamKey,
        p.fingerprint,
        this.recordTtl,
        this.recordState,
        `s${p.shard}-`,
        p.bodyRest,
        'v',
        ENTRY_SCHEMA_VERSION,
        'c',
        p.clientId,
        'k',
        p.idempotencyKey,
        'o',
        p.canonical,
      );
    } catch (err) {
      return { kind: 'unavailable', reason: 'redis write failed or outcome unknown', err };
    }
    return this.settle(p, reply);
  }

  /**
   * Writes many orders of one client: per shard, ACCEPT_MANY_LUA calls of up to
   * ORDERS_PER_SCRIPT_CALL orders in one pipeline; all shards in parallel; results in input order.
   * Within a shard the orders keep their request order (a repeated key meets the first one's record).
   */
  async writeMany(orders: readonly PreparedOrder[]): Promise<WriteOutcome[]> {
    const byShard = new Map<number, number[]>();
    orders.forEach((p, i) => {
      const list = byShard.get(p.shard);
      if (list) list.push(i);
      else byShard.set(p.shard, [i]);
    });
    const out: WriteOutcome[] = new Array(orders.length);
    await Promise.all([...byShard.values()].map((indexes) => this.writeShard(orders, indexes, out)));
    return out;
  }

  private async writeShard(orders: readonly PreparedOrder[], indexes: number[], out: WriteOutcome[]): Promise<void> {
    const first = orders[indexes[0] as number] as PreparedOrder;
    const head = [this.recordTtl, this.recordState, `s${first.shard}-`, ENTRY_SCHEMA_VERSION, first.clientId];
    const pipeline = this.options.redis.pipeline();
    const chunks: number[][] = [];
    for (let start = 0; start < indexes.length; start += ORDERS_PER_SCRIPT_CALL) {
      const chunk = indexes.slice(start, start + ORDERS_PER_SCRIPT_CALL);
      const keys: string[] = [first.streamKey];
      const args: string[] = [];
      for (const i of chunk) {
        const p = orders[i] as PreparedOrder;
        if (p.shard !== first.shard || p.clientId !== first.clientId) throw new Error('writeShard: orders of one shard and client only');
        keys.push(p.recordKey);
        args.push(p.fingerprint, p.bodyRest, p.idempotencyKey, p.canonical);
      }
      pipeline.surgeAcceptMany(keys.length, ...keys, ...head, ...args);
      chunks.push(chunk);
    }
    let results: Array<[Error | null, unknown]> | null;
    try {
      results = await pipeline.exec();
    } catch (err) {
      for (const i of indexes) out[i] = { kind: 'unavailable', reason: 'redis write failed or outcome unknown', err };
      return;
    }
    const settling: Array<Promise<void>> = [];
    chunks.forEach((chunk, c) => {
      const [err, reply] = results?.[c] ?? [new Error('no reply'), null];
      chunk.forEach((i, j) => {
        const outcome = err ? undefined : ((reply as string[])[2 * j] as AcceptManyOutcome | undefined);
        const body = err ? '' : ((reply as string[])[2 * j + 1] ?? '');
        if (err || outcome === undefined || outcome === 'error') {
          out[i] = { kind: 'unavailable', reason: 'redis write failed or outcome unknown', err: err ?? new Error(`redis refused the write: ${body}`) };
        } else {
          settling.push(
            this.settle(orders[i] as PreparedOrder, [outcome, body]).then((o) => {
              out[i] = o;
            }),
          );
        }
      });
    });
    await Promise.all(settling);
  }

  private async settle(p: PreparedOrder, [outcome, body]: [AcceptOutcome, string]): Promise<WriteOutcome> {
    switch (outcome) {
      case 'replay':
        return { kind: 'replayed', body };
      case 'mismatch':
        return { kind: 'mismatch' };
      case 'pending':
        return { kind: 'pending' };
      case 'new':
        return this.options.barrier ? this.confirm(p, body, this.options.barrier) : { kind: 'accepted', body };
      default:
        return { kind: 'unavailable', reason: `unexpected script reply ${JSON.stringify(outcome)}` };
    }
  }

  private async confirm(p: PreparedOrder, body: string, barrier: DurabilityBarrier): Promise<WriteOutcome> {
    const redis = this.options.redis;
    if (await barrier.wait()) {
      try {
        await redis.surgeConfirm(p.recordKey, body, this.ttl);
      } catch (err) {
        // The entry is durable; only the record stays pending until its short TTL ends.
        this.options.logger.error({ err, shard: p.shard }, 'could not mark idempotency record done');
      }
      return { kind: 'accepted', body };
    }
    try {
      await redis.surgeRelease(p.recordKey, body);
    } catch (err) {
      this.options.logger.error({ err, shard: p.shard }, 'could not release pending idempotency record (it expires by itself)');
    }
    return { kind: 'unavailable', reason: `${barrier.command.kind} did not confirm the write` };
  }
}
