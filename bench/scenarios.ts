// The scenarios of `surge bench`: steady, ramp, flash-sale, soak, compare, sweep. Each builds its
// load plan, runs it against one or more targets (run.ts), checks the ledger and writes a report.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as hdr from 'hdr-histogram-js';
import { capacitySpec, lineSpec, memorySpec, type RateMarks } from './charts.js';
import { findBottleneck } from './cpu.js';
import { type AttemptsRecord, decompose, PARTS } from './decompose.js';
import type { TimelineRecord } from '../ingest/timeline.js';
import { createPool } from '../common/db.js';
import { HISTOGRAM_OPTIONS, type LoadPhase } from './loadgen.js';
import {
  type Chart,
  type Check,
  cpuTable,
  describeMachine,
  ledgerCheck,
  ledgerFindings,
  littleTable,
  phasesTable,
  type Report,
  resultsDir,
  standardCharts,
  systemsTable,
  type Table,
  writeReport,
} from './report.js';
import { latestResults } from './results-index.js';
import { scrape } from './prom.js';
import { measure, type RunOptions, type RunResult, type SecondSample } from './run.js';
import {
  type GeneratorCheck,
  generatorCheck,
  littleChecks,
  percentiles,
  type SystemSummary,
  summarize,
} from './summary.js';
import {
  runningSurge,
  startBullmqBaseline,
  startSurge,
  startSyncBaseline,
  type SystemName,
  type Target,
} from './target.js';
import type { BenchOptions, RampOptions, Scenario } from './options.js';
import { DEFAULT_WORKLOAD } from './workload.js';

export { type BenchOptions, DEFAULTS, type Scenario, SCENARIOS } from './options.js';

/** The quick preset: every scenario in seconds with small numbers (what the tests run). */
export function quickOptions(o: BenchOptions): BenchOptions {
  return {
    ...o,
    quick: true,
    rate: 50,
    durationS: 3,
    ramp: { ...o.ramp, warmupS: 1, startRate: 40, stepRate: 40, maxRate: 120, stepS: 2 },
    flash: { ...o.flash, warmupS: 1, orders: 300, burstS: 2, hotSkus: 2, stockPerSku: 60 },
    sweep: { ...o.sweep, workers: [1], batchSizes: [50, 200], shards: [2] },
    connections: 8,
    maxInFlight: 2000,
    drainTimeoutS: 60,
    baselineConcurrency: 4,
  };
}

const runKeyFor = (scenario: string) =>
  `b${Date.now().toString(36)}${randomBytes(2).toString('hex')}-${scenario.replace(/[^a-z]/g, '')}`;

function baseRun(o: BenchOptions, label: string, phases: LoadPhase[]): RunOptions {
  const total = phases.reduce((a, p) => a + (p.rate * p.durationMs) / 1000, 0);
  return {
    label,
    phases,
    maxRequests: Math.ceil(total) + 1,
    connections: o.connections,
    maxInFlight: o.maxInFlight,
    timeoutMs: o.timeoutMs,
    duplicateFraction: 0,
    retry: { max: 0, baseDelayMs: 50, maxDelayMs: 1000 },
    workload: { ...DEFAULT_WORKLOAD },
    generators: o.generators,
    seed: o.seed,
    drainTimeoutMs: o.drainTimeoutS * 1000,
    sampleMemory: false,
    progress: o.progress,
  };
}

async function openTarget(
  system: SystemName,
  o: BenchOptions,
  env: Record<string, string> = {},
  workers = o.workers,
): Promise<Target> {
  if (system === 'surge') {
    if (o.running) return runningSurge(o.running);
    return await startSurge({ env: { ...o.env, ...env }, workers, log: o.log });
  }
  const b = { env: { ...o.env, ...env }, concurrency: o.baselineConcurrency, log: o.log };
  return system === 'sync-insert' ? await startSyncBaseline(b) : await startBullmqBaseline(b);
}

async function withTarget<T>(
  system: SystemName,
  o: BenchOptions,
  fn: (t: Target) => Promise<T>,
  env: Record<string, string> = {},
  workers = o.workers,
): Promise<T> {
  o.progress(
    `starting ${system}${Object.keys(env).length > 0 ? ` ${JSON.stringify(env)}` : ''}` +
      `${workers > 1 ? ` with ${workers} workers` : ''} …`,
    true,
  );
  const t = await openTarget(system, o, env, workers);
  try {
    return await fn(t);
  } finally {
    await t.stop();
  }
}

/**
 * Runs `attempt` with `o.generators` generator processes and, while the generator was saturated,
 * again with one more, up to `o.maxGenerators`: a planner must never read the generator's limit
 * as the system's. The result keeps the checks of the runs it replaced.
 */
async function keepGeneratorAhead<T extends { summary: SystemSummary }>(
  o: BenchOptions,
  attempt: (o: BenchOptions) => Promise<T>,
): Promise<T> {
  const replaced: GeneratorCheck[] = [];
  for (let g = o.generators; ; g++) {
    const r = await attempt({ ...o, generators: g });
    const c = r.summary.generator.check;
    if (!c.saturated || g >= o.maxGenerators) {
      r.summary.generator.replaced = replaced;
      return r;
    }
    replaced.push(c);
    o.progress(`the generator was ${c.reason}; running again with ${g + 1} generator processes`, true);
  }
}

function generatorFinding(s: SystemSummary, o: BenchOptions): string {
  const { check, replaced } = s.generator;
  const before =
    replaced.length > 0
      ? ` Earlier runs with ${replaced.map((r) => r.generators).join(', ')} generator process(es) were ` +
        `saturated and were replaced (${replaced.map((r) => r.reason).join('; ')}).`
      : '';
  if (!check.saturated) return `Generator check passed (${s.label}): ${check.reason}.${before}`;
  return (
    `GENERATOR SATURATED (${s.label}): ${check.reason}, and no more generator processes were added ` +
    `(--max-generators ${o.maxGenerators}). The figures above are partly the generator's limit, not the ` +
    `system's: run on a machine with more cores, or raise --max-generators.${before}`
  );
}

const SYSTEM_LABEL: Record<SystemName, string> = {
  surge: 'Surge',
  'sync-insert': 'sync INSERT per request',
  bullmq: 'BullMQ job per order',
};

function ledgerChecks(s: SystemSummary): Check[] {
  const o = s.outcome;
  return [
    {
      name: `${s.label}: accepted = applied + rejected + dead-lettered`,
      ok: o.missing === 0 && o.accepted === o.applied + o.rejected + o.deadLettered - o.landedWithoutAnswer,
      detail:
        `${o.accepted} = ${o.applied} + ${o.rejected} + ${o.deadLettered}` +
        `${o.landedWithoutAnswer ? ` − ${o.landedWithoutAnswer} landed without a 2xx` : ''}; ` +
        `missing ${o.missing}`,
    },
    {
      name: `${s.label}: drained`,
      ok: s.drainSeconds !== null,
      detail: s.drainSeconds === null ? 'NOT drained within the drain timeout' : `${s.drainSeconds} s after the load`,
    },
  ];
}

