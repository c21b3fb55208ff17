// From raw run data to the figures a report shows: percentiles, CDF points, per-phase rows,
// peak backlog, and Little's-law sanity checks.
import * as hdr from 'hdr-histogram-js';
import { type Bottleneck, type CpuUsage, findBottleneck } from './cpu.js';
import { type Counts, HISTOGRAM_OPTIONS } from './loadgen.js';
import type { RunResult, SecondSample } from './run.js';

export interface Percentiles {
  count: number;
  meanMs: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
}

const r3 = (n: number) => Math.round(n * 1000) / 1000;

export function percentiles(h: hdr.Histogram): Percentiles {
  if (h.totalCount === 0) return { count: 0, meanMs: 0, p50Ms: 0, p90Ms: 0, p99Ms: 0, p999Ms: 0, maxMs: 0 };
  const at = (p: number) => r3(h.getValueAtPercentile(p) / 1000);
  return {
    count: h.totalCount,
    meanMs: r3(h.mean / 1000),
    p50Ms: at(50),
    p90Ms: at(90),
    p99Ms: at(99),
    p999Ms: at(99.9),
    maxMs: r3(h.maxValue / 1000),
  };
}

export const CDF_PERCENTILES = [0, 10, 25, 50, 75, 90, 95, 97.5, 99, 99.5, 99.9, 99.95, 99.99, 99.999, 100];

export interface CdfPoint {
  percentile: number;
  ms: number;
}

export function cdf(h: hdr.Histogram): CdfPoint[] {
  if (h.totalCount === 0) return [];
  return CDF_PERCENTILES.map((p) => ({
    percentile: p,
    ms: r3((p === 100 ? h.maxValue : h.getValueAtPercentile(p)) / 1000),
  }));
}

export interface PhaseRow extends Counts {
  phase: number;
  offeredRate: number;
  durationS: number;
  acceptedRate: number;
  duplicatesSent: number;
  abandoned: number;
  accept: Percentiles;
  commit: Percentiles;
  backlogMax: number | null;
  backlogAgeMaxS: number | null;
  /** The load generators' longest single event-loop delay in the phase (ms); null without a sample. */
  generatorLoopDelayMaxMs: number | null;
}

export interface LittleCheck {
  what: string;
  /** Arrival/throughput rate λ, per second. */
  lambda: number;
  /** Mean time in the system W, seconds. */
  wSeconds: number;
  /** λ·W. */
  predicted: number;
  /** Mean of the sampled occupancy L. */
  measured: number;
  ratio: number | null;
  ok: boolean;
  note: string;
}

/**
 * Every submission the generator scheduled, by how it ended: offered = answered (by final HTTP
 * status) + dropped (the generator's in-flight limit) + timed out + failed (connection errors) +
 * unanswered (still open when the generator stopped waiting). Retries belong to their submission.
 */
export interface Ledger {
  offered: number;
  answered: number;
  /** Final HTTP status → submissions (a 503 after its retries counts once, as 503). */
  byStatus: Record<string, number>;
  dropped: number;
  timedOut: number;
  failed: number;
  unanswered: number;
  retries: number;
  replayed: number;
  duplicatesSent: number;
  /** offered − (answered + dropped + timed out + failed + unanswered): 0 when the ledger balances. */
  discrepancy: number;
  /** Latency from the intended send time to the final outcome, by final status. */
  latencyByStatus: Record<string, Percentiles>;
}

