// Ingest benchmark. In one process tree:
//   (a) baseline: a bare node:http server that parses the JSON body and does one XADD per request;
//   (b) Surge ingest (auth, validation, idempotency Lua call, its request pipeline, metrics);
//   (c) Surge ingest, POST /v1/orders:batch with 1,000 orders per request.
// Each server runs in its own child process so autocannon (here) does not share its event loop.
// Every request carries a fresh Idempotency-Key (no replays; bench/autocannon-requests.ts).
// Prints req/s, p50/p99 and the ratios b/a and c(orders/s)/b(orders/s), and writes
// bench/results/ingest-<date>.{json,md}.
//
//   npm run bench:ingest -- [--rounds 5] [--duration 5] [--warmup 3] [--connections 100]
//                           [--batch-connections 10] [--scenarios a,b,c[,a0][,f]]
//                           [--requests template|setup-request] [--no-write] [--help]
// References: (a0) the baseline without auto-pipelining; (f) the baseline's work in fastify (the framework alone).
// Scenarios run in interleaved rounds (a, b, c, a, b, c, …) against servers started once; each
// round reports req/s, latency and the CPU time per order of server, Redis and load generator.
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { cpus, freemem, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { fastify } from 'fastify';
import { Redis } from 'ioredis';
import pg from 'pg';
import { createClient } from '../common/clients.js';
import { loadConfig } from '../common/config.js';
import { encodeEntry } from '../common/entry.js';
import { shardFor, streamKey } from '../common/keys.js';
import { PACKAGE_ROOT } from '../common/paths.js';
import { createRedis } from '../common/redis.js';
import { INGEST_REDIS_OPTIONS, startIngest } from '../ingest/server.js';
import { startTracing } from '../common/tracing.js';
import { createTestEnv } from '../devkit/scratch.js';
import { httpRequestBytes, takeRequestsFrom } from './autocannon-requests.js';
import { processCpu } from './cpu.js';
import { BENCH_ORDER_JSON, startServer, stopServer } from './ingest-servers.js';
import { median } from './stats.js';

const BATCH_SIZE = 1000;
/** The goals the report checks: Surge's single orders against the bare server, `:batch` against single orders. */
const GOALS = { surgeOverBaseline: '≥ 0.9', batchOrdersOverSingleOrders: '≥ 3' } as const;

// ---- child mode: run one server, print {"port"} on stdout, stop on SIGTERM ----
async function serve(kind: string): Promise<void> {
  const config = loadConfig(process.env);
  if (kind === 'surge') {
    // As `surge ingest` does: tracing when the OTEL_* variables ask for it (tracing-on runs).
    startTracing('surge-ingest');
    const svc = await startIngest(config);
    process.stdout.write(`${JSON.stringify({ port: svc.port })}\n`);
    process.on('SIGTERM', () => void svc.stop().then(() => process.exit(0)));
    return;
  }
  // (a) uses the same connection options as ingest (incl. auto-pipelining): the comparison
  // measures Surge's work per order, not a difference in Redis client settings. `baseline-plain`
  // (a0, for reference only) is the same server with one socket write per XADD.
  const redis = createRedis(config, {
    ...INGEST_REDIS_OPTIONS,
    autoPipelining: kind !== 'baseline-plain',
    connectionName: `surge-bench-${kind}`,
  });
  const xadd = (key: string, order: unknown) =>
    redis.xadd(
      streamKey(config.redisPrefix, shardFor('baseline', key, config.shards)),
      '*',
      ...encodeEntry({ clientId: 'baseline', idempotencyKey: key, canonical: JSON.stringify(order) }),
    );
  if (kind === 'baseline-fastify') {
    // (f, reference): the same work as (a) in fastify with its defaults (JSON body parser,
    // no logger): what the framework alone costs against bare node:http.
    const app = fastify();
    app.post('/', async (request, reply) => {
      const key = String(request.headers['idempotency-key'] ?? '');
      try {
        const id = await xadd(key, request.body);
        return reply
          .code(202)
          .type('application/json')
          .send(JSON.stringify({ order_ref: id, idempotency_key: key, status: 'queued' }));
      } catch {
        return reply.code(503).send();
      }
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    process.stdout.write(`${JSON.stringify({ port: (app.server.address() as AddressInfo).port })}\n`);
    process.on('SIGTERM', () => void app.close().then(() => process.exit(0)));
    return;
  }
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
      xadd(key, order).then(
        (id) =>
          res
            .writeHead(202, { 'content-type': 'application/json' })
            .end(JSON.stringify({ order_ref: id, idempotency_key: key, status: 'queued' })),
        () => res.writeHead(503).end(),
      );
    });
  });
  server.listen(0, '127.0.0.1', () =>
    process.stdout.write(`${JSON.stringify({ port: (server.address() as AddressInfo).port })}\n`),
  );
  process.on('SIGTERM', () => server.close(() => process.exit(0)));
}