function littleCheckList(systems: readonly SystemSummary[]): Check[] {
  return systems.flatMap((s) =>
    s.littles.map((l) => ({
      name: `${s.label}: Little's law, ${l.what}`,
      ok: l.ok,
      detail: `λ·W = ${l.predicted}, measured L = ${l.measured}${l.ratio !== null ? ` (ratio ${l.ratio})` : ''}`,
    })),
  );
}

function newReport(scenario: Scenario, title: string, o: BenchOptions, startedAt: Date): Report {
  const { progress: _p, log: _l, running, ...rest } = o;
  return {
    scenario,
    title,
    startedAt: startedAt.toISOString(),
    finishedAt: '',
    command: o.command,
    machine: describeMachine(),
    options: { ...rest, running: running ? { url: running.url, lagUrl: running.lagUrl } : undefined },
    findings: [],
    tables: [],
    checks: [],
    notes: [...o.notes],
    systems: [],
    extra: {},
  };
}

async function finish(report: Report, o: BenchOptions, charts: Chart[]): Promise<{ report: Report; dir: string }> {
  report.finishedAt = new Date().toISOString();
  // Every report leads with where each submission went, checked.
  report.findings.unshift(
    ...report.systems.flatMap((s) => [
      ...ledgerFindings(s, o.maxInFlight),
      `${report.systems.length > 1 ? `${s.label}: ` : ''}${s.cpu.bottleneck.sentence}`,
      generatorFinding(s, o),
    ]),
  );
  report.checks.unshift(
    ...report.systems.map((s) => ({
      name: `${s.label}: the load generator kept up`,
      ok: !s.generator.check.saturated,
      detail: s.generator.check.reason,
    })),
  );
  report.tables.unshift(...report.systems.map(cpuTable));
  report.checks.unshift(...report.systems.map(ledgerCheck));
  const dir = o.outDir ?? resultsDir(o.resultsRoot, report.scenario, new Date(report.startedAt));
  await writeReport(report, dir, charts);
  o.progress(`report written to ${dir}/report.md`, true);
  return { report, dir };
}

// ---------------------------------------------------------------------------------------------
// ramp: shared by ramp, compare and sweep

export interface Knee {
  /** Highest offered rate that met every bound (null: not even the first step). */
  maxSustainableRate: number | null;
  /** The first step that did not, and why. */
  firstFailingRate: number | null;
  reason: string;
}

/** Phase 0 is the warm-up when warmupS > 0 (at half the first step, at most 100/s). */
function rampPhases(r: RampOptions): LoadPhase[] {
  const phases: LoadPhase[] =
    r.warmupS > 0 ? [{ rate: Math.max(1, Math.min(r.startRate / 2, 100)), durationMs: r.warmupS * 1000 }] : [];
  for (let rate = r.startRate; rate <= r.maxRate; rate += r.stepRate) phases.push({ rate, durationMs: r.stepS * 1000 });
  return phases;
}

/**
 * Live stop rule — only clear overload ends a ramp early, so one noisy second on a shared machine
 * does not: the oldest backlog entry over the bound, failures or drops, or the per-second accept
 * p99 over 5× its bound, each for three consecutive seconds. The precise bounds are applied per
 * step afterwards (findKnee).
 */
function rampStopRule(r: RampOptions): RunOptions['shouldStop'] {
  return (s: SecondSample, history: readonly SecondSample[]) => {
    if (r.warmupS > 0 && s.phase === 0) return undefined;
    const bad = (x: SecondSample) => {
      if (x.acceptP99Ms > r.acceptP99Ms * 5)
        return `accept p99 ${x.acceptP99Ms.toFixed(1)} ms > 5 × ${r.acceptP99Ms} ms`;
      if (x.backlogAgeSeconds !== null && x.backlogAgeSeconds > r.maxBacklogAgeS)
        return `backlog age ${x.backlogAgeSeconds.toFixed(1)} s > ${r.maxBacklogAgeS} s`;
      if (x.dropped > 0 || x.failed > Math.max(1, x.offered * 0.01))
        return `failures (${x.failed} failed, ${x.dropped} dropped)`;
      return undefined;
    };
    const last = history.slice(-3);
    const now = bad(s);
    return now && last.length === 3 && last.every((x) => bad(x) !== undefined)
      ? `${now} for 3 s at step ${s.phase}`
      : undefined;
  };
}

function stepProblems(p: SystemSummary['phases'][number], r: RampOptions): string[] {
  const reasons: string[] = [];
  if (p.accept.p99Ms > r.acceptP99Ms) reasons.push(`accept p99 ${p.accept.p99Ms} ms > ${r.acceptP99Ms} ms`);
  if (p.commit.p99Ms > r.commitP99Ms) reasons.push(`commit p99 ${p.commit.p99Ms} ms > ${r.commitP99Ms} ms`);
  if (p.backlogAgeMaxS !== null && p.backlogAgeMaxS > r.maxBacklogAgeS)
    reasons.push(`backlog age ${p.backlogAgeMaxS} s > ${r.maxBacklogAgeS} s`);
  const lost = p.failed + p.dropped + p.abandoned;
  if (lost > Math.max(1, p.offered * 0.01)) reasons.push(`${lost} of ${p.offered} submissions failed or dropped`);
  if (p.durationS < r.stepS * 0.9) reasons.push(`step cut short after ${p.durationS} s`);
  return reasons;
}

/**
 * The maximum sustainable rate is the highest step that met every bound; the first failing step
 * is the first one above it that did not. Failing steps *below* it (noise on a shared machine)
 * are listed, not hidden.
 */
export function findKnee(s: SystemSummary, r: RampOptions): Knee {
  const steps = s.phases
    .filter((p) => !(r.warmupS > 0 && p.phase === 0) && p.offered > 0)
    .map((p) => ({ p, problems: stepProblems(p, r) }));
  const passing = steps.filter((x) => x.problems.length === 0);
  const best = passing.length > 0 ? Math.max(...passing.map((x) => x.p.offeredRate)) : null;
  const above = steps.find((x) => x.problems.length > 0 && (best === null || x.p.offeredRate > best));
  const below = steps.filter((x) => x.problems.length > 0 && best !== null && x.p.offeredRate < best);
  const noise =
    below.length > 0
      ? ' (lower steps that missed a bound: ' +
        `${below.map((x) => `${x.p.offeredRate}/s: ${x.problems.join(', ')}`).join('; ')})`
      : '';
  if (above)
    return {
      maxSustainableRate: best,
      firstFailingRate: above.p.offeredRate,
      reason: above.problems.join('; ') + noise,
    };
  return {
    maxSustainableRate: best,
    firstFailingRate: null,
    reason: `every step up to ${best} orders/s met the bounds (the knee is above the tested range)${noise}`,
  };
}

