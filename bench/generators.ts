// Parent side of the load generator: forks the generator processes (so the client never shares
// an event loop with the stack or the sampler), splits the rate between them, merges their
// per-second ticks and final results.
import { fork } from 'node:child_process';
import * as hdr from 'hdr-histogram-js';
import {
  assertLoopback,
  type ChildMessage,
  type GeneratorResult,
  HISTOGRAM_OPTIONS,
  type LoadPlan,
  type ParentMessage,
  type PhaseResult,
  sumCounts,
  type Tick,
} from './loadgen.js';

export type PlanTemplate = Omit<LoadPlan, 'generator' | 'seed'>;

export interface MergedTick extends Omit<Tick, 'generator'> {
  generators: number;
}

export interface LoadRun {
  /** Ends the schedule early (e.g. the ramp found its knee); outstanding requests still finish. */
  stop(): void;
  /** All generators' results, merged. */
  result: Promise<MergedResult>;
  /** The generator processes (their CPU is read from /proc). */
  pids: number[];
}

/** One phase over all generators: the generators' PhaseResult, histograms decoded and added. */
export type MergedPhase = Omit<PhaseResult, 'histogram' | 'answers'> & {
  histogram: hdr.Histogram;
  answers: Record<string, hdr.Histogram>;
};

/** All generators' results as one: the GeneratorResult fields summed or joined, histograms decoded and added. */
export type MergedResult = Omit<GeneratorResult, 'generator' | 'phases' | 'latencyByStatus'> & {
  phases: MergedPhase[];
  /** Latency to the final outcome by final status (every generator's histograms added). */
  latencyByStatus: Record<string, hdr.Histogram>;
};

const CHILD = new URL('./loadgen.js', import.meta.url);

/** Splits a plan over `generators` processes (rate, bounds and connections divided evenly). */
export function splitPlan(template: PlanTemplate, generators: number, seed: number): LoadPlan[] {
  return Array.from({ length: generators }, (_, g) => ({
    ...template,
    generator: g,
    seed: seed + g * 7919,
    phases: template.phases.map((p) => ({ ...p, rate: p.rate / generators })),
    maxRequests: Math.ceil(template.maxRequests / generators),
    connections: Math.max(1, Math.ceil(template.connections / generators)),
    maxInFlight: Math.max(1, Math.ceil(template.maxInFlight / generators)),
  }));
}

export function startLoad(
  template: PlanTemplate,
  options: { generators: number; seed: number; onTick: (t: MergedTick) => void },
): LoadRun {
  assertLoopback(template.url);
  const plans = splitPlan(template, options.generators, options.seed);
  const pending = new Map<number, Tick[]>();
  const children = plans.map((plan) => {
    const child = fork(CHILD, ['--surge-loadgen'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: [] });
    const done = new Promise<GeneratorResult>((resolve, reject) => {
      child.on('message', (m: ChildMessage) => {
        if (m.type === 'tick') {
          const list = pending.get(m.tick.second) ?? [];
          list.push(m.tick);
          pending.set(m.tick.second, list);
          if (list.length === plans.length) {
            pending.delete(m.tick.second);
            options.onTick(mergeTicks(list));
          }
        } else if (m.type === 'done') {
          resolve(m.result);
          child.disconnect();
        } else reject(new Error(`load generator ${plan.generator}: ${m.message}`));
      });
      child.once('exit', (code, signal) =>
        reject(new Error(`load generator ${plan.generator} exited (${signal ?? code}) before reporting`)),
      );
    });
    child.send({ type: 'start', plan } satisfies ParentMessage);
    return { child, done };
  });
  const result = Promise.all(children.map((c) => c.done)).then(mergeResults);
  return {
    stop() {
      for (const c of children) if (c.child.connected) c.child.send({ type: 'stop' } satisfies ParentMessage);
    },
    result,
    pids: children.flatMap((c) => (c.child.pid === undefined ? [] : [c.child.pid])),
  };
}