// ---- orchestrator ----
interface Figures {
  scenario: Scenario;
  round: number;
  connections: number;
  durationSeconds: number;
  requestsPerSecond: number;
  ordersPerSecond: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
  non2xx: number;
  errors: number;
  /** CPU time per order (µs) of the server process, of Redis, and of the load generator (this process). */
  serverCpuUsPerOrder: number;
  redisCpuUsPerOrder: number;
  loadGenCpuUsPerOrder: number;
  /** Share of one core the load generator used during the measurement (1 = a whole core). */
  loadGenCores: number;
  serverCores: number;
  /** CPU time per order of the server's main thread (the event loop), µs. */
  serverMainThreadUsPerOrder: number;
  /** Share of the server's CPU time spent in the kernel (socket reads and writes). */
  serverSystemShare: number;
}

type Scenario = 'a' | 'a0' | 'f' | 'b' | 'c';
const SCENARIOS: Record<
  Scenario,
  { label: string; kind: 'baseline' | 'baseline-plain' | 'baseline-fastify' | 'surge'; path: string; batch: boolean }
> = {
  a: { label: 'a: node:http + XADD', kind: 'baseline', path: '/', batch: false },
  a0: {
    label: 'a0: node:http + XADD, not auto-pipelined (reference)',
    kind: 'baseline-plain',
    path: '/',
    batch: false,
  },
  f: { label: 'f: fastify + XADD (reference)', kind: 'baseline-fastify', path: '/', batch: false },
  b: { label: 'b: surge POST /v1/orders', kind: 'surge', path: '/v1/orders', batch: false },
  c: {
    label: `c: surge POST /v1/orders:batch (${BATCH_SIZE}/request)`,
    kind: 'surge',
    path: '/v1/orders:batch',
    batch: true,
  },
};

const startChild = (kind: string, env: Record<string, string>) =>
  startServer(new URL(import.meta.url).pathname, kind, env);

async function redisCpuSeconds(redis: Redis): Promise<number> {
  const info = await redis.info('cpu');
  const num = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(info)?.[1] ?? Number.NaN);
  return num('used_cpu_user') + num('used_cpu_sys');
}

let keySeq = 0;
const runId = Date.now().toString(36);
const nextKey = () => `b-${runId}-${keySeq++}`;

/** How the load generator makes each request: see `--requests` in USAGE. */
type RequestMode = 'template' | 'setup-request';
const REQUEST_MODES: readonly RequestMode[] = ['template', 'setup-request'];

interface LoadOptions {
  connections: number;
  duration: number;
  apiKey?: string;
  batch: boolean;
  requests: RequestMode;
}

/** The body of a :batch request: BATCH_SIZE orders, each with a fresh key (a single order's key goes in a header). */
function batchBody(): string {
  const parts: string[] = new Array(BATCH_SIZE);
  for (let i = 0; i < BATCH_SIZE; i++) parts[i] = `{"idempotency_key":"${nextKey()}",${BENCH_ORDER_JSON.slice(1)}`;
  return `[${parts.join(',')}]`;
}