const kneeText = (k: Knee) =>
  k.maxSustainableRate === null
    ? 'none (the first step already failed)'
    : k.firstFailingRate === null
      ? `≥ ${k.maxSustainableRate}`
      : `${k.maxSustainableRate}`;

async function runRamp(
  t: Target,
  o: BenchOptions,
  label: string,
): Promise<{ summary: SystemSummary; knee: Knee; run: RunResult }> {
  const run = await measure(t, runKeyFor('ramp'), {
    ...baseRun(o, label, rampPhases(o.ramp)),
    shouldStop: rampStopRule(o.ramp),
  });
  const summary = summarize(t.system, label, t.settings, run);
  const knee = findKnee(summary, o.ramp);
  // What limited it is judged where it mattered: the first step that failed (else the last one run).
  const reached = summary.phases.filter((p) => p.offered > 0);
  const judged = reached.find((p) => p.offeredRate === knee.firstFailingRate) ?? reached.at(-1) ?? summary.phases[0];
  const secs = run.samples.filter((x) => x.phase === judged?.phase && !x.draining).map((x) => x.t);
  if (judged && secs.length > 0) {
    const from = Math.min(...secs) - 1;
    const to = Math.max(...secs);
    summary.cpu.window = { from, to, what: `the ${judged.offeredRate}/s step` };
    summary.cpu.bottleneck = findBottleneck(run.cpu, from, to);
    // The generator must have kept up to that step; what came after it does not count.
    summary.generator.check = generatorCheck(run.cpu, run.generatorLoopDelayMs, run.generators, to);
    summary.cpu.bottleneck.sentence = summary.cpu.bottleneck.sentence.replace(
      /over \d+ s of load/,
      `at the ${judged.offeredRate}/s step`,
    );
  }
  // Little's law on the knee step (the highest steady one) rather than across changing rates.
  const kneePhase = summary.phases.find((p) => p.offeredRate === knee.maxSustainableRate);
  if (kneePhase) {
    const steps = run.samples.filter((x) => x.phase === kneePhase.phase);
    const t0 = steps[0]?.t ?? 0;
    summary.littles = littleChecks(
      steps.map((x) => ({ ...x, t: x.t - t0 })),
      kneePhase.accept.meanMs,
      kneePhase.commit.meanMs,
      1,
    ).map((l) => ({ ...l, what: `${l.what} (at ${kneePhase.offeredRate}/s)` }));
  } else summary.littles = [];
  return { summary, knee, run };
}

/** The ramp's latency bounds and the knees, drawn on latency-vs-rate. */
const rateMarks = (r: RampOptions, knees: ReadonlyArray<{ label: string; knee: Knee }>): RateMarks => ({
  bounds: [
    { label: 'accept p99 bound', ms: r.acceptP99Ms },
    { label: 'commit p99 bound', ms: r.commitP99Ms },
  ],
  knees: knees.flatMap((k) =>
    k.knee.maxSustainableRate === null ? [] : [{ label: k.label, rate: k.knee.maxSustainableRate }],
  ),
});

const bounds = (r: RampOptions) =>
  `accept p99 ≤ ${r.acceptP99Ms} ms, accept-to-commit p99 ≤ ${r.commitP99Ms} ms, ` +
  `backlog age ≤ ${r.maxBacklogAgeS} s, < 1 % failed`;

// ---------------------------------------------------------------------------------------------

export async function steady(o: BenchOptions, soak = false): Promise<{ report: Report; dir: string }> {
  const started = new Date();
  const scenario: Scenario = soak ? 'soak' : 'steady';
  const report = newReport(
    scenario,
    soak ? `Soak: ${o.rate} orders/s for ${o.durationS} s` : `Steady: ${o.rate} orders/s for ${o.durationS} s`,
    o,
    started,
  );
  // Traced as the flash sale is: where each answer's time went, for the whole run.
  const trace = tracing(o);
  const { summary } = await withTarget('surge', trace.options, (t) =>
    keepGeneratorAhead(o, async (o) => {
      const run = await measure(t, runKeyFor(scenario), {
        ...baseRun(o, scenario, [{ rate: o.rate, durationMs: o.durationS * 1000 }]),
        sampleMemory: soak,
        ...trace.run,
      });
      return { summary: summarize(t.system, SYSTEM_LABEL.surge, t.settings, run) };
    }),
  );
  report.systems = [summary];
  const p = summary.phases[0];
  report.findings.push(
    `Offered ${o.rate} orders/s for ${o.durationS} s: ` +
      `accepted ${summary.outcome.accepted} (${summary.acceptedPerSec}/s), ` +
      `accept p99 ${summary.accept.p99Ms} ms, accept-to-commit p99 ${summary.commit.p99Ms} ms.`,
    `Peak backlog ${summary.peakBacklog ?? 'not sampled'} entries; ` +
      `drained ${summary.drainSeconds ?? 'NOT'} s after the load.`,
  );
  if (p && p.failed + p.dropped > 0)
    report.findings.push(`${p.failed} submissions failed and ${p.dropped} were dropped by the generator.`);
  report.checks.push(...ledgerChecks(summary), ...littleCheckList([summary]));
  report.tables.push(systemsTable([summary]), littleTable([summary]));
  trace.addTo(report);
  const charts = standardCharts([summary]);
  if (soak) {
    const drift = soakDrift(summary);
    report.extra.drift = drift;
    report.findings.push(...drift.lines);
    report.tables.push(drift.table);
    charts.push(
      { file: 'memory.svg', title: 'Resident memory over time', spec: memorySpec(summary) },
      {
        file: 'latency-drift.svg',
        title: 'Latency p99 over time',
        spec: lineSpec(
          'p99 over time: accept (per second answered) and accept-to-commit (per second received)',
          [
            ...summary.samples
              .filter((s) => !s.draining && s.acceptP99Ms > 0)
              .map((s) => ({ x: s.t, y: s.acceptP99Ms, series: 'accept p99' })),
            ...summary.commitP99BySecond.map((c) => ({ x: c.t, y: c.p99Ms, series: 'commit p99' })),
          ],
          'seconds since start',
          'ms',
        ),
      },
    );
  }
  return finish(report, o, charts);
}

