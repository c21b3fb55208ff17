// The load generator: one child process (see generators.ts for the parent side). An open model:
// arrivals are scheduled at a fixed rate whether or not earlier requests have been answered, and
// every latency is measured from the arrival's *intended* send time, so time spent queued in the
// client (all connections busy) or in the server counts — coordinated omission cannot hide it.
// Submissions wait for a free connection in the generator's own FIFO, and an attempt's timeout
// starts when it is sent: a timeout that also ran while the submission waited would fail the tail
// of every burst on the client's side. Bounded in count (maxRequests) and time (phases), loopback
// targets only.
import { writeFileSync } from 'node:fs';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import * as hdr from 'hdr-histogram-js';
import { retryable as retryableStatus, retryDelayMs } from '../client/index.js';
import { AttemptError, Http1Pool } from './http1.js';
import { KeySet } from './key-set.js';
import { orderFor, orderKey, type WorkloadOptions } from './workload.js';

export interface LoadPhase {
  /** Arrivals per second from this generator. */
  rate: number;
  durationMs: number;
  /** What this phase's orders buy (default: the plan's workload). */
  workload?: WorkloadOptions;
}

export interface RetryPolicy {
  /** Retries after the first attempt (503, 409, 429, other 5xx, network errors). 0 = none. */
  max: number;
  /** Backoff base: the full-jitter ceiling doubles per attempt up to maxDelayMs, on top of a Retry-After honoured as given (client/index.ts). */
  baseDelayMs: number;
  maxDelayMs: number;
  /** No retry starts later than this after the generator started (undefined: no such bound). */
  untilMs?: number;
}

export interface LoadPlan {
  /** Base URL of the target, e.g. http://127.0.0.1:8080. Must be a loopback address. */
  url: string;
  /** Request path. Default /v1/orders. */
  path: string;
  apiKey: string;
  /** Prefix of every idempotency key of this run. */
  runKey: string;
  generator: number;
  phases: LoadPhase[];
  /** Hard bound on arrivals from this generator. */
  maxRequests: number;
  /** HTTP connections in the pool. */
  connections: number;
  /** Arrivals that find this many submissions outstanding are dropped and counted. */
  maxInFlight: number;
  /** Per-attempt timeout, from the moment the attempt is sent on a connection. */
  timeoutMs: number;
  /** Share of arrivals that resend a recent key with its identical body (0–1). */
  duplicateFraction: number;
  retry: RetryPolicy;
  workload: WorkloadOptions;
  seed: number;
  /**
   * The first phase whose keys count in distinctKeys, acceptedBySecond and finalAnswersBySecond,
   * those by whole seconds since it began: a warm-up before it is left out. Default 0.
   */
  countFromPhase?: number;
  /**
   * Open every connection when the generator starts (during a warm-up phase) rather than as
   * arrivals first need them: clients that already hold their keep-alive connections.
   */
  openConnectionsAtStart?: boolean;
  /**
   * Trace every attempt of the counted phases into `<attemptsFile>.<generator>.json` (bench/decompose.ts),
   * each request stamped with its send time (`x-bench-sent`) for ingest's timeline to join.
   */
  attemptsFile?: string;
}

/** What a generator counts of its submissions: per second (Tick), per phase (PhaseResult), in the report. */
export interface Counts {
  /** Arrivals scheduled. */
  offered: number;
  /** Submissions finished with a 2xx (first answer for the key). */
  accepted: number;
  /** 2xx replays (Idempotent-Replayed: true). */
  replayed: number;
  /** Submissions that ended without a 2xx after their retries. */
  failed: number;
  /** Attempts answered 503/409/429/5xx or failed on the network (each may be retried). */
  errors: number;
  retries: number;
  dropped: number;
}

export function zeroCounts(): Counts {
  return { offered: 0, accepted: 0, replayed: 0, failed: 0, errors: 0, retries: 0, dropped: 0 };
}

/** The counts of several generators (or windows) added up; other fields of the parts are ignored. */
export function sumCounts(parts: readonly Counts[]): Counts {
  const total = zeroCounts();
  for (const p of parts) for (const k of Object.keys(total) as (keyof Counts)[]) total[k] += p[k];
  return total;
}

