// Whole-system benchmark: `surge ingest` alone against `surge ingest` + `surge work`
// side by side, on this machine, driven by the same autocannon setup as bench:ingest (a fresh
// Idempotency-Key per request) in interleaved rounds (alone, whole, alone, whole, …). The whole's
// rate counts orders *applied* (the worker's surge_orders_applied_total), and each round reports the
// CPU time per order of every process: generator (this process), ingest, worker, the worker's
// PostgreSQL backends, Redis. A second phase drives the whole at a fixed fraction of its measured
// maximum and compares the worker's + its backends' CPU per order with a backlog drain of the same
// run: a fresh worker on ingest alone's streams, full of the same orders.
// Writes bench/results/e2e-<date>.{json,md}.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { Redis } from 'ioredis';
import pg from 'pg';
import { createClient } from '../common/clients.js';
import { loadConfig } from '../common/config.js';
import { freePort, httpOk } from '../common/net.js';
import { PACKAGE_ROOT } from '../common/paths.js';
import { createTestEnv, type TestEnv } from '../devkit/scratch.js';
import { waitFor } from '../devkit/wait.js';
import { roleNodeFlags } from '../stack/up.js';
import { httpRequestBytes, takeRequestsFrom } from './autocannon-requests.js';
import { cpuSeconds } from './cpu.js';
import { BENCH_ORDER_JSON } from './ingest-servers.js';
import { median } from './stats.js';
import { scrape, sumOf } from './prom.js';
import { describeMachine } from './report.js';
import { stopChild } from './target.js';

const CLI = join(PACKAGE_ROOT, 'dist', 'cli', 'surge.js');

const USAGE = `Usage: npm run bench:e2e -- [options]

Whole-system benchmark. Starts, on this machine, (1) \`surge ingest\` alone and (2)
\`surge ingest\` + \`surge work\`, each with its own scratch database and Redis key prefix, and drives
them with autocannon (a fresh Idempotency-Key per request, as bench:ingest) in interleaved rounds
(alone, whole, alone, whole, …). Ingest alone counts 202s; the whole counts orders applied by the
worker in the round (and reports the backlog left at its end, then waits for it to drain).
Per round and as medians: orders/s and the ratio whole ÷ alone; CPU µs per order of the generator,
ingest, the worker, the worker's PostgreSQL backends and Redis; the average apply batch size.
Then a fixed-rate phase runs the whole at a fraction of its measured maximum, interleaved with
backlog drains (a fresh \`surge work\` with the whole's settings applying --drain-orders of the
orders ingest alone left in its streams), and compares the worker's + its backends' CPU per order
live and in the drain (ratio live ÷ backlog).
Writes bench/results/e2e-<date>.{json,md}.

Options:
  --rounds N            interleaved saturated rounds (default 3)
  --duration S          seconds per round (default 10)
  --warmup S            warm-up seconds per setup, once, before the rounds (default 5)
  --connections N       autocannon connections (default 64)
  --env KEY=VALUE       a Surge setting for every process of both setups (repeatable),
                        e.g. --env SURGE_BATCH_LINGER_MS=25 --env SURGE_WORKER_THREADS=1
  --rate-fraction F     fixed-rate phase at F × the median whole orders/s (default 0.5)
  --fixed-rate N        fixed-rate phase at N orders/s instead
  --fixed-rounds N      rounds of the fixed-rate phase (default: --rounds)
  --no-fixed-rate       skip the fixed-rate phase (and the backlog drains)
  --drain-orders N      orders measured per backlog drain round, after a tenth as many to warm
                        up (default 100000; fewer when ingest alone's streams hold fewer)
  --drain-timeout S     how long to wait for the whole's backlog to drain after a round, or for a
                        drain round's orders (default 120)
  --out DIR             where to write the results (default bench/results)
  --no-write            print only, write no result files
  -h, --help            this text

Uses SURGE_TEST_REDIS_URL (default redis://127.0.0.1:6379) and SURGE_TEST_DATABASE_URL (an admin
URL, default postgres://postgres@127.0.0.1:5432/postgres); PostgreSQL and Redis must run on this
host (their CPU is read from /proc). On a shared host: flock /tmp/surge-bench.lock npm run bench:e2e.
`;

class UsageError extends Error {}

interface Options {
  rounds: number;
  duration: number;
  warmup: number;
  connections: number;
  env: Record<string, string>;
  rateFraction: number;
  fixedRate: number | undefined;
  fixedRounds: number;
  fixed: boolean;
  drainOrders: number;
  drainTimeout: number;
  out: string;
  write: boolean;
  help: boolean;
}

