// The benchmarks that are scripts of their own (bench:ingest, bench:apply, …) as `surge bench
// <name>` subcommands: their options declared once here, for `--help` on each and for checking
// a direct `node dist/bench/<script>.js` run. The CLI runs the script in a child process (its
// dev dependencies load there, never in the CLI) with the options the user gave.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { PACKAGE_ROOT } from '../common/paths.js';

interface ScriptOption {
  flags: string;
  description: string;
  /** Shown in --help; the script applies its own default. */
  default?: string;
  repeatable?: boolean;
  hidden?: boolean;
}

interface ScriptBench {
  name: string;
  /** dist/bench/<script>.js, with these arguments first. */
  script: string;
  leading?: string[];
  description: string;
  argument?: { name: string; description: string };
  options: ScriptOption[];
}

const o = (flags: string, description: string, def?: string): ScriptOption => ({ flags, description, default: def });

export const SCRIPT_BENCHES: readonly ScriptBench[] = [
  {
    name: 'ingest',
    script: 'ingest',
    description:
      'ingest throughput: interleaved autocannon rounds against a bare XADD server (a), Surge (b), ' +
      'Surge :batch (c), fastify (f); ratios b/a, c/b and CPU per order',
    options: [
      o('--rounds <n>', 'interleaved rounds', '5'),
      o('--duration <s>', 'seconds per scenario and round', '5'),
      o('--warmup <s>', 'warm-up seconds per server, once', '3'),
      o('--connections <n>', 'connections for a, a0, f, b', '100'),
      o('--batch-connections <n>', 'connections for c', '10'),
      o('--scenarios <list>', 'comma-separated, from a,b,c,f,a0', 'a,b,c'),
      o('--requests <mode>', 'template | setup-request: how autocannon builds each request', 'template'),
      o('--no-write', 'print only, write no result files'),
      { flags: '--serve <kind>', description: 'run one server (internal)', hidden: true },
    ],
  },
  {
    name: 'ingest-ab',
    script: 'ingest-ab',
    description: 'paired A/B of two ingest builds at one fixed rate: CPU per request of each, ratio B/A',
    options: [
      o('--a <dir>', "build A's dist directory", "this package's dist"),
      o('--b <dir>', "build B's dist directory (required)"),
      o('--rate <n>', 'requests per second to each server', '3000'),
      o('--rounds <n>', 'measured rounds', '6'),
      o('--duration <s>', 'seconds per round', '8'),
      o('--warmup <s>', 'warm-up seconds, once', '3'),
      o('--connections <n>', 'connections per server', '50'),
      {
        ...o('--b-env <NAME=VALUE>', "an environment variable for B's server only, e.g. OTEL_SDK_DISABLED=true"),
        repeatable: true,
      },
      o('--allow-503', "count 503s as answered; with B shedding (--b-env), the CPU of one of B's 503s"),
    ],
  },
  {
    name: 'apply',
    script: 'apply',
    description:
      'backlog apply speed: N queued orders to PostgreSQL by a worker, against a raw COPY of the ' +
      'same rows and a BullMQ job per order, in interleaved rounds',
    options: [
      o('--orders <n>', 'orders in the backlog', '100000'),
      o('--bull-orders <n>', 'orders for the BullMQ side', '10000'),
      o('--rounds <n>', 'interleaved rounds', '3'),
      o('--placement <where>', 'threads | main: where the worker applies'),
      o('--batch-size <n>', 'SURGE_BATCH_SIZE'),
      o('--linger <ms>', 'SURGE_BATCH_LINGER_MS'),
      o('--threads <n>', 'SURGE_WORKER_THREADS'),
      o('--pool <n>', 'SURGE_PG_POOL_SIZE'),
      o('--shards <n>', 'SURGE_SHARDS', '4'),
      o('--bull-concurrency <n>', 'BullMQ job concurrency', '8'),
      o('--only <sides>', 'comma-separated, from surge,raw,bull: only those sides'),
      o('--no-save', 'print only, write no result files'),
      o('--label <text>', 'a label for the result'),
      o('--b <dir>', "another build's dist directory: its worker runs alongside in every round (A/B)"),
      o('--trickle <rate>', 'latency at a steady arrival rate instead of a backlog'),
      o('--seconds <s>', 'with --trickle: seconds of arrivals', '10'),
    ],
  },
  {
    name: 'wait',
    script: 'wait',
    description:
      'long polls of GET /v1/orders/:key?wait=: ingest RSS while N requests wait on queued orders, ' +
      'then the delay from each order COMMIT to its answer, draining and at a steady rate',
    options: [
      o('--waiters <n>', 'concurrent long polls held on queued orders', '10000'),
      o('--rate <n>', 'orders per second of the steady step', '1500'),
      o('--seconds <s>', 'seconds of the steady step', '10'),
      o('--wait-every <k>', 'steady step: one order in k followed by a long poll', '10'),
      o('--batch <n>', 'steady step: orders per :batch request (1: one POST per order)', '10'),
      o('--floor', "instead: a bare node:http server's RSS growth while it holds as many requests"),
      o('--hold-only', "only the hold's memory: no worker, no delays, no steady step"),
      o(
        '--ingest-node-flags <flags>',
        'node flags of the ingest process, space-separated (write --ingest-node-flags=--x)',
      ),
    ],
  },
  {
    name: 'e2e',
    script: 'e2e',
    description:
      'whole system: ingest alone against ingest + worker in interleaved rounds, CPU per order of ' +
      'every process, then a fixed-rate phase against backlog drains of the same orders in the same run',
    options: [
      o('--rounds <n>', 'interleaved saturated rounds', '3'),
      o('--duration <s>', 'seconds per round', '10'),
      o('--warmup <s>', 'warm-up seconds per setup, once', '5'),
      o('--connections <n>', 'autocannon connections', '64'),
      { ...o('--env <KEY=VALUE>', 'a Surge setting for every process of both setups'), repeatable: true },
      o('--rate-fraction <f>', 'fixed-rate phase at F × the median whole orders/s', '0.5'),
      o('--fixed-rate <n>', 'fixed-rate phase at N orders/s instead'),
      o('--fixed-rounds <n>', 'rounds of the fixed-rate phase', '--rounds'),
      o('--no-fixed-rate', 'skip the fixed-rate phase'),
      o('--drain-orders <n>', 'orders measured per backlog drain round', '100000'),
      o('--drain-timeout <s>', "wait for the backlog to drain after a round, or for a drain round's orders", '120'),
      o('--out <dir>', 'where to write the results', 'bench/results'),
      o('--no-write', 'print only, write no result files'),
    ],
  },
  {
    name: 'soak-maintenance',
    script: 'soak-maintenance',
    description: 'a long open-model load with `surge maintenance` running: Redis memory, RSS and trims over time',
    options: [
      o('--minutes <n>', 'length of the load', '30'),
      o('--rate <n>', 'orders per second, open model', '300'),
      o('--sample-seconds <n>', 'sampling interval', '10'),
      o('--maintenance-interval-ms <n>', 'SURGE_MAINTENANCE_INTERVAL_MS of the run', '5000'),
      o(
        '--record-ttl-seconds <n>',
        'SURGE_IDEMPOTENCY_TTL_SECONDS and SURGE_OUTCOME_RETENTION_SECONDS of the run',
        '300',
      ),
      o('--shards <n>', 'SURGE_SHARDS', '4'),
      o('--connections <n>', 'HTTP connections of the load generator', '16'),
      o('--out <file.md>', 'also write the report there'),
    ],
  },
  {
    name: 'maintenance-memory',
    script: 'maintenance-memory',
    description:
      '`surge maintenance` in-process at a short tick: heap after a forced GC and RSS per 1,000 job runs, ' +
      'optionally a heap snapshot diff by constructor',
    options: [
      o('--runs <n>', 'job runs in all', '20000'),
      o('--warmup-runs <n>', 'runs before the baseline sample', '2000'),
      o('--sample-runs <n>', 'runs between samples', '1000'),
      o('--interval-ms <n>', 'tick of all four jobs (maintenance and retention intervals)', '100'),
      o('--shards <n>', 'SURGE_SHARDS', '4'),
      o('--snapshot-dir <dir>', 'write heap snapshots there (baseline, end) and print their diff'),
    ],
  },
  {
    name: 'record-memory',
    script: 'record-memory',
    description: 'Redis memory per idempotency record, on a private redis-server',
    argument: { name: '[orders]', description: 'orders to write (default 100000)' },
    options: [],
  },
  ...(['ingest', 'workers'] as const).map(
    (role): ScriptBench => ({
      name: `profile-${role}`,
      script: 'profile',
      leading: [role],
      description: `profile ${role} under load with clinic (doctor, flame)`,
      options: [
        o('--rate <n>', 'orders per second', '300'),
        o('--seconds <s>', 'seconds of load', '20'),
        o('--tools <list>', 'clinic tools, comma-separated', 'doctor,flame'),
        o('--out <dir>', 'where to write the profiles', 'bench/results/<date>-profile-<role>'),
      ],
    }),
  ),
];

