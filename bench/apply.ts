// bench:apply — how fast a backlog of orders reaches PostgreSQL.
//
// Preloads N orders (1–3 items each) into the shard streams, starts a worker and times until the
// backlog is applied. In the same run it measures (a) a raw COPY of the same rows into fresh
// tables with the same columns and indexes — the physical limit on this machine — and (b) a
// BullMQ job-per-order worker doing one INSERT per job, what a team would build otherwise.
// Prints orders/s for each and the ratios; writes bench/results/apply-<date>.{json,md}.
//
// The three are measured in interleaved rounds (surge, raw, bull, surge, raw, bull, …) and the
// ratios are the medians of the per-round ratios: the machine is shared, and a neighbour's burst
// then hits one round, not a whole side of the comparison.
//
//   npm run bench:apply -- [--orders 100000] [--bull-orders 10000] [--rounds 3] [--placement threads|main]
//                          [--batch-size N] [--linger MS] [--threads N] [--pool N] [--shards N]
//                          [--bull-concurrency N] [--only surge,raw,bull] [--no-save] [--label TEXT]
//                          [--b DIR]
//   --b DIR also runs the worker of another build (DIR = its dist/, e.g. a checkout of main) in
//   every round, right before or after this one's (alternating), and reports this ÷ that: an A/B
//   of the apply step in the same run. --only takes a comma-separated list.
//   npm run bench:apply -- --trickle RATE [--seconds 10] [--linger MS] …   (latency at a steady rate:
//                          orders arrive while the worker runs; prints end-to-end p50/p99 and batches)
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { Queue, Worker } from 'bullmq';
import pg from 'pg';
import copyStreams from 'pg-copy-streams';
import { loadConfig } from '../common/config.js';
import { shardFor, streamKey } from '../common/keys.js';
import { encodeEntry } from '../common/entry.js';
import { canonicalOrderJson, type Order } from '../common/order.js';
import { PACKAGE_ROOT } from '../common/paths.js';
import { createRedis } from '../common/redis.js';
import { ensureGroups } from '../common/streams.js';
import {
  createTestDatabase,
  createTestEnv,
  deleteRedisPrefix,
  TEST_REDIS_URL,
  uniquePrefix,
} from '../devkit/scratch.js';
import { backlog } from '../devkit/backlog.js';
import { copyBuffer, copyRow } from '../workers/copy.js';
import { type PgPlacement, startWorker } from '../workers/worker.js';
import { checkScriptArgs } from './commands.js';
import { cpuSeconds } from './cpu.js';
import { median } from './stats.js';

checkScriptArgs('apply');
const { values: args } = parseArgs({
  options: {
    orders: { type: 'string', default: '100000' },
    rounds: { type: 'string', default: '3' },
    'bull-orders': { type: 'string', default: '10000' },
    placement: { type: 'string' },
    'batch-size': { type: 'string' },
    linger: { type: 'string' },
    threads: { type: 'string' },
    pool: { type: 'string' },
    shards: { type: 'string', default: '4' },
    'bull-concurrency': { type: 'string', default: '8' },
    only: { type: 'string' },
    'no-save': { type: 'boolean', default: false },
    label: { type: 'string', default: '' },
    trickle: { type: 'string' },
    seconds: { type: 'string', default: '10' },
    b: { type: 'string' },
  },
});

const N = Number(args.orders);
const BULL_N = Math.min(N, Number(args['bull-orders']));
const SHARDS = Number(args.shards);
const CLIENTS = 4;
const SKUS = 1000;
const STOCKED = 100; // SKUs with an inventory row (stock-checked, never running out)
const only = args.only === undefined ? undefined : new Set(args.only.split(','));
type StartWorker = typeof startWorker;
/** The other build's startWorker (--b), or undefined. */
const startWorkerB: StartWorker | undefined =
  args.b === undefined
    ? undefined
    : ((await import(pathToFileURL(resolve(args.b, 'workers', 'worker.js')).href)) as { startWorker: StartWorker })
        .startWorker;