export function ledgerOf(load: RunResult['load']): Ledger {
  const sum = (f: (p: RunResult['load']['phases'][number]) => number) => load.phases.reduce((a, p) => a + f(p), 0);
  const byStatus: Record<string, number> = {};
  let answered = 0;
  for (const [k, v] of Object.entries(load.statusCounts)) {
    if (!/^\d+$/.test(k) || v === 0) continue;
    byStatus[k] = v;
    answered += v;
  }
  const offered = sum((p) => p.offered);
  const dropped = sum((p) => p.dropped);
  const timedOut = load.statusCounts.timeout ?? 0;
  const failed = Object.entries(load.statusCounts)
    .filter(([k]) => !/^\d+$/.test(k) && k !== 'timeout')
    .reduce((a, [, v]) => a + v, 0);
  const unanswered = sum((p) => p.abandoned);
  return {
    offered,
    answered,
    byStatus,
    dropped,
    timedOut,
    failed,
    unanswered,
    retries: sum((p) => p.retries),
    replayed: sum((p) => p.replayed),
    duplicatesSent: sum((p) => p.duplicatesSent),
    discrepancy: offered - (answered + dropped + timedOut + failed + unanswered),
    latencyByStatus: Object.fromEntries(
      Object.entries(load.latencyByStatus).map(([k, h]) => [k, percentiles(h)] as const),
    ),
  };
}

export interface CpuSummary {
  usage: CpuUsage;
  /** Seconds on the CPU samples' clock when the load ended (the drain follows). */
  loadEndS: number;
  /** The window the bottleneck was judged on, and what it is. */
  window: { from: number; to: number; what: string };
  bottleneck: Bottleneck;
  generatorLoopDelayMs: Array<{ t: number; p99Ms: number; maxMs: number }>;
}

/** A generator process at or above this share of a core (3 s sustained) is saturated. */
export const GENERATOR_CORES_BOUND = 0.85;
/** … or with its event-loop delay p99 above this in each of 3 consecutive seconds. */
export const GENERATOR_LOOP_DELAY_BOUND_MS = 50;

export interface GeneratorCheck {
  generators: number;
  /** Highest 3-second mean of the generator processes' cores, per process. */
  coresPerProcess: number;
  /** Highest event-loop delay p99 held for 3 consecutive seconds, ms. */
  loopDelayP99Ms: number;
  /**
   * Longest single event-loop delay of any second, ms: not a bound (one stall is not saturation),
   * but every answer waiting then is that much later on the generator's side.
   */
  loopDelayMaxMs: number;
  saturated: boolean;
  reason: string;
}

/** Whether the load generator kept up, over the load's seconds up to `toS`. */
export function generatorCheck(
  cpu: CpuUsage,
  loopDelays: ReadonlyArray<{ t: number; p99Ms: number; maxMs?: number }>,
  generators: number,
  toS: number,
): GeneratorCheck {
  const cores = cpu.samples
    .filter((x) => x.t <= toS + 0.5)
    .map((x) => (x.groups.generator?.cores ?? 0) / Math.max(1, x.groups.generator?.processes ?? generators));
  let coresPerProcess = 0;
  for (let i = 0; i + 3 <= cores.length; i++)
    coresPerProcess = Math.max(coresPerProcess, cores.slice(i, i + 3).reduce((a, b) => a + b, 0) / 3);
  if (cores.length < 3) coresPerProcess = Math.max(0, ...cores);
  const within = loopDelays.filter((d) => d.t <= toS + 1);
  const delays = within.map((d) => d.p99Ms);
  const loopDelayMaxMs = Math.max(0, ...within.map((d) => d.maxMs ?? 0));
  let loopDelayP99Ms = 0;
  for (let i = 0; i + 3 <= delays.length; i++)
    loopDelayP99Ms = Math.max(loopDelayP99Ms, Math.min(...delays.slice(i, i + 3)));
  const hot = coresPerProcess >= GENERATOR_CORES_BOUND;
  const late = loopDelayP99Ms >= GENERATOR_LOOP_DELAY_BOUND_MS;
  const figures =
    `${generators} generator process${generators > 1 ? 'es' : ''}: up to ${coresPerProcess.toFixed(2)} cores each ` +
    `(bound ${GENERATOR_CORES_BOUND}), event-loop delay p99 up to ${loopDelayP99Ms.toFixed(1)} ms held 3 s ` +
    `(bound ${GENERATOR_LOOP_DELAY_BOUND_MS} ms), longest single delay ${loopDelayMaxMs.toFixed(1)} ms`;
  return {
    generators,
    coresPerProcess: Math.round(coresPerProcess * 100) / 100,
    loopDelayP99Ms: Math.round(loopDelayP99Ms * 10) / 10,
    loopDelayMaxMs: Math.round(loopDelayMaxMs * 10) / 10,
    saturated: hot || late,
    reason: hot || late ? `saturated: ${figures}` : `kept up: ${figures}`,
  };
}