/** One second of one generator, by completion time. */
export interface Tick extends Counts {
  generator: number;
  /** Whole seconds since the generator started. */
  second: number;
  phase: number;
  /** Submissions outstanding, time-averaged over the second (arrivals late from the timer included). */
  inFlight: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** This generator's own event-loop delay over the second (its saturation shows here first). */
  loopDelayP99Ms: number;
  /** … and its longest single delay in the second: one stall the p99 of a quiet second hides. */
  loopDelayMaxMs: number;
}

export interface PhaseResult extends Counts {
  phase: number;
  rate: number;
  /** Time the phase actually ran (shorter if stopped early). */
  durationMs: number;
  duplicatesSent: number;
  /** Submissions still unanswered when the generator gave up waiting. */
  abandoned: number;
  /** Accept latency of 2xx submissions, µs, hdr-histogram compressed base64. */
  histogram: string;
  /**
   * Latency of each attempt's answer by class ('2xx', '503', …), µs, compressed base64: from the
   * attempt's intended time (the arrival's for the first attempt, the end of its wait for a retry)
   * to the answer, waiting for a connection included.
   */
  answers: Record<string, string>;
}

export interface GeneratorResult {
  generator: number;
  startedAtMs: number;
  endedAtMs: number;
  phases: PhaseResult[];
  /** Every idempotency key that got a 2xx. */
  acceptedKeys: string[];
  /** Final status of submissions by code ('net' = network error, 'timeout'). */
  statusCounts: Record<string, number>;
  /** Latency from the intended send time to the final outcome, by final status, µs, as `histogram`. */
  latencyByStatus: Record<string, string>;
  /** Every attempt's outcome by code (status, or 'timeout' / 'net'). */
  attemptCounts: Record<string, number>;
  /** Distinct keys of the arrivals (dropped ones included), from phase `countFromPhase` on. */
  distinctKeys: number;
  /** Distinct keys accepted (first 2xx) in each whole second since phase `countFromPhase` began. */
  acceptedBySecond: number[];
  /** Distinct keys that got their final answer (2xx, or a 4xx that is not retried) in each whole second. */
  finalAnswersBySecond: number[];
  /** Submissions answered 2xx (replays included) in each whole second. */
  answered2xxBySecond: number[];
  errorSamples: string[];
}

export type ParentMessage = { type: 'start'; plan: LoadPlan } | { type: 'stop' };
export type ChildMessage =
  | { type: 'tick'; tick: Tick }
  | { type: 'done'; result: GeneratorResult }
  | { type: 'error'; message: string };

export const HISTOGRAM_OPTIONS = {
  lowestDiscernibleValue: 1,
  highestTrackableValue: 3_600_000_000,
  numberOfSignificantValueDigits: 3,
} as const;

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]', '::1']);

/** Throws unless the URL points at this machine: the suite never loads someone else's server. */
export function assertLoopback(url: string): void {
  const host = new URL(url).hostname;
  if (!LOOPBACK.has(host) && !host.startsWith('127.')) {
    throw new Error(
      `refusing to load ${url}: the benchmark only targets loopback addresses (127.0.0.0/8, ::1, localhost)`,
    );
  }
}

