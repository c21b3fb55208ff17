// The waiters of `GET /v1/orders/:key?wait=`: while any request waits, this process follows every
// shard's outcome stream (written by the workers after COMMIT, workers/outcomes.ts) on its own
// Redis connection and wakes the waiters of each order it reads. A waiter is one small record in
// a map by order and in a timer wheel shared by all (one interval, not a timer per request), with
// its request's continuation and no PostgreSQL connection, so thousands can wait at once. With
// nobody waiting, nothing is read: ingest does not pay for every order's outcome on the hot path.
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

/** Hears a wait's end once: the order's outcome, or undefined when the wait ran out or stopped. */
export interface WaitListener {
  ended(outcome: Outcome | undefined): void;
}

/**
 * One waiting request: a compact record in two places (its order's entry in the waiter map and
 * its deadline's bucket of the timer wheel), with no promise, timer or closure of its own.
 */
export class Waiter {
  constructor(
    private readonly owner: OutcomeWaiters,
    readonly name: string,
    /** Cleared once the wait ended (answered, timed out, cancelled), so nothing it holds stays reachable. */
    public done: WaitListener | undefined,
  ) {}

  /** True until the outcome came, the wait ran out or it was cancelled. */
  get waiting(): boolean {
    return this.done !== undefined;
  }

  /** Ends the wait without calling back (the request answered or went away). */
  cancel(): void {
    if (this.done === undefined) return;
    this.done = undefined;
    this.owner.forget(this);
  }
}

/** Longest XREAD BLOCK (ms): also how long a stop waits for the reader. */
const BLOCK_MS = 1000;
/** Entries read per XREAD: a burst of commits is read in one round trip. */
const READ_COUNT = 5000;
/** Redis Cluster: pause between rounds of per-shard reads. */
const CLUSTER_POLL_MS = 20;
/** Following stops this long after the last waiter is gone (a burst of waits keeps it pinned). */
const LINGER_MS = 5000;
/** The timer wheel's tick (ms): a wait ends up to one tick late, never early. */
const TICK_MS = 50;

export class OutcomeWaiters {
  /** Waiters by `client\nkey`: one record, or a list when several requests wait for the same order. */
  private readonly waiters = new Map<string, Waiter | Waiter[]>();
  /** The timer wheel: waiters by the tick their wait ends at (cancelled ones are skipped there). */
  private readonly wheel = new Map<number, Waiter[]>();
  private ticking: NodeJS.Timeout | undefined;
  private lastTick = 0;
  private count = 0;
  private readonly redis: RedisClient;
  private readonly streams: string[];
  private ids: string[] = [];
  private running: Promise<void> | undefined;
  private stopped = false;
  /** Following: the streams' ends are pinned (or being pinned); false while idle. */
  private following = false;
  private pinnedNow = false;
  /** Lookups waiting for the pin. */
  private onPinned: Array<() => void> = [];
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
   * was published before is not needed, since a wait's lookup comes after the pin (`whenReady`).
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
   * Waits up to `ms` for the order's outcome: `listener` hears it, or undefined when the wait runs out
   * (or the process stops), once — unless cancelled first. Register before looking the order up,
   * and look it up from `whenReady`: from then on a published outcome wakes the waiter, and what
   * was published before is in the lookup.
   */
  wait(clientId: string, key: string, ms: number, listener: WaitListener): Waiter {
    const name = `${clientId}\n${key}`;
    if (this.stopped) return new Waiter(this, name, undefined);
    const now = Date.now();
    this.lastWaiterAt = now;
    const w = new Waiter(this, name, listener);
    const same = this.waiters.get(name);
    if (same === undefined) this.waiters.set(name, w);
    else if (Array.isArray(same)) same.push(w);
    else this.waiters.set(name, [same, w]);
    this.count++;
    const tick = Math.ceil((now + ms) / TICK_MS);
    const bucket = this.wheel.get(tick);
    if (bucket) bucket.push(w);
    else this.wheel.set(tick, [w]);
    if (this.ticking === undefined) {
      this.lastTick = Math.floor(now / TICK_MS);
      this.ticking = setInterval(() => this.tick(), TICK_MS);
    }
    if (!this.following) {
      this.following = true;
      this.wake();
    }
    return w;
  }

  /**
   * Runs `fn` once the streams' ends are pinned (at once when they are). Redis down: never — the
   * waiter's end then comes first, and the caller looks the order up there.
   */
  whenReady(fn: () => void): void {
    if (this.pinnedNow || this.stopped) fn();
    else this.onPinned.push(fn);
  }

  /** Takes a waiter out of the map (its wheel entry is skipped at its tick). */
  forget(w: Waiter): void {
    const same = this.waiters.get(w.name);
    if (same === w) this.waiters.delete(w.name);
    else if (Array.isArray(same)) {
      const i = same.indexOf(w);
      if (i < 0) return;
      same.splice(i, 1);
      const [only] = same;
      if (same.length === 1 && only) this.waiters.set(w.name, only);
    } else return;
    this.count--;
  }