export interface SystemSummary {
  system: string;
  label: string;
  settings: Record<string, string | number>;
  phases: PhaseRow[];
  samples: SecondSample[];
  outcome: RunResult['outcome'];
  accept: Percentiles;
  commit: Percentiles;
  cdf: { accept: CdfPoint[]; commit: CdfPoint[] };
  loadSeconds: number;
  drainSeconds: number | null;
  peakBacklog: number | null;
  peakBacklogAgeS: number | null;
  /** Accepted orders per second over the load; committed orders per second from first receive to last commit. */
  acceptedPerSec: number;
  committedPerSec: number | null;
  stoppedBecause: string | null;
  statusCounts: Record<string, number>;
  ledger: Ledger;
  errorSamples: string[];
  commitP99BySecond: RunResult['commitP99BySecond'];
  littles: LittleCheck[];
  cpu: CpuSummary;
  /** The generator check of this run, and of the saturated runs it replaced (more generators each). */
  generator: { check: GeneratorCheck; replaced: GeneratorCheck[] };
}

function maxOrNull(values: Array<number | null>): number | null {
  const v = values.filter((x): x is number => x !== null);
  return v.length > 0 ? Math.max(...v) : null;
}

const mean = (v: number[]) => (v.length > 0 ? v.reduce((a, b) => a + b, 0) / v.length : 0);

/**
 * Little's law L = λ·W on steady samples (load running, after a warm-up). Two systems: the
 * pipeline behind the 202 (L = backlog entries, λ = commits/s, W = mean accept-to-commit) and the
 * HTTP front (L = submissions in flight, λ = answers/s, W = mean accept latency). Sampling noise
 * and a 1 s grid make small occupancies unreliable, so L < 5 on both sides counts as consistent.
 */
export function littleChecks(
  samples: readonly SecondSample[],
  acceptMeanMs: number,
  commitMeanMs: number,
  warmupS = 2,
): LittleCheck[] {
  const steady = samples.filter((s) => !s.draining && s.t > warmupS);
  const out: LittleCheck[] = [];
  const check = (what: string, lambda: number, wSeconds: number, measured: number, note: string) => {
    const predicted = lambda * wSeconds;
    const small = predicted < 5 && measured < 5;
    const ratio = predicted > 0 ? measured / predicted : null;
    out.push({
      what,
      lambda: r3(lambda),
      wSeconds: r3(wSeconds),
      predicted: r3(predicted),
      measured: r3(measured),
      ratio: ratio === null ? null : r3(ratio),
      ok: small || (ratio !== null && ratio >= 0.5 && ratio <= 2),
      note,
    });
  };
  const withBacklog = steady.filter((s): s is SecondSample & { backlog: number } => s.backlog !== null);
  if (withBacklog.length >= 3) {
    check(
      'pipeline: backlog = commit rate × mean accept-to-commit',
      mean(withBacklog.map((s) => s.committed)),
      commitMeanMs / 1000,
      mean(withBacklog.map((s) => s.backlog)),
      'L from the lag exporter (lag + pending), λ from PostgreSQL commits per second, W from applied_at − received_at',
    );
  }
  if (steady.length >= 3) {
    check(
      'client: in-flight = answer rate × mean accept latency',
      mean(steady.map((s) => s.accepted + s.replayed + s.failed)),
      acceptMeanMs / 1000,
      mean(steady.map((s) => s.inFlight)),
      'L = submissions outstanding in the generator, time-averaged over each second, ' +
        'λ = answers per second, W = mean accept latency from the intended send time',
    );
  }
  return out;
}

