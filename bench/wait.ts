// `surge bench wait` (`npm run bench:wait`): the long-poll of GET /v1/orders/:key?wait= on one ingest process.
//   1. hold: N orders queued with no worker running, N concurrent `?wait=60` requests open on
//      them — ingest's RSS before and while they wait, split into V8's young and old generations,
//      the rest of V8's heap, malloc's heap (native memory: sockets, parsers) and the rest; then a
//      worker starts, the orders apply and every answer's delay after its order's COMMIT is
//      recorded (the backlog drains at the worker's full rate);
//   2. steady: orders submitted at a fixed rate with the worker running, one in every
//      --wait-every followed at once by a `?wait=30`; the same delay per waited order. The
//      orders are the load, sent by this process in `:batch` requests of --batch (10); the
//      sampled ones are submitted one by one and waited on by a probe process of their own
//      (bench/wait-probe.ts), so the delay is read by a client whose event loop does nothing
//      else — its event-loop delay is reported to show it was on time.
// COMMIT itself leaves no timestamp, so the delay is bracketed by two that do, on the one host
// clock: the order's applied_at (set at its INSERT, before COMMIT: an upper bound) and its outcome
// entry's id (the time the worker published it, after COMMIT: a lower bound, which leaves out the
// worker's publish).
// --floor measures instead what node:http itself costs: the RSS growth of a bare server (no
// routes, no Redis, no PostgreSQL) while it holds as many requests, opened the same way.
// Options: --waiters N (10000), --rate R (orders/s of step 2, 1500: half the maximum sustainable
// rate of `surge bench compare`), --seconds S (10), --wait-every K (10), --batch B (10).
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import pg from 'pg';
import { SurgeClient } from '../client/index.js';
import { createClient } from '../common/clients.js';
import { allOutcomeKeys } from '../common/keys.js';
import { freePort } from '../common/net.js';
import { PACKAGE_ROOT } from '../common/paths.js';
import { createTestEnv } from '../devkit/scratch.js';
import { waitFor } from '../devkit/wait.js';
import { checkScriptArgs } from './commands.js';
import { type Answer, longPoll } from './long-polls.js';
import type { ProbeResult } from './wait-probe.js';

const CLI = join(PACKAGE_ROOT, 'dist', 'cli', 'surge.js');

checkScriptArgs('wait');

const { values } = parseArgs({
  options: {
    waiters: { type: 'string', default: '10000' },
    rate: { type: 'string', default: '1500' },
    seconds: { type: 'string', default: '10' },
    'wait-every': { type: 'string', default: '10' },
    batch: { type: 'string', default: '10' },
    floor: { type: 'boolean', default: false },
    'hold-only': { type: 'boolean', default: false },
    'ingest-node-flags': { type: 'string', default: '' },
  },
});
const WAITERS = Number(values.waiters);
const RATE = Number(values.rate);
const SECONDS = Number(values.seconds);
const WAIT_EVERY = Number(values['wait-every']);
const BATCH = Number(values.batch);
const SHARDS = 4;

function rssMb(pid: number | undefined): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return kb / 1024;
}

/** A process's memory (MB): what the RSS growth is made of. */
interface Memory {
  rss: number;
  /** V8's young generation (new space), committed. */
  young: number;
  /** V8's old generation, committed, and the part of it in use. */
  old: number;
  oldUsed: number;
  /** V8's other spaces (code, large objects, …), committed. */
  v8Other: number;
  /** The main malloc arena ([heap] of /proc/pid/smaps): native objects such as sockets and parsers. */
  malloc: number;
}

/** V8's spaces as `v8.getHeapSpaceStatistics()` gives them: name, committed and used bytes. */
type Spaces = ReadonlyArray<{ space: string; size: number; used: number }>;

function memory(pid: number | undefined, spaces: Spaces): Memory {
  const mb = (b: number) => b / 1024 / 1024;
  let malloc = 0;
  let inHeap = false;
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) inHeap = line.endsWith('[heap]');
    else if (inHeap && line.startsWith('Rss:')) malloc += Number(/(\d+)/.exec(line)?.[1] ?? 0) / 1024;
  }
  const of = (name: string) => spaces.find((s) => s.space === name);
  const rest = spaces.filter((s) => s.space !== 'new' && s.space !== 'old');
  return {
    rss: rssMb(pid),
    young: mb(of('new')?.size ?? 0),
    old: mb(of('old')?.size ?? 0),
    oldUsed: mb(of('old')?.used ?? 0),
    v8Other: mb(rest.reduce((a, s) => a + s.size, 0)),
    malloc,
  };
}

