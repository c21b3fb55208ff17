// An opt-in record of when ingest's event loop ran late and what the process did meanwhile
// (SURGE_INGEST_TIMELINE_FILE): each stall over STALL_MS with its wall-clock start, each garbage
// collection with its kind and duration, and every SAMPLE_MS the process's CPU, event-loop
// utilisation, heap and the requests it read. A histogram of the loop delay (the door's signal,
// the metrics) says how late the loop runs; this says when, so a stall can be put beside a GC, a
// benchmark's burst or another process's CPU. Each request read is traced too: its loop turn (from
// the turn's first request to the setImmediate after its I/O), when its answer was handed to the
// kernel, and — from a load generator's `x-bench-sent` header — when it was sent, all on the host's
// monotonic clock, so bench/decompose.ts can say where each answer waited. Written as one JSON file
// when ingest stops.
import { writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { constants, type PerformanceEntry, PerformanceObserver, performance } from 'node:perf_hooks';
import { getHeapSpaceStatistics } from 'node:v8';

/** How often the stall probe runs (ms): a stall is a probe this much later than it was due. */
const PROBE_MS = 5;
/** Stalls shorter than this (ms) are not recorded. */
const STALL_MS = 10;
/** The period of the CPU, utilisation and heap samples (ms). */
const SAMPLE_MS = 100;
/** Most requests traced one by one (about 80 bytes each, kept until ingest stops). */
const MAX_TRACES = 500_000;

const GC_KINDS: Record<number, string> = {
  [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
  [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major',
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
  [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb',
};

/** The loop ran `lateMs` later than due; `atMs` (epoch ms) is when it last ran before. */
export interface Stall {
  atMs: number;
  lateMs: number;
  /** Requests read while the loop was away (all of them in the turn that ended the stall). */
  requests: number;
}

export interface GcPause {
  atMs: number;
  durationMs: number;
  kind: string;
}

export interface Sample {
  /** Epoch ms at the end of the sample. */
  atMs: number;
  /** CPU time of the whole process over the sample (ms, user + system, every thread). */
  cpuMs: number;
  /** Event-loop utilisation over the sample, 0–1. */
  elu: number;
  heapUsedMiB: number;
  /** V8's young generation as sized now (MiB): it grows under allocation up to its limit. */
  youngMiB: number;
  rssMiB: number;
  requests: number;
}

/**
 * One request as the loop saw it, on the host's monotonic clock (ms, shared by every process on the
 * machine): when its client sent it (the load generator's `x-bench-sent` header; -1 without one),
 * when ingest read it, in which turn, and when its answer was handed to the kernel, with the status.
 */
export type RequestTrace = [sentMs: number, readMs: number, turn: number, doneMs: number, status: number];

/** One turn of the loop that read requests: from its first request to the setImmediate after its I/O. */
export type TurnTrace = [startMs: number, endMs: number, requests: number];

export interface TimelineRecord {
  pid: number;
  /** The monotonic clock minus performance.now() (ms): gcs[].atMs - timeOrigin + this is on the traces' clock. */
  monoOffsetMs: number;
  timeOriginMs: number;
  requestTraces: RequestTrace[];
  turns: TurnTrace[];
  execArgv: string[];
  stalls: Stall[];
  gcs: GcPause[];
  samples: Sample[];
}

const round = (n: number, digits = 1) => Math.round(n * 10 ** digits) / 10 ** digits;

export class LoopTimeline {
  private readonly stalls: Stall[] = [];
  private readonly gcs: GcPause[] = [];
  private readonly samples: Sample[] = [];
  private probe: NodeJS.Timeout | undefined;
  private sampler: NodeJS.Timeout | undefined;
  private observer: PerformanceObserver | undefined;
  private requestsSinceProbe = 0;
  private requestsSinceSample = 0;
  private cpu = process.cpuUsage();
  private elu = performance.eventLoopUtilization();

  private readonly monoOffsetMs = Number(process.hrtime.bigint()) / 1e6 - performance.now();
  private readonly traces: RequestTrace[] = [];
  private readonly turns: TurnTrace[] = [];
  private turn: TurnTrace | undefined;
  private readonly turnEnded = (): void => {
    if (this.turn) this.turn[1] = performance.now() + this.monoOffsetMs;
    this.turn = undefined;
  };

  /**
   * Counts one request read (the stall that ends with it, and the sample, show how many); with
   * the request and its response, also traces it (sent, read, turn, answered, status).
   */
  readonly request = (req?: IncomingMessage, res?: ServerResponse): void => {
    this.requestsSinceProbe++;
    this.requestsSinceSample++;
    // Every traced request is in a turn it opened or joined: the cap bounds both.
    if (!req || !res || this.traces.length >= MAX_TRACES) return;
    const now = performance.now() + this.monoOffsetMs;
    if (!this.turn) {
      this.turn = [now, 0, 0];
      this.turns.push(this.turn);
      setImmediate(this.turnEnded);
    }
    this.turn[2]++;
    const header = req.headers['x-bench-sent'];
    const sent = typeof header === 'string' ? Number(header) : -1;
    const trace: RequestTrace = [sent, now, this.turns.length - 1, 0, 0];
    this.traces.push(trace);
    res.once('finish', () => {
      trace[3] = performance.now() + this.monoOffsetMs;
      trace[4] = res.statusCode;
    });
  };

  start(): void {
    if (this.probe) return;
    const origin = performance.timeOrigin;
    let last = performance.now();
    this.probe = setInterval(() => {
      const now = performance.now();
      const late = now - last - PROBE_MS;
      if (late > STALL_MS)
        this.stalls.push({ atMs: Math.round(origin + last), lateMs: round(late), requests: this.requestsSinceProbe });
      this.requestsSinceProbe = 0;
      last = now;
    }, PROBE_MS);
    this.probe.unref();
    this.observer = new PerformanceObserver((list) => {
      for (const e of list.getEntries() as Array<PerformanceEntry & { detail?: { kind?: number } }>) {
        const kind = e.detail?.kind ?? -1;
        this.gcs.push({
          atMs: Math.round(origin + e.startTime),
          durationMs: round(e.duration, 2),
          kind: GC_KINDS[kind] ?? String(kind),
        });
      }
    });
    this.observer.observe({ entryTypes: ['gc'] });
    this.cpu = process.cpuUsage();
    this.elu = performance.eventLoopUtilization();
    this.sampler = setInterval(this.sample, SAMPLE_MS);
    this.sampler.unref();
  }

  private readonly sample = (): void => {
    const c = process.cpuUsage(this.cpu);
    this.cpu = process.cpuUsage();
    const e = performance.eventLoopUtilization(this.elu);
    this.elu = performance.eventLoopUtilization();
    const mem = process.memoryUsage();
    const young = getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')?.space_size ?? 0;
    this.samples.push({
      atMs: Date.now(),
      cpuMs: round((c.user + c.system) / 1000),
      elu: round(e.utilization, 3),
      heapUsedMiB: round(mem.heapUsed / 1048576),
      youngMiB: round(young / 1048576),
      rssMiB: round(mem.rss / 1048576),
      requests: this.requestsSinceSample,
    });
    this.requestsSinceSample = 0;
  };

  /** What was recorded so far. */
  record(): TimelineRecord {
    return {
      pid: process.pid,
      monoOffsetMs: this.monoOffsetMs,
      timeOriginMs: performance.timeOrigin,
      requestTraces: this.traces,
      turns: this.turns,
      execArgv: process.execArgv,
      stalls: [...this.stalls],
      gcs: [...this.gcs],
      samples: [...this.samples],
    };
  }

  /** Stops recording, with a last sample; what was recorded stays readable. */
  stop(): void {
    if (!this.probe) return;
    this.sample();
    clearInterval(this.probe);
    if (this.sampler) clearInterval(this.sampler);
    this.observer?.disconnect();
    this.probe = undefined;
    this.sampler = undefined;
    this.observer = undefined;
  }

  /** Writes what was recorded to `file` as JSON. */
  write(file: string): void {
    writeFileSync(file, JSON.stringify(this.record()));
  }
}