function declare(b: ScriptBench, cmd: Command): Command {
  cmd.description(b.description);
  if (b.argument) cmd.argument(b.argument.name, b.argument.description);
  for (const x of b.options) {
    const opt = new Option(x.flags, x.description);
    if (x.default !== undefined) opt.default(undefined, x.default);
    if (x.repeatable) opt.argParser((v: string, prev: string[] | undefined) => [...(prev ?? []), v]);
    if (x.hidden) opt.hideHelp();
    cmd.addOption(opt);
  }
  return cmd;
}

/** The script's arguments for what the user gave on the command line (the script's defaults apply to the rest). */
function scriptArgs(b: ScriptBench, cmd: Command): string[] {
  const args = [...(b.leading ?? []), ...cmd.args];
  for (const opt of cmd.options) {
    const key = opt.attributeName();
    if (cmd.getOptionValueSource(key) !== 'cli') continue;
    const v: unknown = cmd.getOptionValue(key);
    if (opt.negate) {
      if (v === false) args.push(opt.long as string);
    } else if (Array.isArray(v)) for (const x of v) args.push(opt.long as string, String(x));
    else if (v === true) args.push(opt.long as string);
    // One argument, so a value that starts with a dash is not read as an option.
    else if (typeof v === 'string') args.push(`${opt.long as string}=${v}`);
  }
  return args;
}

