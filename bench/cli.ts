// `surge bench <scenario>`: option parsing and the terminal progress line. The work is in
// scenarios.ts.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Command, Option } from 'commander';
import { PACKAGE_ROOT } from '../common/paths.js';
import { addScriptBenches } from './commands.js';
import { type BenchOptions, DEFAULTS, type Scenario, SCENARIOS } from './options.js';
import { resultsIndexMarkdown } from './results-index.js';

const num = (v: string) => {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`"${v}" is not a non-negative number`);
  return n;
};
const list = (v: string) => v.split(',').map((x) => num(x.trim()));
const collect = (v: string, prev: string[] = []) => [...prev, v];

export const RESULTS_ROOT = join(PACKAGE_ROOT, 'bench', 'results');

/** Options commander hands over as BenchOptions has them: one declaration of their types. */
type PassedThrough =
  | 'workers'
  | 'rate'
  | 'connections'
  | 'maxInFlight'
  | 'generators'
  | 'maxGenerators'
  | 'timeoutMs'
  | 'drainTimeoutS'
  | 'baselineConcurrency'
  | 'seed';

interface CliOpts extends Pick<BenchOptions, PassedThrough> {
  quick?: boolean;
  url?: string;
  apiKey?: string;
  databaseUrl?: string;
  lagUrl?: string;
  ingestMetricsUrl?: string;
  env: string[];
  keepData?: boolean;
  trace?: boolean;
  duration: number;
  warmupSeconds: number;
  startRate: number;
  stepRate: number;
  maxRate: number;
  stepSeconds: number;
  acceptP99Ms: number;
  commitP99Ms: number;
  maxBacklogAgeS: number;
  orders: number;
  burstSeconds: number;
  hotSkus: number;
  stock: number;
  duplicates: number;
  retries: number;
  sweepWorkers: number[];
  batchSizes: number[];
  shards: number[];
  targetRate: number;
  headroom: number;
  out?: string;
  results: string;
  note: string[];
}

/** Progress on stderr: one rewritten line on a terminal, a line every 5 s otherwise. */
function progressPrinter(): (line: string, final: boolean) => void {
  const tty = process.stderr.isTTY;
  let last = 0;
  return (line, final) => {
    if (tty) {
      process.stderr.write(`\r\x1b[2K${line}${final ? '\n' : ''}`);
    } else if (final || Date.now() - last >= 5000) {
      last = Date.now();
      process.stderr.write(`${line}\n`);
    }
  };
}