/** Ingest's V8 spaces, from its /metrics (prom-client's default metrics). */
async function ingestSpaces(metricsUrl: string): Promise<Spaces> {
  const text = await (await fetch(`${metricsUrl}/metrics`)).text();
  const out = new Map<string, { space: string; size: number; used: number }>();
  for (const m of text.matchAll(/^\w*nodejs_heap_space_size_(total|used)_bytes\{[^}]*space="(\w+)"[^}]*\} (\S+)$/gm)) {
    const [, kind, space = '', value] = m;
    const s = out.get(space) ?? { space, size: 0, used: 0 };
    if (kind === 'total') s.size = Number(value);
    else s.used = Number(value);
    out.set(space, s);
  }
  return [...out.values()];
}

/** Where the growth from `a` to `b` went, one line. */
function growth(a: Memory, b: Memory): string {
  const d = (k: keyof Memory) => (b[k] - a[k]).toFixed(1);
  const named = b.young + b.old + b.v8Other + b.malloc - (a.young + a.old + a.v8Other + a.malloc);
  return (
    `RSS +${d('rss')} MB = V8 young generation +${d('young')}, old generation +${d('old')} (in use +${d('oldUsed')}), ` +
    `other V8 spaces +${d('v8Other')}, malloc heap +${d('malloc')}, the rest +${(b.rss - a.rss - named).toFixed(1)}`
  );
}

function spawnRole(role: 'ingest' | 'work', env: Record<string, string>): ChildProcess {
  const flags = role === 'ingest' ? values['ingest-node-flags'].split(' ').filter(Boolean) : [];
  return spawn(process.execPath, [...flags, CLI, role], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 2, 'inherit'],
  });
}

async function stopChild(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null) return;
  const exited = new Promise<void>((r) => c.once('exit', () => r()));
  c.kill('SIGTERM');
  await exited;
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

function summary(delays: number[]): string {
  const s = [...delays].sort((a, b) => a - b);
  return `n ${s.length}, p50 ${percentile(s, 50)} ms, p99 ${percentile(s, 99)} ms, max ${s.at(-1)} ms`;
}

/** Each order's publish time: its outcome entry's id (ms since the epoch, Redis's clock on this host). */
async function publishTimes(redisUrl: string, prefix: string, shards: number): Promise<Map<string, number>> {
  const redis = new Redis(redisUrl);
  const out = new Map<string, number>();
  try {
    for (const stream of allOutcomeKeys(prefix, shards))
      for (const [id, fields] of await redis.xrange(stream, '-', '+')) {
        const key = fields[fields.indexOf('key') + 1];
        if (key !== undefined && !out.has(key)) out.set(key, Number(id.slice(0, id.indexOf('-'))));
      }
  } finally {
    redis.disconnect();
  }
  return out;
}

/** The delays of answered long polls from COMMIT's two brackets, and the worker's share. */
function delays(answers: readonly Answer[], published: ReadonlyMap<string, number>): string {
  const upper = answers.map((a) => a.at - a.appliedAt);
  const lower: number[] = [];
  const worker: number[] = [];
  for (const a of answers) {
    const p = published.get(a.key);
    if (p === undefined) continue;
    lower.push(a.at - p);
    worker.push(p - a.appliedAt);
  }
  return (
    `    applied_at → answer (upper bound): ${summary(upper)}\n` +
    `    published → answer (lower bound): ${summary(lower)}\n` +
    `    applied_at → published (the worker's share): ${summary(worker)}`
  );
}

/** The generator's event-loop delay, p99 and max (ms). */
function loopDelay(h: ReturnType<typeof monitorEventLoopDelay>): string {
  return `generator event-loop delay p99 ${(h.percentile(99) / 1e6).toFixed(0)} ms, max ${(h.max / 1e6).toFixed(0)} ms`;
}

/**
 * Opens one long poll per key, in steps, each written before the next: thousands of connects at
 * once overflow the listen backlog, and a connect retried a second later would count as answer
 * delay.
 */
async function openPolls(agent: Agent, url: string, apiKey: string, keys: readonly string[]) {
  const polls: Array<Promise<Answer | string>> = [];
  const STEP = 250;
  for (let i = 0; i < keys.length; i += STEP) {
    let written = 0;
    const step = keys.slice(i, i + STEP);
    await new Promise<void>((resolve) => {
      for (const key of step)
        polls.push(
          longPoll(agent, url, apiKey, key, 60, () => {
            if (++written === step.length) resolve();
          }),
        );
    });
  }
  return polls;
}

/** The highest RSS of `pid` over a second, after a second's settle (ingest reads the last requests). */
async function peakRss(pid: number | undefined): Promise<number> {
  await new Promise((r) => setTimeout(r, 1000));
  let peak = 0;
  for (let i = 0; i < 10; i++) {
    peak = Math.max(peak, rssMb(pid));
    await new Promise((r) => setTimeout(r, 100));
  }
  return peak;
}