/**
 * The other build's config parser (--b): its worker gets the same settings read with its own
 * defaults and accepted values, not this build's.
 */
const loadConfigB: typeof loadConfig | undefined =
  args.b === undefined
    ? undefined
    : ((await import(pathToFileURL(resolve(args.b, 'common', 'config.js')).href)) as { loadConfig: typeof loadConfig })
        .loadConfig;

interface QueuedOrder {
  client: string;
  key: string;
  order: Order;
}

/** mulberry32: a small seeded PRNG with 32-bit integer arithmetic (every run sees the same orders). */
function prng(seed: number): (k: number) => number {
  let a = seed | 0;
  return (k) => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * k);
  };
}

function makeOrders(n: number): QueuedOrder[] {
  const rnd = prng(7);
  return Array.from({ length: n }, (_, i) => ({
    client: `client-${i % CLIENTS}`,
    key: `bench-${i}-${rnd(1e9)}`,
    order: {
      customer_id: `customer-${rnd(50000)}`,
      currency: 'EUR',
      order_id: `order-${i}`,
      placed_at: new Date(1_700_000_000_000 + i * 1000).toISOString(),
      items: Array.from({ length: 1 + rnd(3) }, () => ({
        sku: `sku-${rnd(SKUS)}`,
        qty: 1 + rnd(3),
        unit_price_cents: 100 + rnd(10000),
      })),
    },
  }));
}

function machine() {
  const cpus = os.cpus();
  const version = (cmd: string, a: string[]) => {
    try {
      return execFileSync(cmd, a, { encoding: 'utf8' }).trim().split('\n')[0];
    } catch {
      return 'unknown';
    }
  };
  return {
    cpu: cpus[0]?.model ?? 'unknown',
    cores: cpus.length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    loadavg: os.loadavg().map((x) => Math.round(x * 100) / 100),
    node: process.version,
    platform: `${os.platform()} ${os.release()}`,
    postgres: version('psql', ['--version']),
    redis: version('redis-server', ['--version']),
  };
}

/**
 * CPU seconds (user + system) the given processes have used, from /proc: PostgreSQL runs on this
 * machine, so its backends' CPU is readable. Undefined where /proc is not (another OS, a remote
 * server) — the figure is then left out of the report.
 */
function procCpuSeconds(pids: readonly number[]): number | undefined {
  const total = pids.reduce((a, pid) => a + cpuSeconds(pid), 0);
  return Number.isNaN(total) ? undefined : total;
}

async function timeUntil(probe: () => Promise<boolean>, intervalMs = 20): Promise<void> {
  while (!(await probe())) await new Promise((r) => setTimeout(r, intervalMs));
}

