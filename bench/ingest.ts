// Ingest benchmark (issue 3). In one process tree:
//   (a) baseline: a bare node:http server that parses the JSON body and does one XADD per request;
//   (b) Surge ingest (auth, validation, idempotency Lua call, fastify, metrics);
//   (c) Surge ingest, POST /v1/orders:batch with 1,000 orders per request.
// Each server runs in its own child process so autocannon (here) does not share its event loop.
// Every request carries a fresh Idempotency-Key (no replays). Prints req/s, p50/p99 and the
// ratios b/a and c(orders/s)/b(orders/s), and writes bench/results/ingest-<date>.{json,md}.
//
//   npm run bench:ingest -- [--duration 10] [--warmup 3] [--connections 100] [--batch-connections 10] [--no-write]
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { cpus, freemem, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { Redis } from 'ioredis';
import pg from 'pg';
import { createClient } from '../common/clients.js';
import { loadConfig } from '../common/config.js';
import { shardFor, streamKey } from '../common/keys.js';
import { PACKAGE_ROOT } from '../common/paths.js';
import { createRedis } from '../common/redis.js';
import { startIngest } from '../ingest/server.js';
import { createTestEnv } from '../test/support/env.js';

const ORDER = { customer_id: 'bench-customer', currency: 'EUR', items: [{ sku: 'sku-1', qty: 1, unit_price_cents: 1999 }, { sku: 'sku-2', qty: 3, unit_price_cents: 250 }] };
const ORDER_JSON = JSON.stringify(ORDER);
const BATCH_SIZE = 1000;

// ---- child mode: run one server, print {"port"} on stdout, stop on SIGTERM ----
async function serve(kind: string): Promise<void> {
  const config = loadConfig(process.env);
  if (kind === 'surge') {
    const svc = await startIngest(config);
    process.stdout.write(`${JSON.stringify({ port: svc.port })}\n`);
    process.on('SIGTERM', () => void svc.stop().then(() => process.exit(0)));
    return;
  }
  const redis = createRedis(config, { offlineQueue: false, maxRetriesPerRequest: 0 });
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      let order: unknown;
      try {
        order = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        res.writeHead(400).end();
        return;
      }
      const key = String(req.headers['idempotency-key'] ?? '');
      redis
        .xadd(streamKey(config.redisPrefix, shardFor('baseline', key, config.shards)), '*', 'v', '1', 'c', 'baseline', 'k', key, 'o', JSON.stringify(order))
        .then(
          (id) => res.writeHead(202, { 'content-type': 'application/json' }).end(JSON.stringify({ order_ref: id, idempotency_key: key, status: 'queued' })),
          () => res.writeHead(503).end(),
        );
    });
  });
  server.listen(0, '127.0.0.1', () => process.stdout.write(`${JSON.stringify({ port: (server.address() as AddressInfo).port })}\n`));
  process.on('SIGTERM', () => server.close(() => process.exit(0)));
}

// ---- orchestrator ----
interface Figures {
  scenario: string;
  connections: number;
  durationSeconds: number;
  requestsPerSecond: number;
  ordersPerSecond: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
  non2xx: number;
  errors: number;
}

