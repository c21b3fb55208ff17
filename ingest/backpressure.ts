// Load shedding. A timer reads, every `backpressureIntervalMs`, the backlog of every shard
// (XINFO GROUPS: lag + pending of the `appliers` group; when Redis reports lag as NULL, or the
// group does not exist yet, the whole XLEN counts — conservative) and Redis INFO memory. Requests
// consult the last reading: over a limit, or Redis unreachable, ingest answers 503 + Retry-After
// instead of queuing more (SEMANTICS 2.9). The readings also give the drain rate (entries the
// workers finished per second), from which the Retry-After of a backlog 503 is computed.
import type { Config } from '../common/config.js';
import { allStreamKeys, GROUP } from '../common/keys.js';
import type { Logger } from '../common/log.js';
import type { RedisClient } from '../common/redis.js';
import type { IngestMetrics, ShedReason } from '../metrics/definitions.js';

export type OverloadReason = Extract<ShedReason, 'redis_down' | 'backlog' | 'memory'>;

export interface BackpressureReading {
  backlog: number;
  usedMemory: number;
  /** The memory limit in force (0 = none). */
  memoryLimit: number;
}

function infoNumber(info: string, name: string): number {
  const m = new RegExp(`^${name}:(\\d+)`, 'm').exec(info);
  return m ? Number(m[1]) : 0;
}

/** The fields of the appliers group in an XINFO GROUPS reply, or undefined. */
function appliersGroup(groups: unknown): Map<string, unknown> | undefined {
  if (!Array.isArray(groups)) return undefined;
  for (const g of groups) {
    if (!Array.isArray(g)) continue;
    const fields = new Map<string, unknown>();
    for (let i = 0; i + 1 < g.length; i += 2) fields.set(String(g[i]), g[i + 1]);
    if (fields.get('name') === GROUP) return fields;
  }
  return undefined;
}

/** Backlog of one stream from XINFO GROUPS + XLEN. Exported for tests. */
export function streamBacklog(groups: unknown, xlen: number): number {
  const fields = appliersGroup(groups);
  if (!fields) return xlen;
  const lag = fields.get('lag');
  const pending = Number(fields.get('pending') ?? 0);
  return lag === null || lag === undefined ? xlen : Number(lag) + pending;
}

/** Entries of one stream the workers have finished (read and acknowledged), when Redis reports it (7.0+). */
function streamFinished(groups: unknown): number | undefined {
  const fields = appliersGroup(groups);
  const read = fields?.get('entries-read');
  if (read === null || read === undefined) return undefined;
  return Number(read) - Number(fields?.get('pending') ?? 0);
}

/** Longest Retry-After a backlog 503 asks for (s). */
const MAX_RETRY_AFTER = 60;

export class Backpressure {
  private timer: NodeJS.Timeout | undefined;
  private polling = false;
  private lastOk = false;
  private reading: BackpressureReading = { backlog: 0, usedMemory: 0, memoryLimit: 0 };
  private stopped = false;
  /** Entries finished over all shards at the last reading, and when (ms). */
  private finished: { n: number; at: number } | undefined;
  /** Entries the workers finish per second (moving average of the readings). */
  private drainRate = 0;

  constructor(
    private readonly redis: RedisClient,
    private readonly config: Pick<
      Config,
      'redisPrefix' | 'shards' | 'maxBacklog' | 'maxRedisMemoryBytes' | 'backpressureIntervalMs'
    >,
    private readonly metrics: IngestMetrics,
    private readonly logger: Logger,
    private readonly random: () => number = Math.random,
  ) {}

  /** Reads once now, then every interval. */
  async start(): Promise<void> {
    await this.poll();
    this.timer = setInterval(() => void this.poll(), this.config.backpressureIntervalMs);
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
  }

  /** Redis answered the last reading and the connection is up. */
  get redisUp(): boolean {
    return this.lastOk && this.redis.status === 'ready';
  }

  get lastReading(): BackpressureReading {
    return this.reading;
  }

  /** Seconds a client should wait before retrying. */
  get retryAfterSeconds(): number {
    return Math.max(1, Math.ceil(this.config.backpressureIntervalMs / 1000));
  }

  /**
   * Retry-After (s) of a 503 for `reason`: for the backlog, the time the workers need to bring it
   * back under the limit at the measured drain rate; otherwise the interval of the readings.
   * Jittered (up to half as long again) so that the retries do not arrive as one wave.
   */
  retryAfterFor(reason: OverloadReason): number {
    let base = this.retryAfterSeconds;
    if (reason === 'backlog' && this.drainRate > 0) {
      const excess = this.reading.backlog - this.config.maxBacklog;
      base = Math.max(base, Math.ceil(excess / this.drainRate));
    }
    base = Math.min(base, MAX_RETRY_AFTER);
    return base + Math.floor(this.random() * (Math.floor(base / 2) + 1));
  }

  /** Why ingest must shed load now, or undefined. */
  overloaded(): OverloadReason | undefined {
    if (!this.redisUp) return 'redis_down';
    const r = this.reading;
    if (this.config.maxBacklog > 0 && r.backlog > this.config.maxBacklog) return 'backlog';
    if (r.memoryLimit > 0 && r.usedMemory > r.memoryLimit) return 'memory';
    return undefined;
  }

  /** Updates the drain rate from the entries finished per shard (all known, or the reading is skipped). */
  private noteFinished(perShard: Array<number | undefined>): void {
    if (perShard.some((n) => n === undefined)) return;
    const n = perShard.reduce<number>((a, b) => a + (b ?? 0), 0);
    const at = Date.now();
    const last = this.finished;
    this.finished = { n, at };
    if (!last || at <= last.at || n < last.n) return;
    const rate = ((n - last.n) * 1000) / (at - last.at);
    this.drainRate = this.drainRate === 0 ? rate : 0.7 * this.drainRate + 0.3 * rate;
  }

  private async poll(): Promise<void> {
    if (this.polling || this.stopped) return;
    this.polling = true;
    try {
      const keys = allStreamKeys(this.config.redisPrefix, this.config.shards);
      const [memory, ...perStream] = await Promise.all([
        this.redis.info('memory'),
        ...keys.map(async (key) => {
          const [groups, xlen] = await Promise.all([
            this.redis.xinfo('GROUPS', key).catch(() => null),
            this.redis.xlen(key),
          ]);
          return { backlog: streamBacklog(groups, xlen), finished: streamFinished(groups) };
        }),
      ]);
      this.noteFinished(perStream.map((s) => s.finished));
      const maxmemory = infoNumber(memory, 'maxmemory');
      this.reading = {
        backlog: perStream.reduce((a, s) => a + s.backlog, 0),
        usedMemory: infoNumber(memory, 'used_memory'),
        memoryLimit:
          this.config.maxRedisMemoryBytes > 0 ? this.config.maxRedisMemoryBytes : Math.floor(maxmemory * 0.9),
      };
      if (!this.lastOk) this.logger.info('redis reachable');
      this.lastOk = true;
    } catch (err) {
      if (this.lastOk) this.logger.error({ err }, 'redis unreachable: shedding load');
      this.lastOk = false;
    } finally {
      this.polling = false;
    }
    const reason = this.overloaded();
    for (const r of ['redis_down', 'backlog', 'memory'] as const)
      this.metrics.overloaded.set({ reason: r }, r === reason ? 1 : 0);
  }
}