interface Drift {
  lines: string[];
  table: Table;
  memorySlopeMiBPerMin: Record<string, number>;
  acceptP99FirstMs: number;
  acceptP99LastMs: number;
  commitP99FirstMs: number;
  commitP99LastMs: number;
}

/** First fifth vs last fifth of the load (after 2 s warm-up): latency and memory drift. */
export function soakDrift(s: SystemSummary): Drift {
  const load = s.samples.filter((x) => !x.draining && x.t > 2);
  const fifth = Math.max(1, Math.floor(load.length / 5));
  const first = load.slice(0, fifth);
  const last = load.slice(-fifth);
  const med = (v: number[]) => {
    const a = [...v].sort((x, y) => x - y);
    return a[Math.floor(a.length / 2)] ?? 0;
  };
  const acceptP99FirstMs = med(first.map((x) => x.acceptP99Ms));
  const acceptP99LastMs = med(last.map((x) => x.acceptP99Ms));
  const commits = s.commitP99BySecond.filter((c) => c.t > 2);
  const cf = Math.max(1, Math.floor(commits.length / 5));
  const commitP99FirstMs = med(commits.slice(0, cf).map((c) => c.p99Ms));
  const commitP99LastMs = med(commits.slice(-cf).map((c) => c.p99Ms));
  const roles = [...new Set(load.flatMap((x) => Object.keys(x.memoryMiB)))];
  const memorySlopeMiBPerMin: Record<string, number> = {};
  const rows: Array<Array<string | number>> = [];
  for (const role of roles) {
    const pts = load.flatMap((x) => {
      const mib = x.memoryMiB[role];
      return mib === undefined ? [] : [[x.t, mib] as const];
    });
    const start = pts[0];
    const end = pts.at(-1);
    if (pts.length < 2 || start === undefined || end === undefined) continue;
    const n = pts.length;
    const mx = pts.reduce((a, p) => a + p[0], 0) / n;
    const my = pts.reduce((a, p) => a + p[1], 0) / n;
    const sxx = pts.reduce((a, p) => a + (p[0] - mx) ** 2, 0);
    const slope = sxx > 0 ? pts.reduce((a, p) => a + (p[0] - mx) * (p[1] - my), 0) / sxx : 0;
    const slopePerMin = Math.round(slope * 60 * 100) / 100;
    memorySlopeMiBPerMin[role] = slopePerMin;
    rows.push([role, start[1], end[1], slopePerMin]);
  }
  const lines = [
    `Accept p99 (median of per-second p99): first fifth ${acceptP99FirstMs} ms → last fifth ${acceptP99LastMs} ms.`,
    `Accept-to-commit p99: first fifth ${commitP99FirstMs} ms → last fifth ${commitP99LastMs} ms.`,
    roles.length > 0
      ? `Memory slope (least squares, MiB/min): ${Object.entries(memorySlopeMiBPerMin)
          .map(([r, v]) => `${r} ${v}`)
          .join(', ')}.`
      : 'Memory was not sampled (no /metrics with process_resident_memory_bytes and no known PIDs).',
  ];
  return {
    lines,
    table: {
      title: 'Memory drift (resident set size)',
      headers: ['process', 'first MiB', 'last MiB', 'slope MiB/min'],
      rows,
    },
    memorySlopeMiBPerMin,
    acceptP99FirstMs,
    acceptP99LastMs,
    commitP99FirstMs,
    commitP99LastMs,
  };
}

export async function ramp(o: BenchOptions): Promise<{ report: Report; dir: string }> {
  const report = newReport('ramp', 'Ramp: the maximum sustainable rate', o, new Date());
  const { summary, knee } = await withTarget('surge', o, (t) =>
    keepGeneratorAhead(o, (o) => runRamp(t, o, SYSTEM_LABEL.surge)),
  );
  report.systems = [summary];
  report.extra.knee = knee;
  report.findings.push(
    `Maximum sustainable rate: ${kneeText(knee)} orders/s (bounds: ${bounds(o.ramp)}).`,
    knee.firstFailingRate !== null ? `At ${knee.firstFailingRate} orders/s: ${knee.reason}.` : knee.reason,
    summary.stoppedBecause ? `The ramp stopped early: ${summary.stoppedBecause}.` : 'The ramp ran every step.',
  );
  report.checks.push(...ledgerChecks(summary), ...littleCheckList([summary]));
  report.tables.push(phasesTable(summary), systemsTable([summary]), littleTable([summary]));
  return finish(report, o, standardCharts([summary], rateMarks(o.ramp, [{ label: summary.label, knee }])));
}

/** The flash sale's clients retry until this long after the burst, and the report counts answers within it. */
const FLASH_ANSWER_WINDOW_S = 60;
/**
 * Fewest connections the flash sale's clients hold: well over ingest's default in-flight limit, so
 * the excess reaches the door instead of queueing in the generator for a free connection.
 */
const FLASH_CONNECTIONS = 2500;
/** The rate of the flash sale's warm-up (ordinary orders before the burst), per second at most. */
const FLASH_WARMUP_RATE = 100;

/** Ingest's 503s so far by reason (the door's and backpressure's), from its /metrics; {} when not scraped. */
async function shedCounts(t: Target): Promise<Record<string, number>> {
  const url = t.memorySources.find((s) => s.role === 'ingest')?.metricsUrl;
  const counts: Record<string, number> = {};
  for (const s of (url === undefined ? undefined : await scrape(url)) ?? [])
    if (s.name === 'surge_ingest_shed_total') {
      const reason = s.labels.reason ?? 'unknown';
      counts[reason] = (counts[reason] ?? 0) + s.value;
    }
  return counts;
}

/**
 * The max sustainable rate of the latest ramp result in the first of `roots` that has one, and
 * whether a step above it failed (else the ramp never found its knee and the rate is a lower bound).
 */
function latestRampMax(roots: readonly string[]): { max: number | null; found: boolean } | null {
  for (const root of roots) {
    if (!existsSync(root)) continue;
    const ramp = latestResults(root).find((e) => e.scenario === 'ramp');
    if (ramp === undefined) continue;
    const r = JSON.parse(readFileSync(join(root, ramp.path, 'results.json'), 'utf8')) as {
      extra?: { knee?: Knee };
    };
    const knee = r.extra?.knee;
    return { max: knee?.maxSustainableRate ?? null, found: (knee?.firstFailingRate ?? null) !== null };
  }
  return null;
}

