// Memory of `surge maintenance` per job run: the service runs in this process at a short tick, so
// days of production ticks pass in minutes, and every `--sample-runs` runs the heap is measured
// after a forced full GC (what is still reachable, not garbage waiting for the next major GC),
// with RSS, external and array buffers beside it. A leak shows as heap growth per 1,000 runs
// that does not fall after the warm-up; `--snapshot-dir` also writes a heap snapshot at the end
// of the warm-up and at the end, and prints what grew between them by constructor.
//
//   npm run build && node dist/bench/maintenance-memory.js --runs 20000 --snapshot-dir /tmp/mm
//
// Needs the machine's Redis and PostgreSQL; uses its own database and key prefix, removed at the end.
import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { setFlagsFromString, writeHeapSnapshot } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Redis } from 'ioredis';
import { ensureGroups } from '../common/streams.js';
import { startMaintenance } from '../maintenance/service.js';
import { createTestEnv } from '../devkit/scratch.js';
import { waitFor } from '../devkit/wait.js';
import { checkScriptArgs, numberOption } from './commands.js';

checkScriptArgs('maintenance-memory');
const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '20000' },
    'warmup-runs': { type: 'string', default: '2000' },
    'sample-runs': { type: 'string', default: '1000' },
    'interval-ms': { type: 'string', default: '100' },
    shards: { type: 'string', default: '4' },
    'snapshot-dir': { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});

const USAGE = `node dist/bench/maintenance-memory.js [options]
  --runs <n>             job runs in all (default 20000)
  --warmup-runs <n>      runs before the baseline sample (default 2000)
  --sample-runs <n>      runs between samples (default 1000)
  --interval-ms <n>      tick of all four jobs: SURGE_MAINTENANCE_INTERVAL_MS and
                         SURGE_RETENTION_INTERVAL_MS (default 100, the least either accepts)
  --shards <n>           SURGE_SHARDS (default 4)
  --snapshot-dir <dir>   write heap snapshots there at the baseline and at the end, and print
                         the growth between them by constructor`;

const num = (name: 'runs' | 'warmup-runs' | 'sample-runs' | 'interval-ms' | 'shards', min: number) =>
  numberOption(values, name, min, USAGE, true);

interface Sample {
  runs: number;
  seconds: number;
  heapUsed: number;
  heapTotal: number;
  rss: number;
  external: number;
  arrayBuffers: number;
}

interface Group {
  count: number;
  bytes: number;
}

/** A heap snapshot's nodes summed by (type, constructor or name); strings and numbers as one group each. */
function snapshotGroups(file: string): Map<string, Group> {
  const s = JSON.parse(readFileSync(file, 'utf8')) as {
    snapshot: { meta: { node_fields: string[]; node_types: [string[]] } };
    nodes: number[];
    strings: string[];
  };
  const fields = s.snapshot.meta.node_fields;
  const [iType, iName, iSize] = ['type', 'name', 'self_size'].map((f) => fields.indexOf(f)) as [number, number, number];
  const types = s.snapshot.meta.node_types[0];
  const groups = new Map<string, Group>();
  for (let i = 0; i < s.nodes.length; i += fields.length) {
    const type = types[s.nodes[i + iType] ?? 0] ?? '?';
    const name = /string|number/.test(type) ? `(${type})` : (s.strings[s.nodes[i + iName] ?? 0] ?? '').slice(0, 60);
    const key = `${type} ${name}`;
    const g = groups.get(key) ?? { count: 0, bytes: 0 };
    g.count++;
    g.bytes += s.nodes[i + iSize] ?? 0;
    groups.set(key, g);
  }
  return groups;
}

function snapshotDiff(before: string, after: string, top: number): string[] {
  const a = snapshotGroups(before);
  const b = snapshotGroups(after);
  const rows: Array<[string, number, number]> = [];
  for (const key of new Set([...a.keys(), ...b.keys()])) {
    const x = a.get(key) ?? { count: 0, bytes: 0 };
    const y = b.get(key) ?? { count: 0, bytes: 0 };
    if (x.count !== y.count || x.bytes !== y.bytes) rows.push([key, y.count - x.count, y.bytes - x.bytes]);
  }
  const sum = (k: 1 | 2, code: boolean) =>
    rows.filter((r) => r[0].startsWith('code ') === code).reduce((n, r) => n + r[k], 0);
  rows.sort((x, y) => Math.abs(y[2]) - Math.abs(x[2]));
  return [
    `Heap snapshot diff: ${sum(2, true) + sum(2, false)} bytes, of which compiled code and its ` +
      `metadata (type "code") ${sum(2, true)} bytes; everything else ${sum(2, false)} bytes ` +
      `in ${sum(1, false)} objects.`,
    '',
    '| Δ objects | Δ bytes | type and constructor |',
    '| ---: | ---: | --- |',
    ...rows.slice(0, top).map(([key, count, bytes]) => `| ${count} | ${bytes} | ${key.replaceAll('|', '\\|')} |`),
  ];
}

const mib = (n: number) => (n / 1048576).toFixed(2);

/** Least-squares slope of y over x. */
function slope(points: Array<[number, number]>): number {
  const n = points.length;
  const mx = points.reduce((s, p) => s + p[0], 0) / n;
  const my = points.reduce((s, p) => s + p[1], 0) / n;
  const num = points.reduce((s, p) => s + (p[0] - mx) * (p[1] - my), 0);
  const den = points.reduce((s, p) => s + (p[0] - mx) ** 2, 0);
  return den === 0 ? 0 : num / den;
}