function parseOptions(argv: readonly string[]): Options {
  let parsed: ReturnType<typeof parse>;
  function parse() {
    return parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        rounds: { type: 'string', default: '3' },
        duration: { type: 'string', default: '10' },
        warmup: { type: 'string', default: '5' },
        connections: { type: 'string', default: '64' },
        env: { type: 'string', multiple: true, default: [] },
        'rate-fraction': { type: 'string', default: '0.5' },
        'fixed-rate': { type: 'string' },
        'fixed-rounds': { type: 'string' },
        'no-fixed-rate': { type: 'boolean', default: false },
        'drain-orders': { type: 'string', default: '100000' },
        'drain-timeout': { type: 'string', default: '120' },
        out: { type: 'string', default: join(PACKAGE_ROOT, 'bench', 'results') },
        'no-write': { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  }
  try {
    parsed = parse();
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const v = parsed.values;
  const num = (name: string, raw: string | undefined, min: number, integer = false): number => {
    const n = Number(raw);
    if (raw === undefined || raw.trim() === '' || !Number.isFinite(n) || n < min || (integer && !Number.isInteger(n)))
      throw new UsageError(`--${name}: expected ${integer ? 'an integer' : 'a number'} ≥ ${min}, got ${raw}`);
    return n;
  };
  const env: Record<string, string> = {};
  for (const kv of v.env ?? []) {
    const i = kv.indexOf('=');
    if (i <= 0) throw new UsageError(`--env: expected KEY=VALUE, got ${kv}`);
    env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  const rounds = num('rounds', v.rounds, 1, true);
  const rateFraction = num('rate-fraction', v['rate-fraction'], 0);
  if (rateFraction <= 0 || rateFraction > 1)
    throw new UsageError(`--rate-fraction: expected 0 < F ≤ 1, got ${rateFraction}`);
  return {
    rounds,
    duration: num('duration', v.duration, 1),
    warmup: num('warmup', v.warmup, 0),
    connections: num('connections', v.connections, 1, true),
    env,
    rateFraction,
    fixedRate: v['fixed-rate'] === undefined ? undefined : num('fixed-rate', v['fixed-rate'], 1),
    fixedRounds: v['fixed-rounds'] === undefined ? rounds : num('fixed-rounds', v['fixed-rounds'], 1, true),
    fixed: !v['no-fixed-rate'],
    drainOrders: num('drain-orders', v['drain-orders'], 1, true),
    drainTimeout: num('drain-timeout', v['drain-timeout'], 1),
    out: v.out ?? join(PACKAGE_ROOT, 'bench', 'results'),
    write: !v['no-write'],
    help: v.help ?? false,
  };
}

// ---- the two setups ----
type SetupName = 'alone' | 'whole';

interface Setup {
  name: SetupName;
  scratch: TestEnv;
  pool: pg.Pool;
  apiKey: string;
  url: string;
  /** The environment of its processes (scratch database, prefix, ports, settings). */
  env: Record<string, string>;
  ingest: ChildProcess;
  worker: ChildProcess | undefined;
  workerMetricsUrl: string | undefined;
  /** 2xx answers of every load this setup received (warm-up included): what the worker must apply. */
  acceptedTotal: number;
}

function spawnRole(role: 'ingest' | 'work', env: Record<string, string>): ChildProcess {
  // The role's node flags, as `surge up` gives them (SURGE_INGEST_NODE_FLAGS, SURGE_WORKER_NODE_FLAGS).
  const flags = roleNodeFlags(loadConfig({ ...process.env, ...env }), role);
  // Children log to our stderr (warn and above), so stdout stays the benchmark's own.
  return spawn(process.execPath, [...flags, CLI, role], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 2, 'inherit'],
  });
}

async function startSetup(name: SetupName, passEnv: Record<string, string>): Promise<Setup> {
  // Ingest alone has no consumer: its backlog only grows, so its backlog limit is off (as in
  // bench:ingest) or a long run would start answering 503. Everything else stays at its default.
  const scratch = await createTestEnv({
    SURGE_LOG_LEVEL: 'warn',
    ...(name === 'alone' ? { SURGE_MAX_BACKLOG: '0' } : {}),
    ...passEnv,
  });
  const pool = new pg.Pool({ connectionString: scratch.db.url, max: 1, application_name: 'surge-bench' });
  const children: ChildProcess[] = [];
  try {
    const { apiKey } = await createClient(pool, `bench-e2e-${name}`);
    const ingestPort = await freePort();
    const workerPort = await freePort();
    const env = {
      ...scratch.env,
      SURGE_INGEST_PORT: String(ingestPort),
      SURGE_WORKER_METRICS_PORT: String(workerPort),
    };
    const ingest = spawnRole('ingest', env);
    children.push(ingest);
    const worker = name === 'whole' ? spawnRole('work', env) : undefined;
    if (worker) children.push(worker);
    const url = `http://127.0.0.1:${ingestPort}`;
    await waitFor(`${name}: ingest /readyz`, () => httpOk(`${url}/readyz`), { timeoutMs: 30_000, intervalMs: 100 });
    const workerMetricsUrl = worker ? `http://127.0.0.1:${workerPort}/metrics` : undefined;
    if (worker)
      await waitFor(`${name}: worker /readyz`, () => httpOk(`http://127.0.0.1:${workerPort}/readyz`), {
        timeoutMs: 30_000,
        intervalMs: 100,
      });
    return { name, scratch, pool, apiKey, url, env, ingest, worker, workerMetricsUrl, acceptedTotal: 0 };
  } catch (e) {
    for (const c of children) await stopChild(c);
    await pool.end();
    await scratch.cleanup();
    throw e;
  }
}

async function stopSetup(s: Setup): Promise<void> {
  await Promise.all([stopChild(s.ingest), s.worker ? stopChild(s.worker) : Promise.resolve()]);
  await s.pool.end();
  await s.scratch.cleanup();
}

// ---- load ----
let keySeq = 0;
const runId = Date.now().toString(36);
const nextKey = () => `e2e-${runId}-${keySeq++}`;

function load(s: Setup, connections: number, duration: number, overallRate?: number): Promise<autocannon.Result> {
  const url = `${s.url}/v1/orders`;
  const headers = { 'content-type': 'application/json', authorization: `Bearer ${s.apiKey}` };
  const bytes = httpRequestBytes(url, 'POST', headers);
  return autocannon({
    url,
    method: 'POST',
    headers,
    connections,
    duration,
    ...(overallRate ? { overallRate } : {}),
    setupClient: (client) => takeRequestsFrom(client, () => bytes(BENCH_ORDER_JSON, ['idempotency-key', nextKey()])),
  });
}

// ---- CPU ----
const cpuOf = cpuSeconds;

async function workerBackendPids(s: Setup): Promise<number[]> {
  const { rows } = await s.pool.query<{ pid: number }>(
    "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = 'surge-worker'",
    [s.scratch.db.name],
  );
  return rows.map((r) => r.pid);
}

/**
 * Starts a window over a worker's CPU and its PostgreSQL backends' (/proc, user + system); the
 * returned function closes it. Backends are the `surge-worker` sessions of the setup's database at
 * the start and at the end: one that came and went within the window is missed, one that left
 * before the end loses its share (counted as lost). Every phase reads the worker this way.
 */
async function workerCpuWindow(
  s: Setup,
  worker: ChildProcess,
): Promise<() => Promise<{ worker: number; backends: number; seen: BackendsSeen }>> {
  const pids0 = await workerBackendPids(s);
  const backend0 = new Map(pids0.map((p) => [p, cpuOf(p)]));
  const worker0 = cpuOf(worker.pid);
  return async () => {
    const workerCpu = cpuOf(worker.pid) - worker0;
    const pids1 = await workerBackendPids(s);
    let backends = 0;
    let lost = 0;
    for (const pid of new Set([...pids0, ...pids1])) {
      const now = cpuOf(pid);
      if (Number.isNaN(now)) {
        lost++;
        continue;
      }
      // A backend not seen at the start connected during the window: all its CPU is the window's.
      backends += now - (backend0.get(pid) ?? 0);
    }
    return { worker: workerCpu, backends, seen: { atStart: pids0.length, atEnd: pids1.length, lost } };
  };
}

interface BackendsSeen {
  atStart: number;
  atEnd: number;
  lost: number;
}

interface RedisCpu {
  read(): Promise<number>;
  source: string;
}

async function redisCpuReader(redis: Redis): Promise<RedisCpu> {
  const pid = Number(/^process_id:(\d+)/m.exec(await redis.info('server'))?.[1]);
  if (Number.isFinite(pid) && !Number.isNaN(cpuOf(pid)))
    return { read: async () => cpuOf(pid), source: `/proc/${pid}` };
  // Redis elsewhere (a container with its own PID namespace): its own account of its CPU.
  return {
    source: 'INFO cpu',
    read: async () => {
      const info = await redis.info('cpu');
      const n = (k: string) => Number(new RegExp(`^${k}:([\\d.]+)`, 'm').exec(info)?.[1] ?? Number.NaN);
      return n('used_cpu_user') + n('used_cpu_sys');
    },
  };
}

interface WorkerCounters {
  applied: number;
  batchSum: number;
  batchCount: number;
}

async function workerCounters(s: Setup): Promise<WorkerCounters | undefined> {
  return s.workerMetricsUrl ? countersAt(s.workerMetricsUrl, `${s.name}: worker`) : undefined;
}

async function countersAt(url: string, what: string): Promise<WorkerCounters> {
  const m = await scrape(url);
  if (!m) throw new Error(`${what} /metrics did not answer`);
  return {
    applied: sumOf(m, 'surge_orders_applied_total') ?? 0,
    batchSum: sumOf(m, 'surge_apply_batch_size_sum') ?? 0,
    batchCount: sumOf(m, 'surge_apply_batch_size_count') ?? 0,
  };
}

// ---- one measured round ----
type Phase = 'saturated' | 'fixed-rate';
const PROCESSES = ['generator', 'ingest', 'worker', 'workerBackends', 'redis'] as const;
type ProcessName = (typeof PROCESSES)[number];
const PROCESS_LABEL: Record<ProcessName, string> = {
  generator: 'generator',
  ingest: 'ingest',
  worker: 'worker',
  workerBackends: "worker's PG backends",
  redis: 'Redis',
};

interface RoundFigures {
  phase: Phase;
  round: number;
  setup: SetupName;
  seconds: number;
  /** Requests per second offered (fixed-rate phase only). */
  offeredRate: number | undefined;
  accepted: number;
  acceptedPerSecond: number;
  non2xx: number;
  errors: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
  /** Orders the worker applied in the round (whole only). */
  applied: number | undefined;
  /** What the round counts: 202s (alone) or orders applied (whole), per second. */
  ordersPerSecond: number;
  /** Accepted but not applied at the end of the round (whole only), and how long it took to drain. */
  backlogAtEnd: number | undefined;
  drainSeconds: number | undefined;
  averageBatchSize: number | undefined;
  /** CPU µs per order counted (202s alone, applied whole) of each process. */
  cpuUsPerOrder: Record<ProcessName, number | undefined>;
  /** Cores each process used on average over the round. */
  cores: Record<ProcessName, number | undefined>;
  /** Worker backends: seen at the start, at the end, and seen at the start but gone by the end (their CPU is missed). */
  backends: BackendsSeen | undefined;
}

const r2 = (x: number) => Math.round(x * 100) / 100;
const r1 = (x: number) => Math.round(x * 10) / 10;

async function measureRound(
  s: Setup,
  phase: Phase,
  round: number,
  o: Options,
  redisCpu: RedisCpu,
  overallRate?: number,
): Promise<RoundFigures> {
  const endWorkerCpu = s.worker ? await workerCpuWindow(s, s.worker) : undefined;
  const w0 = await workerCounters(s);
  const cpu0 = {
    generator: process.cpuUsage(),
    ingest: cpuOf(s.ingest.pid),
    redis: await redisCpu.read(),
  };
  const t0 = performance.now();
  const r = await load(s, o.connections, o.duration, overallRate);
  const seconds = (performance.now() - t0) / 1000;
  const gen = process.cpuUsage(cpu0.generator);
  const ingestCpu = cpuOf(s.ingest.pid) - cpu0.ingest;
  const workerWindow = endWorkerCpu ? await endWorkerCpu() : undefined;
  const redisCpuS = (await redisCpu.read()) - cpu0.redis;
  const w1 = await workerCounters(s);
  const accepted = r['2xx'];
  s.acceptedTotal += accepted;
  const applied = w0 && w1 ? w1.applied - w0.applied : undefined;
  const counted = applied ?? accepted;
  let backlogAtEnd: number | undefined;
  let drainSeconds: number | undefined;
  if (s.worker && w1) {
    backlogAtEnd = Math.max(0, s.acceptedTotal - w1.applied);
    drainSeconds = await drain(s, o.drainTimeout);
  }
  const perOrder = (cpuS: number | undefined) =>
    cpuS === undefined || Number.isNaN(cpuS) || counted === 0 ? undefined : r1((cpuS * 1e6) / counted);
  const coresOf = (cpuS: number | undefined) =>
    cpuS === undefined || Number.isNaN(cpuS) ? undefined : r2(cpuS / seconds);
  const cpu: Record<ProcessName, number | undefined> = {
    generator: (gen.user + gen.system) / 1e6,
    ingest: ingestCpu,
    worker: workerWindow?.worker,
    workerBackends: workerWindow?.backends,
    redis: redisCpuS,
  };
  return {
    phase,
    round,
    setup: s.name,
    seconds: r2(seconds),
    offeredRate: overallRate,
    accepted,
    acceptedPerSecond: Math.round(accepted / seconds),
    non2xx: r.non2xx,
    errors: r.errors,
    latencyP50Ms: r.latency.p50,
    latencyP99Ms: r.latency.p99,
    applied,
    ordersPerSecond: Math.round(counted / seconds),
    backlogAtEnd,
    drainSeconds,
    averageBatchSize:
      w0 && w1 && w1.batchCount > w0.batchCount
        ? r1((w1.batchSum - w0.batchSum) / (w1.batchCount - w0.batchCount))
        : undefined,
    cpuUsPerOrder: Object.fromEntries(PROCESSES.map((p) => [p, perOrder(cpu[p])])) as Record<
      ProcessName,
      number | undefined
    >,
    cores: Object.fromEntries(PROCESSES.map((p) => [p, coresOf(cpu[p])])) as Record<ProcessName, number | undefined>,
    backends: workerWindow?.seen,
  };
}

/** Waits until the worker has applied everything the whole accepted; seconds waited. */
async function drain(s: Setup, timeoutS: number): Promise<number> {
  const t0 = performance.now();
  const deadline = t0 + timeoutS * 1000;
  for (;;) {
    const c = await workerCounters(s);
    if (c && c.applied >= s.acceptedTotal) return r2((performance.now() - t0) / 1000);
    if (performance.now() > deadline) {
      process.stderr.write(
        `warning: ${s.name}: backlog not drained within ${timeoutS} s; the next round starts anyway\n`,
      );
      return r2((performance.now() - t0) / 1000);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

// ---- backlog drain ----
/** One backlog drain round: a fresh worker applying orders ingest alone left in its streams. */
interface DrainFigures {
  round: number;
  /** Orders in ingest alone's streams when the worker started. */
  backlogAtStart: number;
  /** Orders applied before the window opened (worker warm, its backends connected). */
  warmup: number;
  seconds: number;
  applied: number;
  ordersPerSecond: number;
  averageBatchSize: number | undefined;
  cpuUsPerOrder: { worker: number | undefined; workerBackends: number | undefined; redis: number | undefined };
  cores: { worker: number | undefined; workerBackends: number | undefined; redis: number | undefined };
  backends: BackendsSeen;
}

async function ordersIn(s: Setup): Promise<number> {
  return Number((await s.pool.query<{ n: string }>('SELECT count(*) AS n FROM orders')).rows[0]?.n ?? 0);
}

/**
 * Starts `surge work` on ingest alone's database and prefix, with the whole's settings (ingest
 * alone's SURGE_MAX_BACKLOG=0 is not one of them), lets it apply a tenth of `drainOrders` to warm
 * up, then measures the next `drainOrders` exactly as a fixed-rate round measures the whole's
 * worker (workerCpuWindow, Δ surge_orders_applied_total), and stops it (in-flight batches finish
 * and are acked). When the streams hold less than the rounds left need, each round takes its share,
 * with room for what the worker applies past its counts (polling) and while it stops; a window
 * also ends if the streams run dry. Undefined (with a warning) when there is too little to drain or
 * the round fails: the other rounds still count.
 */
async function measureDrain(
  alone: Setup,
  round: number,
  roundsLeft: number,
  o: Options,
  redisCpu: RedisCpu,
): Promise<DrainFigures | undefined> {
  const warn = (why: string) => process.stderr.write(`warning: drain round ${round}: ${why}; round skipped\n`);
  const backlogAtStart = alone.acceptedTotal - (await ordersIn(alone));
  const share = Math.floor(backlogAtStart / roundsLeft);
  const want = o.drainOrders;
  const warmup = Math.min(Math.ceil(want / 10), Math.floor(share / 11));
  const target = Math.min(want, Math.floor((share - warmup) * 0.8));
  if (warmup < 1 || target < 1) {
    warn(`ingest alone's streams hold ${backlogAtStart} orders`);
    return undefined;
  }
  const port = await freePort();
  const env: Record<string, string> = { ...alone.env, SURGE_WORKER_METRICS_PORT: String(port) };
  delete env.SURGE_MAX_BACKLOG;
  Object.assign(env, o.env);
  const worker = spawnRole('work', env);
  try {
    const metrics = `http://127.0.0.1:${port}/metrics`;
    const counters = () => countersAt(metrics, `drain round ${round}: worker`);
    const wait = { timeoutMs: o.drainTimeout * 1000, intervalMs: 100 };
    await waitFor(`drain round ${round}: worker /readyz`, () => httpOk(`http://127.0.0.1:${port}/readyz`), wait);
    await waitFor(
      `drain round ${round}: ${warmup} orders applied to warm up`,
      async () => {
        if (worker.exitCode !== null) throw new Error(`drain worker exited with ${worker.exitCode}`);
        return (await counters()).applied >= warmup;
      },
      wait,
    );
    const endWorkerCpu = await workerCpuWindow(alone, worker);
    const w0 = await counters();
    const redis0 = await redisCpu.read();
    const t0 = performance.now();
    // Polled a few times a second: a scrape costs the worker far less than the noise of a window.
    const w1 = await waitFor(
      `drain round ${round}: ${target} orders applied`,
      async () => {
        const c = await counters();
        return c.applied - w0.applied >= target || c.applied >= backlogAtStart ? c : undefined;
      },
      { timeoutMs: o.drainTimeout * 1000, intervalMs: 200 },
    );
    const seconds = (performance.now() - t0) / 1000;
    const cpu = await endWorkerCpu();
    const redisS = (await redisCpu.read()) - redis0;
    const applied = w1.applied - w0.applied;
    const perOrder = (x: number) => (Number.isNaN(x) ? undefined : r1((x * 1e6) / applied));
    const coresOf = (x: number) => (Number.isNaN(x) ? undefined : r2(x / seconds));
    return {
      round,
      backlogAtStart,
      warmup,
      seconds: r2(seconds),
      applied,
      ordersPerSecond: Math.round(applied / seconds),
      averageBatchSize:
        w1.batchCount > w0.batchCount ? r1((w1.batchSum - w0.batchSum) / (w1.batchCount - w0.batchCount)) : undefined,
      cpuUsPerOrder: { worker: perOrder(cpu.worker), workerBackends: perOrder(cpu.backends), redis: perOrder(redisS) },
      cores: { worker: coresOf(cpu.worker), workerBackends: coresOf(cpu.backends), redis: coresOf(redisS) },
      backends: cpu.seen,
    };
  } catch (e) {
    warn((e as Error).message);
    return undefined;
  } finally {
    await stopChild(worker);
  }
}

// ---- summary ----
const med = (xs: readonly (number | undefined)[]) => {
  const v = xs.filter((x): x is number => x !== undefined && !Number.isNaN(x));
  return v.length ? r2(median(v)) : undefined;
};

function medians(fs: readonly RoundFigures[]) {
  return {
    ordersPerSecond: med(fs.map((f) => f.ordersPerSecond)),
    acceptedPerSecond: med(fs.map((f) => f.acceptedPerSecond)),
    latencyP50Ms: med(fs.map((f) => f.latencyP50Ms)),
    latencyP99Ms: med(fs.map((f) => f.latencyP99Ms)),
    backlogAtEnd: med(fs.map((f) => f.backlogAtEnd)),
    averageBatchSize: med(fs.map((f) => f.averageBatchSize)),
    cpuUsPerOrder: Object.fromEntries(PROCESSES.map((p) => [p, med(fs.map((f) => f.cpuUsPerOrder[p]))])) as Record<
      ProcessName,
      number | undefined
    >,
    cores: Object.fromEntries(PROCESSES.map((p) => [p, med(fs.map((f) => f.cores[p]))])) as Record<
      ProcessName,
      number | undefined
    >,
  };
}

function drainMedians(ds: readonly DrainFigures[]) {
  const of = (k: keyof DrainFigures['cpuUsPerOrder'], x: 'cpuUsPerOrder' | 'cores') => med(ds.map((d) => d[x][k]));
  const cpuUsPerOrder = {
    worker: of('worker', 'cpuUsPerOrder'),
    workerBackends: of('workerBackends', 'cpuUsPerOrder'),
    redis: of('redis', 'cpuUsPerOrder'),
  };
  return {
    rounds: ds.length,
    applied: med(ds.map((d) => d.applied)),
    ordersPerSecond: med(ds.map((d) => d.ordersPerSecond)),
    averageBatchSize: med(ds.map((d) => d.averageBatchSize)),
    cpuUsPerOrder,
    applyUsPerOrder: med(ds.map((d) => applyUs(d))),
    cores: {
      worker: of('worker', 'cores'),
      workerBackends: of('workerBackends', 'cores'),
      redis: of('redis', 'cores'),
    },
  };
}

const fmt = (x: number | undefined) => (x === undefined ? '—' : String(x));
type WorkerUs = { cpuUsPerOrder: { worker: number | undefined; workerBackends: number | undefined } };
const applyUs = (f: WorkerUs) =>
  f.cpuUsPerOrder.worker === undefined || f.cpuUsPerOrder.workerBackends === undefined
    ? undefined
    : r1(f.cpuUsPerOrder.worker + f.cpuUsPerOrder.workerBackends);

async function main(): Promise<void> {
  let o: Options;
  try {
    o = parseOptions(process.argv.slice(2));
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`bench:e2e: ${e.message}\n(npm run bench:e2e -- --help for the options)\n`);
    process.exitCode = 2;
    return;
  }
  if (o.help) {
    process.stdout.write(USAGE);
    return;
  }
  const command = ['npm run bench:e2e', ...(process.argv.length > 2 ? ['--', ...process.argv.slice(2)] : [])].join(' ');
  const machine = describeMachine();
  const log = (line: string) => process.stdout.write(`${line}\n`);
  log(`bench:e2e: ${command}`);
  const redis = new Redis(process.env.SURGE_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379');
  const setups: Setup[] = [];
  const figures: RoundFigures[] = [];
  try {
    const redisCpu = await redisCpuReader(redis);
    const redisVersion = /redis_version:(\S+)/.exec(await redis.info('server'))?.[1] ?? '?';
    for (const name of ['alone', 'whole'] as const) setups.push(await startSetup(name, o.env));
    const [alone, whole] = setups as [Setup, Setup];
    const pgVersion =
      (await whole.pool.query<{ v: string }>("SELECT current_setting('server_version') AS v")).rows[0]?.v ?? '?';
    if (o.warmup > 0) {
      for (const s of setups) {
        log(`warm-up ${s.name} ${o.warmup} s`);
        s.acceptedTotal += (await load(s, o.connections, o.warmup))['2xx'];
        if (s.worker) await drain(s, o.drainTimeout);
      }
    }
    const line = (f: RoundFigures) =>
      `${f.phase} round ${f.round} ${f.setup}: ${f.ordersPerSecond} orders/s (${f.acceptedPerSecond} accepted/s, p99 ${f.latencyP99Ms} ms, non-2xx ${f.non2xx}, errors ${f.errors})${f.backlogAtEnd !== undefined ? `, backlog at end ${f.backlogAtEnd} (drained in ${f.drainSeconds} s), batch ${fmt(f.averageBatchSize)}` : ''}; CPU µs/order ${PROCESSES.map((p) => `${PROCESS_LABEL[p]} ${fmt(f.cpuUsPerOrder[p])}`).join(', ')}`;
    // Interleaved (alone, whole, alone, whole, …): drift of the host hits both alike, and the
    // ratio is taken within a round.
    for (let round = 1; round <= o.rounds; round++) {
      for (const s of [alone, whole]) {
        const f = await measureRound(s, 'saturated', round, o, redisCpu);
        figures.push(f);
        log(line(f));
      }
    }
    const sat = (name: SetupName) => figures.filter((f) => f.phase === 'saturated' && f.setup === name);
    const ratios = sat('whole').map((w) => {
      const a = sat('alone').find((x) => x.round === w.round);
      return a && a.ordersPerSecond > 0 ? Number((w.ordersPerSecond / a.ordersPerSecond).toFixed(3)) : Number.NaN;
    });
    const medAlone = medians(sat('alone'));
    const medWhole = medians(sat('whole'));
    const ratioMedian = med(ratios);
    log(`whole ÷ alone (orders/s): median ${fmt(ratioMedian)} (rounds ${ratios.join(', ')})`);

    // Fixed-rate phase: the whole below its maximum, where batches form from the live arrivals,
    // interleaved with backlog drains of the same orders (alternating which goes first), each
    // live round paired with the drain of its round.
    const drains: DrainFigures[] = [];
    let fixed: FixedRateFigures | undefined;
    if (o.fixed) {
      const rate = Math.max(1, Math.round(o.fixedRate ?? o.rateFraction * (medWhole.ordersPerSecond ?? 0)));
      const how = o.fixedRate !== undefined ? '--fixed-rate' : `${o.rateFraction} × the median whole orders/s`;
      const drainLine = (d: DrainFigures) =>
        `backlog drain round ${d.round}: ${d.applied} orders in ${d.seconds} s (${d.ordersPerSecond}/s, after ${d.warmup} to warm up, ${d.backlogAtStart} in the streams), batch ${fmt(d.averageBatchSize)}; CPU µs/order worker ${fmt(d.cpuUsPerOrder.worker)}, worker's PG backends ${fmt(d.cpuUsPerOrder.workerBackends)}, Redis ${fmt(d.cpuUsPerOrder.redis)}`;
      for (let round = 1; round <= o.fixedRounds; round++) {
        const live = async () => {
          const f = await measureRound(whole, 'fixed-rate', round, o, redisCpu, rate);
          figures.push(f);
          log(line(f));
        };
        const drainRound = async () => {
          const d = await measureDrain(alone, round, o.fixedRounds - round + 1, o, redisCpu);
          if (d) drains.push(d);
          if (d) log(drainLine(d));
        };
        if (round % 2 === 1) {
          await live();
          await drainRound();
        } else {
          await drainRound();
          await live();
        }
      }
      const liveRounds = figures.filter((f) => f.phase === 'fixed-rate');
      const fm = medians(liveRounds);
      const dm = drainMedians(drains);
      const div = (a: number | undefined, b: number | undefined) =>
        a === undefined || b === undefined || b === 0 ? undefined : Number((a / b).toFixed(2));
      const perRound = (part: (x: WorkerUs) => number | undefined) =>
        drains.map((d) => {
          const f = liveRounds.find((x) => x.round === d.round);
          return f ? div(part(f), part(d)) : undefined;
        });
      const totalRatios = perRound(applyUs);
      fixed = {
        rate,
        how,
        medians: fm,
        applyUsPerOrder: applyUs(fm),
        drainOrders: o.drainOrders,
        drains: dm,
        perRound: totalRatios,
        liveOverBacklog: med(totalRatios),
        ratios: {
          worker: med(perRound((x) => x.cpuUsPerOrder.worker)),
          workerBackends: med(perRound((x) => x.cpuUsPerOrder.workerBackends)),
        },
      };
      log(
        `fixed rate ${rate}/s: worker + backends ${fmt(fixed.applyUsPerOrder)} µs/order; backlog drain ${fmt(dm.applyUsPerOrder)}; live ÷ backlog median ${fmt(fixed.liveOverBacklog)} (rounds ${totalRatios.map(fmt).join(', ')})`,
      );
    }

    // What limited it: the process that spends the most CPU per order in the whole.
    const wholeCpu = PROCESSES.map((p) => [p, medWhole.cpuUsPerOrder[p] ?? 0] as const);
    const totalUs = wholeCpu.reduce((a, [, v]) => a + v, 0);
    const [topName, topUs] = [...wholeCpu].sort((a, b) => b[1] - a[1])[0] ?? ['ingest', 0];
    const limitedBy = {
      process: topName,
      usPerOrder: topUs,
      share: totalUs > 0 ? r2(topUs / totalUs) : undefined,
      cores: medWhole.cores[topName],
      totalUsPerOrder: r1(totalUs),
      totalCores: r2(PROCESSES.reduce((a, p) => a + (medWhole.cores[p] ?? 0), 0)),
    };
    const limitedLine = `What limited it: ${PROCESS_LABEL[limitedBy.process]}, the largest CPU share per order of the whole (${limitedBy.usPerOrder} of ${limitedBy.totalUsPerOrder} µs/order, ${Math.round((limitedBy.share ?? 0) * 100)} %; ${fmt(limitedBy.cores)} cores of the ${limitedBy.totalCores} all five processes used, on ${machine.cpus}).`;
    log(limitedLine);

    const summary = {
      date: new Date().toISOString(),
      command,
      machine: {
        ...machine,
        loadAverageAfter: describeMachine().loadAverage,
        redis: redisVersion,
        postgres: pgVersion,
      },
      options: {
        rounds: o.rounds,
        duration: o.duration,
        warmup: o.warmup,
        connections: o.connections,
        env: o.env,
        rateFraction: o.rateFraction,
        fixedRate: o.fixedRate,
        fixedRounds: o.fixed ? o.fixedRounds : 0,
      },
      redisCpuSource: redisCpu.source,
      figures,
      medians: { alone: medAlone, whole: medWhole },
      wholeOverAlone: {
        perRound: ratios,
        median: ratioMedian,
        min: Math.min(...ratios),
        max: Math.max(...ratios),
      },
      fixedRate: fixed,
      drains,
      limitedBy,
      goals: { wholeOverAlone: '≥ 0.8', fixedRateLiveOverBacklog: '≤ 1.2' },
    };
    if (o.write) {
      mkdirSync(o.out, { recursive: true });
      const stem = join(o.out, `e2e-${summary.date.slice(0, 10)}`);
      writeFileSync(`${stem}.json`, `${JSON.stringify(summary, null, 2)}\n`);
      writeFileSync(`${stem}.md`, markdown(summary, limitedLine));
      log(`wrote ${stem}.json and ${stem}.md`);
    }
  } finally {
    for (const s of setups) await stopSetup(s).catch((e: unknown) => log(`cleanup ${s.name}: ${(e as Error).message}`));
    redis.disconnect();
  }
}

/** The fixed-rate phase: the whole below its maximum, against the same run's backlog drains. */
interface FixedRateFigures {
  rate: number;
  how: string;
  medians: ReturnType<typeof medians>;
  /** Median of the live rounds' worker + backends µs per order. */
  applyUsPerOrder: number | undefined;
  /** Orders measured per drain round (--drain-orders; fewer when the streams held fewer). */
  drainOrders: number;
  drains: ReturnType<typeof drainMedians>;
  /** Live ÷ backlog (worker + backends µs per order) of each round: its live round over its drain. */
  perRound: (number | undefined)[];
  /** Median of perRound. */
  liveOverBacklog: number | undefined;
  /** Medians of the per-round ratios, worker and backends apart. */
  ratios: { worker: number | undefined; workerBackends: number | undefined };
}

type Summary = {
  date: string;
  command: string;
  machine: ReturnType<typeof describeMachine> & { loadAverageAfter: number[]; redis: string; postgres: string };
  options: { rounds: number; duration: number; warmup: number; connections: number; env: Record<string, string> };
  redisCpuSource: string;
  figures: RoundFigures[];
  medians: { alone: ReturnType<typeof medians>; whole: ReturnType<typeof medians> };
  wholeOverAlone: { perRound: number[]; median: number | undefined; min: number; max: number };
  fixedRate: FixedRateFigures | undefined;
  drains: DrainFigures[];
};

const CPU_COLUMNS = PROCESSES.map((p) => `${PROCESS_LABEL[p]} µs/order`);

function markdown(s: Summary, limitedLine: string): string {
  const m = s.machine;
  const env = Object.entries(s.options.env);
  const row = (f: RoundFigures, ratio: number | undefined) =>
    `| ${f.phase} | ${f.round} | ${f.setup} | ${f.offeredRate ?? '—'} | ${f.ordersPerSecond} | ${ratio ?? '—'} | ${f.acceptedPerSecond} | ${f.latencyP99Ms} | ${f.non2xx + f.errors} | ${fmt(f.backlogAtEnd)} | ${fmt(f.drainSeconds)} | ${fmt(f.averageBatchSize)} | ${PROCESSES.map((p) => fmt(f.cpuUsPerOrder[p])).join(' | ')} | ${fmt(applyUs(f))} |`;
  const ratioOf = (f: RoundFigures) =>
    f.phase === 'saturated' && f.setup === 'whole' ? s.wholeOverAlone.perRound[f.round - 1] : undefined;
  const medRow = (label: string, x: ReturnType<typeof medians>, ratio?: number) =>
    `| ${label} | ${fmt(x.ordersPerSecond)} | ${fmt(ratio)} | ${fmt(x.acceptedPerSecond)} | ${fmt(x.latencyP99Ms)} | ${fmt(x.backlogAtEnd)} | ${fmt(x.averageBatchSize)} | ${PROCESSES.map((p) => fmt(x.cpuUsPerOrder[p])).join(' | ')} | ${fmt(applyUs(x))} | ${PROCESSES.map((p) => fmt(x.cores[p])).join(' / ')} |`;
  const fr = s.fixedRate;
  const drainRow = (d: DrainFigures, i: number) =>
    `| ${d.round} | ${d.backlogAtStart} | ${d.warmup} | ${d.applied} | ${d.seconds} | ${d.ordersPerSecond} | ${fmt(d.averageBatchSize)} | ${fmt(d.cpuUsPerOrder.worker)} | ${fmt(d.cpuUsPerOrder.workerBackends)} | ${fmt(d.cpuUsPerOrder.redis)} | ${fmt(applyUs(d))} | ${fmt(fr?.perRound[i])} |`;
  const drainTable =
    fr && s.drains.length
      ? [
          `Backlog drains (${fr.drainOrders} orders a round): a fresh \`surge work\` with the whole's settings on ingest alone's database and Redis prefix, whose streams hold the orders ingest alone accepted (the same requests as the whole's). Each round it applies a tenth as many to warm up (its threads and PostgreSQL backends started), then the window measures the worker and its backends exactly as a fixed-rate round does (the same /proc accounting and backend discovery, ÷ Δ\`surge_orders_applied_total\`); then the worker stops. Drain and live rounds alternate which goes first; live ÷ backlog pairs the rounds of the same number.`,
          '',
          "| drain round | in the streams | warm-up orders | orders | s | orders/s | avg batch | worker µs/order | worker's PG backends µs/order | Redis µs/order | worker + backends µs/order | live ÷ backlog |",
          '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
          ...s.drains.map(drainRow),
          `| medians | — | — | ${fmt(fr.drains.applied)} | — | ${fmt(fr.drains.ordersPerSecond)} | ${fmt(fr.drains.averageBatchSize)} | ${fmt(fr.drains.cpuUsPerOrder.worker)} | ${fmt(fr.drains.cpuUsPerOrder.workerBackends)} | ${fmt(fr.drains.cpuUsPerOrder.redis)} | ${fmt(fr.drains.applyUsPerOrder)} | ${fmt(fr.liveOverBacklog)} |`,
          '',
        ]
      : [];
  return [
    `# Whole-system benchmark (bench:e2e), ${s.date}`,
    '',
    `Command: \`${s.command}\``,
    '',
    `Machine: ${m.cpus} × ${m.cpuModel}, ${m.memoryGiB} GiB RAM, ${m.os}, Node ${m.node}, Redis ${m.redis}, PostgreSQL ${m.postgres} (same host); load average (1/5/15 min) ${m.loadAverage.join(' / ')} before, ${m.loadAverageAfter.join(' / ')} after.`,
    '',
    `Setups: **alone** = \`surge ingest\` (SURGE_MAX_BACKLOG=0: nothing consumes its streams); **whole** = \`surge ingest\` + \`surge work\`. Each has its own scratch database and Redis key prefix on the shared Redis and PostgreSQL; settings are the defaults${env.length ? ` except ${env.map(([k, v]) => `${k}=${v}`).join(', ')}` : ''}. autocannon (in the benchmark's process) with ${s.options.connections} connections and a fresh Idempotency-Key per request; one ${s.options.warmup} s warm-up per setup, then interleaved ${s.options.duration} s rounds (alone, whole, …).`,
    '',
    'orders/s: 202s per second (alone), orders applied by the worker in the round per second (whole; the backlog left at the end is drained before the next round). CPU µs per order: CPU time (user + system, /proc) of each process in the round ÷ the orders counted; generator = the benchmark process (autocannon); PG backends = the `surge-worker` sessions of the scratch database in `pg_stat_activity` at the start and end of the round (a backend that came and went within the round is missed); Redis = the whole server (' +
      `${s.redisCpuSource}), attributed to the round's setup. Batch = Δsum ÷ Δcount of \`surge_apply_batch_size\`.`,
    '',
    `| phase | round | setup | offered/s | orders/s | whole ÷ alone | accepted/s | p99 ms | non-2xx + errors | backlog at end | drain s | avg batch | ${CPU_COLUMNS.join(' | ')} | worker + backends µs/order |`,
    `| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | ${PROCESSES.map(() => '---').join(' | ')} | --- |`,
    ...s.figures.map((f) => row(f, ratioOf(f))),
    '',
    `| medians | orders/s | whole ÷ alone | accepted/s | p99 ms | backlog at end | avg batch | ${CPU_COLUMNS.join(' | ')} | worker + backends µs/order | cores (${PROCESSES.map((p) => PROCESS_LABEL[p]).join(' / ')}) |`,
    `| --- | --- | --- | --- | --- | --- | --- | ${PROCESSES.map(() => '---').join(' | ')} | --- | --- |`,
    medRow('alone (saturated)', s.medians.alone),
    medRow('whole (saturated)', s.medians.whole, s.wholeOverAlone.median),
    ...(fr ? [medRow(`whole at ${fr.rate}/s (fixed rate)`, fr.medians)] : []),
    '',
    `Whole ÷ ingest alone (orders/s): **median ${fmt(s.wholeOverAlone.median)}** (min ${s.wholeOverAlone.min}, max ${s.wholeOverAlone.max}; rounds ${s.wholeOverAlone.perRound.join(', ')}) (goal ≥ 0.8).`,
    '',
    ...drainTable,
    fr
      ? `Fixed rate ${fr.rate}/s (${fr.how}): worker + its backends **${fmt(fr.applyUsPerOrder)} µs/order** (worker ${fmt(fr.medians.cpuUsPerOrder.worker)}, backends ${fmt(fr.medians.cpuUsPerOrder.workerBackends)}) against this run's backlog drains of the same orders, ${fmt(fr.drains.applyUsPerOrder)} (worker ${fmt(fr.drains.cpuUsPerOrder.worker)}, backends ${fmt(fr.drains.cpuUsPerOrder.workerBackends)}): **live ÷ backlog ${fmt(fr.liveOverBacklog)}** (median of the rounds' ${fr.perRound.map(fmt).join(', ')}; worker ${fmt(fr.ratios.worker)}, backends ${fmt(fr.ratios.workerBackends)}) (goal ≤ 1.2).`
      : 'Fixed-rate phase and backlog drains skipped (--no-fixed-rate).',
    '',
    limitedLine,
    '',
  ].join('\n');
}

await main();