export async function flashSale(o: BenchOptions): Promise<{ report: Report; dir: string }> {
  const f = o.flash;
  const report = newReport(
    'flash-sale',
    `Flash sale: ${f.orders} orders in ${f.burstS} s on ${f.hotSkus} hot SKUs`,
    o,
    new Date(),
  );
  // A warm-up first, as a sale meets a running service (and the ramp it is compared with is warmed):
  // ordinary orders at a low rate, on their own SKUs, warm the JIT of every process and the
  // caches; the sale's clients open their connections then (without a warm-up, at the burst).
  const warmupRate = Math.min(FLASH_WARMUP_RATE, f.orders / f.burstS);
  const warmupOrders = f.warmupS > 0 ? Math.ceil(warmupRate * f.warmupS) : 0;
  const phases: LoadPhase[] = [
    ...(warmupOrders > 0 ? [{ rate: warmupRate, durationMs: f.warmupS * 1000, workload: DEFAULT_WORKLOAD }] : []),
    { rate: f.orders / f.burstS, durationMs: f.burstS * 1000 },
  ];
  const burst = phases.length - 1;
  const trace = tracing(o);
  // Each attempt (more generators after a saturated one) sells fresh stock under its own keys.
  const result = await withTarget('surge', trace.options, (t) =>
    keepGeneratorAhead(o, async (o) => {
      const runKey = runKeyFor('flash');
      const hotSkus = Array.from({ length: f.hotSkus }, (_, i) => `${runKey}-hot-${i}`);
      const pool = createPool(t.databaseUrl, { max: 1, applicationName: 'surge-bench' });
      try {
        for (const sku of hotSkus)
          await pool.query('INSERT INTO inventory (sku, available) VALUES ($1, $2)', [sku, f.stockPerSku]);
        const shedBefore = await shedCounts(t);
        const run = await measure(t, runKey, {
          ...baseRun(o, 'flash-sale', phases),
          maxRequests: warmupOrders + f.orders,
          // The burst's goodput and final answers count its own orders only.
          countFromPhase: burst,
          // Every client of the sale may be waiting for an answer or a retry at once: none is dropped.
          maxInFlight: Math.max(o.maxInFlight, f.orders),
          duplicateFraction: f.duplicateFraction,
          // Clients keep retrying, honouring Retry-After, until a minute after the burst.
          retry: {
            max: f.retries,
            baseDelayMs: 100,
            maxDelayMs: 2000,
            untilMs: (f.warmupS + f.burstS + FLASH_ANSWER_WINDOW_S) * 1000,
          },
          workload: { ...DEFAULT_WORKLOAD, hotSkus, hotFraction: 1 },
          // A sale's clients are many: the surge must reach ingest's door, not wait in the generator.
          connections: Math.max(o.connections, FLASH_CONNECTIONS),
          // Opened during the warm-up: the clients are services that hold keep-alive pools, and a
          // storm of new connections at the burst is the kernel's accept queue, not the door.
          openConnectionsAtStart: warmupOrders > 0,
          ...trace.run,
        });
        const stock = await pool.query<{ sku: string; available: string; sold: string }>(
          `SELECT i.sku, i.available,
                coalesce((SELECT sum(oi.qty) FROM order_items oi JOIN orders o ON o.id = oi.order_pk
                           WHERE oi.sku = i.sku AND o.status = 'applied'), 0) AS sold
           FROM inventory i WHERE i.sku = ANY($1) ORDER BY i.sku`,
          [hotSkus],
        );
        const summary = summarize(t.system, SYSTEM_LABEL.surge, t.settings, run);
        const shedAfter = await shedCounts(t);
        const shedByReason = Object.fromEntries(
          Object.entries(shedAfter)
            .map(([k, v]) => [k, v - (shedBefore[k] ?? 0)] as const)
            .filter(([, v]) => v > 0),
        );
        if (burst > 0) {
          // What limited it is judged over the burst: not the quiet warm-up before it, nor the
          // retries that trickle in for up to a minute after it (they would average a full
          // machine down to half of it).
          const to = Math.min(run.cpuLoadEndS, f.warmupS + f.burstS);
          summary.cpu.window = { from: f.warmupS, to, what: 'the burst' };
          summary.cpu.bottleneck = findBottleneck(run.cpu, f.warmupS, to);
          summary.cpu.bottleneck.sentence = summary.cpu.bottleneck.sentence.replace(
            /over \d+ s of load/,
            'during the burst',
          );
        }
        return { run, summary, stock: stock.rows, shedByReason };
      } finally {
        await pool.end();
      }
    }),
  );
  const { summary, stock, run, shedByReason } = result;
  const ramp = latestRampMax([o.resultsRoot, 'bench/results']);
  const met = (ok: boolean) => (ok ? 'met' : 'NOT met');
  // What a planner means by "how long does the burst take to drain": from the scheduled end of the
  // burst until the last of its orders is committed (includes the time ingest needed to accept them).
  const burstEndMs = run.load.startedAtMs + (f.warmupS + f.burstS) * 1000;
  const lastAcceptedAfterBurstS = Math.round((run.load.endedAtMs - burstEndMs) / 100) / 10;
  const committedAfterBurstS =
    run.lastAppliedMs === undefined ? null : Math.round((run.lastAppliedMs - burstEndMs) / 100) / 10;
  const p = summary.phases[burst];
  const sold = stock.reduce((a, r) => a + Number(r.sold), 0);
  const oversell = stock.reduce((a, r) => a + Math.max(0, Number(r.sold) - f.stockPerSku), 0);
  const ledgerOk = stock.every(
    (r) => Number(r.available) === f.stockPerSku - Number(r.sold) && Number(r.available) >= 0,
  );
  // Each answer's latency from its attempt's intended time: the 202s and the 503s apart.
  const answers = run.load.phases[burst]?.answers ?? {};
  const empty = percentiles(hdr.build(HISTOGRAM_OPTIONS));
  const accepted202 = answers['2xx'] ? percentiles(answers['2xx']) : empty;
  const shed503 = answers['503'] ? percentiles(answers['503']) : empty;
  const sumTo = (list: number[], seconds: number) => list.slice(0, seconds).reduce((a, n) => a + n, 0);
  // Goodput as the goal defines it: 202 answers a second, replays of the duplicates included (the
  // ramp it is compared with answers 202 to every submission); the distinct orders beside it.
  const goodput = Math.round(sumTo(run.load.answered2xxBySecond, f.burstS) / f.burstS);
  const distinctPerS = Math.round(sumTo(run.load.acceptedBySecond, f.burstS) / f.burstS);
  const answeredInWindow = sumTo(run.load.finalAnswersBySecond, f.burstS + FLASH_ANSWER_WINDOW_S);
  const answeredShare = run.load.distinctKeys > 0 ? answeredInWindow / run.load.distinctKeys : 0;
  const flash = {
    offered: p?.offered ?? 0,
    dropped: summary.ledger.dropped,
    answered202: summary.ledger.byStatus['202'] ?? 0,
    answered503: summary.ledger.byStatus['503'] ?? 0,
    duplicatesSent: p?.duplicatesSent ?? 0,
    replayed: p?.replayed ?? 0,
    retries: p?.retries ?? 0,
    accepted: summary.outcome.accepted,
    applied: summary.outcome.applied,
    rejected: summary.outcome.rejected,
    rejectedReasons: summary.outcome.rejectedReasons,
    deadLettered: summary.outcome.deadLettered,
    stock: f.stockPerSku * f.hotSkus,
    sold,
    oversell,
    drainSeconds: summary.drainSeconds,
    lastAnswerAfterBurstS: lastAcceptedAfterBurstS,
    committedAfterBurstS,
    timeouts: run.load.attemptCounts.timeout ?? 0,
    goodputPerS: goodput,
    distinctAcceptedPerS: distinctPerS,
    p99Of202Ms: accepted202.p99Ms,
    p99Of503Ms: shed503.p99Ms,
    attemptsAnswered503: shed503.count,
    shedByReason,
    distinctOrders: run.load.distinctKeys,
    finalAnswerInWindowPct: Math.round(answeredShare * 1000) / 10,
    peakBacklog: summary.peakBacklog,
    peakBacklogAgeS: summary.peakBacklogAgeS,
  };
  report.systems = [summary];
  report.extra.flash = flash;
  report.extra.stock = stock;
  report.findings.push(
    `Offered ${flash.offered} submissions (${flash.duplicatesSent} duplicates, ` +
      `${flash.retries} retries) in ${f.burstS} s: ` +
      `${flash.accepted} distinct orders accepted (${flash.replayed} answered as replays).`,
    `Applied ${flash.applied}, rejected ${flash.rejected} (${
      Object.entries(flash.rejectedReasons)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ') || 'none'
    }), dead-lettered ${flash.deadLettered}.`,
    `Stock ${flash.stock} units, sold ${sold}, oversell ${oversell}.`,
    `The burst was fully committed ${committedAfterBurstS ?? '–'} s after its scheduled end ` +
      `(the last answer came ${lastAcceptedAfterBurstS} s after it; ` +
      `the backlog drained ${flash.drainSeconds ?? 'NOT'} s after the last answer); ` +
      `peak backlog ${flash.peakBacklog ?? 'not sampled'} entries (oldest ${flash.peakBacklogAgeS ?? '–'} s).`,
    `Goodput during the burst ${goodput} 202s/s (${distinctPerS} distinct orders/s, the rest replays); each answer's latency from its attempt's intended ` +
      `time (waiting for a connection included): 202 p50 / p99 ${accepted202.p50Ms} / ${accepted202.p99Ms} ms ` +
      `(${accepted202.count}), 503 p50 / p99 ${shed503.p50Ms} / ${shed503.p99Ms} ms (${shed503.count}); ` +
      `${flash.retries} retries after 503/409/429/5xx or a client-side timeout (${o.timeoutMs} ms per attempt); ` +
      `${flash.dropped} dropped by the generator, ${flash.timeouts} attempts timed out; ` +
      `${flash.finalAnswerInWindowPct} % of ${flash.distinctOrders} distinct orders had a final answer ` +
      `within the burst + ${FLASH_ANSWER_WINDOW_S} s.`,
    `Goals: goodput ${goodput} 202s/s ≥ 0.9 × the ramp's max sustainable rate ${
      ramp?.max == null
        ? '(no ramp result to compare)'
        : ramp.found
          ? `${ramp.max} = ${Math.round(0.9 * ramp.max)}: ${met(goodput >= 0.9 * ramp.max)}`
          : `≥ ${ramp.max} (the ramp passed its top step: no knee to compare with): ` +
            `${goodput >= 0.9 * ramp.max ? 'not tested' : 'NOT met'}`
    }; 202 p99 ${accepted202.p99Ms} ms ≤ 250 ms: ${met(accepted202.p99Ms <= 250)}; ` +
      (shed503.count === 0
        ? '503 p99 ≤ 20 ms: no sample (nothing was shed); '
        : `503 p99 ${shed503.p99Ms} ms ≤ 20 ms: ${met(shed503.p99Ms <= 20)}; `) +
      `${flash.dropped} dropped = 0: ${met(flash.dropped === 0)}; ` +
      `${flash.timeouts} attempts timed out = 0: ${met(flash.timeouts === 0)}; ` +
      `final answers ${flash.finalAnswerInWindowPct} % ≥ 99 %: ${met(answeredShare >= 0.99)}; ` +
      `oversell ${oversell} = 0: ${met(oversell === 0)}.`,
    `Shed by ingest (its 503s by reason, warm-up included): ${
      Object.entries(shedByReason)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ') || 'none'
    }.`,
    ...(warmupOrders > 0
      ? [
          `Warm-up: ${warmupOrders} ordinary orders at ${warmupRate}/s for ${f.warmupS} s before the burst ` +
            `(in the ledger and the accepted/applied counts; the burst's figures above leave them out).`,
        ]
      : []),
  );
  report.checks.push(
    {
      name: 'no oversell',
      ok: oversell === 0,
      detail:
        `sold ${sold} of ${flash.stock}; per SKU: ` +
        `${stock.map((r) => `${r.sku.split('-').at(-1)}: ${r.sold}/${f.stockPerSku}`).join(', ')}`,
    },
    {
      name: 'inventory = stock − sold, never negative',
      ok: ledgerOk,
      detail: stock.map((r) => `available ${r.available}`).join(', '),
    },
    ...ledgerChecks(summary),
  );
  report.tables.push(systemsTable([summary]), {
    title: 'Flash sale',
    headers: Object.keys(flash),
    rows: [
      Object.values(flash).map((v) => (typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v ?? '–'))),
    ],
  });
  trace.addTo(report);
  return finish(report, o, standardCharts([summary]));
}