async function benchSurge(
  orders: QueuedOrder[],
  trickleRate?: number,
  start: StartWorker = startWorker,
  readConfig: typeof loadConfig = loadConfig,
) {
  const overrides: Record<string, string> = { SURGE_SHARDS: String(SHARDS), SURGE_LOG_LEVEL: 'warn' };
  if (args['batch-size']) overrides.SURGE_BATCH_SIZE = args['batch-size'];
  if (args.linger) overrides.SURGE_BATCH_LINGER_MS = args.linger;
  if (args.threads) overrides.SURGE_WORKER_THREADS = args.threads;
  if (args.pool) overrides.SURGE_PG_POOL_SIZE = args.pool;
  const scratch = await createTestEnv(overrides);
  const { db, prefix, cleanup } = scratch;
  const config = readConfig(scratch.env);
  const redis = createRedis(config);
  const admin = new pg.Client({ connectionString: db.url });
  await admin.connect();
  try {
    await ensureGroups(redis, prefix, SHARDS);
    await admin.query(
      'INSERT INTO inventory (sku, available) SELECT $1 || g, 1000000000 FROM generate_series(0, $2 - 1) AS g',
      ['sku-', STOCKED],
    );
    const send = async (slice: QueuedOrder[]) => {
      const pipe = redis.pipeline();
      for (const o of slice)
        pipe.xadd(
          streamKey(prefix, shardFor(o.client, o.key, SHARDS)),
          '*',
          ...encodeEntry({ clientId: o.client, idempotencyKey: o.key, canonical: canonicalOrderJson(o.order) }),
        );
      await pipe.exec();
    };
    if (trickleRate === undefined) for (let i = 0; i < orders.length; i += 2000) await send(orders.slice(i, i + 2000));
    // Timed from the worker's start (threads spawning included) to the last ack.
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    const worker = await start(config, { pgPlacement: args.placement as PgPlacement | undefined });
    if (trickleRate !== undefined) {
      // Steady arrivals: every 10 ms, the orders due by now.
      const tStart = performance.now();
      let sent = 0;
      while (sent < orders.length) {
        const due = Math.min(orders.length, Math.floor(((performance.now() - tStart) / 1000) * trickleRate));
        if (due > sent) await send(orders.slice(sent, due));
        sent = due;
        await new Promise((r) => setTimeout(r, 10));
      }
    }
    await timeUntil(async () => (await backlog(redis, prefix, SHARDS)) === 0);
    const seconds = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    // The worker's own PostgreSQL backends (they live from its start to its stop).
    const backends = (
      await admin.query<{ pid: number }>(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'surge-worker'",
      )
    ).rows;
    const pgCpu = procCpuSeconds(backends.map((b) => b.pid));
    const scraped = await (await fetch(`http://127.0.0.1:${worker.port}/metrics`)).text();
    const batches = Number(/^surge_apply_batch_size_count\S* (\S+)$/m.exec(scraped)?.[1] ?? 0);
    await worker.stop();
    const latency = (
      await admin.query<{ p50: number; p99: number; max: number }>(
        `SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50, percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99, max(ms) AS max
         FROM (SELECT extract(epoch FROM applied_at - received_at) * 1000 AS ms FROM orders) AS t`,
      )
    ).rows[0];
    const applied = Number((await admin.query('SELECT count(*) AS n FROM orders')).rows[0].n);
    if (applied !== orders.length) throw new Error(`surge applied ${applied} of ${orders.length}`);
    return {
      orders: orders.length,
      seconds,
      ordersPerSecond: orders.length / seconds,
      batches,
      /** CPU time of this process (main thread + piscina threads; trickle mode includes the sender). */
      nodeCpuSeconds: round((cpu.user + cpu.system) / 1e6),
      /** CPU time of the worker's PostgreSQL backends (local server only). */
      postgresCpuSeconds: pgCpu === undefined ? undefined : round(pgCpu),
      endToEndMs: latency
        ? { p50: Math.round(latency.p50), p99: Math.round(latency.p99), max: Math.round(latency.max) }
        : undefined,
      trickleRate,
      settings: {
        placement: args.placement ?? 'default',
        batchSize: config.batchSize,
        lingerMs: config.batchLingerMs,
        threads: config.workerThreads,
        pgPoolSize: config.pgPoolSize,
        shards: SHARDS,
      },
    };
  } finally {
    await admin.end();
    redis.disconnect();
    await cleanup();
  }
}