export async function runGenerator(
  plan: LoadPlan,
  emit: (m: ChildMessage) => void,
  stopSignal: AbortSignal,
): Promise<GeneratorResult> {
  assertLoopback(plan.url);
  const pool = new Http1Pool(plan.url, plan.connections, plan.timeoutMs);
  if (plan.openConnectionsAtStart) pool.openAll();
  const startedAtMs = Date.now();
  const t0 = performance.now();
  const rnd = (() => {
    let a = plan.seed >>> 0;
    return () => {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = Math.imul(a ^ (a >>> 15), a | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  })();

  const phaseHist = plan.phases.map(() => hdr.build(HISTOGRAM_OPTIONS));
  const phases: PhaseResult[] = plan.phases.map((p, i) => ({
    phase: i,
    rate: p.rate,
    durationMs: 0,
    ...zeroCounts(),
    duplicatesSent: 0,
    abandoned: 0,
    histogram: '',
    answers: {},
  }));
  const answerHists = plan.phases.map(() => new Map<string, hdr.Histogram>());
  const recordAnswer = (phase: number, status: number, us: number) => {
    const byClass = answerHists[phase];
    if (byClass === undefined) return;
    const cls = status === 0 ? 'error' : status === 503 ? '503' : `${Math.floor(status / 100)}xx`;
    let h = byClass.get(cls);
    if (h === undefined) {
      h = hdr.build(HISTOGRAM_OPTIONS);
      byClass.set(cls, h);
    }
    h.recordValue(us);
  };
  const attemptCounts: Record<string, number> = {};
  const keysSeen = new KeySet();
  const finalAnswered = new KeySet();
  const acceptedBySecond: number[] = [];
  const finalAnswersBySecond: number[] = [];
  const answered2xxBySecond: number[] = [];
  // The counted phases begin when those before them are scheduled to end.
  const countFrom = plan.countFromPhase ?? 0;
  const countedFrom = t0 + plan.phases.slice(0, countFrom).reduce((a, p) => a + p.durationMs, 0);
  const countAt = (list: number[], at: number) => {
    const s = Math.max(0, Math.floor((at - countedFrom) / 1000));
    for (let i = list.length; i <= s; i++) list.push(0);
    list[s] = (list[s] ?? 0) + 1;
  };
  const phaseResult = (phase: number): PhaseResult => {
    const ph = phases[phase];
    if (ph === undefined) throw new Error(`load plan has no phase ${phase}`);
    return ph;
  };
  let windowHist = hdr.build(HISTOGRAM_OPTIONS);
  let win = zeroCounts();
  const acceptedKeys = new KeySet();
  const statusCounts: Record<string, number> = {};
  const statusHist = new Map<string, hdr.Histogram>();
  // The histogram counts the sampling timer's own interval too: idle reads ≈ the resolution.
  const loopResolutionMs = 10;
  const loopDelay = monitorEventLoopDelay({ resolution: loopResolutionMs });
  loopDelay.enable();
  const errorSamples: string[] = [];
  const recent: string[] = [];
  let outstanding = 0;
  // Submissions outstanding integrated over time (ms), for the tick's time-mean: a sample at the
  // tick would fall at the same phase of the arrival timer every second and miss the bursts.
  let outstandingArea = 0;
  let areaAt = performance.now();
  const integrate = (now: number) => {
    outstandingArea += outstanding * (now - areaAt);
    areaAt = now;
  };
  let total = 0;
  // Connections in use, and the submissions waiting for one (FIFO; `waitHead` is the next).
  let busy = 0;
  let waiting: Array<() => void> = [];
  let waitHead = 0;
  const connection = (): Promise<void> | undefined => {
    if (busy < plan.connections) {
      busy++;
      return undefined;
    }
    return new Promise<void>((resolve) => waiting.push(resolve));
  };
  const release = () => {
    const next = waiting[waitHead];
    if (next === undefined) {
      busy--;
      return;
    }
    waiting[waitHead++] = () => {};
    if (waitHead > 4096 && waitHead * 2 > waiting.length) {
      waiting = waiting.slice(waitHead);
      waitHead = 0;
    }
    next();
  };
  let currentPhase = 0;
  let second = 0;

  const fixedHeaders = `authorization: Bearer ${plan.apiKey}\r\ncontent-type: application/json\r\n`;

  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  // Opt-in: every attempt's times, for decomposing its latency.
  const { attemptsFile } = plan;
  const clockOffsetMs = attemptsFile ? Number(process.hrtime.bigint()) / 1e6 - performance.now() : undefined;
  const attemptTraces: number[][] = [];

  const submit = async (key: string, phase: number, intended: number): Promise<void> => {
    const body = JSON.stringify(orderFor(key, plan.phases[phase]?.workload ?? plan.workload));
    const ph = phaseResult(phase);
    const counted = phase >= countFrom;
    let final = 'net';
    let due = intended;
    for (let attempt = 0; ; attempt++) {
      let status = 0;
      let retryAfterMs: number | undefined;
      let replayed = false;
      const readyAt = performance.now();
      const wait = connection();
      if (wait) await wait;
      const connAt = performance.now();
      let sentAt = 0;
      let receivedAt = 0;
      try {
        const res = await pool.post(plan.path, `${fixedHeaders}idempotency-key: ${key}\r\n`, body, clockOffsetMs);
        sentAt = res.sentAt;
        receivedAt = res.receivedAt;
        status = res.status;
        replayed = res.replayed;
        if (res.retryAfterS !== undefined) retryAfterMs = res.retryAfterS * 1000;
        if (status >= 300 && errorSamples.length < 10) errorSamples.push(`${status} ${res.body.slice(0, 200)}`);
        final = String(status);
      } catch (e) {
        const err = e instanceof AttemptError ? e : new AttemptError('net', (e as Error).name, (e as Error).message);
        final = err.kind;
        if (errorSamples.length < 10) errorSamples.push(`${final}: ${err.code} ${err.message}`);
      } finally {
        release();
      }
      const answeredAt = performance.now();
      if (clockOffsetMs !== undefined && phase >= countFrom)
        attemptTraces.push([due, readyAt, connAt, sentAt, receivedAt, answeredAt, status, attempt]);
      attemptCounts[final] = (attemptCounts[final] ?? 0) + 1;
      recordAnswer(phase, status, Math.max(1, Math.round((answeredAt - due) * 1000)));
      if (status >= 200 && !retryableStatus(status) && !finalAnswered.has(key)) {
        finalAnswered.add(key);
        if (counted) countAt(finalAnswersBySecond, answeredAt);
      }
      if (status >= 200 && status < 300) {
        const ms = performance.now() - intended;
        const us = Math.max(1, Math.round(ms * 1000));
        phaseHist[phase]?.recordValue(us);
        windowHist.recordValue(us);
        if (counted) countAt(answered2xxBySecond, answeredAt);
        if (replayed || acceptedKeys.has(key)) {
          ph.replayed++;
          win.replayed++;
        } else {
          ph.accepted++;
          win.accepted++;
          if (counted) countAt(acceptedBySecond, answeredAt);
        }
        acceptedKeys.add(key);
        break;
      }
      const retryable = retryableStatus(status);
      if (retryable) {
        ph.errors++;
        win.errors++;
      }
      // The reference client's policy (surge/client): Retry-After, then full jitter.
      const delay = retryDelayMs(plan.retry, attempt, retryAfterMs, rnd);
      const retryAt = performance.now() + delay;
      const late = plan.retry.untilMs !== undefined && retryAt - t0 > plan.retry.untilMs;
      if (!retryable || attempt >= plan.retry.max || stopSignal.aborted || late) {
        ph.failed++;
        win.failed++;
        break;
      }
      ph.retries++;
      win.retries++;
      await sleep(delay);
      due = retryAt;
    }
    statusCounts[final] = (statusCounts[final] ?? 0) + 1;
    const h = statusHist.get(final) ?? hdr.build(HISTOGRAM_OPTIONS);
    statusHist.set(final, h);
    h.recordValue(Math.max(1, Math.round((performance.now() - intended) * 1000)));
  };

  let recentPhase = 0;
  const dispatch = (phase: number, seq: number, intended: number) => {
    const ph = phaseResult(phase);
    ph.offered++;
    win.offered++;
    total++;
    // A duplicate resends a key of its own phase, whose orders it was built from.
    if (phase !== recentPhase) {
      recent.length = 0;
      recentPhase = phase;
    }
    // With probability duplicateFraction (once there are recent keys), resend one of them.
    const duplicate =
      recent.length > 0 && rnd() < plan.duplicateFraction ? recent[Math.floor(rnd() * recent.length)] : undefined;
    const key = duplicate ?? orderKey(plan.runKey, phase, plan.generator, seq);
    // A dropped arrival is still an order its client wanted placed.
    if (phase >= countFrom) keysSeen.add(key);
    if (outstanding >= plan.maxInFlight) {
      ph.dropped++;
      win.dropped++;
      return;
    }
    if (duplicate !== undefined) ph.duplicatesSent++;
    else {
      recent.push(key);
      if (recent.length > 1024) recent.shift();
    }
    const now = performance.now();
    integrate(now);
    // Late from the arrival timer: the submission was already waiting (latency counts from
    // `intended`), so it was in the system, on the generator's side, since then.
    outstandingArea += Math.max(0, now - intended);
    outstanding++;
    void submit(key, phase, intended).finally(() => {
      integrate(performance.now());
      outstanding--;
    });
  };

  let tickAt = performance.now();
  const tickTimer = setInterval(() => {
    second++;
    const now = performance.now();
    integrate(now);
    const inFlight = now > tickAt ? outstandingArea / (now - tickAt) : outstanding;
    outstandingArea = 0;
    tickAt = now;
    emit({
      type: 'tick',
      tick: {
        generator: plan.generator,
        second,
        phase: currentPhase,
        ...win,
        inFlight,
        p50Ms: windowHist.totalCount ? windowHist.getValueAtPercentile(50) / 1000 : 0,
        p99Ms: windowHist.totalCount ? windowHist.getValueAtPercentile(99) / 1000 : 0,
        maxMs: windowHist.totalCount ? windowHist.maxValue / 1000 : 0,
        loopDelayP99Ms: loopDelay.count > 0 ? Math.max(0, loopDelay.percentile(99) / 1e6 - loopResolutionMs) : 0,
        loopDelayMaxMs: loopDelay.count > 0 ? Math.max(0, loopDelay.max / 1e6 - loopResolutionMs) : 0,
      },
    });
    loopDelay.reset();
    windowHist.destroy();
    windowHist = hdr.build(HISTOGRAM_OPTIONS);
    win = zeroCounts();
  }, 1000);

  // The arrival schedule: phase p's k-th arrival is intended at phaseStart + k / rate.
  await new Promise<void>((resolve) => {
    let phaseStart = t0;
    let seq = 0;
    const finishPhase = (now: number) => {
      phaseResult(currentPhase).durationMs = Math.round(
        Math.min(now, phaseStart + (plan.phases[currentPhase]?.durationMs ?? 0)) - phaseStart,
      );
    };
    const pump = () => {
      const now = performance.now();
      for (;;) {
        const p = plan.phases[currentPhase];
        if (!p || stopSignal.aborted || total >= plan.maxRequests) {
          if (p) finishPhase(now);
          resolve();
          return;
        }
        const next = phaseStart + (seq * 1000) / p.rate;
        if (next >= phaseStart + p.durationMs) {
          finishPhase(phaseStart + p.durationMs);
          phaseStart += p.durationMs;
          currentPhase++;
          seq = 0;
          continue;
        }
        if (next > now) {
          setTimeout(pump, Math.min(5, next - now));
          return;
        }
        dispatch(currentPhase, seq, next);
        seq++;
      }
    };
    pump();
  });

  // Wait for what is still outstanding, bounded: each attempt times out, retries are capped (a
  // Retry-After is at most a minute here), the queue for connections drains at their pace.
  const perAttempt = plan.timeoutMs + Math.max(plan.retry.maxDelayMs, 60_000);
  const deadline =
    plan.retry.untilMs !== undefined
      ? t0 + plan.retry.untilMs + plan.timeoutMs * 2 + 1000
      : performance.now() + perAttempt * (plan.retry.max + 1) + 1000;
  while (outstanding > 0 && performance.now() < deadline) await sleep(10);
  clearInterval(tickTimer);
  loopDelay.disable();
  if (outstanding > 0) {
    phaseResult(Math.min(currentPhase, phases.length - 1)).abandoned += outstanding;
  }
  pool.close();
  if (attemptsFile && clockOffsetMs !== undefined)
    writeFileSync(
      `${attemptsFile}.${plan.generator}.json`,
      JSON.stringify({
        clockOffsetMs,
        fields: ['due', 'ready', 'conn', 'sent', 'received', 'answered', 'status', 'attempt'],
        attempts: attemptTraces,
      }),
    );
  for (const [i, h] of phaseHist.entries()) phaseResult(i).histogram = hdr.encodeIntoCompressedBase64(h);
  for (const [i, byClass] of answerHists.entries())
    for (const [cls, h] of byClass) phaseResult(i).answers[cls] = hdr.encodeIntoCompressedBase64(h);
  return {
    generator: plan.generator,
    startedAtMs,
    endedAtMs: Date.now(),
    phases,
    acceptedKeys: acceptedKeys.values(),
    statusCounts,
    latencyByStatus: Object.fromEntries(
      [...statusHist.entries()].map(([k, h]) => [k, hdr.encodeIntoCompressedBase64(h)]),
    ),
    attemptCounts,
    distinctKeys: keysSeen.size,
    acceptedBySecond,
    finalAnswersBySecond,
    answered2xxBySecond,
    errorSamples,
  };
}

// Entry point when forked by generators.ts.
if (process.send && process.argv.includes('--surge-loadgen')) {
  const stop = new AbortController();
  const send = (m: ChildMessage) => process.send?.(m);
  process.on('message', (m: ParentMessage) => {
    if (m.type === 'stop') stop.abort();
    else if (m.type === 'start') {
      runGenerator(m.plan, send, stop.signal).then(
        (result) => send({ type: 'done', result }),
        (e: unknown) => send({ type: 'error', message: (e as Error).message }),
      );
    }
  });
  process.on('disconnect', () => stop.abort());
}