/**
 * --trace on a stack the benchmark starts: ingest's timeline (the options to start the stack with)
 * and the generator's attempts (its run options) go to a scratch folder, joined into the report
 * after the stack stops. Without --trace, or against a running stack, all three change nothing.
 */
function tracing(o: BenchOptions): {
  options: BenchOptions;
  run: Pick<RunOptions, 'attemptsFile'>;
  addTo: (report: Report) => void;
} {
  if (!o.trace || o.running !== undefined) return { options: o, run: {}, addTo: () => {} };
  const dir = mkdtempSync(join(tmpdir(), 'surge-trace-'));
  const timelineFile = join(dir, 'ingest-timeline.json');
  return {
    options: { ...o, env: { ...o.env, SURGE_INGEST_TIMELINE_FILE: timelineFile } },
    run: { attemptsFile: join(dir, 'attempts') },
    addTo: (report) => tracedParts(report, dir, timelineFile),
  };
}

/** The traced run's answers split into where their time went (bench/decompose.ts), as a table. */
function tracedParts(report: Report, dir: string, timelineFile: string): void {
  if (!existsSync(timelineFile)) {
    report.notes.push(`--trace: ingest wrote no timeline (${timelineFile}).`);
    return;
  }
  const timeline = JSON.parse(readFileSync(timelineFile, 'utf8')) as TimelineRecord;
  const generators = readdirSync(dir)
    .filter((f) => f.startsWith('attempts.'))
    .map((f) => JSON.parse(readFileSync(join(dir, f), 'utf8')) as AttemptsRecord);
  const classes = decompose(timeline, generators);
  report.extra.latencyParts = classes;
  report.notes.push(
    `--trace: each attempt measured (the flash sale: of the burst) joined with ingest's read of it by its send time (x-bench-sent); ` +
      `raw records in ${dir}. Parts: ${PARTS.map(([k, what]) => `${k}: ${what}`).join('; ')}.`,
  );
  const cell = (p: { p50: number; p99: number; mean: number }) => `${p.p50} / ${p.p99} / ${p.mean}`;
  report.tables.push({
    title: "Where each answer's time went (ms, p50 / p99 / mean; the slowest 1 %'s mean)",
    headers: ['answer', 'attempts', ...PARTS.map(([k]) => k), 'total', "its turn's length ms / requests, median"],
    rows: classes.flatMap((c) => [
      [
        c.status,
        c.count,
        ...PARTS.map(([k]) => cell(c.parts[k])),
        cell(c.parts.total),
        `${c.turnMs} / ${c.turnRequests}`,
      ],
      [`${c.status}, slowest 1 %`, '', ...PARTS.map(([k]) => c.tail[k]), c.tail.total, ''],
    ]),
  });
}

