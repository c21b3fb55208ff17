// The waiters of `GET /v1/orders/:key?wait=`: one blocking XREAD on this process's own Redis
// connection follows every shard's outcome stream (written by the workers after COMMIT,
// workers/outcomes.ts) and wakes the waiters of each order it reads. A waiter holds a map entry
// and a timer — no PostgreSQL connection and no polling — so thousands can wait at once.
import type { Config } from '../common/config.js';
import { allOutcomeKeys } from '../common/keys.js';
import type { Logger } from '../common/log.js';
import { type Outcome, parseOutcome } from '../common/outcome.js';
import { createRedis, type RedisClient } from '../common/redis.js';

type Waiter = (outcome: Outcome | undefined) => void;

/** Longest XREAD BLOCK (ms): also how long a stop waits for the reader. */
const BLOCK_MS = 1000;

export class OutcomeWaiters {
  private readonly waiters = new Map<string, Set<Waiter>>();
  private readonly redis: RedisClient;
  private readonly streams: string[];
  private ids: string[] = [];
  private running: Promise<void> | undefined;
  private stopped = false;

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
   * Starts following the streams from their ends: what was published before is not needed, since
   * a wait begins with a lookup. Does not wait for Redis (ingest may start while it is down).
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

  /** Waits up to `ms` for the order's outcome; undefined at the timeout. Register before looking the order up. */
  wait(clientId: string, key: string, ms: number): { outcome: Promise<Outcome | undefined>; cancel: () => void } {
    const name = `${clientId}\n${key}`;
    if (this.stopped) return { outcome: Promise.resolve(undefined), cancel: () => {} };
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
    return { outcome, cancel: () => done(undefined) };
  }

  /** Orders being waited for (a gauge for tests and metrics). */
  get size(): number {
    return this.waiters.size;
  }

  private async loop(): Promise<void> {
    while (!this.stopped && this.ids.length === 0) {
      try {
        await this.pin();
      } catch (err) {
        this.ids = [];
        if (this.stopped) return;
        this.logger.warn({ err }, 'outcome streams: cannot read them yet; waiters answer at their timeout meanwhile');
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    while (!this.stopped) {
      let reply: Array<[string, Array<[string, string[]]>]> | null;
      try {
        reply = (await this.redis.xread(
          'COUNT',
          1000,
          'BLOCK',
          BLOCK_MS,
          'STREAMS',
          ...this.streams,
          ...this.ids,
        )) as Array<[string, Array<[string, string[]]>]> | null;
      } catch (err) {
        if (this.stopped) return;
        this.logger.warn({ err }, 'outcome streams: read failed; waiters answer at their timeout meanwhile');
        await new Promise((r) => setTimeout(r, 500));
        continue;
      }
      for (const [stream, entries] of reply ?? []) {
        const i = this.streams.indexOf(stream);
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
  }

  /** Answers every waiter now (with the state then) and stops reading. Idempotent. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const set of [...this.waiters.values()]) for (const w of [...set]) w(undefined);
    this.redis.disconnect();
    await this.running?.catch(() => {});
  }
}