/**
 * A node:http server that holds every request but /warm until told to ('go' on stdin); 'm' prints
 * its V8 spaces.
 */
const BARE_SERVER = `
const held = [];
const server = require('node:http').createServer((req, res) =>
  req.url === '/warm' ? res.end('{}') : held.push(res));
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
require('node:readline').createInterface({ input: process.stdin }).on('line', (l) => {
  if (l === 'm') console.log(JSON.stringify(require('node:v8').getHeapSpaceStatistics().map((s) =>
    ({ space: s.space_name.replace(/_space$/, ''), size: s.space_size, used: s.space_used_size }))));
  else for (const res of held.splice(0)) res.end('{"status":"queued"}');
});
`;

async function floor(): Promise<void> {
  const server = spawn(process.execPath, ['-e', BARE_SERVER], { stdio: ['pipe', 'pipe', 'inherit'] });
  try {
    const lines = createInterface({ input: server.stdout as NodeJS.ReadableStream });
    const next = () => new Promise<string>((resolve) => lines.once('line', resolve));
    const port = Number(await next());
    const spaces = async () => {
      server.stdin?.write('m\n');
      return JSON.parse(await next()) as Spaces;
    };
    const url = `http://127.0.0.1:${port}`;
    const keys = Array.from({ length: WAITERS }, (_, i) => `hold-${i}`);
    // Warmed like ingest, which answered the orders' submissions before its baseline.
    const warm = new Agent({ keepAlive: false, maxSockets: 250 });
    await Promise.all(
      keys.map(
        (_, i) =>
          new Promise<void>((resolve) => {
            const req = request(`${url}/warm`, { agent: warm }, (res) => res.resume().on('end', resolve));
            req.on('error', () => resolve(undefined));
            req.end(String(i));
          }),
      ),
    );
    const before = memory(server.pid, await spaces());
    const agent = new Agent({ keepAlive: false, maxSockets: Number.POSITIVE_INFINITY });
    const polls = await openPolls(agent, url, 'none', keys);
    const peak = await peakRss(server.pid);
    const held = memory(server.pid, await spaces());
    server.stdin?.write('go\n');
    await Promise.all(polls);
    agent.destroy();
    warm.destroy();
    console.log(`# bench:wait --floor (${new Date().toISOString()})`);
    console.log(
      `bare node:http server holding ${WAITERS} requests: RSS ${before.rss.toFixed(1)} MB before, peak ` +
        `${peak.toFixed(1)} MB: growth ${(peak - before.rss).toFixed(1)} MB`,
    );
    console.log(`  ${growth(before, held)}`);
  } finally {
    server.kill();
  }
}