function startChild(kind: string, env: Record<string, string>): Promise<{ child: ChildProcess; url: string }> {
  // SURGE_BENCH_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") goes to the server processes.
  const nodeArgs = (process.env.SURGE_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const child = spawn(process.execPath, [...nodeArgs, new URL(import.meta.url).pathname, '--serve', kind], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    let out = '';
    child.once('exit', (code) => reject(new Error(`${kind} server exited with ${code}`)));
    child.stdout?.on('data', (c: Buffer) => {
      out += c.toString();
      const line = out.split('\n').find((l) => l.startsWith('{"port"'));
      if (line) resolve({ child, url: `http://127.0.0.1:${(JSON.parse(line) as { port: number }).port}` });
    });
  });
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

let keySeq = 0;
const runId = Date.now().toString(36);
const nextKey = () => `b-${runId}-${keySeq++}`;

async function load(
  scenario: string,
  url: string,
  path: string,
  options: { connections: number; duration: number; apiKey?: string; batch?: boolean; ordersPerRequest: number },
): Promise<Figures> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (options.apiKey) headers.authorization = `Bearer ${options.apiKey}`;
  const result = await autocannon({
    url: url + path,
    method: 'POST',
    connections: options.connections,
    duration: options.duration,
    headers,
    requests: [
      {
        setupRequest: (req) => {
          if (options.batch) {
            const parts: string[] = new Array(BATCH_SIZE);
            for (let i = 0; i < BATCH_SIZE; i++) parts[i] = `{"idempotency_key":"${nextKey()}",${ORDER_JSON.slice(1)}`;
            return { ...req, body: `[${parts.join(',')}]` };
          }
          return { ...req, body: ORDER_JSON, headers: { ...req.headers, 'idempotency-key': nextKey() } };
        },
      },
    ],
  });
  const rps = result.requests.average;
  return {
    scenario,
    connections: options.connections,
    durationSeconds: options.duration,
    requestsPerSecond: Math.round(rps),
    ordersPerSecond: Math.round(rps * options.ordersPerRequest),
    latencyP50Ms: result.latency.p50,
    latencyP99Ms: result.latency.p99,
    non2xx: result.non2xx,
    errors: result.errors,
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      serve: { type: 'string' },
      duration: { type: 'string', default: '10' },
      warmup: { type: 'string', default: '3' },
      connections: { type: 'string', default: '100' },
      'batch-connections': { type: 'string', default: '10' },
      'no-write': { type: 'boolean', default: false },
    },
  });
  if (values.serve) return serve(values.serve);
  const duration = Number(values.duration);
  const warmup = Number(values.warmup);
  const connections = Number(values.connections);
  const batchConnections = Number(values['batch-connections']);

  const loadBefore = loadavg()[0] ?? 0;
  const env = await createTestEnv({ SURGE_LOG_LEVEL: 'warn', SURGE_MAX_BACKLOG: '0', SURGE_SHARDS: '4' });
  const redis = new Redis(env.redisUrl);
  const pool = new pg.Pool({ connectionString: env.db.url, max: 1 });
  const figures: Figures[] = [];
  try {
    const { apiKey } = await createClient(pool, 'bench');
    const run = async (kind: 'baseline' | 'surge', scenario: string, path: string, opts: { connections: number; batch?: boolean; ordersPerRequest: number }) => {
      const { child, url } = await startChild(kind, env.env);
      try {
        const o = { ...opts, apiKey };
        process.stdout.write(`${scenario}: warm-up ${warmup} s … `);
        await load(scenario, url, path, { ...o, duration: warmup });
        const f = await load(scenario, url, path, { ...o, duration });
        process.stdout.write(`${f.requestsPerSecond} req/s, ${f.ordersPerSecond} orders/s, p50 ${f.latencyP50Ms} ms, p99 ${f.latencyP99Ms} ms, non-2xx ${f.non2xx}, errors ${f.errors}\n`);
        figures.push(f);
        return f;
      } finally {
        await stopChild(child);
      }
    };
    const a = await run('baseline', 'a: node:http + XADD', '/', { connections, ordersPerRequest: 1 });
    const b = await run('surge', 'b: surge POST /v1/orders', '/v1/orders', { connections, ordersPerRequest: 1 });
    const c = await run('surge', `c: surge POST /v1/orders:batch (${BATCH_SIZE}/request)`, '/v1/orders:batch', {
      connections: batchConnections,
      batch: true,
      ordersPerRequest: BATCH_SIZE,
    });
    const ratioBA = b.requestsPerSecond / a.requestsPerSecond;
    const ratioCB = c.ordersPerSecond / b.ordersPerSecond;
    const redisVersion = /redis_version:(\S+)/.exec(await redis.info('server'))?.[1] ?? '?';
    const machine = {
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model ?? '?',
      totalMemoryMiB: Math.round(totalmem() / 2 ** 20),
      freeMemoryMiB: Math.round(freemem() / 2 ** 20),
      node: process.version,
      redis: redisVersion,
      // Other processes on the host skew every figure: record how busy it was.
      loadAverage1mBefore: Number(loadBefore.toFixed(2)),
      loadAverage1mAfter: Number((loadavg()[0] ?? 0).toFixed(2)),
    };
    const command = `npm run bench:ingest -- --duration ${duration} --warmup ${warmup} --connections ${connections} --batch-connections ${batchConnections}`;
    const summary = {
      date: new Date().toISOString(),
      command,
      machine,
      figures,
      ratios: { surgeOverBaseline: Number(ratioBA.toFixed(3)), batchOrdersOverSingleOrders: Number(ratioCB.toFixed(2)) },
      goals: { surgeOverBaseline: '≥ 0.8', batchOrdersOverSingleOrders: '≥ 3' },
    };
    console.log(`ratio b/a (req/s): ${ratioBA.toFixed(3)} (goal ≥ 0.8)`);
    console.log(`ratio c/b (orders/s): ${ratioCB.toFixed(2)} (goal ≥ 3)`);
    console.log(`machine: ${machine.cpus} × ${machine.cpuModel}, node ${machine.node}, redis ${machine.redis}`);
    if (!values['no-write']) {
      const dir = join(PACKAGE_ROOT, 'bench', 'results');
      mkdirSync(dir, { recursive: true });
      const stem = join(dir, `ingest-${summary.date.slice(0, 10)}`);
      writeFileSync(`${stem}.json`, `${JSON.stringify(summary, null, 2)}\n`);
      const md = [
        `# Ingest benchmark, ${summary.date}`,
        '',
        `Command: \`${command}\``,
        '',
        `Machine: ${machine.cpus} × ${machine.cpuModel}, ${machine.totalMemoryMiB} MiB RAM, Node ${machine.node}, Redis ${machine.redis} (same host); 1-min load average ${machine.loadAverage1mBefore} before, ${machine.loadAverage1mAfter} after.`,
        '',
        '| Scenario | Connections | req/s | orders/s | p50 ms | p99 ms | non-2xx | errors |',
        '| --- | --- | --- | --- | --- | --- | --- | --- |',
        ...figures.map(
          (f) => `| ${f.scenario} | ${f.connections} | ${f.requestsPerSecond} | ${f.ordersPerSecond} | ${f.latencyP50Ms} | ${f.latencyP99Ms} | ${f.non2xx} | ${f.errors} |`,
        ),
        '',
        `Ratio b/a (req/s): **${ratioBA.toFixed(3)}** (goal ≥ 0.8). Ratio c/b (orders/s): **${ratioCB.toFixed(2)}** (goal ≥ 3).`,
        '',
      ].join('\n');
      writeFileSync(`${stem}.md`, md);
      console.log(`wrote ${stem}.json and ${stem}.md`);
    }
  } finally {
    redis.disconnect();
    await pool.end();
    await env.cleanup();
  }
}

await main();
