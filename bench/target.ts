// What a benchmark loads: a Surge stack it starts (through `surge up`'s `up()`), a Surge stack that
// is already running, or one of the two comparison baselines. Each target knows how to report its
// backlog and its processes' memory, and how to stop what the benchmark started.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import pg from 'pg';
import { createClient } from '../common/clients.js';
import { loadConfig } from '../common/config.js';
import { createPool, ensureDatabase } from '../common/db.js';
import { migrate } from '../common/migrate.js';
import { PACKAGE_ROOT } from '../common/paths.js';
import { up } from '../stack/up.js';
import { deleteRedisPrefix } from '../devkit/scratch.js';
import { BULL_QUEUE } from './baselines/common.js';
import type { ProcessGroup } from './cpu.js';
import { bySuffix, maxOf, scrape, sumOf } from './prom.js';

export type SystemName = 'surge' | 'sync-insert' | 'bullmq';

export interface Backlog {
  /** Entries accepted but not yet committed and acknowledged. */
  entries: number;
  /** Age of the oldest such entry, seconds (undefined when the target cannot tell). */
  ageSeconds: number | undefined;
}

export interface MemorySource {
  role: string;
  metricsUrl?: string;
  pid?: number;
}

export interface Target {
  system: SystemName;
  url: string;
  apiKey: string;
  databaseUrl: string;
  /** Settings that shape the result (shards, batch size, workers, …) for the report. */
  settings: Record<string, string | number>;
  memorySources: MemorySource[];
  /** The target's own processes for the CPU table (the run adds the generator, PostgreSQL and Redis). */
  processes: ProcessGroup[];
  /** The Redis the target uses, if any: its server's CPU is reported. */
  redisUrl?: string;
  backlog(): Promise<Backlog | undefined>;
  stop(): Promise<void>;
}

export interface SurgeStartOptions {
  /** Environment overrides for the stack (SURGE_SHARDS, SURGE_BATCH_SIZE, DATABASE_URL, …). */
  env: Record<string, string>;
  /** Worker processes (`surge work` replicas). Default 1. */
  workers: number;
  /** Child log lines (warnings and errors of the stack). */
  log: (line: string) => void;
}

const CLI = join(PACKAGE_ROOT, 'dist', 'cli', 'surge.js');

const pidList = (...pids: Array<number | undefined>): number[] => pids.filter((p): p is number => p !== undefined);

export function rssOfPid(pid: number): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Resident memory of each source in bytes (from its /metrics, else /proc). */
export async function sampleMemory(sources: readonly MemorySource[]): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  await Promise.all(
    sources.map(async (s) => {
      let rss: number | undefined;
      if (s.metricsUrl) {
        const m = await scrape(s.metricsUrl);
        rss = m ? bySuffix(m, 'process_resident_memory_bytes') : undefined;
      }
      if (rss === undefined && s.pid !== undefined) rss = rssOfPid(s.pid);
      if (rss !== undefined) out[s.role] = rss;
    }),
  );
  return out;
}

/** Backlog as the lag exporter reports it: `surge_consumer_group_backlog` (else lag + pending). */
export async function lagExporterBacklog(lagUrl: string): Promise<Backlog | undefined> {
  const m = await scrape(lagUrl);
  if (!m) return undefined;
  const entries =
    sumOf(m, 'surge_consumer_group_backlog') ??
    (sumOf(m, 'surge_consumer_group_lag') ?? 0) + (sumOf(m, 'surge_consumer_group_pending') ?? 0);
  const ages = [maxOf(m, 'surge_consumer_group_lag_seconds'), maxOf(m, 'surge_oldest_pending_age_seconds')].filter(
    (v): v is number => v !== undefined,
  );
  return { entries, ageSeconds: ages.length > 0 ? Math.max(...ages) : undefined };
}

async function pgReachable(url: string): Promise<boolean> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1500 });
  try {
    await c.connect();
    return true;
  } catch {
    return false;
  } finally {
    await c.end().catch(() => {});
  }
}