export async function compare(o: BenchOptions): Promise<{ report: Report; dir: string }> {
  const report = newReport(
    'compare',
    'Compare: sync INSERT per request vs BullMQ job per order vs Surge',
    o,
    new Date(),
  );
  const results: Array<{ summary: SystemSummary; knee: Knee }> = [];
  for (const system of ['sync-insert', 'bullmq', 'surge'] as const) {
    const r = await withTarget(system, o, (t) => keepGeneratorAhead(o, (o) => runRamp(t, o, SYSTEM_LABEL[system])));
    results.push({ summary: r.summary, knee: r.knee });
  }
  const by = (s: SystemName) => {
    const r = results.find((x) => x.summary.system === s);
    if (r === undefined) throw new Error(`compare: no result for ${s}`);
    return r;
  };
  const surge = by('surge');
  const peakCommit = (s: SystemSummary) => {
    const c = s.samples.map((x) => x.committed);
    let best = 0;
    for (let i = 0; i + 3 <= c.length; i++) best = Math.max(best, c.slice(i, i + 3).reduce((a, x) => a + x, 0) / 3);
    return Math.round(best);
  };
  // The highest step every system sustained: where their latencies are compared like for like.
  // (When a system sustained no step, the first step is the common one.)
  const knees = results.map((r) => r.knee.maxSustainableRate).filter((k): k is number => k !== null);
  const common = knees.length === results.length ? Math.min(...knees) : o.ramp.startRate;
  const at = (s: SystemSummary, rate = common) => s.phases.find((p) => p.offeredRate === rate);
  const ratio = (a: number | null | undefined, b: number | null | undefined) =>
    a && b ? Math.round((a / b) * 100) / 100 : null;
  const ratios = Object.fromEntries(
    (['sync-insert', 'bullmq'] as const).map((base) => {
      const b = by(base);
      // Each baseline also at the highest rate it sustains (when Surge sustains it too): what a
      // team replacing that design would see at the load it was built to carry.
      const own =
        b.knee.maxSustainableRate !== null && surge.knee.maxSustainableRate !== null
          ? Math.min(b.knee.maxSustainableRate, surge.knee.maxSustainableRate)
          : null;
      return [
        base,
        {
          maxSustainableRate: ratio(surge.knee.maxSustainableRate, b.knee.maxSustainableRate),
          peakCommittedPerSec: ratio(peakCommit(surge.summary), peakCommit(b.summary)),
          acceptP99AtCommonRate: ratio(at(surge.summary)?.accept.p99Ms, at(b.summary)?.accept.p99Ms),
          commitP99AtCommonRate: ratio(at(surge.summary)?.commit.p99Ms, at(b.summary)?.commit.p99Ms),
          baselineMaxRate: own,
          acceptP99AtBaselineMax:
            own === null ? null : ratio(at(surge.summary, own)?.accept.p99Ms, at(b.summary, own)?.accept.p99Ms),
        },
      ];
    }),
  );
  report.systems = results.map((r) => r.summary);
  report.extra.knees = Object.fromEntries(results.map((r) => [r.summary.system, r.knee]));
  report.extra.ratios = ratios;
  report.extra.commonRate = common;
  report.tables.push({
    title: `Same workload, same ramp (${bounds(o.ramp)})`,
    headers: [
      'system',
      'max sustainable orders/s',
      'peak committed/s (3 s)',
      `accept p99 @ ${common}/s ms`,
      `commit p99 @ ${common}/s ms`,
      'stopped because',
    ],
    rows: results.map((r) => [
      r.summary.label,
      kneeText(r.knee),
      peakCommit(r.summary),
      at(r.summary)?.accept.p99Ms ?? '–',
      at(r.summary)?.commit.p99Ms ?? '–',
      r.summary.stoppedBecause ?? r.knee.reason,
    ]),
  });
  report.tables.push({
    title: 'Ratios: Surge ÷ baseline (rates: higher is better for Surge; latencies: lower is better)',
    headers: [
      'baseline',
      'max sustainable rate',
      'peak committed/s',
      `accept p99 @ ${common}/s`,
      `commit p99 @ ${common}/s`,
      "accept p99 @ the baseline's max",
    ],
    rows: Object.entries(ratios).map(([b, r]) => [
      SYSTEM_LABEL[b as SystemName],
      r.maxSustainableRate ?? '–',
      r.peakCommittedPerSec ?? '–',
      r.acceptP99AtCommonRate ?? '–',
      r.commitP99AtCommonRate ?? '–',
      r.baselineMaxRate === null ? '–' : `${r.acceptP99AtBaselineMax ?? '–'} (@ ${r.baselineMaxRate}/s)`,
    ]),
  });
  for (const r of results) report.tables.push(phasesTable(r.summary));
  report.tables.push(systemsTable(report.systems), littleTable(report.systems));
  for (const [b, r] of Object.entries(ratios)) {
    report.findings.push(
      `Surge vs ${SYSTEM_LABEL[b as SystemName]}: ` +
        `max sustainable rate ×${r.maxSustainableRate ?? '–'}, ` +
        `peak committed/s ×${r.peakCommittedPerSec ?? '–'}, ` +
        `accept p99 at ${common}/s ×${r.acceptP99AtCommonRate ?? '–'}, ` +
        `commit p99 ×${r.commitP99AtCommonRate ?? '–'}` +
        (r.baselineMaxRate === null
          ? '.'
          : `; accept p99 at the baseline's max sustainable ${r.baselineMaxRate}/s ×${r.acceptP99AtBaselineMax ?? '–'}.`),
    );
  }
  for (const r of results)
    report.findings.push(
      `${r.summary.label}: ` +
        `max sustainable ${kneeText(r.knee)} orders/s` +
        `${r.knee.firstFailingRate !== null ? ` (at ${r.knee.firstFailingRate}/s: ${r.knee.reason})` : ''}.`,
    );
  report.checks.push(...report.systems.flatMap(ledgerChecks), ...littleCheckList(report.systems));
  return finish(
    report,
    o,
    standardCharts(
      report.systems,
      rateMarks(
        o.ramp,
        results.map((r) => ({ label: r.summary.label, knee: r.knee })),
      ),
    ),
  );
}

