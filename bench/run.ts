// One measured run against one target: start the generators, sample backlog / commits / memory
// every second, show a progress line, stop early when the scenario says so, wait for the backlog
// to drain, then read the run's rows back from PostgreSQL for accept-to-commit latency and the
// outcome ledger (accepted = applied + rejected + dead-lettered + missing).
import * as hdr from 'hdr-histogram-js';
import { Redis } from 'ioredis';
import { type CpuUsage, type ProcessGroup, startCpuSampler } from './cpu.js';
import { type MergedPhase, type MergedResult, type MergedTick, startLoad } from './generators.js';
import { type Counts, HISTOGRAM_OPTIONS, type LoadPlan } from './loadgen.js';
import { type Backlog, sampleMemory, type Target } from './target.js';
import { createPool, type Pool } from '../common/db.js';
import { phaseOfKey } from './workload.js';

/** The load plan of every generator (LoadPlan in loadgen.ts), plus how the run is measured. */
export interface RunOptions
  extends Pick<
    LoadPlan,
    | 'phases'
    | 'maxRequests'
    | 'connections'
    | 'maxInFlight'
    | 'timeoutMs'
    | 'duplicateFraction'
    | 'retry'
    | 'workload'
    | 'seed'
    | 'countFromPhase'
    | 'openConnectionsAtStart'
    | 'attemptsFile'
  > {
  /** Label on the progress line. */
  label: string;
  generators: number;
  /** Longest wait after the load for everything accepted to be committed. */
  drainTimeoutMs: number;
  /** Sample memory of the target's processes each second (soak). */
  sampleMemory: boolean;
  /** Called each second; returning a reason stops the schedule early (ramp knee). */
  shouldStop?: (s: SecondSample, history: readonly SecondSample[]) => string | undefined;
  progress: (line: string, final: boolean) => void;
}

export interface SecondSample extends Omit<Counts, 'retries'> {
  /** Seconds since the load started. */
  t: number;
  phase: number;
  inFlight: number;
  acceptP50Ms: number;
  acceptP99Ms: number;
  /** The load generators' longest event-loop delay in this second (ms): a stall of the client, not the server. */
  generatorLoopDelayMaxMs: number;
  /** Orders of any client committed to PostgreSQL during this second. */
  committed: number;
  backlog: number | null;
  backlogAgeSeconds: number | null;
  /** Resident memory by role, MiB. */
  memoryMiB: Record<string, number>;
  /** true once the generators have finished (drain phase). */
  draining: boolean;
}

export interface Outcome {
  /** Distinct idempotency keys answered 2xx. */
  accepted: number;
  applied: number;
  rejected: number;
  rejectedReasons: Record<string, number>;
  deadLettered: number;
  /** Accepted keys with no orders row and no dead letter when the drain ended. */
  missing: number;
  /** Rows of this run whose key never got a 2xx (a timed-out request that did land). */
  landedWithoutAnswer: number;
}

export interface RunResult {
  load: MergedResult;
  samples: SecondSample[];
  stoppedBecause: string | undefined;
  loadSeconds: number;
  /** Seconds from the end of the load until every accepted order was committed (undefined: not drained). */
  drainSeconds: number | undefined;
  outcome: Outcome;
  /** Accept-to-commit latency (applied_at − received_at), µs, per phase and overall. */
  commitByPhase: hdr.Histogram[];
  commit: hdr.Histogram;
  /** Commit latency p99 by the second the order was received (drift). */
  commitP99BySecond: Array<{ t: number; p99Ms: number; count: number }>;
  /** First received_at and last applied_at of the run's rows (epoch ms). */
  firstReceivedMs: number | undefined;
  lastAppliedMs: number | undefined;
  /** CPU of every process from the start of the load to the end of the drain; `t` ≈ seconds of load. */
  cpu: CpuUsage;
  /** Load generator processes. */
  generators: number;
  /** Seconds (on the CPU samples' clock) at which the load ended. */
  cpuLoadEndS: number;
  /** The generators' worst per-second event-loop delay p99 during the load, ms, by second. */
  generatorLoopDelayMs: Array<{ t: number; p99Ms: number; maxMs: number }>;
}