async function main(): Promise<void> {
  const scratch = await createTestEnv({ SURGE_LOG_LEVEL: 'warn', SURGE_SHARDS: String(SHARDS) });
  const pool = new pg.Pool({ connectionString: scratch.db.url, max: 1 });
  const children: ChildProcess[] = [];
  try {
    const { apiKey } = await createClient(pool, 'bench-wait');
    const port = await freePort();
    const metricsPort = await freePort();
    const env = {
      ...scratch.env,
      SURGE_INGEST_PORT: String(port),
      SURGE_INGEST_METRICS_PORT: String(metricsPort),
      SURGE_WORKER_METRICS_PORT: '0',
    };
    const metricsUrl = `http://127.0.0.1:${metricsPort}`;
    const ingest = spawnRole('ingest', env);
    children.push(ingest);
    const url = `http://127.0.0.1:${port}`;
    await waitFor('ingest /readyz', async () => (await fetch(`${url}/readyz`).catch(() => undefined))?.ok, {
      timeoutMs: 30_000,
      intervalMs: 100,
    });
    const surge = new SurgeClient({ baseUrl: url, apiKey });
    const order = { customer_id: 'c', currency: 'EUR', items: [{ sku: 'free', qty: 1, unit_price_cents: 100 }] };

    // 1. hold
    const keys = Array.from({ length: WAITERS }, (_, i) => `hold-${i}`);
    for (let i = 0; i < keys.length; i += 1000)
      await surge.submitMany(keys.slice(i, i + 1000).map((key) => ({ key, order })));
    const before = memory(ingest.pid, await ingestSpaces(metricsUrl));
    const agent = new Agent({ keepAlive: false, maxSockets: Number.POSITIVE_INFINITY });
    const polls = await openPolls(agent, url, apiKey, keys);
    const peak = await peakRss(ingest.pid);
    const held = memory(ingest.pid, await ingestSpaces(metricsUrl));
    if (values['hold-only']) {
      console.log(`# bench:wait --hold-only (${new Date().toISOString()})`);
      console.log(
        `hold: ${WAITERS} concurrent ?wait=60 on queued orders; ingest RSS ${before.rss.toFixed(1)} MB before, ` +
          `peak ${peak.toFixed(1)} MB: growth ${(peak - before.rss).toFixed(1)} MB`,
      );
      console.log(`  ${growth(before, held)}`);
      return;
    }
    const holdLoop = monitorEventLoopDelay({ resolution: 10 });
    holdLoop.enable();
    const worker = spawnRole('work', env);
    children.push(worker);
    const answers = await Promise.all(polls);
    holdLoop.disable();
    const holdAnswers = answers.filter((a): a is Answer => typeof a !== 'string');
    const holdFailures = answers.filter((a) => typeof a === 'string');
    agent.destroy();
    const holdPublished = await publishTimes(scratch.redisUrl, scratch.prefix, SHARDS);
    console.log(`# bench:wait (${new Date().toISOString()})`);
    console.log(
      `hold: ${WAITERS} concurrent ?wait=60 on queued orders; ingest RSS ${before.rss.toFixed(1)} MB before, `,
    );
    console.log(`  peak ${peak.toFixed(1)} MB while they wait: growth ${(peak - before.rss).toFixed(1)} MB`);
    console.log(`  ${growth(before, held)}`);
    console.log(
      `  COMMIT → answer once a worker drains them; failures ${holdFailures.length}, ${loopDelay(holdLoop)}:`,
    );
    console.log(delays(holdAnswers, holdPublished));

    // 2. steady: this process sends the load; the probe, the sampled orders and their waits.
    const total = RATE * SECONDS;
    const started = Date.now() + 1000;
    const probe = spawn(
      process.execPath,
      [
        join(PACKAGE_ROOT, 'dist', 'bench', 'wait-probe.js'),
        JSON.stringify({ url, apiKey, start: started, rate: RATE, total, every: WAIT_EVERY }),
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    children.push(probe);
    const probed = new Promise<ProbeResult>((resolve, reject) => {
      let out = '';
      probe.stdout?.on('data', (d: Buffer) => {
        out += d.toString();
      });
      probe.once('exit', (code) =>
        code === 0 ? resolve(JSON.parse(out) as ProbeResult) : reject(new Error(`the probe exited ${code}`)),
      );
    });
    const steadyLoop = monitorEventLoopDelay({ resolution: 10 });
    steadyLoop.enable();
    const pending: Array<Promise<void>> = [];
    const steadyFailures: string[] = [];
    for (let first = 0; first < total; first += BATCH) {
      const due = started + (first * 1000) / RATE;
      const ahead = due - Date.now();
      if (ahead > 0) await new Promise((r) => setTimeout(r, ahead));
      const batch: Array<{ key: string; order: typeof order }> = [];
      for (let i = first; i < Math.min(first + BATCH, total); i++)
        if (i % WAIT_EVERY !== 0) batch.push({ key: `steady-${i}`, order });
      if (batch.length === 0) continue;
      pending.push(
        (batch.length === 1 ? surge.submit(order, { key: batch[0]?.key ?? '' }) : surge.submitMany(batch)).then(
          () => {},
          (e: Error) => {
            steadyFailures.push(`submit: ${e.message}`);
          },
        ),
      );
    }
    const lastSubmitted = Date.now();
    await Promise.all(pending);
    const submitted = (total * 1000) / (lastSubmitted - started);
    steadyLoop.disable();
    const result = await probed;
    steadyFailures.push(...result.failures);
    const steadyPublished = await publishTimes(scratch.redisUrl, scratch.prefix, SHARDS);

    console.log(
      `steady: ${RATE}/s for ${SECONDS} s (orders sent at ${submitted.toFixed(0)}/s, ${BATCH === 1 ? 'one per request' : `:batch of ${BATCH}`}), ` +
        `one in ${WAIT_EVERY} submitted alone and followed by ?wait=30 from a probe process; ` +
        `failures ${steadyFailures.length} ${steadyFailures.slice(0, 3).join('; ')}, ` +
        `probe event-loop delay p99 ${result.loopP99Ms.toFixed(0)} ms, max ${result.loopMaxMs.toFixed(0)} ms, ` +
        `${loopDelay(steadyLoop)}:`,
    );
    console.log(delays(result.answers, steadyPublished));
  } finally {
    for (const c of children) await stopChild(c);
    await pool.end();
    await scratch.cleanup();
  }
}

if (values.floor) await floor();
else await main();
