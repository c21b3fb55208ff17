// Writes accepted orders to their shard streams: each order in exactly one atomic Lua call
// (check the idempotency record, XADD, store the record), the orders of one shard ready in the
// same event-loop turn sharing a call, and on a single Redis all of a turn's calls leaving in one
// pipeline; plus the durable-mode confirmation. Every Redis failure
// becomes `unavailable` (the caller answers 503 and caches nothing, SEMANTICS 1.5): the XADD may
// have happened, and PostgreSQL's unique (client_id, idempotency_key) absorbs the duplicate a
// retry may then add.
import type { Config } from '../common/config.js';
import { type EntryValues, putEntryValues, putTracedEntryValues } from '../common/entry.js';
import { idemKey, shardFor, streamKey } from '../common/keys.js';
import type { Logger } from '../common/log.js';
import type { IngestMetrics } from '../metrics/definitions.js';
import { canonicalFingerprint, canonicalOrderJson, type Order } from '../common/order.js';
import type { Redis } from 'ioredis';
import type { RedisClient } from '../common/redis.js';
import type { ClusterDurability, DurabilityBarrier } from './durability.js';
import {
  ACCEPT_ARGS_PER_ORDER,
  ACCEPT_REPLY,
  ACCEPT_SCRIPT,
  ACCEPT_SHARED_ARGS,
  ACCEPT_TRACED_SCRIPT,
  acceptedBody,
  recordValue,
  STATE_DONE,
  STATE_PENDING,
  TRACED_ACCEPT_ARGS_PER_ORDER,
} from './scripts.js';

/** An order ready to write: its entry's values (common/entry.ts) and where they go. */
export interface PreparedOrder extends EntryValues {
  shard: number;
  recordKey: string;
  streamKey: string;
  /**
   * canonicalFingerprint(canonical). prepareOrder computes it (for `:batch`, on the batch
   * thread when there is one); a single order's is left to the writer, which computes all the
   * fingerprints of a turn together when it sends them (see OrderWriter.flush).
   */
  fingerprint: string | undefined;
}

/**
 * Most orders per ACCEPT_LUA call. A script blocks Redis while it runs, for a time that grows
 * with its orders, so a 1,000-order batch is cut into calls of this size: the calls are sent
 * back to back (one socket write on a single Redis), and other clients wait behind one call at
 * most, not a whole batch.
 */
export const ORDERS_PER_SCRIPT_CALL = 200;

interface Queued {
  order: PreparedOrder;
  done: (outcome: WriteOutcome) => void;
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
  /** Present in durable mode on a single Redis. */
  barrier?: DurabilityBarrier;
  /** Present in durable mode on Redis Cluster: where each accept call runs, and its barrier. */
  clusterDurability?: ClusterDurability;
  /** Observes the orders per accept call (`surge_ingest_accept_call_orders`). */
  metrics?: Pick<IngestMetrics, 'acceptCallOrders'>;
  logger: Logger;
  /** Tracing is on: orders carry their `traceparent` into the entry (the traced accept call). */
  traced?: boolean;
}

/** A write whose effect is unknown (the call failed, or Redis refused it): answered 503, nothing cached. */
function unknownOutcome(err: unknown): WriteOutcome {
  return { kind: 'unavailable', reason: 'redis write failed or outcome unknown', err };
}

/** What writing an order needs, computed once: shard, keys, canonical text and fingerprint. */
export function prepareOrder(
  config: Pick<Config, 'redisPrefix' | 'shards'>,
  clientId: string,
  idempotencyKey: string,
  order: Order,
): PreparedOrder {
  const p = prepareUnhashed(config, clientId, idempotencyKey, order);
  p.fingerprint = canonicalFingerprint(p.canonical);
  return p;
}

