// `surge status`: the operator's terminal view of the lag exporter's figures (per shard length,
// lag, pending, backlog, oldest ages, consumers, DLQ depth) plus the apply rate over the last
// minute from PostgreSQL. `--json` prints the same report for scripts; `--watch` redraws it.
import type { Config } from '../common/config.js';
import { createPool, type Pool } from '../common/db.js';
import { explainSchemaError } from '../common/migrate.js';
import { createRedis, type RedisClient, redisReady } from '../common/redis.js';
import { type LagSnapshot, readLag } from './lag.js';

/** Orders PostgreSQL committed in the last `windowSeconds` (orders.applied_at), by status. */
export interface ApplyRate {
  windowSeconds: number;
  applied: number;
  rejected: number;
  /** (applied + rejected) / windowSeconds. */
  perSecond: number;
}

export interface StatusReport extends LagSnapshot {
  prefix: string;
  /** null when PostgreSQL could not be read (the error is in `applyRateError`). */
  applyRate: ApplyRate | null;
  applyRateError?: string;
}

const APPLY_RATE_WINDOW_SECONDS = 60;

async function readApplyRate(pool: Pool, windowSeconds: number = APPLY_RATE_WINDOW_SECONDS): Promise<ApplyRate> {
  const { rows } = await pool.query<{ status: string; n: string }>(
    `SELECT status, count(*) AS n FROM orders WHERE applied_at > now() - make_interval(secs => $1) GROUP BY status`,
    [windowSeconds],
  );
  const count = (status: string) => Number(rows.find((r) => r.status === status)?.n ?? 0);
  const applied = count('applied');
  const rejected = count('rejected');
  return { windowSeconds, applied, rejected, perSecond: (applied + rejected) / windowSeconds };
}

async function collectStatus(
  redis: RedisClient,
  pool: Pool,
  config: Pick<Config, 'redisPrefix' | 'shards'>,
  now: number = Date.now(),
): Promise<StatusReport> {
  const [snap, rate] = await Promise.all([
    readLag(redis, config.redisPrefix, config.shards, now),
    readApplyRate(pool).then(
      (r) => ({ ok: r }) as const,
      // The rest of the report comes from Redis, so an unmigrated database is named, not fatal.
      (e: unknown) => {
        const explained = explainSchemaError(e);
        return { error: explained instanceof Error ? explained.message : String(explained) } as const;
      },
    ),
  ]);
  return 'ok' in rate
    ? { ...snap, prefix: config.redisPrefix, applyRate: rate.ok }
    : { ...snap, prefix: config.redisPrefix, applyRate: null, applyRateError: rate.error };
}

function duration(seconds: number): string {
  if (seconds < 1) return seconds === 0 ? '0s' : `${Math.round(seconds * 1000)}ms`;
  if (seconds < 60) return `${seconds.toFixed(1)}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${String(Math.floor(seconds % 60)).padStart(2, '0')}s`;
  return `${Math.floor(seconds / 3600)}h${String(Math.floor((seconds % 3600) / 60)).padStart(2, '0')}m`;
}

function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}

function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)];
}