/** Adds each script benchmark to `surge bench`. */
export function addScriptBenches(bench: Command): void {
  for (const b of SCRIPT_BENCHES) {
    const cmd = declare(b, bench.command(b.name));
    cmd.action(async () => {
      const child = spawn(
        process.execPath,
        [join(PACKAGE_ROOT, 'dist', 'bench', `${b.script}.js`), ...scriptArgs(b, cmd)],
        {
          stdio: 'inherit',
          env: { ...process.env, SURGE_BENCH_VIA_CLI: '1' },
        },
      );
      const forward = (sig: NodeJS.Signals) => child.kill(sig);
      process.on('SIGINT', forward);
      process.on('SIGTERM', forward);
      const code = await new Promise<number>((resolve) => child.once('exit', (c, s) => resolve(c ?? (s ? 1 : 0))));
      process.off('SIGINT', forward);
      process.off('SIGTERM', forward);
      process.exitCode = code;
    });
  }
}

/**
 * For a script run directly (`node dist/bench/apply.js …`): `--help` prints the same help as
 * `surge bench apply --help` and exits 0; an unknown option or a missing value prints one line
 * and exits 2 — never a stack trace. A run started by `surge bench` was checked already.
 */
export function checkScriptArgs(name: string, argv: readonly string[] = process.argv.slice(2)): void {
  if (process.env.SURGE_BENCH_VIA_CLI === '1') return;
  const b = SCRIPT_BENCHES.find((x) => x.name === name);
  if (b === undefined) throw new Error(`no script benchmark named ${name}`);
  const cmd = declare(b, new Command(`surge bench ${name}`))
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(`bench:${name}: ${s}`) })
    .action(() => {});
  try {
    cmd.parse([...argv].slice(b.leading?.length ?? 0), { from: 'user' });
  } catch (e) {
    if (!(e instanceof CommanderError)) throw e;
    process.exit(e.code === 'commander.helpDisplayed' || e.code === 'commander.help' ? 0 : 2);
  }
}

/**
 * A numeric option of a script run directly, from its parseArgs values: at least `min` (an integer
 * when `integer`), or a usage error that names the option and exits 2.
 */
export function numberOption(
  values: Readonly<Record<string, unknown>>,
  name: string,
  min: number,
  usage: string,
  integer = false,
): number {
  const n = Number(values[name]);
  if (!(integer ? Number.isInteger(n) : Number.isFinite(n)) || n < min) {
    console.error(`--${name} must be ${integer ? 'an integer' : 'a number'} ≥ ${min}\n\n${usage}`);
    process.exit(2);
  }
  return n;
}
