// Scenario names, options and their defaults: kept apart from the scenarios themselves so the
// CLI can describe `surge bench` without loading the benchmark's dev-only dependencies (vega,
// hdr-histogram-js…) — a production install has none of them (test/deploy-image.test.ts).
import { availableParallelism } from 'node:os';
import type { RunningOptions } from './target.js';

export const SCENARIOS = ['steady', 'ramp', 'flash-sale', 'soak', 'compare', 'sweep'] as const;
export type Scenario = (typeof SCENARIOS)[number];

export interface BenchOptions {
  /** Seconds-long, small-number version (the test suite runs every scenario this way). */
  quick: boolean;
  /**
   * flash-sale, steady: trace every attempt through the generator and ingest's timeline (a started stack
   * only) and split the 202s' and 503s' latency into where it went (bench/decompose.ts).
   */
  trace?: boolean;
  /** Against a running stack (all four given) or, when undefined, a stack the benchmark starts. */
  running?: RunningOptions;
  /** Environment overrides for stacks the benchmark starts (DATABASE_URL, SURGE_SHARDS, …). */
  env: Record<string, string>;
  /** Worker processes for a started Surge stack. Default 1. */
  workers: number;
  /** Offered rate for steady/soak (orders/s). */
  rate: number;
  /** Seconds of load for steady/soak. */
  durationS: number;
  ramp: RampOptions;
  flash: FlashOptions;
  sweep: SweepOptions;
  /** Keep-alive connections of the load generator and the most outstanding submissions. */
  connections: number;
  maxInFlight: number;
  generators: number;
  /** Generator processes a run may grow to when the generator was saturated. */
  maxGenerators: number;
  timeoutMs: number;
  drainTimeoutS: number;
  /** Job concurrency / pg connections of the comparison baselines. */
  baselineConcurrency: number;
  seed: number;
  /** Root of results (a dated folder is made in it) — or exactly `outDir` when given. */
  resultsRoot: string;
  outDir?: string;
  command: string;
  notes: string[];
  progress: (line: string, final: boolean) => void;
  log: (line: string) => void;
}

export interface RampOptions {
  /** Seconds at a low rate first (connections, JIT, caches), excluded from the knee. 0 = none. */
  warmupS: number;
  startRate: number;
  stepRate: number;
  maxRate: number;
  stepS: number;
  /** The knee: client accept p99 above this … */
  acceptP99Ms: number;
  /** … or accept-to-commit p99 above this … */
  commitP99Ms: number;
  /** … or the oldest backlog entry older than this. */
  maxBacklogAgeS: number;
}

export interface FlashOptions {
  /** Seconds of ordinary orders at a low rate before the burst, left out of its figures. 0 = none. */
  warmupS: number;
  orders: number;
  burstS: number;
  hotSkus: number;
  stockPerSku: number;
  duplicateFraction: number;
  retries: number;
}

export interface SweepOptions {
  workers: number[];
  batchSizes: number[];
  shards: number[];
  /** Orders/s the recommendation must carry (0: recommend the best per worker). */
  targetRate: number;
  /** Headroom the recommendation keeps above targetRate (1.25 = 25 %). */
  headroom: number;
}

export const DEFAULTS: Omit<BenchOptions, 'command' | 'progress' | 'log' | 'resultsRoot'> = {
  quick: false,
  env: {},
  workers: 1,
  rate: 500,
  durationS: 60,
  ramp: {
    warmupS: 5,
    startRate: 500,
    stepRate: 500,
    maxRate: 20_000,
    stepS: 10,
    acceptP99Ms: 100,
    commitP99Ms: 1000,
    maxBacklogAgeS: 5,
  },
  flash: {
    warmupS: 5,
    orders: 100_000,
    burstS: 10,
    hotSkus: 5,
    stockPerSku: 2000,
    duplicateFraction: 0.2,
    retries: 30,
  },
  sweep: { workers: [1, 2], batchSizes: [100, 500], shards: [4], targetRate: 0, headroom: 1.25 },
  connections: 64,
  maxInFlight: 20_000,
  generators: 1,
  maxGenerators: Math.max(2, availableParallelism()),
  timeoutMs: 10_000,
  drainTimeoutS: 180,
  baselineConcurrency: 16,
  seed: 42,
  notes: [],
};