/** prepareOrder without the fingerprint (the writer computes it when it sends the order). */
function prepareUnhashed(
  config: Pick<Config, 'redisPrefix' | 'shards'>,
  clientId: string,
  idempotencyKey: string,
  order: Order,
): PreparedOrder {
  const { redisPrefix, shards } = config;
  const shard = shardFor(clientId, idempotencyKey, shards);
  return {
    clientId,
    idempotencyKey,
    shard,
    recordKey: idemKey(redisPrefix, shard, clientId, idempotencyKey),
    streamKey: streamKey(redisPrefix, shard),
    fingerprint: undefined,
    // One canonical text per order: the fingerprint and the stream entry share it.
    canonical: canonicalOrderJson(order),
  };
}

/** The order's fingerprint, computed (and kept) if prepareOrder left it out. */
function fingerprintOf(order: PreparedOrder): string {
  order.fingerprint ??= canonicalFingerprint(order.canonical);
  return order.fingerprint;
}

export class OrderWriter {
  private readonly ttl: string;
  private readonly pendingTtl: string;
  private readonly traced: boolean;

  constructor(private readonly options: OrderWriterOptions) {
    this.ttl = String(options.config.idempotencyTtlSeconds);
    this.traced = options.traced === true;
    // A pending record outlives the WAIT by a margin; if this process dies before confirming,
    // the record expires and a retry writes again (PostgreSQL absorbs the duplicate).
    this.pendingTtl = String(Math.ceil(options.config.durableTimeoutMs / 1000) + 10);
  }

  /**
   * prepareOrder with this writer's config, but the fingerprint is left to `flush`, which
   * computes it with the rest of its turn's, one after the other, as it builds the calls. One
   * SHA-256 between two requests' HTTP work runs with OpenSSL's code and data gone cold and takes
   * several times as long as back to back, so computing a turn's fingerprints together lowers
   * the main thread's CPU per request (`npm run bench:ingest-ab`; bench/results/HISTORY.md).
   */
  prepare(clientId: string, idempotencyKey: string, order: Order): PreparedOrder {
    return prepareUnhashed(this.options.config, clientId, idempotencyKey, order);
  }

  private get durable(): boolean {
    return this.options.barrier !== undefined || this.options.clusterDurability !== undefined;
  }

  private get recordTtl(): string {
    return this.durable ? this.pendingTtl : this.ttl;
  }

  private get recordState(): string {
    return this.durable ? STATE_PENDING : STATE_DONE;
  }

  /**
   * One order: queued for its shard's next ACCEPT_LUA call. Orders of one shard that become
   * ready in the same event-loop turn (concurrent requests, a batch) share one call, sent when
   * the turn's I/O callbacks are done (setImmediate); each order is still checked, added and
   * recorded atomically, in the order `write` was called.
   */
  write(p: PreparedOrder): Promise<WriteOutcome> {
    return new Promise<WriteOutcome>((resolve) => this.enqueue(p, resolve));
  }

  /** `write` with a callback instead of a promise; `done` is called once. */
  submit(p: PreparedOrder, done: (outcome: WriteOutcome) => void): void {
    this.enqueue(p, done);
  }

  /**
   * Sends what is queued now rather than on the writer's own setImmediate: for callers that
   * run in a setImmediate callback themselves, where one scheduled now would wait a loop turn.
   */
  flushNow(): void {
    this.flush();
  }

  /** Many orders (a `:batch`): each as `write`; results in input order. */
  writeMany(orders: readonly PreparedOrder[]): Promise<WriteOutcome[]> {
    const out: WriteOutcome[] = new Array(orders.length);
    if (orders.length === 0) return Promise.resolve(out);
    return new Promise((resolve) => {
      let left = orders.length;
      orders.forEach((p, i) => {
        this.enqueue(p, (outcome) => {
          out[i] = outcome;
          if (--left === 0) resolve(out);
        });
      });
    });
  }