async function dropDatabase(url: string): Promise<void> {
  const u = new URL(url);
  const name = decodeURIComponent(u.pathname.slice(1));
  u.pathname = '/postgres';
  const c = new pg.Client({ connectionString: u.toString() });
  await c.connect();
  try {
    await c.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`);
  } finally {
    await c.end();
  }
}

/** A database and Redis prefix for one benchmark stack, owned (dropped at the end) unless given. */
export interface Scratch {
  databaseUrl: string | undefined;
  redisUrl: string;
  prefix: string;
  cleanup(): Promise<void>;
}

export async function scratch(env: Record<string, string | undefined>, keep: boolean): Promise<Scratch> {
  const id = `${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
  const redisUrl = env.REDIS_URL ?? 'redis://127.0.0.1:6379';
  const ownPrefix = !env.SURGE_REDIS_PREFIX;
  const prefix = env.SURGE_REDIS_PREFIX ?? `surge-bench-${id}`;
  let databaseUrl = env.DATABASE_URL;
  let ownDb = false;
  if (!databaseUrl && (await pgReachable('postgres://postgres@127.0.0.1:5432/postgres'))) {
    databaseUrl = `postgres://postgres@127.0.0.1:5432/surge_bench_${id}`;
    await ensureDatabase(databaseUrl);
    await migrate(databaseUrl);
    ownDb = true;
  }
  return {
    databaseUrl,
    redisUrl,
    prefix,
    async cleanup() {
      if (keep) return;
      if (ownPrefix) await deleteRedisPrefix(redisUrl, prefix).catch(() => 0);
      if (ownDb && databaseUrl) await dropDatabase(databaseUrl).catch(() => {});
    },
  };
}

function spawnNode(args: string[], env: Record<string, string>, log: (l: string) => void): ChildProcess {
  const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (d: string) => {
    for (const l of d.split('\n')) if (l.trim()) log(l);
  });
  return child;
}

/** Waits for the child's `{"listening": port}` line. */
function listening(child: ChildProcess, what: string): Promise<number> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`${what} did not start within 30 s`)), 30_000);
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (d: string) => {
      buf += d;
      const m = /\{"listening":(\d+)\}/.exec(buf);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited with ${code} while starting`));
    });
  });
}

/** SIGTERM, then SIGKILL after `timeoutMs`; resolves once the child has exited. */
export async function stopChild(child: ChildProcess, timeoutMs = 25_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    const force = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', () => {
      clearTimeout(force);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** Starts Surge (ingest, `workers` worker processes, lag exporter) through `up()`. */
export async function startSurge(opts: SurgeStartOptions): Promise<Target> {
  const base = { ...(process.env as Record<string, string>), ...opts.env };
  const s = await scratch(base, base.SURGE_BENCH_KEEP === '1');
  const env: Record<string, string> = {
    SURGE_LOG_LEVEL: 'warn',
    ...base,
    REDIS_URL: s.redisUrl,
    SURGE_REDIS_PREFIX: s.prefix,
    SURGE_INGEST_PORT: base.SURGE_INGEST_PORT ?? '0',
    SURGE_INGEST_METRICS_PORT: base.SURGE_INGEST_METRICS_PORT ?? '0',
    SURGE_WORKER_METRICS_PORT: base.SURGE_WORKER_METRICS_PORT ?? '0',
    SURGE_LAG_EXPORTER_PORT: base.SURGE_LAG_EXPORTER_PORT ?? '0',
    ...(s.databaseUrl ? { DATABASE_URL: s.databaseUrl } : {}),
  };
  const dataDir = mkdtempSync(join(tmpdir(), 'surge-bench-'));
  // up() reads REDIS_URL / DATABASE_URL from process.env and passes process.env to its children.
  const saved = { ...process.env };
  Object.assign(process.env, env);
  let stack: Awaited<ReturnType<typeof up>>;
  try {
    const config = loadConfig(process.env);
    stack = await up(config, {
      dataDir,
      embeddedPostgres: false,
      startRedis: false,
      roles: ['ingest', 'work', 'lag-exporter'],
      out: opts.log,
    });
  } catch (e) {
    await s.cleanup();
    rmSync(dataDir, { recursive: true, force: true });
    throw e;
  } finally {
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
  }
  const databaseUrl = stack.env.DATABASE_URL;
  if (databaseUrl === undefined) throw new Error('the started stack has no DATABASE_URL');
  const extra: ChildProcess[] = [];
  for (let i = 1; i < opts.workers; i++) {
    extra.push(spawnNode([CLI, 'work'], { ...stack.env, SURGE_WORKER_METRICS_PORT: '0' }, opts.log));
  }
  const host = new URL(stack.ingestUrl).hostname;
  const lagUrl = `http://${host}:${stack.env.SURGE_LAG_EXPORTER_PORT}/metrics`;
  const settings = loadConfig(stack.env);
  return {
    system: 'surge',
    url: stack.ingestUrl,
    apiKey: stack.apiKey,
    databaseUrl,
    settings: {
      workers: opts.workers,
      shards: settings.shards,
      batchSize: settings.batchSize,
      batchLingerMs: settings.batchLingerMs,
      workerThreads: settings.workerThreads,
      pgPoolSize: settings.pgPoolSize,
      durability: settings.durability,
    },
    processes: [
      { name: 'ingest', kind: 'ingest', descendants: true, pids: () => pidList(stack.pids().ingest) },
      {
        name: opts.workers > 1 ? `workers (${opts.workers})` : 'worker',
        kind: 'worker',
        descendants: true,
        pids: () => pidList(stack.pids().work, ...extra.map((c) => c.pid)),
      },
      { name: 'lag exporter', kind: 'other', pids: () => pidList(stack.pids()['lag-exporter']) },
    ],
    redisUrl: s.redisUrl,
    memorySources: [
      { role: 'ingest', metricsUrl: `http://${host}:${stack.env.SURGE_INGEST_METRICS_PORT}/metrics` },
      { role: 'work', metricsUrl: `http://${host}:${stack.env.SURGE_WORKER_METRICS_PORT}/metrics` },
      ...extra.map((c, i) => ({ role: `work-${i + 2}`, pid: c.pid as number })),
    ],
    backlog: () => lagExporterBacklog(lagUrl),
    async stop() {
      await Promise.all(extra.map((c) => stopChild(c)));
      await stack.stop(0);
      await s.cleanup();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export interface RunningOptions {
  url: string;
  apiKey: string;
  databaseUrl: string;
  /** The lag exporter's /metrics URL; without it backlog is not sampled. */
  lagUrl?: string;
  /** Ingest's /metrics URL (its own port, not the API's); without it ingest memory is not sampled. */
  ingestMetricsUrl?: string;
}

/** A Surge stack someone else runs; nothing is started or stopped. */
export function runningSurge(o: RunningOptions): Target {
  return {
    system: 'surge',
    url: o.url.replace(/\/$/, ''),
    apiKey: o.apiKey,
    databaseUrl: o.databaseUrl,
    settings: { stack: 'running (settings not known to the benchmark)' },
    // Its processes are not ours to find; PostgreSQL backends are still read when local.
    processes: [],
    memorySources: o.ingestMetricsUrl ? [{ role: 'ingest', metricsUrl: o.ingestMetricsUrl }] : [],
    backlog: async () => (o.lagUrl ? lagExporterBacklog(o.lagUrl) : undefined),
    stop: async () => {},
  };
}

export interface BaselineOptions {
  env: Record<string, string>;
  /** Connections (sync) or job concurrency (BullMQ). Default 16. */
  concurrency: number;
  log: (line: string) => void;
}

/** A migrated scratch database (and Redis prefix) for a baseline, with an API key of its own. */
async function baselineScratch(
  o: BaselineOptions,
  what: string,
  clientName: string,
): Promise<{ base: Record<string, string>; s: Scratch & { databaseUrl: string }; apiKey: string }> {
  const base = { ...(process.env as Record<string, string>), ...o.env };
  const s = await scratch(base, false);
  const { databaseUrl } = s;
  if (!databaseUrl) throw new Error(`the ${what} baseline needs PostgreSQL (set DATABASE_URL)`);
  if (base.DATABASE_URL) await migrate(databaseUrl);
  const pool = createPool(databaseUrl, { max: 1 });
  try {
    const apiKey = (await createClient(pool, `${clientName}-${randomBytes(3).toString('hex')}`)).apiKey;
    return { base, s: { ...s, databaseUrl }, apiKey };
  } finally {
    await pool.end();
  }
}

/** Baseline (a): a node:http server doing one INSERT per request. */
export async function startSyncBaseline(o: BaselineOptions): Promise<Target> {
  const { base, s, apiKey } = await baselineScratch(o, 'sync-insert', 'bench-sync');
  const child = spawnNode(
    [join(PACKAGE_ROOT, 'dist', 'bench', 'baselines', 'sync-server.js')],
    { ...base, DATABASE_URL: s.databaseUrl, BENCH_PORT: '0', BENCH_PG_POOL: String(o.concurrency) },
    o.log,
  );
  const port = await listening(child, 'sync-insert baseline');
  return {
    system: 'sync-insert',
    url: `http://127.0.0.1:${port}`,
    apiKey,
    databaseUrl: s.databaseUrl,
    settings: { pgConnections: o.concurrency },
    memorySources: [{ role: 'sync-server', pid: child.pid as number }],
    processes: [{ name: 'sync-insert server', kind: 'baseline', pids: () => pidList(child.pid) }],
    // No queue: an order is in flight only inside its own request (the client-side check covers it).
    backlog: async () => undefined,
    async stop() {
      await stopChild(child);
      await s.cleanup();
    },
  };
}

/** Baseline (b): an HTTP front that enqueues one BullMQ job per order, a worker doing one INSERT per job. */
export async function startBullmqBaseline(o: BaselineOptions): Promise<Target> {
  const { base, s, apiKey } = await baselineScratch(o, 'BullMQ', 'bench-bullmq');
  const bullPrefix = `${s.prefix}:bull`;
  const env = {
    ...base,
    DATABASE_URL: s.databaseUrl,
    REDIS_URL: s.redisUrl,
    BENCH_BULL_PREFIX: bullPrefix,
    BENCH_PORT: '0',
    BENCH_BULL_CONCURRENCY: String(o.concurrency),
  };
  const script = join(PACKAGE_ROOT, 'dist', 'bench', 'baselines', 'bullmq.js');
  const front = spawnNode([script, 'front'], env, o.log);
  const worker = spawnNode([script, 'worker'], env, o.log);
  const port = await listening(front, 'BullMQ baseline front');
  await listening(worker, 'BullMQ baseline worker');
  const connection = new Redis(s.redisUrl, { maxRetriesPerRequest: 1 });
  const queue = new Queue(BULL_QUEUE, { connection, prefix: bullPrefix });
  return {
    system: 'bullmq',
    url: `http://127.0.0.1:${port}`,
    apiKey,
    databaseUrl: s.databaseUrl,
    settings: { jobConcurrency: o.concurrency },
    processes: [
      { name: 'BullMQ front', kind: 'baseline', pids: () => pidList(front.pid) },
      { name: 'BullMQ worker', kind: 'baseline', pids: () => pidList(worker.pid) },
    ],
    redisUrl: s.redisUrl,
    memorySources: [
      { role: 'bullmq-front', pid: front.pid as number },
      { role: 'bullmq-worker', pid: worker.pid as number },
    ],
    async backlog() {
      const c = await queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized');
      return { entries: Object.values(c).reduce((a, b) => a + b, 0), ageSeconds: undefined };
    },
    async stop() {
      await Promise.all([stopChild(front), stopChild(worker)]);
      await queue.close();
      connection.disconnect();
      await s.cleanup();
    },
  };
}