async function benchRawCopy(orders: QueuedOrder[]) {
  const db = await createTestDatabase();
  const client = new pg.Client({ connectionString: db.url });
  await client.connect();
  try {
    // Same columns, constraints and indexes as orders/order_items; no identity, no triggers, no staging.
    await client.query(
      'CREATE TABLE raw_orders (LIKE orders INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)',
    );
    await client.query(
      'CREATE TABLE raw_items (LIKE order_items INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)',
    );
    const t0 = performance.now();
    const now = new Date().toISOString();
    const orderRows: string[] = [];
    const itemRows: string[] = [];
    orders.forEach((o, i) => {
      const total = o.order.items.reduce((s, x) => s + x.qty * x.unit_price_cents, 0);
      orderRows.push(
        copyRow([
          String(i + 1),
          o.client,
          o.key,
          o.order.order_id,
          o.order.customer_id,
          o.order.currency,
          String(total),
          'applied',
          null,
          o.order.placed_at,
          null,
          now,
          now,
          'bench',
          `${i}-0`,
        ]),
      );
      o.order.items.forEach((x, j) => {
        itemRows.push(copyRow([String(i + 1), String(j + 1), x.sku, String(x.qty), String(x.unit_price_cents)]));
      });
    });
    await pipeline(
      Readable.from([copyBuffer(orderRows).buffer]),
      client.query(copyStreams.from('COPY raw_orders FROM STDIN')),
    );
    await pipeline(
      Readable.from([copyBuffer(itemRows).buffer]),
      client.query(copyStreams.from('COPY raw_items FROM STDIN')),
    );
    const seconds = (performance.now() - t0) / 1000;
    return { orders: orders.length, seconds, ordersPerSecond: orders.length / seconds };
  } finally {
    await client.end();
    await db.drop();
  }
}

async function benchBull(orders: QueuedOrder[], concurrency: number) {
  const db = await createTestDatabase();
  const pool = new pg.Pool({ connectionString: db.url, max: concurrency });
  const prefix = uniquePrefix();
  const url = new URL(TEST_REDIS_URL);
  const connection = { host: url.hostname, port: Number(url.port || 6379), maxRetriesPerRequest: null };
  const name = 'orders';
  const queue = new Queue(name, { connection, prefix: `${prefix}:bull` });
  // One statement per job: the order and its items, idempotent on (client, key). No stock step.
  const sql = `WITH o AS (
      INSERT INTO orders (client_id, idempotency_key, order_id, customer_id, currency, total_cents, status, placed_at, received_at, stream, entry_id)
      VALUES ($1, $2, $3, $4, $5, $6, 'applied', $7, now(), 'bullmq', $8)
      ON CONFLICT (client_id, idempotency_key) DO NOTHING RETURNING id)
    INSERT INTO order_items (order_pk, line, sku, qty, unit_price_cents)
    SELECT o.id, i.line, i.sku, i.qty, i.price FROM o, unnest($9::text[], $10::int[], $11::bigint[]) WITH ORDINALITY AS i(sku, qty, price, line)`;
  try {
    for (let i = 0; i < orders.length; i += 1000) {
      await queue.addBulk(
        orders
          .slice(i, i + 1000)
          .map((o) => ({ name: 'order', data: o, opts: { removeOnComplete: true, attempts: 3 } })),
      );
    }
    let done = 0;
    const t0 = performance.now();
    const worker = new Worker<QueuedOrder>(
      name,
      async (job) => {
        const { client, key, order } = job.data;
        const total = order.items.reduce((s, x) => s + x.qty * x.unit_price_cents, 0);
        await pool.query(sql, [
          client,
          key,
          order.order_id ?? null,
          order.customer_id,
          order.currency,
          total,
          order.placed_at ?? null,
          job.id,
          order.items.map((x) => x.sku),
          order.items.map((x) => x.qty),
          order.items.map((x) => x.unit_price_cents),
        ]);
      },
      { connection, prefix: `${prefix}:bull`, concurrency },
    );
    worker.on('completed', () => {
      done++;
    });
    await timeUntil(async () => done >= orders.length);
    const seconds = (performance.now() - t0) / 1000;
    await worker.close();
    const applied = Number((await pool.query('SELECT count(*) AS n FROM orders')).rows[0].n);
    if (applied !== orders.length) throw new Error(`bullmq applied ${applied} of ${orders.length}`);
    return { orders: orders.length, seconds, ordersPerSecond: orders.length / seconds, concurrency };
  } finally {
    await queue.close();
    await pool.end();
    await deleteRedisPrefix(TEST_REDIS_URL, prefix);
    await db.drop();
  }
}