async function load(url: string, path: string, options: LoadOptions): Promise<autocannon.Result> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (options.apiKey) headers.authorization = `Bearer ${options.apiKey}`;
  const common = {
    url: url + path,
    method: 'POST' as const,
    connections: options.connections,
    duration: options.duration,
    headers,
  };
  if (options.requests === 'template') {
    const bytes = httpRequestBytes(url + path, 'POST', headers);
    const next = options.batch
      ? () => bytes(batchBody())
      : () => bytes(BENCH_ORDER_JSON, ['idempotency-key', nextKey()]);
    return autocannon({ ...common, setupClient: (client) => takeRequestsFrom(client, next) });
  }
  return autocannon({
    ...common,
    requests: [
      {
        setupRequest: (req) =>
          options.batch
            ? { ...req, body: batchBody() }
            : { ...req, body: BENCH_ORDER_JSON, headers: { ...req.headers, 'idempotency-key': nextKey() } },
      },
    ],
  });
}

const round2 = (x: number) => Math.round(x * 100) / 100;

const USAGE = `Usage: npm run bench:ingest -- [options]

Ingest benchmark: interleaved rounds of autocannon against
  a   a bare node:http server that parses the body and does one XADD per request
  b   Surge POST /v1/orders (100 connections by default)
  c   Surge POST /v1/orders:batch, ${BATCH_SIZE} orders per request
  f   fastify + XADD (reference: the framework alone)
  a0  the baseline without auto-pipelining (reference)
Prints req/s, p50/p99, CPU per order (server, its main thread, Redis, load generator) and the
ratios b/a and c/b per round with their medians; writes bench/results/ingest-<date>.{json,md}.

Options:
  --rounds N             interleaved rounds (default 5)
  --duration S           seconds per scenario and round (default 5)
  --warmup S             warm-up seconds per server, once (default 3)
  --connections N        connections for a, a0, f, b (default 100)
  --batch-connections N  connections for c (default 10)
  --scenarios LIST       comma-separated, from a,b,c,f,a0 (default a,b,c)
  --requests MODE        how autocannon makes each request with its fresh key:
                         template (default): the request's bytes from a fixed head, one
                           string concatenation per request (about the cost of a static request);
                         setup-request: autocannon's setupRequest, the request rebuilt field by
                           field (clearly more load generator CPU per request; how the results
                           written before this option existed were made)
  --no-write             print only, write no result files
  -h, --help             this text

It makes its own database and key prefix and removes them afterwards, like the tests:
SURGE_TEST_REDIS_URL (default redis://127.0.0.1:6379) and SURGE_TEST_DATABASE_URL (an admin
URL, default postgres://postgres@127.0.0.1:5432/postgres). SURGE_BENCH_NODE_ARGS passes Node
flags (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") to the server processes.
`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      serve: { type: 'string' },
      rounds: { type: 'string', default: '5' },
      duration: { type: 'string', default: '5' },
      warmup: { type: 'string', default: '3' },
      connections: { type: 'string', default: '100' },
      'batch-connections': { type: 'string', default: '10' },
      scenarios: { type: 'string', default: 'a,b,c' },
      requests: { type: 'string', default: 'template' },
      'no-write': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  if (values.serve) return serve(values.serve);
  const rounds = Number(values.rounds);
  const duration = Number(values.duration);
  const warmup = Number(values.warmup);
  const connections = Number(values.connections);
  const batchConnections = Number(values['batch-connections']);
  const order = values.scenarios.split(',').filter((s): s is Scenario => s in SCENARIOS);
  const requests = values.requests as RequestMode;
  if (!REQUEST_MODES.includes(requests))
    throw new Error(`--requests: expected one of ${REQUEST_MODES.join(', ')}, got ${values.requests}`);

  const loadBefore = loadavg().map(round2);
  const env = await createTestEnv({ SURGE_LOG_LEVEL: 'warn', SURGE_MAX_BACKLOG: '0', SURGE_SHARDS: '4' });
  const redis = new Redis(env.redisUrl);
  const pool = new pg.Pool({ connectionString: env.db.url, max: 1 });
  const figures: Figures[] = [];
  const servers = new Map<Scenario, { child: ChildProcess; url: string }>();
  const serverOf = (s: Scenario) => {
    const server = servers.get(s);
    if (server === undefined) throw new Error(`no server started for scenario ${s}`);
    return server;
  };
  try {
    const { apiKey } = await createClient(pool, 'bench');
    // One server process per scenario, all started up front and warmed up once; they idle
    // (≈ 0 CPU) while another scenario is measured.
    for (const s of order) servers.set(s, await startChild(SCENARIOS[s].kind, env.env));
    const optsOf = (s: Scenario) => ({
      connections: SCENARIOS[s].batch ? batchConnections : connections,
      batch: SCENARIOS[s].batch,
      apiKey,
      requests,
    });
    for (const s of order) {
      const { url } = serverOf(s);
      process.stdout.write(`warm-up ${SCENARIOS[s].label} ${warmup} s\n`);
      await load(url, SCENARIOS[s].path, { ...optsOf(s), duration: warmup });
    }
    // Interleaved rounds (a, b, c, a, b, c, …): drift of the host (other jobs, Redis memory,
    // CPU frequency) hits every scenario alike, and the ratios are taken within a round.
    for (let round = 1; round <= rounds; round++) {
      for (const s of order) {
        const { child, url } = serverOf(s);
        const o = optsOf(s);
        // The server's main thread (its task id is its pid) runs the event loop: the bottleneck.
        const cpu0 = {
          server: processCpu(child.pid),
          main: processCpu(child.pid, child.pid),
          redis: await redisCpuSeconds(redis),
          gen: process.cpuUsage(),
        };
        const t0 = performance.now();
        const r = await load(url, SCENARIOS[s].path, { ...o, duration });
        const wall = (performance.now() - t0) / 1000;
        const gen = process.cpuUsage(cpu0.gen);
        const server1 = processCpu(child.pid);
        const main1 = processCpu(child.pid, child.pid);
        const mainCpu = main1.user + main1.system - cpu0.main.user - cpu0.main.system;
        const serverUser = server1.user - cpu0.server.user;
        const serverCpu = serverUser + server1.system - cpu0.server.system;
        const redisCpu = (await redisCpuSeconds(redis)) - cpu0.redis;
        const genCpu = (gen.user + gen.system) / 1e6;
        const perRequest = o.batch ? BATCH_SIZE : 1;
        // Only answered requests count (2xx: 202, or 207 for a batch): a server that fails fast
        // must not look fast. CPU per order is per order accepted, too.
        const ok = r['2xx'];
        const orders = ok * perRequest || 1;
        const f: Figures = {
          scenario: s,
          round,
          connections: o.connections,
          durationSeconds: duration,
          requestsPerSecond: Math.round(ok / r.duration),
          ordersPerSecond: Math.round((ok * perRequest) / r.duration),
          latencyP50Ms: r.latency.p50,
          latencyP99Ms: r.latency.p99,
          non2xx: r.non2xx,
          errors: r.errors,
          serverCpuUsPerOrder: round2((serverCpu * 1e6) / orders),
          redisCpuUsPerOrder: round2((redisCpu * 1e6) / orders),
          loadGenCpuUsPerOrder: round2((genCpu * 1e6) / orders),
          loadGenCores: round2(genCpu / wall),
          serverCores: round2(serverCpu / wall),
          serverMainThreadUsPerOrder: round2((mainCpu * 1e6) / orders),
          serverSystemShare: round2(1 - serverUser / serverCpu),
        };
        figures.push(f);
        console.log(
          `round ${round} ${SCENARIOS[s].label}: ${f.requestsPerSecond} req/s, ` +
            `${f.ordersPerSecond} orders/s, p50 ${f.latencyP50Ms} ms, ` +
            `p99 ${f.latencyP99Ms} ms, non-2xx ${f.non2xx}, ` +
            `errors ${f.errors}; ` +
            `CPU µs/order server ${f.serverCpuUsPerOrder} (${Math.round(f.serverSystemShare * 100)} % kernel; ` +
            `main thread ${f.serverMainThreadUsPerOrder}), ` +
            `redis ${f.redisCpuUsPerOrder}, load generator ${f.loadGenCpuUsPerOrder} (${f.loadGenCores} cores)`,
        );
      }
    }
    const of = (s: Scenario, round: number) => figures.find((f) => f.scenario === s && f.round === round);
    const ratios = (num: Scenario, den: Scenario) => {
      const out: number[] = [];
      for (let round = 1; round <= rounds; round++) {
        const n = of(num, round);
        const d = of(den, round);
        if (n && d && d.ordersPerSecond > 0) out.push(Number((n.ordersPerSecond / d.ordersPerSecond).toFixed(3)));
      }
      return out;
    };
    const stat = (xs: number[]) => ({
      perRound: xs,
      median: Number(median(xs).toFixed(3)),
      min: Math.min(...xs),
      max: Math.max(...xs),
    });
    const ba = stat(ratios('b', 'a'));
    const ba0 = stat(ratios('b', 'a0'));
    const fa = stat(ratios('f', 'a'));
    const bf = stat(ratios('b', 'f'));
    const cb = stat(ratios('c', 'b'));
    const medianRows = order.map((s) => {
      const fs = figures.filter((f) => f.scenario === s);
      const m = {
        requestsPerSecond: median(fs.map((f) => f.requestsPerSecond)),
        ordersPerSecond: median(fs.map((f) => f.ordersPerSecond)),
        latencyP50Ms: median(fs.map((f) => f.latencyP50Ms)),
        latencyP99Ms: median(fs.map((f) => f.latencyP99Ms)),
        serverCpuUsPerOrder: median(fs.map((f) => f.serverCpuUsPerOrder)),
        serverMainThreadUsPerOrder: median(fs.map((f) => f.serverMainThreadUsPerOrder)),
        redisCpuUsPerOrder: median(fs.map((f) => f.redisCpuUsPerOrder)),
        loadGenCpuUsPerOrder: median(fs.map((f) => f.loadGenCpuUsPerOrder)),
        loadGenCores: median(fs.map((f) => f.loadGenCores)),
      };
      return [s, m] as const;
    });
    const medians = Object.fromEntries(medianRows);
    const redisVersion = /redis_version:(\S+)/.exec(await redis.info('server'))?.[1] ?? '?';
    const machine = {
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model ?? '?',
      totalMemoryMiB: Math.round(totalmem() / 2 ** 20),
      freeMemoryMiB: Math.round(freemem() / 2 ** 20),
      node: process.version,
      redis: redisVersion,
      // Other processes on the host skew every figure: record how busy it was (1, 5, 15 min).
      loadAverageBefore: loadBefore,
      loadAverageAfter: loadavg().map(round2),
    };
    const command = [
      'npm run bench:ingest --',
      `--rounds ${rounds} --duration ${duration} --warmup ${warmup}`,
      `--connections ${connections} --batch-connections ${batchConnections}`,
      ...(values.scenarios !== 'a,b,c' ? [`--scenarios ${values.scenarios}`] : []),
      ...(requests !== 'template' ? [`--requests ${requests}`] : []),
    ].join(' ');
    const summary = {
      date: new Date().toISOString(),
      command,
      requests,
      machine,
      figures,
      medians,
      ratios: {
        surgeOverBaseline: ba,
        batchOrdersOverSingleOrders: cb,
        ...(ba0.perRound.length ? { surgeOverPlainBaseline: ba0 } : {}),
        ...(fa.perRound.length ? { fastifyOverBaseline: fa, surgeOverFastify: bf } : {}),
      },
      goals: GOALS,
    };
    const fmt = (r: typeof ba) => `median ${r.median} (min ${r.min}, max ${r.max}; rounds ${r.perRound.join(', ')})`;
    if (ba.perRound.length) console.log(`ratio b/a (req/s): ${fmt(ba)} (goal ${GOALS.surgeOverBaseline})`);
    if (cb.perRound.length) console.log(`ratio c/b (orders/s): ${fmt(cb)} (goal ${GOALS.batchOrdersOverSingleOrders})`);
    if (ba0.perRound.length) console.log(`ratio b/a0 (req/s, reference): ${fmt(ba0)}`);
    if (fa.perRound.length) console.log(`ratio f/a (req/s, reference: the framework alone): ${fmt(fa)}`);
    if (bf.perRound.length)
      console.log(`ratio b/f (req/s, reference: Surge's work on top of the framework): ${fmt(bf)}`);
    console.log(
      `machine: ${machine.cpus} × ${machine.cpuModel}, ` +
        `node ${machine.node}, redis ${machine.redis}; ` +
        `load average ${machine.loadAverageBefore.join(' ')} before, ` +
        `${machine.loadAverageAfter.join(' ')} after`,
    );
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
        `Machine: ${machine.cpus} × ${machine.cpuModel}, ` +
          `${machine.totalMemoryMiB} MiB RAM, Node ${machine.node}, ` +
          `Redis ${machine.redis} (same host); ` +
          `load average (1/5/15 min) ${machine.loadAverageBefore.join(' / ')} before, ` +
          `${machine.loadAverageAfter.join(' / ')} after.`,
        '',
        `Rounds are interleaved (${order.join(', ')}, ` +
          `${order.join(', ')}, …), ${duration} s each after one ${warmup} s warm-up per server; ` +
          'ratios are taken within a round.',
        requests === 'template'
          ? "Requests: each one's bytes made from a fixed head with a fresh Idempotency-Key (`--requests template`, " +
            'the default; results written before it existed used `setup-request`, ' +
            'which costs the load generator clearly more CPU per request).'
          : 'Requests: rebuilt by autocannon for each request through `setupRequest` (`--requests setup-request`, ' +
            'as in the results written before `--requests` existed).',
        'CPU columns: ' +
          'CPU time per order of the server process (its kernel share in the log) ' +
          'and of its main thread (the event loop), ' +
          'of Redis (INFO cpu: the whole server, so other clients of a shared Redis count too), ' +
          'and of the load generator (autocannon, one thread).',
        '',
        '| Round | Scenario | Conns | req/s | orders/s | ' +
          'p50 ms | p99 ms | non-2xx | errors | server µs/order | ' +
          'main thread µs/order | Redis µs/order | loadgen µs/order | loadgen cores |',
        '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
        ...figures.map(
          (f) =>
            `| ${f.round} | ${SCENARIOS[f.scenario].label} | ` +
            `${f.connections} | ${f.requestsPerSecond} | ${f.ordersPerSecond} | ${f.latencyP50Ms} | ` +
            `${f.latencyP99Ms} | ${f.non2xx} | ${f.errors} | ` +
            `${f.serverCpuUsPerOrder} | ${f.serverMainThreadUsPerOrder} | ` +
            `${f.redisCpuUsPerOrder} | ${f.loadGenCpuUsPerOrder} | ${f.loadGenCores} |`,
        ),
        '',
        '| Medians | req/s | orders/s | p50 ms | ' +
          'p99 ms | server µs/order | main thread µs/order | Redis µs/order | loadgen µs/order |',
        '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
        ...medianRows.map(([s, m]) => {
          return (
            `| ${SCENARIOS[s].label} | ${m.requestsPerSecond} | ` +
            `${m.ordersPerSecond} | ${m.latencyP50Ms} | ` +
            `${m.latencyP99Ms} | ${m.serverCpuUsPerOrder} | ` +
            `${m.serverMainThreadUsPerOrder} | ${m.redisCpuUsPerOrder} | ${m.loadGenCpuUsPerOrder} |`
          );
        }),
        '',
        ...(ba.perRound.length ? [`Ratio b/a (req/s): **${fmt(ba)}** (goal ${GOALS.surgeOverBaseline}).`, ''] : []),
        ...(cb.perRound.length
          ? [`Ratio c/b (orders/s): **${fmt(cb)}** (goal ${GOALS.batchOrdersOverSingleOrders}).`, '']
          : []),
        ...(ba0.perRound.length
          ? [`Ratio b/a0 (req/s; reference only, a0 writes one XADD per socket write): ${fmt(ba0)}.`, '']
          : []),
        ...(fa.perRound.length
          ? [
              `Ratio f/a (req/s; reference only, the framework alone): ${fmt(fa)}.`,
              '',
              `Ratio b/f (req/s; reference only, Surge's work on top of the framework): ${fmt(bf)}.`,
              '',
            ]
          : []),
      ].join('\n');
      writeFileSync(`${stem}.md`, md);
      console.log(`wrote ${stem}.json and ${stem}.md`);
    }
  } finally {
    for (const { child } of servers.values()) await stopServer(child);
    redis.disconnect();
    await pool.end();
    await env.cleanup();
  }
}

await main().catch((e: unknown) => {
  // A bad option is one line and exit 2, not a stack trace.
  if ((e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
    process.stderr.write(`bench:ingest: ${(e as Error).message} (--help for the options)\n`);
    process.exit(2);
  }
  throw e;
});
