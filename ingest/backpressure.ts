// Load shedding. A timer reads, every `backpressureIntervalMs`, the backlog of every shard
// (XINFO GROUPS: lag + pending of the `appliers` group; when Redis reports lag as NULL, or the
// group does not exist yet, the whole XLEN counts — conservative) and Redis INFO memory. Requests
// consult the last reading: over a limit, or Redis unreachable, ingest answers 503 + Retry-After
// instead of queuing more (SEMANTICS 2.9).
import type { Config } from '../common/config.js';
import { allStreamKeys, GROUP } from '../common/keys.js';
import type { Logger } from '../common/log.js';
import type { RedisClient } from '../common/redis.js';
import type { IngestMetrics } from '../metrics/definitions.js';

export type OverloadReason = 'redis_down' | 'backlog' | 'memory';

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

/** Backlog of one stream from XINFO GROUPS + XLEN. Exported for tests. */
export function streamBacklog(groups: unknown, xlen: number): number {
  if (!Array.isArray(groups)) return xlen;
  for (const g of groups) {
    if (!Array.isArray(g)) continue;
    const fields = new Map<string, unknown>();
    for (let i = 0; i + 1 < g.length; i += 2) fields.set(String(g[i]), g[i + 1]);
    if (fields.get('name') !== GROUP) continue;
    const lag = fields.get('lag');
    const pending = Number(fields.get('pending') ?? 0);
    return lag === null || lag === undefined ? xlen : Number(lag) + pending;
  }
  return xlen;
}

export class Backpressure {
  private timer: NodeJS.Timeout | undefined;
  private polling = false;
  private lastOk = false;
  private reading: BackpressureReading = { backlog: 0, usedMemory: 0, memoryLimit: 0 };
  private stopped = false;

  constructor(
    private readonly redis: RedisClient,
    private readonly config: Pick<
      Config,
      'redisPrefix' | 'shards' | 'maxBacklog' | 'maxRedisMemoryBytes' | 'backpressureIntervalMs'
    >,
    private readonly metrics: IngestMetrics,
    private readonly logger: Logger,
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

  /** Why ingest must shed load now, or undefined. */
  overloaded(): OverloadReason | undefined {
    if (!this.redisUp) return 'redis_down';
    const r = this.reading;
    if (this.config.maxBacklog > 0 && r.backlog > this.config.maxBacklog) return 'backlog';
    if (r.memoryLimit > 0 && r.usedMemory > r.memoryLimit) return 'memory';
    return undefined;
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
          return streamBacklog(groups, xlen);
        }),
      ]);
      const maxmemory = infoNumber(memory, 'maxmemory');
      this.reading = {
        backlog: perStream.reduce((a, b) => a + b, 0),
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