export function toBenchOptions(o: CliOpts, command: string): BenchOptions {
  const given = [o.url, o.apiKey, o.databaseUrl].filter((x) => x !== undefined).length;
  if (given > 0 && given < 3)
    throw new Error('against a running stack give --url, --api-key and --database-url (and --lag-url for backlog)');
  const env: Record<string, string> = {};
  for (const kv of o.env) {
    const i = kv.indexOf('=');
    if (i <= 0) throw new Error(`--env takes KEY=VALUE, got "${kv}"`);
    env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  if (o.keepData) env.SURGE_BENCH_KEEP = '1';
  const progress = progressPrinter();
  return {
    ...DEFAULTS,
    quick: o.quick ?? false,
    trace: o.trace ?? false,
    running:
      given === 3
        ? {
            url: o.url as string,
            apiKey: o.apiKey as string,
            databaseUrl: o.databaseUrl as string,
            lagUrl: o.lagUrl,
            ingestMetricsUrl: o.ingestMetricsUrl,
          }
        : undefined,
    env,
    workers: o.workers,
    rate: o.rate,
    durationS: o.duration,
    ramp: {
      warmupS: o.warmupSeconds,
      startRate: o.startRate,
      stepRate: o.stepRate,
      maxRate: o.maxRate,
      stepS: o.stepSeconds,
      acceptP99Ms: o.acceptP99Ms,
      commitP99Ms: o.commitP99Ms,
      maxBacklogAgeS: o.maxBacklogAgeS,
    },
    flash: {
      warmupS: o.warmupSeconds,
      orders: o.orders,
      burstS: o.burstSeconds,
      hotSkus: o.hotSkus,
      stockPerSku: o.stock,
      duplicateFraction: o.duplicates,
      retries: o.retries,
    },
    sweep: {
      workers: o.sweepWorkers,
      batchSizes: o.batchSizes,
      shards: o.shards,
      targetRate: o.targetRate,
      headroom: o.headroom,
    },
    connections: o.connections,
    maxInFlight: o.maxInFlight,
    generators: o.generators,
    maxGenerators: o.maxGenerators,
    timeoutMs: o.timeoutMs,
    drainTimeoutS: o.drainTimeoutS,
    baselineConcurrency: o.baselineConcurrency,
    seed: o.seed,
    resultsRoot: o.results,
    outDir: o.out,
    command,
    notes: o.note,
    progress,
    log: (line) => {
      if (/"level":(40|50|60)|WARN|ERROR|FATAL|Error/.test(line)) progress(`stack| ${line.slice(0, 300)}`, true);
    },
  };
}

const SCENARIO_DESCRIPTIONS: Record<Scenario, string> = {
  steady: 'a fixed rate for a while: latencies, backlog, drain',
  ramp: 'rising steps until a bound breaks: the maximum sustainable rate',
  'flash-sale': 'a burst on a few hot SKUs with limited stock, duplicates and retries',
  soak: 'steady for long, with memory and latency drift',
  compare: 'the same ramp through sync INSERT, BullMQ and Surge',
  sweep: 'ramp per workers × batch size × shards: the capacity table',
};

/** Adds `surge bench` and its subcommands (one per scenario and per benchmark script) to the CLI. */
export function addBenchCommand(
  program: Command,
  action: <A extends unknown[]>(fn: (...args: A) => Promise<void>) => (...args: A) => Promise<void>,
): void {
  const bench = program
    .command('bench')
    .description('benchmarks for capacity planners (results in bench/results/)')
    .addHelpText('after', `\nScenarios (${SCENARIOS.join(', ')}) share their options; \`surge bench <name> --help\`.`);
  for (const scenario of SCENARIOS) addScenario(bench.command(scenario), scenario, action);
  addScriptBenches(bench);
  bench
    .command('index')
    .description('write bench/results/README.md, the index of the latest results, from the result files')
    .option('--results <dir>', 'the results to index', RESULTS_ROOT)
    .option('--check', 'only compare: exit 1 when README.md differs from what would be written')
    .action(
      action(async (opts: { results: string; check?: boolean }) => {
        const file = join(opts.results, 'README.md');
        const md = resultsIndexMarkdown(opts.results);
        if (opts.check) {
          const same = existsSync(file) && readFileSync(file, 'utf8') === md;
          console.log(same ? `${file} is up to date` : `${file} differs: run \`surge bench index\``);
          if (!same) process.exitCode = 1;
          return;
        }
        writeFileSync(file, md);
        console.log(`wrote ${file}`);
      }),
    );
  bench
    .command('report')
    .description('one capacity report (index.md, index.html, SVG) from the latest result of every benchmark')
    .option('--results <dir>', 'the results to read', RESULTS_ROOT)
    .option('--out <dir>', 'where to write the report (default: <results>/report)')
    .action(
      action(async (opts: { results: string; out?: string }) => {
        // Loaded on use: the charts need dev dependencies a production install lacks.
        const { writeCapacityReport } = await import('./capacity-report.js');
        const r = await writeCapacityReport(opts.results, opts.out ?? join(opts.results, 'report'));
        console.log(`${r.entries.length} benchmarks: ${r.entries.map((e) => e.scenario).join(', ')}`);
        console.log(`report: ${join(r.dir, 'index.html')} (and index.md)`);
      }),
    );
}

function addScenario(
  cmd: Command,
  scenario: Scenario,
  action: <A extends unknown[]>(fn: (...args: A) => Promise<void>) => (...args: A) => Promise<void>,
): void {
  const d = DEFAULTS;
  cmd
    .description(`${SCENARIO_DESCRIPTIONS[scenario]} (results in bench/results/<date>-${scenario}/)`)
    .option('--quick', 'seconds-long version with small numbers (what the tests run)')
    .option(
      '--trace',
      "flash-sale, steady: trace each attempt through the generator and ingest's loop, and report where the 202s' and 503s' time went",
    )
    .option('--url <url>', 'a running ingest (loopback only); with --api-key and --database-url')
    .option('--api-key <key>', 'API key for --url')
    .option('--database-url <url>', "the running stack's PostgreSQL (accept-to-commit latency, the ledger)")
    .option('--lag-url <url>', "the running stack's lag exporter /metrics (backlog)")
    .option('--ingest-metrics-url <url>', "the running stack's ingest /metrics (SURGE_INGEST_METRICS_PORT; memory)")
    .option(
      '--env <KEY=VALUE>',
      'environment for stacks the benchmark starts (repeatable), e.g. SURGE_BATCH_SIZE=200',
      collect,
      [],
    )
    .option('--keep-data', 'keep the database and Redis keys of started stacks')
    .option('--workers <n>', 'worker processes of a started stack', num, d.workers)
    .option('--rate <n>', 'steady/soak: offered orders per second', num, d.rate)
    .option('--duration <s>', 'steady/soak: seconds of load', num, d.durationS)
    .option(
      '--warmup-seconds <s>',
      'ramp, flash-sale: seconds at a low rate first, excluded from the knee and the burst',
      num,
      d.ramp.warmupS,
    )
    .option('--start-rate <n>', 'ramp: first step (orders/s)', num, d.ramp.startRate)
    .option('--step-rate <n>', 'ramp: increase per step', num, d.ramp.stepRate)
    .option('--max-rate <n>', 'ramp: last step', num, d.ramp.maxRate)
    .option('--step-seconds <s>', 'ramp: seconds per step', num, d.ramp.stepS)
    .option('--accept-p99-ms <ms>', 'knee bound: client accept p99', num, d.ramp.acceptP99Ms)
    .option('--commit-p99-ms <ms>', 'knee bound: accept-to-commit p99', num, d.ramp.commitP99Ms)
    .option('--max-backlog-age-s <s>', 'knee bound: age of the oldest backlog entry', num, d.ramp.maxBacklogAgeS)
    .option('--orders <n>', 'flash-sale: orders in the burst', num, d.flash.orders)
    .option('--burst-seconds <s>', 'flash-sale: burst length', num, d.flash.burstS)
    .option('--hot-skus <n>', 'flash-sale: hot SKUs', num, d.flash.hotSkus)
    .option('--stock <n>', 'flash-sale: units in stock per hot SKU', num, d.flash.stockPerSku)
    .option('--duplicates <fraction>', 'flash-sale: share of duplicate submissions', num, d.flash.duplicateFraction)
    .option('--retries <n>', 'flash-sale: client retries on 503/409/network errors', num, d.flash.retries)
    .option('--sweep-workers <list>', 'sweep: worker counts', list, d.sweep.workers)
    .option('--batch-sizes <list>', 'sweep: SURGE_BATCH_SIZE values', list, d.sweep.batchSizes)
    .option('--shards <list>', 'sweep: SURGE_SHARDS values', list, d.sweep.shards)
    .option('--target-rate <n>', 'sweep: the rate the recommendation must carry', num, d.sweep.targetRate)
    .option('--headroom <factor>', 'sweep: headroom over --target-rate', num, d.sweep.headroom)
    .option('--connections <n>', 'HTTP connections of the load generator', num, d.connections)
    .option(
      '--max-in-flight <n>',
      'outstanding submissions before arrivals are dropped (and counted)',
      num,
      d.maxInFlight,
    )
    .option('--generators <n>', 'load generator processes', num, d.generators)
    .option(
      '--max-generators <n>',
      'run again with one more generator process while the generator was saturated, up to this many',
      num,
      d.maxGenerators,
    )
    .option('--timeout-ms <ms>', 'per-request timeout', num, d.timeoutMs)
    .option('--drain-timeout-s <s>', 'longest wait for the backlog to drain after the load', num, d.drainTimeoutS)
    .option(
      '--baseline-concurrency <n>',
      'compare: pg connections (sync) / job concurrency (BullMQ)',
      num,
      d.baselineConcurrency,
    )
    .option('--seed <n>', 'workload seed', num, d.seed)
    .option('--out <dir>', 'write the report exactly here instead of a dated folder')
    .addOption(new Option('--results <dir>', 'root of dated result folders').default(RESULTS_ROOT))
    .option('--note <text>', 'a note for the report (repeatable)', collect, [])
    .action(
      action(async (opts: CliOpts) => {
        const command = `surge bench ${process.argv
          .slice(3)
          .map((a) => (/[\s"'$]/.test(a) ? JSON.stringify(a) : a))
          .join(' ')}`;
        // Loaded on use: the scenarios need dev dependencies a production install lacks.
        const { runScenario } = await import('./scenarios.js');
        const { report, dir } = await runScenario(scenario, toBenchOptions(opts, command));
        for (const f of report.findings) console.log(f);
        const failed = report.checks.filter((c) => !c.ok);
        for (const c of failed) console.log(`FAIL ${c.name}: ${c.detail}`);
        console.log(`report: ${dir}/report.md`);
        // Ledger failures are correctness failures: exit non-zero. (Little's-law misses are warnings.)
        if (failed.some((c) => !c.name.includes("Little's law"))) process.exitCode = 1;
      }),
    );
}