async function main(): Promise<void> {
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const total = num('runs', 1);
  const warmup = num('warmup-runs', 0);
  const every = num('sample-runs', 1);
  const interval = num('interval-ms', 100);
  const shards = num('shards', 1);
  const dir = values['snapshot-dir'];
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;

  const env = await createTestEnv({
    SURGE_SHARDS: String(shards),
    SURGE_MAINTENANCE_INTERVAL_MS: String(interval),
    SURGE_RETENTION_INTERVAL_MS: String(interval),
    // Retention on, so `expire-orders` queries PostgreSQL on every run (0 would skip it).
    SURGE_ORDER_RETENTION_DAYS: '1',
    SURGE_LOG_LEVEL: 'warn',
  });
  const redis = new Redis(env.redisUrl);
  const loadStart = loadavg()[0] ?? 0;
  const samples: Sample[] = [];
  const snapshots: string[] = [];
  let runs = 0;
  const started = Date.now();
  const sample = (): Sample => {
    gc();
    const m = process.memoryUsage();
    const s: Sample = {
      runs,
      seconds: (Date.now() - started) / 1000,
      heapUsed: m.heapUsed,
      heapTotal: m.heapTotal,
      rss: m.rss,
      external: m.external,
      arrayBuffers: m.arrayBuffers,
    };
    samples.push(s);
    console.error(`runs ${s.runs}: heap used ${mib(s.heapUsed)} MiB after GC, RSS ${mib(s.rss)} MiB`);
    return s;
  };
  try {
    await ensureGroups(redis, env.prefix, shards);
    const m = await startMaintenance(env.config, {
      metricsPort: 0,
      onRun: () => {
        runs++;
      },
    });
    try {
      // Samples are taken between runs' callbacks, on the runs count the callbacks reached.
      for (let next = warmup; next <= total; next += every) {
        await waitFor(`${next} maintenance runs`, () => runs >= next, {
          timeoutMs: Math.max(120_000, 20 * every * interval),
          intervalMs: 50,
        });
        sample();
        if (dir && snapshots.length === 0)
          snapshots.push(writeHeapSnapshot(join(dir, 'maintenance-baseline.heapsnapshot')));
      }
      if (dir) {
        gc();
        snapshots.push(writeHeapSnapshot(join(dir, 'maintenance-end.heapsnapshot')));
      }
    } finally {
      await m.stop();
    }
  } finally {
    redis.disconnect();
    await env.cleanup();
  }

  const first = samples[0];
  const last = samples.at(-1);
  if (!first || !last) throw new Error('no sample taken');
  const perK = (pick: (s: Sample) => number, from: Sample[]) =>
    from.length < 2 ? 0 : slope(from.map((s) => [s.runs, pick(s)])) * 1000;
  const half = samples.slice(Math.floor(samples.length / 2));
  const kib = (bytes: number) => `${(bytes / 1024).toFixed(1)} KiB`;
  // Writing a heap snapshot raises RSS for good, so with snapshots RSS tells nothing here.
  const rss = (from: Sample[]) => (dir ? 'not compared (snapshots written)' : kib(perK((s) => s.rss, from)));
  const lines = [
    '# `surge maintenance`: memory per job run',
    '',
    `Command: \`node dist/bench/maintenance-memory.js --runs ${total} --warmup-runs ${warmup} ` +
      `--sample-runs ${every} --interval-ms ${interval} --shards ${shards}${dir ? ` --snapshot-dir ${dir}` : ''}\``,
    '',
    `Machine: ${cpus().length}× ${cpus()[0]?.model ?? '?'}, node ${process.version}; 1-minute load average ` +
      `${loadStart.toFixed(2)} at the start, ${(loadavg()[0] ?? 0).toFixed(2)} at the end.`,
    '',
    `The service in this process, ${shards} shards, all four jobs every ${interval} ms (order retention on, ` +
      'empty streams and tables); every sample after a forced full GC.',
    '',
    '| runs | s | heap used (MiB) | heap total (MiB) | RSS (MiB) | external (MiB) | array buffers (MiB) |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...samples.map(
      (s) =>
        `| ${s.runs} | ${s.seconds.toFixed(0)} | ${mib(s.heapUsed)} | ${mib(s.heapTotal)} | ${mib(s.rss)} | ` +
        `${mib(s.external)} | ${mib(s.arrayBuffers)} |`,
    ),
    '',
    `Growth per 1,000 runs from the baseline (run ${first.runs}) to the end (run ${last.runs}), least squares: ` +
      `heap used ${kib(perK((s) => s.heapUsed, samples))}, RSS ${rss(samples)}; ` +
      `over the second half of the samples (from run ${half[0]?.runs}): ` +
      `heap used ${kib(perK((s) => s.heapUsed, half))}, RSS ${rss(half)}.`,
  ];
  if (snapshots.length === 2 && snapshots[0] && snapshots[1]) {
    lines.push('', ...snapshotDiff(snapshots[0], snapshots[1], 25));
    lines.push('', `Snapshots: ${snapshots.join(', ')}.`);
  }
  console.log(lines.join('\n'));
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
