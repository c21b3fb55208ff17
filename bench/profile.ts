// `npm run profile:ingest` / `npm run profile:workers`: runs clinic doctor and clinic flame on
// one Surge role while the load generator drives a steady rate through the stack, and writes
// clinic's HTML reports under bench/results/<date>-profile-<role>/. The other roles run as
// ordinary processes on the same scratch database and Redis prefix.
//   node dist/bench/profile.js ingest|workers [--rate 300] [--seconds 20] [--tools doctor,flame] [--out DIR]
//   node dist/bench/profile.js load URL API_KEY RATE SECONDS     (clinic's --on-port command)
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join, relative } from 'node:path';
import { parseArgs } from 'node:util';
import { createClient } from '../common/clients.js';
import { createPool } from '../common/db.js';
import { PACKAGE_ROOT } from '../common/paths.js';
import { freePort } from '../common/net.js';
import { startLoad } from './generators.js';
import { resultsDir } from './report.js';
import { checkScriptArgs } from './commands.js';
import { scratch } from './target.js';
import { DEFAULT_WORKLOAD } from './workload.js';

const CLI = join(PACKAGE_ROOT, 'dist', 'cli', 'surge.js');
const CLINIC = join(PACKAGE_ROOT, 'node_modules', '.bin', 'clinic');
const SELF = join(PACKAGE_ROOT, 'dist', 'bench', 'profile.js');

async function load(url: string, apiKey: string, rate: number, seconds: number): Promise<void> {
  const run = startLoad(
    {
      url,
      path: '/v1/orders',
      apiKey,
      runKey: `prof${Date.now().toString(36)}`,
      phases: [{ rate, durationMs: seconds * 1000 }],
      maxRequests: Math.ceil(rate * seconds),
      connections: 32,
      maxInFlight: 10_000,
      timeoutMs: 10_000,
      duplicateFraction: 0,
      retry: { max: 0, baseDelayMs: 1, maxDelayMs: 1 },
      workload: DEFAULT_WORKLOAD,
    },
    {
      generators: 1,
      seed: 1,
      onTick: (t) =>
        process.stderr.write(
          `[profile load ${t.second}s] offered ${t.offered}/s accepted ${t.accepted}/s ` +
            `p99 ${t.p99Ms.toFixed(1)} ms errors ${t.errors}\n`,
        ),
    },
  );
  const r = await run.result;
  process.stderr.write(
    `profile load done: ${r.acceptedKeys.length} accepted, statuses ${JSON.stringify(r.statusCounts)}\n`,
  );
}

async function ready(url: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      if (res.ok) return;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`${url} not ready after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function exited(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) resolve(child.exitCode);
    else child.once('exit', (code) => resolve(code));
  });
}

async function profile(
  role: 'ingest' | 'workers',
  opts: { rate: number; seconds: number; tools: string[]; out: string },
): Promise<void> {
  if (!existsSync(CLINIC)) throw new Error('clinic is not installed (npm install installs it as a devDependency)');
  const s = await scratch(process.env as Record<string, string>, false);
  if (!s.databaseUrl) throw new Error('profiling needs PostgreSQL (set DATABASE_URL)');
  const pool = createPool(s.databaseUrl, { max: 1 });
  const apiKey = (await createClient(pool, `profile-${Date.now().toString(36)}`)).apiKey;
  await pool.end();
  const ports = { ingest: await freePort(), work: await freePort(), lag: await freePort() };
  const env: Record<string, string> = {
    ...(process.env as Record<string, string>),
    DATABASE_URL: s.databaseUrl,
    REDIS_URL: s.redisUrl,
    SURGE_REDIS_PREFIX: s.prefix,
    SURGE_INGEST_PORT: String(ports.ingest),
    SURGE_INGEST_METRICS_PORT: '0',
    SURGE_WORKER_METRICS_PORT: String(ports.work),
    SURGE_LAG_EXPORTER_PORT: String(ports.lag),
    SURGE_LOG_LEVEL: process.env.SURGE_LOG_LEVEL ?? 'warn',
    NO_INSIGHT: '1',
  };
  const profiled = role === 'ingest' ? 'ingest' : 'work';
  const others = (['ingest', 'work', 'lag-exporter'] as const).filter((r) => r !== profiled);
  const children = others.map((r) =>
    spawn(process.execPath, [CLI, r], { env, stdio: ['ignore', 'inherit', 'inherit'] }),
  );
  mkdirSync(opts.out, { recursive: true });
  try {
    if (role === 'workers') await ready(`http://127.0.0.1:${ports.ingest}/readyz`);
    for (const tool of opts.tools) {
      const dest = join(opts.out, tool);
      const target = role === 'ingest' ? 'http://127.0.0.1:$PORT' : `http://127.0.0.1:${ports.ingest}`;
      const onPort = `"${process.execPath}" "${SELF}" load ${target} ${apiKey} ${opts.rate} ${opts.seconds}`;
      process.stderr.write(`clinic ${tool} on surge ${profiled}: ${opts.rate} orders/s for ${opts.seconds} s …\n`);
      const c = spawn(CLINIC, [tool, '--dest', dest, '--on-port', onPort, '--', process.execPath, CLI, profiled], {
        env,
        stdio: ['ignore', 'inherit', 'inherit'],
      });
      const code = await exited(c);
      const html = existsSync(dest) ? readdirSync(dest).filter((f) => f.endsWith('.html')) : [];
      if (code !== 0 || html.length === 0)
        throw new Error(`clinic ${tool} exited with ${code} and wrote ${html.length} HTML report(s) in ${dest}`);
      for (const h of html) {
        // The HTML is self-contained; the raw sample folder beside it (up to tens of MB) is not needed to read it.
        rmSync(join(dest, h.replace(/\.html$/, '')), { recursive: true, force: true });
        console.log(`clinic ${tool}: ${relative(process.cwd(), join(dest, h))}`);
      }
    }
  } finally {
    for (const c of children) c.kill('SIGTERM');
    await Promise.all(children.map(exited));
    await s.cleanup();
  }
}

const [mode, ...rest] = process.argv.slice(2);
if (mode === 'load') {
  const [url, apiKey, rate, seconds] = rest;
  if (url === undefined || apiKey === undefined) throw new Error('profile load: expected URL API_KEY RATE SECONDS');
  await load(url, apiKey, Number(rate), Number(seconds));
} else if (mode === 'ingest' || mode === 'workers') {
  checkScriptArgs(`profile-${mode}`);
  const { values } = parseArgs({
    args: rest,
    options: {
      rate: { type: 'string', default: '300' },
      seconds: { type: 'string', default: '20' },
      tools: { type: 'string', default: 'doctor,flame' },
      out: { type: 'string' },
    },
  });
  const out = values.out ?? resultsDir(join(PACKAGE_ROOT, 'bench', 'results'), `profile-${mode}`);
  await profile(mode, {
    rate: Number(values.rate),
    seconds: Number(values.seconds),
    tools: values.tools.split(','),
    out,
  }).catch((e: unknown) => {
    process.stderr.write(`profile: ${(e as Error).message}\n`);
    process.exit(1);
  });
} else {
  // `--help` and anything else: the help of both profiles, and exit 0 only when help was asked for.
  const help = mode === undefined || mode === '--help' || mode === '-h';
  (help ? process.stdout : process.stderr).write(
    `usage: profile.js ingest|workers [options]; options: \`surge bench profile-ingest --help\`${help ? '' : ` (got ${mode})`}\n`,
  );
  process.exit(help ? 0 : 2);
}