const round = (x: number) => Math.round(x * 100) / 100;
const trickle = args.trickle === undefined ? undefined : Number(args.trickle);
const rounds = trickle === undefined ? Math.max(1, Number(args.rounds)) : 1;
const orders = makeOrders(trickle === undefined ? N : Math.round(trickle * Number(args.seconds)));
const date = new Date().toISOString();
const m = machine();
const result: Record<string, unknown> = {
  date,
  label: args.label,
  machine: m,
  orders: N,
  rounds,
};
const run = (what: string) => trickle === undefined && (!only || only.has(what));
type Surge = Awaited<ReturnType<typeof benchSurge>>;
type Raw = Awaited<ReturnType<typeof benchRawCopy>>;
type Bull = Awaited<ReturnType<typeof benchBull>>;
const perRound: Array<{
  surge?: Surge;
  /** The --b build's worker, same round. */
  surgeB?: Surge;
  rawCopy?: Raw;
  bullmq?: Bull;
  surgeVsB?: number;
  surgeBVsRawCopy?: number;
  surgeVsRawCopy?: number;
  surgeVsBullmq?: number;
  rawCopyVsBullmq?: number;
}> = [];
for (let r = 0; r < rounds; r++) {
  const runA = () => (trickle !== undefined || run('surge') ? benchSurge(orders, trickle) : undefined);
  const runB = () => (startWorkerB ? benchSurge(orders, trickle, startWorkerB, loadConfigB) : undefined);
  // Alternate which build goes first, so a drift in the machine's load hits both alike.
  let surge: Surge | undefined;
  let surgeB: Surge | undefined;
  if (r % 2 === 0) {
    surge = await runA();
    surgeB = await runB();
  } else {
    surgeB = await runB();
    surge = await runA();
  }
  const rawCopy = run('raw') ? await benchRawCopy(orders) : undefined;
  const bullmq = run('bull') ? await benchBull(orders.slice(0, BULL_N), Number(args['bull-concurrency'])) : undefined;
  perRound.push({
    surge,
    surgeB,
    rawCopy,
    bullmq,
    surgeVsB: surge && surgeB ? round(surge.ordersPerSecond / surgeB.ordersPerSecond) : undefined,
    surgeBVsRawCopy: surgeB && rawCopy ? round(surgeB.ordersPerSecond / rawCopy.ordersPerSecond) : undefined,
    surgeVsRawCopy: surge && rawCopy ? round(surge.ordersPerSecond / rawCopy.ordersPerSecond) : undefined,
    surgeVsBullmq: surge && bullmq ? round(surge.ordersPerSecond / bullmq.ordersPerSecond) : undefined,
    rawCopyVsBullmq: rawCopy && bullmq ? round(rawCopy.ordersPerSecond / bullmq.ordersPerSecond) : undefined,
  });
}
result.perRound = perRound;
const med = (pick: (x: (typeof perRound)[number]) => number | undefined): number | undefined => {
  const xs = perRound.map(pick).filter((x): x is number => x !== undefined);
  return xs.length ? round(median(xs)) : undefined;
};
const medians = {
  surgeOrdersPerSecond: med((x) => x.surge?.ordersPerSecond),
  surgeBOrdersPerSecond: med((x) => x.surgeB?.ordersPerSecond),
  surgeVsB: med((x) => x.surgeVsB),
  surgeBVsRawCopy: med((x) => x.surgeBVsRawCopy),
  rawCopyOrdersPerSecond: med((x) => x.rawCopy?.ordersPerSecond),
  bullmqOrdersPerSecond: med((x) => x.bullmq?.ordersPerSecond),
  surgeVsRawCopy: med((x) => x.surgeVsRawCopy),
  surgeVsBullmq: med((x) => x.surgeVsBullmq),
  rawCopyVsBullmq: med((x) => x.rawCopyVsBullmq),
};
result.median = medians;
const machineLoadAfter = os.loadavg().map((x) => round(x));
result.machineLoadAfter = machineLoadAfter;