  private enqueue(order: PreparedOrder, done: (outcome: WriteOutcome) => void): void {
    const queue = this.queued.get(order.shard);
    if (queue) queue.push({ order, done });
    else this.queued.set(order.shard, [{ order, done }]);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flush);
    }
  }

  /**
   * The orders waiting, by shard; a new Map each flush rather than `clear()`. V8 clears (and
   * rehashes) a Map by giving it a new table and linking the old table to it, entries and all.
   * One turn's table that lived long enough to be promoted (a long turn, a pause) then keeps the
   * next turn's table, and all that its orders reach, alive through scavenges until it is promoted
   * in turn, and so on: every request promoted, until a full GC, in a chain that can start again.
   */
  private queued = new Map<number, Queued[]>();
  private flushScheduled = false;

  /**
   * Sends every queued order: per shard, calls of up to ORDERS_PER_SCRIPT_CALL orders. On a
   * single Redis all the calls of a turn go out now, as commands of their own (DirectScript)
   * written while the socket is corked: one socket write, without an ioredis Pipeline object per
   * turn. Left to auto-pipelining they would wait for one more event-loop turn (ioredis flushes
   * its auto-pipeline on setImmediate), while the loop reads yet more requests. On Redis Cluster
   * the shards live on different nodes, so each call is sent on its own.
   */
  private readonly flush = (): void => {
    this.flushScheduled = false;
    // Nothing queued: flushNow sent it already.
    if (this.queued.size === 0) return;
    const groups: Queued[][] = [];
    for (const queue of this.queued.values()) {
      for (let start = 0; start < queue.length; start += ORDERS_PER_SCRIPT_CALL)
        groups.push(queue.slice(start, start + ORDERS_PER_SCRIPT_CALL));
    }
    this.queued = new Map();
    for (const group of groups) this.options.metrics?.acceptCallOrders.observe(group.length);
    const redis = this.options.redis;
    const onCluster = this.options.clusterDurability;
    if (onCluster) {
      for (const group of groups) this.sendToMaster(group, onCluster);
      return;
    }
    if (redis.isCluster) {
      for (const group of groups) {
        (this.tracedCall(group)
          ? redis.surgeAcceptTraced(...this.acceptArgs(group, true).slice(1))
          : redis.surgeAccept(...this.acceptArgs(group, false).slice(1))
        ).then(
          (reply) => this.settle(group, reply, undefined),
          (err: unknown) => this.fail(group, err),
        );
      }
      return;
    }
    const single = redis as Redis;
    // Undefined before the first connection (the calls then fail at once: no offline queue).
    const socket = single.stream as Redis['stream'] | undefined;
    socket?.cork();
    try {
      for (const group of groups) {
        const traced = this.tracedCall(group);
        (traced ? ACCEPT_TRACED_SCRIPT : ACCEPT_SCRIPT).send(single, this.acceptArgs(group, traced)).then(
          (reply) => this.settle(group, reply as string[], this.options.barrier),
          (err: unknown) => this.fail(group, err),
        );
      }
    } finally {
      socket?.uncork();
    }
  };

  /**
   * Durable mode on Cluster: the call runs on the connection to the master serving the shard's
   * slot, and that connection's barrier confirms it. Not followed when redirected: the write
   * would then be on another connection, which this barrier does not cover; the orders get 503
   * and the slot table is refreshed for the retry.
   */
  private sendToMaster(group: readonly Queued[], onCluster: ClusterDurability): void {
    const target = onCluster.route(group[0]?.order.streamKey ?? '');
    if (!target) {
      this.fail(group, new Error('no known master for the shard’s slot (cluster topology changing)'));
      return;
    }
    const { node, barrier } = target;
    (this.tracedCall(group)
      ? node.surgeAcceptTraced(...this.acceptArgs(group, true).slice(1))
      : node.surgeAccept(...this.acceptArgs(group, false).slice(1))
    ).then(
      (reply) => this.settle(group, reply, barrier),
      (err: unknown) => {
        onCluster.refresh();
        this.fail(group, err);
      },
    );
  }

  /**
   * The traced accept call, for a group where some order carries a `traceparent`: at a low
   * sampling ratio most calls carry none and send what an untraced build sends.
   */
  private tracedCall(group: readonly Queued[]): boolean {
    if (!this.traced) return false;
    for (const { order } of group) if (order.traceparent) return true;
    return false;
  }

  /**
   * ACCEPT_LUA's numKeys, keys and arguments for one group (orders of one shard), all strings,
   * after a first slot left for the script itself (DirectScript.send fills it).
   */
  private acceptArgs(group: readonly Queued[], traced: boolean): string[] {
    const first = group[0]?.order;
    if (first === undefined) throw new Error('acceptArgs: a group has at least one order');
    const perOrder = traced ? TRACED_ACCEPT_ARGS_PER_ORDER : ACCEPT_ARGS_PER_ORDER;
    const keysAndArgs = new Array<string>(3 + group.length * (1 + perOrder) + ACCEPT_SHARED_ARGS);
    keysAndArgs[0] = '';
    keysAndArgs[1] = String(1 + group.length);
    keysAndArgs[2] = first.streamKey;
    let a = 3;
    for (const { order } of group) keysAndArgs[a++] = order.recordKey;
    keysAndArgs[a++] = this.recordTtl;
    keysAndArgs[a++] = this.recordState;
    for (const { order } of group) {
      keysAndArgs[a++] = fingerprintOf(order);
      a = traced ? putTracedEntryValues(keysAndArgs, a, order) : putEntryValues(keysAndArgs, a, order);
    }
    return keysAndArgs;
  }

  /** The call failed as a whole: its effect is unknown for every order in it. */
  private fail(group: readonly Queued[], err: unknown): void {
    for (const q of group) q.done(unknownOutcome(err));
  }

  /** Hands each order of a group the outcome ACCEPT_LUA reported for it; `barrier` in durable mode. */
  private settle(group: readonly Queued[], reply: readonly string[], barrier: DurabilityBarrier | undefined): void {
    for (let j = 0; j < group.length; j++) {
      const { order: p, done } = group[j]!;
      const answer = reply[j] ?? '';
      const result = answer.slice(1);
      switch (answer[0]) {
        case ACCEPT_REPLY.new:
          // `result` is the entry id. Durable mode answers once WAITAOF/WAIT confirmed it.
          if (barrier) this.confirm(p, result, barrier).then(done, (err: unknown) => done(unknownOutcome(err)));
          else done({ kind: 'accepted', body: acceptedBody(p.shard, result, p.idempotencyKey) });
          break;
        case ACCEPT_REPLY.replay:
          done({ kind: 'replayed', body: acceptedBody(p.shard, result, p.idempotencyKey) });
          break;
        case ACCEPT_REPLY.mismatch:
          done({ kind: 'mismatch' });
          break;
        case ACCEPT_REPLY.pending:
          done({ kind: 'pending' });
          break;
        default:
          done(
            unknownOutcome(
              new Error(
                'redis refused the write: ' +
                  (answer[0] === ACCEPT_REPLY.error ? result : `reply ${JSON.stringify(reply[j])}`),
              ),
            ),
          );
      }
    }
  }

  private async confirm(p: PreparedOrder, entryId: string, barrier: DurabilityBarrier): Promise<WriteOutcome> {
    const redis = this.options.redis;
    const pending = recordValue(STATE_PENDING, fingerprintOf(p), entryId);
    if (await barrier.wait()) {
      try {
        await redis.surgeConfirm(p.recordKey, pending, this.ttl);
      } catch (err) {
        // The entry is durable; only the record stays pending until its short TTL ends.
        this.options.logger.error({ err, shard: p.shard }, 'could not mark idempotency record done');
      }
      return { kind: 'accepted', body: acceptedBody(p.shard, entryId, p.idempotencyKey) };
    }
    try {
      await redis.surgeRelease(p.recordKey, pending);
    } catch (err) {
      this.options.logger.error(
        { err, shard: p.shard },
        'could not release pending idempotency record (it expires by itself)',
      );
    }
    return { kind: 'unavailable', reason: `${barrier.command.kind} did not confirm the write` };
  }
}