function mergeTicks(list: Tick[]): MergedTick {
  const sum = (f: (t: Tick) => number) => list.reduce((a, t) => a + f(t), 0);
  return {
    generators: list.length,
    second: list[0]?.second ?? 0,
    phase: Math.max(...list.map((t) => t.phase)),
    ...sumCounts(list),
    inFlight: sum((t) => t.inFlight),
    // Percentiles of a merged window are not the max of parts in general; with one generator (the
    // default) they are exact, with several this is an upper bound for the progress line only.
    p50Ms: Math.max(...list.map((t) => t.p50Ms)),
    p99Ms: Math.max(...list.map((t) => t.p99Ms)),
    maxMs: Math.max(...list.map((t) => t.maxMs)),
    loopDelayP99Ms: Math.max(...list.map((t) => t.loopDelayP99Ms)),
    loopDelayMaxMs: Math.max(...list.map((t) => t.loopDelayMaxMs)),
  };
}

function mergeResults(results: GeneratorResult[]): MergedResult {
  const [first] = results;
  if (first === undefined) throw new Error('no load generator reported a result');
  const phases: MergedPhase[] = first.phases.map((_, i) => {
    const parts = results.map((r) => r.phases[i]).filter((p) => p !== undefined);
    const histogram = hdr.build(HISTOGRAM_OPTIONS);
    for (const p of parts) if (p.histogram) histogram.add(hdr.decodeFromCompressedBase64(p.histogram));
    const answers: Record<string, hdr.Histogram> = {};
    for (const p of parts)
      for (const [cls, encoded] of Object.entries(p.answers)) {
        const h = answers[cls] ?? hdr.build(HISTOGRAM_OPTIONS);
        h.add(hdr.decodeFromCompressedBase64(encoded));
        answers[cls] = h;
      }
    const sum = (f: (p: (typeof parts)[number]) => number) => parts.reduce((a, p) => a + f(p), 0);
    return {
      phase: i,
      rate: sum((p) => p.rate),
      durationMs: Math.max(...parts.map((p) => p.durationMs)),
      ...sumCounts(parts),
      duplicatesSent: sum((p) => p.duplicatesSent),
      abandoned: sum((p) => p.abandoned),
      histogram,
      answers,
    };
  });
  const addUp = (pick: (r: GeneratorResult) => Record<string, number>) => {
    const total: Record<string, number> = {};
    for (const r of results) for (const [k, v] of Object.entries(pick(r))) total[k] = (total[k] ?? 0) + v;
    return total;
  };
  // Per second since the earliest generator's start (they start within milliseconds of each other).
  const bySecond = (pick: (r: GeneratorResult) => number[]) => {
    const total: number[] = [];
    for (const r of results)
      for (const [i, n] of pick(r).entries()) {
        for (let j = total.length; j <= i; j++) total.push(0);
        total[i] = (total[i] ?? 0) + n;
      }
    return total;
  };
  const latencyByStatus: Record<string, hdr.Histogram> = {};
  for (const r of results) {
    for (const [k, v] of Object.entries(r.latencyByStatus)) {
      const h = latencyByStatus[k] ?? hdr.build(HISTOGRAM_OPTIONS);
      latencyByStatus[k] = h;
      h.add(hdr.decodeFromCompressedBase64(v));
    }
  }
  return {
    startedAtMs: Math.min(...results.map((r) => r.startedAtMs)),
    endedAtMs: Math.max(...results.map((r) => r.endedAtMs)),
    phases,
    acceptedKeys: results.flatMap((r) => r.acceptedKeys),
    statusCounts: addUp((r) => r.statusCounts),
    latencyByStatus,
    attemptCounts: addUp((r) => r.attemptCounts),
    distinctKeys: results.reduce((a, r) => a + r.distinctKeys, 0),
    acceptedBySecond: bySecond((r) => r.acceptedBySecond),
    finalAnswersBySecond: bySecond((r) => r.finalAnswersBySecond),
    answered2xxBySecond: bySecond((r) => r.answered2xxBySecond),
    errorSamples: results.flatMap((r) => r.errorSamples).slice(0, 10),
  };
}