const line = (name: string, r?: { orders: number; seconds: number; ordersPerSecond: number }) =>
  r
    ? `${name.padEnd(28)} ${String(r.orders).padStart(7)} orders  ` +
      `${r.seconds.toFixed(2).padStart(7)} s  ${Math.round(r.ordersPerSecond).toString().padStart(7)} orders/s`
    : '';
const ratioLine = (
  name: string,
  key: 'surgeVsRawCopy' | 'surgeVsBullmq' | 'rawCopyVsBullmq' | 'surgeVsB' | 'surgeBVsRawCopy',
  goal: string,
) =>
  medians[key] === undefined
    ? ''
    : `${name} = ${medians[key]} median (rounds: ${perRound.map((x) => x[key]).join(', ')})${goal}`;
const text = [
  `bench:apply ${args.label} — ${m.cores} × ${m.cpu}, ` +
    `node ${m.node}, ${m.postgres}, ${m.redis}, ` +
    `load ${m.loadavg.join(' ')} before, ${machineLoadAfter.join(' ')} after`,
  ...perRound.flatMap((x, i) => [
    rounds > 1 ? `round ${i + 1}` : '',
    ...(
      [
        ['surge', x.surge],
        [`surge B (${args.b})`, x.surgeB],
      ] as const
    ).flatMap(([name, sr]) => {
      if (!sr) return [];
      return [
        `${line(trickle === undefined ? String(name) : `${name} at ${trickle}/s`, sr)}  (${JSON.stringify(sr.settings)})`,
        `${name}: ${sr.batches} batches, CPU µs/order: ` +
          `worker ${((sr.nodeCpuSeconds * 1e6) / sr.orders).toFixed(1)}` +
          (sr.postgresCpuSeconds === undefined
            ? ''
            : `, its PostgreSQL backends ${((sr.postgresCpuSeconds * 1e6) / sr.orders).toFixed(1)}`) +
          `; end-to-end ms ${JSON.stringify(sr.endToEndMs)}`,
      ];
    }),
    line('raw COPY (physical limit)', x.rawCopy),
    x.bullmq ? `${line(`bullmq job/order (c=${x.bullmq.concurrency})`, x.bullmq)}` : '',
  ]),
  ratioLine('surge / raw COPY', 'surgeVsRawCopy', ' (goal ≥ 0.7)'),
  ratioLine('surge B / raw COPY', 'surgeBVsRawCopy', ''),
  ratioLine('surge / surge B', 'surgeVsB', ' (this build ÷ the --b build)'),
  ratioLine('surge / bullmq  ', 'surgeVsBullmq', ' (goal ≥ 15)'),
  ratioLine('raw COPY / bullmq', 'rawCopyVsBullmq', ' (the ceiling of surge / bullmq on this machine)'),
]
  .filter(Boolean)
  .join('\n');
console.log(text);

if (!args['no-save']) {
  const dir = join(PACKAGE_ROOT, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const stamp = date.slice(0, 10);
  const command = `npm run bench:apply -- ${process.argv.slice(2).join(' ')}`.trim();
  writeFileSync(join(dir, `apply-${stamp}.json`), `${JSON.stringify({ command, ...result }, null, 2)}\n`);
  writeFileSync(
    join(dir, `apply-${stamp}.md`),
    `# bench:apply ${stamp}\n\nCommand: \`${command}\`\n\n\`\`\`\n${text}\n\`\`\`\n`,
  );
  console.log(`saved bench/results/apply-${stamp}.{json,md}`);
}
process.exit(0);
