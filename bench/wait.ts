// `surge bench wait` (`npm run bench:wait`): the long-poll of GET /v1/orders/:key?wait= on one ingest process.
//   1. hold: N orders queued with no worker running, N concurrent `?wait=60` requests open on
//      them — ingest's RSS before and while they wait; then a worker starts, the orders apply
//      and every answer's delay after its order's COMMIT is recorded (the backlog drains at the
//      worker's full rate);
//   2. steady: orders submitted at a fixed rate with the worker running, one in every
//      --wait-every followed at once by a `?wait=30`; the same delay per waited order. The
//      orders are the load; the waits sample its delay. The orders go in `:batch` requests of
//      --batch (10), so the generator (one process, fetch, on the same cores) is not the limit —
//      its event-loop delay is reported to show whether it was; --batch 1 submits one by one.
// COMMIT itself leaves no timestamp, so the delay is bracketed by two that do, on the one host
// clock: the order's applied_at (set at its INSERT, before COMMIT: an upper bound) and its outcome
// entry's id (the time the worker published it, after COMMIT: a lower bound, which leaves out the
// worker's publish). The generator's own event-loop delay is reported with them: when it is
// large, the answers waited in the generator, not in Surge.
// --floor measures instead what node:http itself costs: the RSS growth of a bare server (no
// routes, no Redis, no PostgreSQL) while it holds as many requests, opened the same way.
// Options: --waiters N (10000), --rate R (orders/s of step 2, 1500: half the maximum sustainable
// rate of `surge bench compare`), --seconds S (10), --wait-every K (10), --batch B (10).
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
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

