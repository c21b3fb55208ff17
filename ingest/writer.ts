// Writes accepted orders to their shard streams: one Lua call per order (check the idempotency
// record, XADD, store the record), pipelined per shard for batches, plus the durable-mode
// confirmation. Every Redis failure becomes `unavailable` (the caller answers 503 and caches
// nothing, SEMANTICS 1.5): the XADD may have happened, and PostgreSQL's unique
// (client_id, idempotency_key) absorbs the duplicate a retry may then add.
import type { Config } from '../common/config.js';
import { idemKey, shardFor, streamKey } from '../common/keys.js';
import type { Logger } from '../common/log.js';
import { canonicalJson, encodeEntry, type Order, orderFingerprint } from '../common/order.js';
import type { RedisClient } from '../common/redis.js';
import type { DurabilityBarrier } from './durability.js';
import { type AcceptOutcome, STATE_DONE, STATE_PENDING } from './scripts.js';

export interface PreparedOrder {
  clientId: string;
  idempotencyKey: string;
  shard: number;
  recordKey: string;
  streamKey: string;
  /** ARGV of the accept script. */
  args: string[];
}

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
    const durable = this.options.barrier !== undefined;
    // One canonical text per order: the fingerprint and the stream entry share it.
    const canonical = canonicalJson(order);
    return {
      clientId,
      idempotencyKey,
      shard,
      recordKey: idemKey(redisPrefix, shard, clientId, idempotencyKey),
      streamKey: streamKey(redisPrefix, shard),
      args: [
        orderFingerprint(order, canonical),
        durable ? this.pendingTtl : this.ttl,
        durable ? STATE_PENDING : STATE_DONE,
        `s${shard}-`,
        `"idempotency_key":${JSON.stringify(idempotencyKey)},"status":"queued"}`,
        ...encodeEntry(clientId, idempotencyKey, order, canonical),
      ],
    };
  }

  async write(p: PreparedOrder): Promise<WriteOutcome> {
    let reply: [AcceptOutcome, string];
    try {
      reply = await this.options.redis.surgeAccept(p.recordKey, p.streamKey, ...p.args);
    } catch (err) {
      return { kind: 'unavailable', reason: 'redis write failed or outcome unknown', err };
    }
    return this.settle(p, reply);
  }

  /** Writes many orders: one pipeline per shard, all shards in parallel; results in input order. */
  async writeMany(orders: readonly PreparedOrder[]): Promise<WriteOutcome[]> {
    const byShard = new Map<number, number[]>();
    orders.forEach((p, i) => {
      const list = byShard.get(p.shard);
      if (list) list.push(i);
      else byShard.set(p.shard, [i]);
    });
    const out: WriteOutcome[] = new Array(orders.length);
    await Promise.all(
      [...byShard.values()].map(async (indexes) => {
        const pipeline = this.options.redis.pipeline();
        for (const i of indexes) {
          const p = orders[i] as PreparedOrder;
          pipeline.surgeAccept(p.recordKey, p.streamKey, ...p.args);
        }
        let results: Array<[Error | null, unknown]> | null;
        try {
          results = await pipeline.exec();
        } catch (err) {
          results = null;
          for (const i of indexes) out[i] = { kind: 'unavailable', reason: 'redis write failed or outcome unknown', err };
          return;
        }
        await Promise.all(
          indexes.map(async (i, j) => {
            const [err, reply] = results?.[j] ?? [new Error('no reply'), null];
            out[i] = err
              ? { kind: 'unavailable', reason: 'redis write failed or outcome unknown', err }
              : await this.settle(orders[i] as PreparedOrder, reply as [AcceptOutcome, string]);
          }),
        );
      }),
    );
    return out;
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