  /** Ends a waiter's wait with `outcome` (undefined: ran out or stopped). */
  private end(w: Waiter, outcome: Outcome | undefined): void {
    const listener = w.done;
    if (listener === undefined) return;
    w.done = undefined;
    this.forget(w);
    try {
      listener.ended(outcome);
    } catch (err) {
      this.logger.error({ err }, 'a waiter failed');
    }
  }

  /** Ends the waits whose tick has come; stops ticking once nobody waits. */
  private tick(): void {
    const now = Math.floor(Date.now() / TICK_MS);
    for (let t = this.lastTick + 1; t <= now; t++) {
      const due = this.wheel.get(t);
      if (due === undefined) continue;
      this.wheel.delete(t);
      for (const w of due) this.end(w, undefined);
    }
    this.lastTick = now;
    if (this.count === 0 && this.wheel.size === 0 && this.ticking !== undefined) {
      clearInterval(this.ticking);
      this.ticking = undefined;
    }
  }

  /** Orders being waited for (a gauge for tests and metrics). */
  get size(): number {
    return this.waiters.size;
  }

  /** Requests waiting (several may wait for one order). */
  get waiting(): number {
    return this.count;
  }

  private async loop(): Promise<void> {
    const cluster = this.redis instanceof Cluster;
    while (!this.stopped) {
      if (!this.following) {
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
        continue;
      }
      try {
        if (!this.pinnedNow) {
          await this.pin();
          this.pinnedNow = true;
          const ready = this.onPinned;
          this.onPinned = [];
          for (const fn of ready) fn();
        }
        if (cluster) await this.readEach();
        else await this.readAll();
      } catch (err) {
        // Read again from the same ids once Redis answers: nothing published meanwhile is skipped.
        if (this.stopped) return;
        this.logger.warn({ err }, 'outcome streams: read failed; waiters answer at their timeout meanwhile');
        await new Promise((r) => setTimeout(r, 500));
      }
      if (this.count === 0 && Date.now() - this.lastWaiterAt > LINGER_MS) {
        this.pinnedNow = false;
        this.following = false;
      }
    }
  }

  /** One blocking XREAD over every stream (single Redis): Redis answers it as soon as one is added to. */
  private async readAll(): Promise<void> {
    const reply = (await this.redis.xread(
      'COUNT',
      READ_COUNT,
      'BLOCK',
      BLOCK_MS,
      'STREAMS',
      ...this.streams,
      ...this.ids,
    )) as Array<[string, Array<[string, string[]]>]> | null;
    if (reply) for (const [stream, entries] of reply) this.deliver(this.streams.indexOf(stream), entries);
  }

  /** One XREAD per stream, in parallel, without blocking (Redis Cluster); pauses when all are empty. */
  private async readEach(): Promise<void> {
    const replies = await Promise.all(
      this.streams.map(
        (stream, i) =>
          this.redis.xread('COUNT', READ_COUNT, 'STREAMS', stream, this.ids[i] ?? '0-0') as Promise<Array<
            [string, Array<[string, string[]]>]
          > | null>,
      ),
    );
    let read = 0;
    replies.forEach((reply, i) => {
      const entries = reply?.[0]?.[1];
      if (entries && entries.length > 0) {
        read += entries.length;
        this.deliver(i, entries);
      }
    });
    if (read === 0) await new Promise((r) => setTimeout(r, CLUSTER_POLL_MS));
  }

  /** Wakes the waiters of stream `i`'s entries; an entry nobody waits for is not parsed. */
  private deliver(i: number, entries: ReadonlyArray<[string, string[]]>): void {
    for (const [id, fields] of entries) {
      this.ids[i] = id;
      if (this.count === 0) continue;
      const w = this.waiters.get(waiterName(fields));
      if (w === undefined) continue;
      const o = parseOutcome(fields);
      if (!o) continue;
      if (Array.isArray(w)) for (const one of [...w]) this.end(one, o);
      else this.end(w, o);
    }
  }

  /** Answers every waiter now (with the state then) and stops reading. Idempotent. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.wake();
    const ready = this.onPinned;
    this.onPinned = [];
    for (const fn of ready) fn();
    for (const w of [...this.waiters.values()].flat()) this.end(w, undefined);
    if (this.ticking !== undefined) clearInterval(this.ticking);
    this.ticking = undefined;
    this.wheel.clear();
    this.redis.disconnect();
    await this.running?.catch(() => {});
  }
}

/** `client\nkey` of an outcome entry's fields ('' when it has neither). */
function waiterName(fields: readonly string[]): string {
  let client: string | undefined;
  let key: string | undefined;
  for (let i = 0; i + 1 < fields.length && (client === undefined || key === undefined); i += 2) {
    if (fields[i] === 'client') client = fields[i + 1];
    else if (fields[i] === 'key') key = fields[i + 1];
  }
  return client === undefined || key === undefined ? '' : `${client}\n${key}`;
}