function spawnRole(role: 'ingest' | 'work', env: Record<string, string>): ChildProcess {
  return spawn(process.execPath, [CLI, role], { env: { ...process.env, ...env }, stdio: ['ignore', 2, 'inherit'] });
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

/** An answered long poll: when the answer arrived and its order's applied_at (ms since the epoch). */
interface Answer {
  key: string;
  at: number;
  appliedAt: number;
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
 * One long poll; resolves with its answer, or the failure. `sent` hears the request written on
 * its connection.
 */
function longPoll(
  agent: Agent,
  url: string,
  apiKey: string,
  key: string,
  wait: number,
  sent: () => void = () => {},
): Promise<Answer | string> {
  return new Promise((resolve) => {
    const req = request(
      `${url}/v1/orders/${encodeURIComponent(key)}?wait=${wait}`,
      { agent, headers: { authorization: `Bearer ${apiKey}` } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const at = Date.now();
          const body = JSON.parse(Buffer.concat(chunks).toString()) as { status: string; applied_at?: string };
          if (res.statusCode !== 200 || body.status === 'queued' || !body.applied_at)
            resolve(`${res.statusCode} ${body.status}`);
          else resolve({ key, at, appliedAt: Date.parse(body.applied_at) });
        });
      },
    );
    req.on('error', (e) => resolve(`error ${e.message}`));
    req.on('finish', sent);
    req.end();
  });
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

/** A node:http server that holds every request but /warm until told to (a line on stdin). */
const BARE_SERVER = `
const held = [];
const server = require('node:http').createServer((req, res) =>
  req.url === '/warm' ? res.end('{}') : held.push(res));
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
process.stdin.once('data', () => { for (const res of held) res.end('{"status":"queued"}'); });
`;

async function floor(): Promise<void> {
  const server = spawn(process.execPath, ['-e', BARE_SERVER], { stdio: ['pipe', 'pipe', 'inherit'] });
  try {
    const port = await new Promise<number>((resolve) => server.stdout?.once('data', (d: Buffer) => resolve(Number(d))));
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
    const before = rssMb(server.pid);
    const agent = new Agent({ keepAlive: false, maxSockets: Number.POSITIVE_INFINITY });
    const polls = await openPolls(agent, url, 'none', keys);
    const peak = await peakRss(server.pid);
    server.stdin?.write('go\n');
    await Promise.all(polls);
    agent.destroy();
    warm.destroy();
    console.log(`# bench:wait --floor (${new Date().toISOString()})`);
    console.log(
      `bare node:http server holding ${WAITERS} requests: RSS ${before.toFixed(1)} MB before, peak ` +
        `${peak.toFixed(1)} MB: growth ${(peak - before).toFixed(1)} MB`,
    );
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
    const env = { ...scratch.env, SURGE_INGEST_PORT: String(port), SURGE_WORKER_METRICS_PORT: '0' };
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
    const before = rssMb(ingest.pid);
    const agent = new Agent({ keepAlive: false, maxSockets: Number.POSITIVE_INFINITY });
    const polls = await openPolls(agent, url, apiKey, keys);
    const peak = await peakRss(ingest.pid);
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
    console.log(`hold: ${WAITERS} concurrent ?wait=60 on queued orders; ingest RSS ${before.toFixed(1)} MB before, `);
    console.log(`  peak ${peak.toFixed(1)} MB while they wait: growth ${(peak - before).toFixed(1)} MB`);
    console.log(
      `  COMMIT → answer once a worker drains them; failures ${holdFailures.length}, ${loopDelay(holdLoop)}:`,
    );
    console.log(delays(holdAnswers, holdPublished));

    // 2. steady
    const steadyAnswers: Answer[] = [];
    const steadyFailures: string[] = [];
    // No socket limit: a long poll holds its connection, and a request queued in the agent behind
    // one would count the queueing as answer delay.
    const steadyAgent = new Agent({ keepAlive: true, maxSockets: Number.POSITIVE_INFINITY });
    const steadyLoop = monitorEventLoopDelay({ resolution: 10 });
    steadyLoop.enable();
    const started = Date.now();
    const pending: Array<Promise<void>> = [];
    const total = RATE * SECONDS;
    for (let first = 0; first < total; first += BATCH) {
      const due = started + (first * 1000) / RATE;
      const ahead = due - Date.now();
      if (ahead > 0) await new Promise((r) => setTimeout(r, ahead));
      const batch = Array.from({ length: Math.min(BATCH, total - first) }, (_, j) => ({
        i: first + j,
        key: `steady-${first + j}`,
      }));
      const accepted =
        BATCH === 1
          ? surge.submit(order, { key: `steady-${first}` }).then(() => [true])
          : surge.submitMany(batch.map(({ key }) => ({ key, order }))).then((rs) => rs.map((r) => r.ok));
      for (const { i, key } of batch) {
        if (i % WAIT_EVERY !== 0) continue;
        pending.push(
          (async () => {
            // A failed submission is counted once, below.
            const r = await accepted
              .then((oks) => (oks[i - first] ? longPoll(steadyAgent, url, apiKey, key, 30) : `submit: refused`))
              .catch(() => undefined);
            if (r === undefined) return;
            if (typeof r === 'string') steadyFailures.push(r);
            else steadyAnswers.push(r);
          })(),
        );
      }
      pending.push(
        accepted.then(
          () => {},
          (e: Error) => {
            steadyFailures.push(`submit: ${e.message}`);
          },
        ),
      );
    }
    const lastSubmitted = Date.now();
    await Promise.all(pending);
    const submitted = (RATE * SECONDS * 1000) / (lastSubmitted - started);
    steadyLoop.disable();
    steadyAgent.destroy();
    const steadyPublished = await publishTimes(scratch.redisUrl, scratch.prefix, SHARDS);

    console.log(
      `steady: ${RATE}/s for ${SECONDS} s (orders sent at ${submitted.toFixed(0)}/s, ${BATCH === 1 ? 'one per request' : `:batch of ${BATCH}`}), ` +
        `one in ${WAIT_EVERY} followed by ?wait=30; ` +
        `failures ${steadyFailures.length} ${steadyFailures.slice(0, 3).join('; ')}, ${loopDelay(steadyLoop)}:`,
    );
    console.log(delays(steadyAnswers, steadyPublished));
  } finally {
    for (const c of children) await stopChild(c);
    await pool.end();
    await scratch.cleanup();
  }
}

if (values.floor) await floor();
else await main();