export function summarize(
  system: string,
  label: string,
  settings: Record<string, string | number>,
  run: RunResult,
): SystemSummary {
  const phases: PhaseRow[] = run.load.phases.map((p, i) => {
    const inPhase = run.samples.filter((s) => s.phase === i && !s.draining);
    const durationS = p.durationMs / 1000;
    const commitHistogram = run.commitByPhase[i];
    if (commitHistogram === undefined) throw new Error(`no commit histogram for phase ${i}`);
    return {
      phase: i,
      offeredRate: Math.round(p.rate * 10) / 10,
      durationS,
      offered: p.offered,
      accepted: p.accepted,
      acceptedRate: durationS > 0 ? Math.round((p.accepted / durationS) * 10) / 10 : 0,
      duplicatesSent: p.duplicatesSent,
      replayed: p.replayed,
      failed: p.failed,
      errors: p.errors,
      retries: p.retries,
      dropped: p.dropped,
      abandoned: p.abandoned,
      accept: percentiles(p.histogram),
      commit: percentiles(commitHistogram),
      backlogMax: maxOrNull(inPhase.map((s) => s.backlog)),
      generatorLoopDelayMaxMs: maxOrNull(inPhase.map((s) => s.generatorLoopDelayMaxMs)),
      backlogAgeMaxS: maxOrNull(inPhase.map((s) => s.backlogAgeSeconds)),
    };
  });
  const acceptAll = hdr.build(HISTOGRAM_OPTIONS);
  for (const p of run.load.phases) acceptAll.add(p.histogram);
  const accept = percentiles(acceptAll);
  const commit = percentiles(run.commit);
  const span =
    run.firstReceivedMs !== undefined && run.lastAppliedMs !== undefined
      ? (run.lastAppliedMs - run.firstReceivedMs) / 1000
      : 0;
  return {
    system,
    label,
    settings,
    phases,
    samples: run.samples,
    outcome: run.outcome,
    accept,
    commit,
    cdf: { accept: cdf(acceptAll), commit: cdf(run.commit) },
    loadSeconds: r3(run.loadSeconds),
    drainSeconds: run.drainSeconds === undefined ? null : r3(run.drainSeconds),
    peakBacklog: maxOrNull(run.samples.map((s) => s.backlog)),
    peakBacklogAgeS: maxOrNull(run.samples.map((s) => s.backlogAgeSeconds)),
    acceptedPerSec: run.loadSeconds > 0 ? Math.round((run.outcome.accepted / run.loadSeconds) * 10) / 10 : 0,
    committedPerSec: span > 0 ? Math.round((commit.count / span) * 10) / 10 : null,
    stoppedBecause: run.stoppedBecause ?? null,
    statusCounts: run.load.statusCounts,
    ledger: ledgerOf(run.load),
    errorSamples: run.load.errorSamples,
    commitP99BySecond: run.commitP99BySecond,
    littles: littleChecks(run.samples, accept.meanMs, commit.meanMs),
    cpu: {
      usage: run.cpu,
      loadEndS: run.cpuLoadEndS,
      window: { from: 0, to: run.cpuLoadEndS, what: 'the whole load' },
      bottleneck: findBottleneck(run.cpu, 0, run.cpuLoadEndS),
      generatorLoopDelayMs: run.generatorLoopDelayMs,
    },
    generator: {
      check: generatorCheck(run.cpu, run.generatorLoopDelayMs, run.generators, run.cpuLoadEndS),
      replaced: [],
    },
  };
}

/** accepted = applied + rejected + dead-lettered, nothing missing. */
export function ledgerConsistent(o: RunResult['outcome']): boolean {
  return o.accepted === o.applied + o.rejected + o.deadLettered - o.landedWithoutAnswer + o.missing && o.missing === 0;
}