/** The human-readable report (what `surge status` prints). */
function formatStatus(r: StatusReport): string {
  const out: string[] = [];
  out.push(
    `Surge status  ${new Date(r.at).toISOString()}  prefix ${r.prefix}  group ${r.group}  ${r.shards.length} shards`,
  );
  for (const m of r.memory) {
    const of =
      m.maxBytes > 0
        ? ` of ${bytes(m.maxBytes)} (${((100 * m.usedBytes) / m.maxBytes).toFixed(1)} %)`
        : ' (no maxmemory)';
    out.push(`Redis ${m.node}: ${bytes(m.usedBytes)} used${of}`);
  }
  const rate = r.applyRate;
  out.push(
    rate
      ? `Applied in the last ${rate.windowSeconds} s: ${rate.applied + rate.rejected} orders ` +
          `(${rate.perSecond.toFixed(1)}/s; ${rate.applied} applied, ${rate.rejected} rejected)`
      : `Apply rate unavailable: ${r.applyRateError ?? 'unknown error'}`,
  );
  out.push('');
  let totLen = 0;
  let totBacklog = 0;
  let totPending = 0;
  let totDlq = 0;
  let maxAge = 0;
  const rows = r.shards.map((s) => {
    const g = s.group;
    totLen += s.length;
    totDlq += s.dlqDepth;
    if (!g)
      return [
        String(s.shard),
        s.stream,
        String(s.length),
        s.exists ? 'no group' : 'no stream',
        '-',
        '-',
        '-',
        '-',
        '-',
        String(s.dlqDepth),
      ];
    totBacklog += g.backlog;
    totPending += g.pending;
    maxAge = Math.max(maxAge, g.oldestUndeliveredAgeSeconds, g.oldestPendingAgeSeconds);
    const lag =
      g.lag === null
        ? `NULL (${g.undeliveredSource === 'lower_bound' ? '≥' : ''}${g.undelivered} counted)`
        : String(g.lag);
    return [
      String(s.shard),
      s.stream,
      String(s.length),
      lag,
      String(g.pending),
      `${g.undeliveredSource === 'lower_bound' ? '≥' : ''}${g.backlog}`,
      duration(g.oldestUndeliveredAgeSeconds),
      duration(g.oldestPendingAgeSeconds),
      String(g.consumers.length),
      String(s.dlqDepth),
    ];
  });
  out.push(
    ...table(
      [
        'SHARD',
        'STREAM',
        'LENGTH',
        'LAG',
        'PENDING',
        'BACKLOG',
        'OLDEST-UNDELIVERED',
        'OLDEST-PENDING',
        'CONSUMERS',
        'DLQ',
      ],
      rows,
    ),
  );
  out.push(
    `Total: length ${totLen}, backlog ${totBacklog} (pending ${totPending}), ` +
      `oldest entry waiting ${duration(maxAge)}, DLQ ${totDlq}`,
  );
  const consumers = r.shards.flatMap((s) =>
    (s.group?.consumers ?? []).map((c) => [String(s.shard), c.name, String(c.pending), duration(c.idleMs / 1000)]),
  );
  out.push('');
  if (consumers.length === 0) out.push('No consumers registered.');
  else out.push(...table(['SHARD', 'CONSUMER', 'PENDING', 'IDLE'], consumers));
  return out.join('\n');
}

export interface StatusOptions {
  /** Print JSON (one object per refresh, one line each with --watch). Default false. */
  json?: boolean;
  /** Refresh every `intervalMs` until `signal` aborts. Default false (print once). */
  watch?: boolean;
  /** Default 2000 ms. */
  intervalMs?: number;
  signal?: AbortSignal;
  write?: (text: string) => void;
}

/** Runs `surge status`: connects, prints the report once (or until aborted with watch), disconnects. */
export async function runStatus(config: Config, options: StatusOptions = {}): Promise<void> {
  const write = options.write ?? ((t: string) => void process.stdout.write(t));
  const intervalMs = options.intervalMs ?? 2000;
  const redis = createRedis(config, { connectionName: 'surge-status', offlineQueue: false, maxRetriesPerRequest: 1 });
  redis.on('error', () => {});
  const pool = createPool(config.databaseUrl, { max: 1, applicationName: 'surge-status' });
  try {
    await redisReady(redis, 5000);
    for (;;) {
      const report = await collectStatus(redis, pool, config);
      if (options.json) write(`${JSON.stringify(report)}\n`);
      // With --watch: cursor home + clear screen, then the frame (redrawn in place).
      else write(`${options.watch ? '\x1b[H\x1b[2J' : ''}${formatStatus(report)}\n`);
      if (!options.watch || options.signal?.aborted) return;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, intervalMs);
        function done() {
          clearTimeout(timer);
          options.signal?.removeEventListener('abort', done);
          resolve();
        }
        options.signal?.addEventListener('abort', done);
      });
      if (options.signal?.aborted) return;
    }
  } finally {
    redis.disconnect();
    await pool.end();
  }
}