export async function sweep(o: BenchOptions): Promise<{ report: Report; dir: string }> {
  const s = o.sweep;
  const report = newReport('sweep', 'Sweep: capacity by workers, batch size and shards', o, new Date());
  if (o.running) throw new Error('sweep starts its own stacks (one per configuration); it cannot run against --url');
  const rows: Array<{ workers: number; shards: number; batch: number; knee: Knee; summary: SystemSummary }> = [];
  for (const workers of s.workers) {
    for (const shards of s.shards) {
      for (const batch of s.batchSizes) {
        const label = `${workers} worker${workers > 1 ? 's' : ''}, ${shards} shards, batch ${batch}`;
        const env = { SURGE_SHARDS: String(shards), SURGE_BATCH_SIZE: String(batch) };
        const r = await withTarget('surge', o, (t) => keepGeneratorAhead(o, (o) => runRamp(t, o, label)), env, workers);
        rows.push({
          workers,
          shards,
          batch,
          knee: r.knee,
          summary: { ...r.summary, system: `w${workers}-s${shards}-b${batch}` },
        });
      }
    }
  }
  const sorted = [...rows].sort((a, b) => a.workers - b.workers || a.shards - b.shards || a.batch - b.batch);
  let recommendation: string;
  const need = s.targetRate * s.headroom;
  if (s.targetRate > 0) {
    const fit = sorted.find((r) => (r.knee.maxSustainableRate ?? 0) >= need);
    recommendation = fit
      ? `To carry ${s.targetRate} orders/s with ${Math.round((s.headroom - 1) * 100)} % headroom (${need}/s): ` +
        `${fit.summary.label} (max sustainable ${kneeText(fit.knee)}/s on this machine).`
      : `No tested configuration sustains ${need}/s ` +
        `(${s.targetRate} + ${Math.round((s.headroom - 1) * 100)} % headroom) on this machine; ` +
        `the best was ${kneeText(bestOf(rows).knee)}/s (${bestOf(rows).summary.label}). ` +
        'Add worker replicas or shards beyond the tested range, on more cores.';
  } else {
    const best = bestOf(rows);
    recommendation =
      `Best tested configuration: ${best.summary.label} — max sustainable ${kneeText(best.knee)} orders/s. ` +
      'Plan replicas for the target rate × 1.25 headroom; ' +
      're-run with --target-rate for a concrete pick.';
  }
  const capacity: Table = {
    title: `Capacity: workers → max orders/s with ${bounds(o.ramp)}`,
    headers: [
      'workers',
      'shards',
      'batch size',
      'max sustainable orders/s',
      'first failing step',
      'accept p99 at knee ms',
      'commit p99 at knee ms',
      "Little's law at knee",
    ],
    rows: sorted.map((r) => {
      const p = r.summary.phases.find((x) => x.offeredRate === r.knee.maxSustainableRate);
      return [
        r.workers,
        r.shards,
        r.batch,
        kneeText(r.knee),
        r.knee.firstFailingRate === null ? '–' : `${r.knee.firstFailingRate} (${r.knee.reason})`,
        p?.accept.p99Ms ?? '–',
        p?.commit.p99Ms ?? '–',
        r.summary.littles.length === 0
          ? '–'
          : r.summary.littles.map((l) => `${l.ok ? 'ok' : 'OFF'} ${l.measured}/${l.predicted}`).join('; '),
      ];
    }),
  };
  report.systems = rows.map((r) => r.summary);
  report.extra.capacity = sorted.map((r) => ({
    workers: r.workers,
    shards: r.shards,
    batchSize: r.batch,
    knee: r.knee,
  }));
  report.extra.recommendation = recommendation;
  report.findings.push(recommendation, ...sorted.map((r) => `${r.summary.label}: ${kneeText(r.knee)} orders/s.`));
  report.tables.push(capacity, systemsTable(report.systems), littleTable(report.systems));
  report.checks.push(...report.systems.flatMap(ledgerChecks), ...littleCheckList(report.systems));
  const charts: Chart[] = [
    {
      file: 'capacity.svg',
      title: 'Max sustainable rate per configuration',
      spec: capacitySpec(sorted.map((r) => ({ config: r.summary.label, maxRate: r.knee.maxSustainableRate ?? 0 }))),
    },
    ...standardCharts(
      report.systems,
      rateMarks(
        o.ramp,
        sorted.map((r) => ({ label: r.summary.label, knee: r.knee })),
      ),
    ),
  ];
  return finish(report, o, charts);
}

function bestOf<T extends { knee: Knee }>(rows: readonly T[]): T {
  return rows.reduce((a, b) => ((b.knee.maxSustainableRate ?? 0) > (a.knee.maxSustainableRate ?? 0) ? b : a));
}

export async function runScenario(scenario: Scenario, options: BenchOptions): Promise<{ report: Report; dir: string }> {
  const o = options.quick ? quickOptions(options) : options;
  switch (scenario) {
    case 'steady':
      return steady(o);
    case 'soak':
      // Long enough in quick mode for a few memory samples after the warm-up.
      return steady(o.quick ? { ...o, durationS: Math.max(o.durationS, 6) } : o, true);
    case 'ramp':
      return ramp(o);
    case 'flash-sale':
      return flashSale(o);
    case 'compare':
      return compare(o);
    case 'sweep':
      return sweep(o);
  }
}
