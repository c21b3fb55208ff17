// The waiters of `GET /v1/orders/:key?wait=`: while any request waits, this process follows every
// shard's outcome stream (written by the workers after COMMIT, workers/outcomes.ts) on its own
// Redis connection and wakes the waiters of each order it reads. A waiter holds a map entry and a
// timer — no PostgreSQL connection — so thousands can wait at once. With nobody waiting, nothing
// is read: ingest does not pay for every order's outcome on the hot path.
//
// Single Redis: one blocking XREAD over all streams. Redis Cluster refuses a multi-key XREAD
// across slots (each shard is its own slot), so there each shard is read without blocking, in
// parallel, every CLUSTER_POLL_MS while waiters exist.
import { Cluster } from 'ioredis';
import type { Config } from '../common/config.js';
import { allOutcomeKeys } from '../common/keys.js';
import type { Logger } from '../common/log.js';
import { type Outcome, parseOutcome } from '../common/outcome.js';
import { createRedis, type RedisClient } from '../common/redis.js';

type Waiter = (outcome: Outcome | undefined) => void;

/** Longest XREAD BLOCK (ms): also how long a stop waits for the reader. */
const BLOCK_MS = 1000;
/** Redis Cluster: pause between rounds of per-shard reads. */
const CLUSTER_POLL_MS = 50;
/** Following stops this long after the last waiter is gone (a burst of waits keeps it pinned). */
const LINGER_MS = 5000;

export class OutcomeWaiters {
  private readonly waiters = new Map<string, Set<Waiter>>();
  private readonly redis: RedisClient;
  private readonly streams: string[];
  private ids: string[] = [];
  private running: Promise<void> | undefined;
  private stopped = false;
  /** Resolves once the streams' ends are pinned; undefined while not following. */
  private pinned: Promise<void> | undefined;
  private pinnedNow: () => void = () => {};
  private wake: () => void = () => {};
  private lastWaiterAt = 0;

  constructor(
    config: Config,
    private readonly logger: Logger,
  ) {
    // A blocked XREAD holds its connection: one of its own, retried through outages.
    this.redis = createRedis(config, { connectionName: 'surge-ingest-outcomes', maxRetriesPerRequest: null });
    this.redis.on('error', () => {});
    this.streams = allOutcomeKeys(config.redisPrefix, config.shards);
  }

  /**
   * Starts the follower, idle until a request waits. It follows the streams from their ends: what
   * was published before is not needed, since a wait's lookup comes after the pin (`ready`).
   */
  start(): void {
    this.running ??= this.loop();
  }

  /** Each stream's last id now (not `$`, so nothing published between two reads is skipped). */
  private async pin(): Promise<void> {
    for (const [i, stream] of this.streams.entries()) {
      const last = (await this.redis.xrevrange(stream, '+', '-', 'COUNT', 1))[0];
      this.ids[i] = last ? last[0] : '0-0';
    }
  }

  /**
   * Waits up to `ms` for the order's outcome; undefined at the timeout. Register before looking
   * the order up, and look it up once `ready` resolves: from then on a published outcome wakes
   * the waiter, and what was published before is in the lookup.
   */
  wait(
    clientId: string,
    key: string,
    ms: number,
  ): { outcome: Promise<Outcome | undefined>; cancel: () => void; ready: Promise<void> } {
    const name = `${clientId}\n${key}`;
    if (this.stopped) return { outcome: Promise.resolve(undefined), cancel: () => {}, ready: Promise.resolve() };
    this.lastWaiterAt = Date.now();
    let done: Waiter = () => {};
    const outcome = new Promise<Outcome | undefined>((resolve) => {
      const timer = setTimeout(() => done(undefined), ms);
      done = (o) => {
        clearTimeout(timer);
        const set = this.waiters.get(name);
        set?.delete(done);
        if (set?.size === 0) this.waiters.delete(name);
        resolve(o);
      };
      let set = this.waiters.get(name);
      if (!set) {
        set = new Set();
        this.waiters.set(name, set);
      }
      set.add(done);
    });
    if (this.pinned === undefined) {
      this.pinned = new Promise<void>((resolve) => {
        this.pinnedNow = resolve;
      });
      this.wake();
    }
    // Redis down: the lookup goes ahead (and answers 503) rather than waiting for the pin.
    const ready = Promise.race([this.pinned, new Promise<void>((r) => setTimeout(r, ms).unref())]);
    return { outcome, cancel: () => done(undefined), ready };
  }

  /** Orders being waited for (a gauge for tests and metrics). */
  get size(): number {
    return this.waiters.size;
  }

  private async loop(): Promise<void> {
    const cluster = this.redis instanceof Cluster;
    while (!this.stopped) {
      if (this.pinned === undefined) {
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
        continue;
      }
      try {
        if (this.ids.length === 0) {
          await this.pin();
          this.pinnedNow();
        }
        const entries = cluster ? await this.readEach() : await this.readAll();
        this.deliver(entries);
      } catch (err) {
        this.ids = [];
        if (this.stopped) return;
        this.logger.warn({ err }, 'outcome streams: read failed; waiters answer at their timeout meanwhile');
        await new Promise((r) => setTimeout(r, 500));
      }
      if (this.waiters.size === 0 && Date.now() - this.lastWaiterAt > LINGER_MS) {
        this.ids = [];
        this.pinned = undefined;
      }
    }
  }

  /** One blocking XREAD over every stream (single Redis). */
  private async readAll(): Promise<Array<[number, Array<[string, string[]]>]>> {
    const reply = (await this.redis.xread(
      'COUNT',
      1000,
      'BLOCK',
      BLOCK_MS,
      'STREAMS',
      ...this.streams,
      ...this.ids,
    )) as Array<[string, Array<[string, string[]]>]> | null;
    return (reply ?? []).map(([stream, entries]) => [this.streams.indexOf(stream), entries]);
  }

  /** One XREAD per stream, in parallel, without blocking (Redis Cluster); pauses when all are empty. */
  private async readEach(): Promise<Array<[number, Array<[string, string[]]>]>> {
    const replies = await Promise.all(
      this.streams.map(
        (stream, i) =>
          this.redis.xread('COUNT', 1000, 'STREAMS', stream, this.ids[i] ?? '0-0') as Promise<Array<
            [string, Array<[string, string[]]>]
          > | null>,
      ),
    );
    const out: Array<[number, Array<[string, string[]]>]> = [];
    replies.forEach((reply, i) => {
      const entries = reply?.[0]?.[1];
      if (entries && entries.length > 0) out.push([i, entries]);
    });
    if (out.length === 0) await new Promise((r) => setTimeout(r, CLUSTER_POLL_MS));
    return out;
  }

  private deliver(read: Array<[number, Array<[string, string[]]>]>): void {
    for (const [i, entries] of read) {
      for (const [id, fields] of entries) {
        this.ids[i] = id;
        if (this.waiters.size === 0) continue;
        const o = parseOutcome(fields);
        if (!o) continue;
        const set = this.waiters.get(`${o.clientId}\n${o.idempotencyKey}`);
        if (set) for (const w of [...set]) w(o);
      }
    }
  }

  /** Answers every waiter now (with the state then) and stops reading. Idempotent. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.wake();
    for (const set of [...this.waiters.values()]) for (const w of [...set]) w(undefined);
    this.redis.disconnect();
    await this.running?.catch(() => {});
  }
}