/** The redis-server pid from INFO (undefined when Redis does not say or is not reachable). */
async function redisServerPid(url: string): Promise<number | undefined> {
  const redis = new Redis(url, { maxRetriesPerRequest: 1, lazyConnect: true });
  try {
    await redis.connect();
    const pid = Number(/^process_id:(\d+)/m.exec(await redis.info('server'))?.[1]);
    return Number.isFinite(pid) ? pid : undefined;
  } catch {
    return undefined;
  } finally {
    redis.disconnect();
  }
}

/** Every process a run's CPU table reports: the target's, its PostgreSQL backends, Redis, the generators. */
async function processGroups(target: Target, pool: Pool, generatorPids: () => number[]): Promise<ProcessGroup[]> {
  const redisPid = target.redisUrl ? await redisServerPid(target.redisUrl) : undefined;
  return [
    { name: 'generator', kind: 'generator', pids: generatorPids },
    ...target.processes,
    {
      name: 'PostgreSQL backends',
      kind: 'postgres',
      // The target's sessions on its database; the benchmark's own sampling sessions are left out.
      pids: async () =>
        (
          await pool.query<{ pid: number }>(
            `SELECT pid FROM pg_stat_activity
              WHERE datname = current_database() AND application_name <> 'surge-bench'`,
          )
        ).rows.map((r) => r.pid),
    },
    ...(redisPid === undefined
      ? []
      : [
          {
            name: 'redis-server',
            kind: 'redis' as const,
            pids: () => [redisPid],
            shared: 'the whole server: other clients of this Redis count too',
          },
        ]),
  ];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function countRun(pool: Pool, runKey: string): Promise<number> {
  const r = await pool.query<{ n: string }>(
    `SELECT (SELECT count(*) FROM orders WHERE starts_with(idempotency_key, $1)) +
            (SELECT count(DISTINCT idempotency_key) FROM dead_letters WHERE starts_with(idempotency_key, $1)
               AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.idempotency_key = dead_letters.idempotency_key)) AS n`,
    [`${runKey}-`],
  );
  return Number(r.rows[0]?.n ?? 0);
}

function fmt(n: number | null | undefined, digits = 0): string {
  return n === null || n === undefined ? '–' : n.toFixed(digits);
}

/** The load generator's figures a sample takes from a tick. */
type LoadFigures = Pick<
  MergedTick,
  | 'phase'
  | 'offered'
  | 'accepted'
  | 'replayed'
  | 'failed'
  | 'errors'
  | 'dropped'
  | 'inFlight'
  | 'p50Ms'
  | 'p99Ms'
  | 'loopDelayMaxMs'
>;
/** While draining no load is offered: phase -1, every figure 0. */
const DRAINING: LoadFigures = {
  phase: -1,
  offered: 0,
  accepted: 0,
  replayed: 0,
  failed: 0,
  errors: 0,
  dropped: 0,
  inFlight: 0,
  loopDelayMaxMs: 0,
  p50Ms: 0,
  p99Ms: 0,
};

export async function measure(target: Target, runKey: string, o: RunOptions): Promise<RunResult> {
  const pool = createPool(target.databaseUrl, { max: 2, applicationName: 'surge-bench' });
  try {
    let lastId = Number((await pool.query<{ m: string | null }>('SELECT max(id) AS m FROM orders')).rows[0]?.m ?? 0);
    const samples: SecondSample[] = [];
    let stoppedBecause: string | undefined;
    let loadDone = false;
    const t0 = Date.now();

    type Side = { committed: number; backlog: Backlog | undefined; memoryMiB: Record<string, number> };
    const sampleSide = async (): Promise<Side> => {
      const [c, backlog, mem] = await Promise.all([
        pool.query<{ n: string; m: string | null }>('SELECT count(*) AS n, max(id) AS m FROM orders WHERE id > $1', [
          lastId,
        ]),
        target.backlog().catch(() => undefined),
        o.sampleMemory ? sampleMemory(target.memorySources) : Promise.resolve({} as Record<string, number>),
      ]);
      const row = c.rows[0];
      if (row?.m) lastId = Number(row.m);
      const memoryMiB = Object.fromEntries(
        Object.entries(mem).map(([k, v]) => [k, Math.round((v / 1048576) * 10) / 10]),
      );
      return { committed: Number(row?.n ?? 0), backlog, memoryMiB };
    };

    /** One second's sample: the load's figures (zeros while draining) and the target's side. */
    const toSample = (t: number, load: LoadFigures, side: Side, draining: boolean): SecondSample => ({
      t,
      phase: load.phase,
      offered: load.offered,
      accepted: load.accepted,
      replayed: load.replayed,
      failed: load.failed,
      errors: load.errors,
      dropped: load.dropped,
      inFlight: load.inFlight,
      acceptP50Ms: load.p50Ms,
      acceptP99Ms: load.p99Ms,
      generatorLoopDelayMaxMs: load.loopDelayMaxMs,
      committed: side.committed,
      backlog: side.backlog?.entries ?? null,
      backlogAgeSeconds: side.backlog?.ageSeconds ?? null,
      memoryMiB: side.memoryMiB,
      draining,
    });

    const line = (s: SecondSample) =>
      `[${o.label} ${s.t}s${s.draining ? ' drain' : ''}] ` +
      `offered ${s.offered}/s accepted ${s.accepted}/s committed ${s.committed}/s ` +
      `backlog ${fmt(s.backlog)} (${fmt(s.backlogAgeSeconds, 1)} s) accept p99 ${fmt(s.acceptP99Ms, 1)} ms ` +
      `errors ${s.errors} dropped ${s.dropped} in-flight ${Math.round(s.inFlight)}`;

    let sideBusy = false;
    const loopDelays: Array<{ t: number; p99Ms: number; maxMs: number }> = [];
    const onTick = (tick: MergedTick) => {
      loopDelays.push({ t: tick.second, p99Ms: tick.loopDelayP99Ms, maxMs: tick.loopDelayMaxMs });
      if (sideBusy) return; // a slow sample (loaded machine) must not pile up queries
      sideBusy = true;
      void sampleSide()
        .then((side) => {
          const s = toSample(tick.second, tick, side, loadDone);
          samples.push(s);
          o.progress(line(s), false);
          if (!stoppedBecause && o.shouldStop) {
            stoppedBecause = o.shouldStop(s, samples);
            if (stoppedBecause) load.stop();
          }
        })
        .catch(() => {})
        .finally(() => {
          sideBusy = false;
        });
    };

    const groups = await processGroups(target, pool, () => load.pids);
    const load = startLoad(
      {
        url: target.url,
        path: '/v1/orders',
        apiKey: target.apiKey,
        runKey,
        phases: o.phases,
        maxRequests: o.maxRequests,
        connections: o.connections,
        maxInFlight: o.maxInFlight,
        timeoutMs: o.timeoutMs,
        duplicateFraction: o.duplicateFraction,
        retry: o.retry,
        workload: o.workload,
        countFromPhase: o.countFromPhase,
        openConnectionsAtStart: o.openConnectionsAtStart,
        attemptsFile: o.attemptsFile,
      },
      { generators: o.generators, seed: o.seed, onTick },
    );
    const cpu = startCpuSampler(groups);
    const result = await load.result;
    const cpuLoadEndS = cpu.now();
    loadDone = true;
    const loadSeconds = (result.endedAtMs - result.startedAtMs) / 1000;

    // Drain: until every accepted key has its row (or dead letter), sampling as before.
    const loadEnd = Date.now();
    let drainSeconds: number | undefined;
    let tDrain = Math.max(samples.at(-1)?.t ?? 0, Math.ceil((loadEnd - t0) / 1000));
    for (;;) {
      const n = await countRun(pool, runKey);
      if (n >= result.acceptedKeys.length) {
        drainSeconds = (Date.now() - loadEnd) / 1000;
        break;
      }
      if (Date.now() - loadEnd > o.drainTimeoutMs) break;
      await sleep(1000);
      tDrain++;
      const side = await sampleSide();
      const s = toSample(tDrain, DRAINING, side, true);
      samples.push(s);
      o.progress(`${line(s)} · ${n}/${result.acceptedKeys.length} committed`, false);
    }
    o.progress(
      `[${o.label}] load ${loadSeconds.toFixed(1)} s, accepted ${result.acceptedKeys.length}, ` +
        (drainSeconds === undefined
          ? `NOT drained after ${o.drainTimeoutMs / 1000} s`
          : `drained ${drainSeconds.toFixed(1)} s after the load`),
      true,
    );

    const cpuUsage = await cpu.stop();
    const rows = await pool.query<{ k: string; status: string; reason: string | null; r: number; a: number }>(
      `SELECT idempotency_key AS k, status, reason,
              extract(epoch FROM received_at)::float8 * 1000 AS r, extract(epoch FROM applied_at)::float8 * 1000 AS a
         FROM orders WHERE starts_with(idempotency_key, $1)`,
      [`${runKey}-`],
    );
    const dead = await pool.query<{ k: string }>(
      'SELECT DISTINCT idempotency_key AS k FROM dead_letters WHERE starts_with(idempotency_key, $1)',
      [`${runKey}-`],
    );
    const accepted = new Set(result.acceptedKeys);
    const seen = new Set<string>();
    const commitByPhase = result.phases.map(() => hdr.build(HISTOGRAM_OPTIONS));
    const commit = hdr.build(HISTOGRAM_OPTIONS);
    const bySecond = new Map<number, hdr.Histogram>();
    const outcome: Outcome = {
      accepted: accepted.size,
      applied: 0,
      rejected: 0,
      rejectedReasons: {},
      deadLettered: 0,
      missing: 0,
      landedWithoutAnswer: 0,
    };
    let firstReceivedMs: number | undefined;
    let lastAppliedMs: number | undefined;
    for (const row of rows.rows) {
      seen.add(row.k);
      if (!accepted.has(row.k)) outcome.landedWithoutAnswer++;
      if (row.status === 'applied') outcome.applied++;
      else {
        outcome.rejected++;
        const reason = row.reason ?? 'unknown';
        outcome.rejectedReasons[reason] = (outcome.rejectedReasons[reason] ?? 0) + 1;
      }
      const us = Math.max(1, Math.round((row.a - row.r) * 1000));
      commit.recordValue(us);
      commitByPhase[phaseOfKey(row.k)]?.recordValue(us);
      const sec = Math.floor((row.r - result.startedAtMs) / 1000);
      const h = bySecond.get(sec) ?? hdr.build(HISTOGRAM_OPTIONS);
      bySecond.set(sec, h);
      h.recordValue(us);
      firstReceivedMs = Math.min(firstReceivedMs ?? row.r, row.r);
      lastAppliedMs = Math.max(lastAppliedMs ?? row.a, row.a);
    }
    for (const d of dead.rows) {
      if (seen.has(d.k)) continue;
      seen.add(d.k);
      outcome.deadLettered++;
      if (!accepted.has(d.k)) outcome.landedWithoutAnswer++;
    }
    for (const k of accepted) if (!seen.has(k)) outcome.missing++;
    const commitP99BySecond = [...bySecond.entries()]
      .sort((a, b) => a[0] - b[0])
      .map(([t, h]) => ({ t, p99Ms: h.getValueAtPercentile(99) / 1000, count: h.totalCount }));
    return {
      load: result,
      samples,
      stoppedBecause,
      loadSeconds,
      drainSeconds,
      outcome,
      commitByPhase,
      commit,
      commitP99BySecond,
      firstReceivedMs,
      lastAppliedMs,
      cpu: cpuUsage,
      generators: o.generators,
      cpuLoadEndS,
      generatorLoopDelayMs: loopDelays,
    };
  } finally {
    await pool.end();
  }
}

export type { MergedPhase };
