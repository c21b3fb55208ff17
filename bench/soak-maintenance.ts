// Soak: the real stack — `surge ingest`, `surge work` and `surge maintenance` as child processes —
// under a steady open-model load sent over HTTP (POST /v1/orders). Every `--sample-seconds` it
// records Redis memory of this run's keys by class (streams, idempotency records, BullMQ, other),
// Σ XLEN, applied orders and the RSS of each process, then reports whether they stay flat.
//
//   npm run build && node dist/cli/surge.js bench soak-maintenance --minutes 30 --rate 300 --out soak.md
//
// Needs the machine's Redis and PostgreSQL; uses its own database and key prefix, removed at the end.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { createClient } from '../common/clients.js';
import { loadConfig } from '../common/config.js';
import { createPool } from '../common/db.js';
import { allStreamKeys } from '../common/keys.js';
import { PACKAGE_ROOT } from '../common/paths.js';
import { bullPrefix, EVENTS_MAX_LEN, KEEP_COMPLETED, MAINTENANCE_QUEUE } from '../maintenance/queues.js';
import { freePort } from '../common/net.js';
import { waitFor } from '../devkit/wait.js';
import { checkScriptArgs, numberOption } from './commands.js';
import { type MergedResult, startLoad } from './generators.js';
import { rssOfPid, scratch, stopChild } from './target.js';
import { DEFAULT_WORKLOAD } from './workload.js';

checkScriptArgs('soak-maintenance');
const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '30' },
    rate: { type: 'string', default: '300' },
    'sample-seconds': { type: 'string', default: '10' },
    'maintenance-interval-ms': { type: 'string', default: '5000' },
    'record-ttl-seconds': { type: 'string', default: '300' },
    shards: { type: 'string', default: '4' },
    connections: { type: 'string', default: '16' },
    out: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});

const USAGE = `surge bench soak-maintenance [options]
  --minutes <n>                  length of the load (default 30)
  --rate <n>                     orders per second, open model (default 300)
  --sample-seconds <n>           sampling interval (default 10)
  --maintenance-interval-ms <n>  SURGE_MAINTENANCE_INTERVAL_MS of the run (default 5000)
  --record-ttl-seconds <n>       SURGE_IDEMPOTENCY_TTL_SECONDS and SURGE_OUTCOME_RETENTION_SECONDS of the
                                 run (default 300, so records and outcome streams plateau within the run;
                                 production defaults 86400 and 3600)
  --shards <n>                   SURGE_SHARDS (default 4)
  --connections <n>              HTTP keep-alive connections of the load generator (default 16)
  --out <file.md>                also write the report there`;

const num = (name: keyof typeof values, min: number) => numberOption(values, name, min, USAGE);

const CLI = join(PACKAGE_ROOT, 'dist', 'cli', 'surge.js');
const ROLES = ['ingest', 'work', 'maintenance'] as const;
type Role = (typeof ROLES)[number];
const KEY_CLASSES = ['streams', 'records', 'bullmq', 'other'] as const;
type KeyClass = (typeof KEY_CLASSES)[number];

interface Sample {
  t: number;
  accepted: number;
  failed: number;
  applied: number;
  xlen: number;
  /** Σ MEMORY USAGE of this run's keys, by class (the Redis server is shared). */
  bytes: Record<KeyClass, number>;
  recordKeys: number;
  /** The maintenance queue's completed history and events stream (capped at 100 and ~1,000). */
  bullCompleted: number;
  bullEvents: number;
  /** `used_memory` of the whole shared server. */
  usedMemory: number;
  rss: Record<Role, number>;
}

/** Which class a key of this run belongs to: shard streams and DLQs, idempotency records, BullMQ, the rest. */
function keyClass(prefix: string, key: string): KeyClass {
  if (key.startsWith(`${bullPrefix({ redisPrefix: prefix })}:`)) return 'bullmq';
  const rest = key.slice(prefix.length + 1);
  if (/^\{s\d+\}:idem:/.test(rest)) return 'records';
  if (/^\{s\d+\}:(orders|dlq)$/.test(rest)) return 'streams';
  return 'other';
}

async function memoryByClass(
  redis: Redis,
  prefix: string,
): Promise<{ bytes: Record<KeyClass, number>; recordKeys: number }> {
  const bytes: Record<KeyClass, number> = { streams: 0, records: 0, bullmq: 0, other: 0 };
  let recordKeys = 0;
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length === 0) continue;
    const p = redis.pipeline();
    for (const k of keys) p.memory('USAGE', k, 'SAMPLES', 0);
    const usage = (await p.exec()) ?? [];
    keys.forEach((k, i) => {
      const c = keyClass(prefix, k);
      bytes[c] += Number(usage[i]?.[1] ?? 0); // null: the key expired between SCAN and MEMORY USAGE
      if (c === 'records') recordKeys++;
    });
  } while (cursor !== '0');
  return { bytes, recordKeys };
}

async function ready(url: string, child: ChildProcess, role: Role): Promise<void> {
  await waitFor(
    `${role} /readyz`,
    async () => {
      if (child.exitCode !== null) throw new Error(`${role} exited with ${child.exitCode}`);
      return (await fetch(url).catch(() => undefined))?.ok;
    },
    { timeoutMs: 60_000, intervalMs: 200 },
  );
}

async function main(): Promise<void> {
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const minutes = num('minutes', 0.1);
  const rate = num('rate', 1);
  const sampleMs = num('sample-seconds', 1) * 1000;
  const ttl = num('record-ttl-seconds', 60);
  const shards = num('shards', 1);
  const connections = num('connections', 1);
  const s = await scratch({ REDIS_URL: process.env.REDIS_URL }, false);
  if (!s.databaseUrl) throw new Error('the soak needs PostgreSQL on 127.0.0.1:5432 (user postgres)');
  const databaseUrl = s.databaseUrl;
  const prefix = s.prefix;
  const pool = createPool(databaseUrl, { max: 1, applicationName: 'surge-soak' });
  const redis = new Redis(s.redisUrl);
  const children = new Map<Role, ChildProcess>();
  const exits = new Map<Role, string>();
  const samples: Sample[] = [];
  const loadAvg = { start: loadavg()[0] ?? 0, end: 0 };
  let load: MergedResult | undefined;
  let drained = false;
  let afterDrain: Sample | undefined;
  try {
    const apiKey = (await createClient(pool, 'soak')).apiKey;
    const ports = { ingest: await freePort(), work: await freePort(), maintenance: await freePort() };
    const env: Record<string, string> = {
      ...(process.env as Record<string, string>),
      DATABASE_URL: databaseUrl,
      REDIS_URL: s.redisUrl,
      SURGE_REDIS_PREFIX: prefix,
      SURGE_SHARDS: String(shards),
      SURGE_LISTEN_HOST: '127.0.0.1',
      SURGE_INGEST_PORT: String(ports.ingest),
      SURGE_INGEST_METRICS_PORT: '0',
      SURGE_WORKER_METRICS_PORT: String(ports.work),
      SURGE_MAINTENANCE_METRICS_PORT: String(ports.maintenance),
      SURGE_MAINTENANCE_INTERVAL_MS: String(values['maintenance-interval-ms']),
      SURGE_RETENTION_INTERVAL_MS: '60000',
      SURGE_IDEMPOTENCY_TTL_SECONDS: String(ttl),
      // Outcome streams are trimmed by age: a retention longer than the run would show them growing.
      SURGE_OUTCOME_RETENTION_SECONDS: String(ttl),
      SURGE_LOG_LEVEL: 'warn',
    };
    const config = loadConfig(env); // a bad option stops here with the variable's name
    for (const role of ROLES) {
      const child = spawn(process.execPath, [CLI, role], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      for (const stream of [child.stdout, child.stderr]) {
        stream?.setEncoding('utf8');
        stream?.on('data', (d: string) => {
          for (const l of d.split('\n')) if (l.trim()) console.error(`${role.padEnd(11)}| ${l}`);
        });
      }
      child.once('exit', (code, signal) => exits.set(role, signal ?? String(code)));
      children.set(role, child);
      await ready(`http://127.0.0.1:${ports[role]}/readyz`, child, role);
    }
    const ingestUrl = `http://127.0.0.1:${ports.ingest}`;
    console.error(`stack up (prefix ${prefix}); ${rate} orders/s for ${minutes} min, records live ${ttl} s`);

    let accepted = 0;
    let failed = 0;
    const durationMs = Math.round(minutes * 60_000);
    const run = startLoad(
      {
        url: ingestUrl,
        path: '/v1/orders',
        apiKey,
        runKey: `soak-${randomBytes(3).toString('hex')}`,
        phases: [{ rate, durationMs }],
        maxRequests: Math.ceil((rate * durationMs) / 1000) + 1,
        connections,
        maxInFlight: 20_000,
        timeoutMs: 10_000,
        duplicateFraction: 0,
        retry: { max: 0, baseDelayMs: 50, maxDelayMs: 1000 },
        workload: { ...DEFAULT_WORKLOAD },
      },
      {
        generators: 1,
        seed: 42,
        onTick: (tick) => {
          accepted += tick.accepted;
          failed += tick.failed;
        },
      },
    );
    let loadDone = false;
    const loadResult = run.result.finally(() => {
      loadDone = true;
    });
    const started = Date.now();
    const takeSample = async (): Promise<Sample> => {
      const queue = `${bullPrefix(config)}:${MAINTENANCE_QUEUE}`;
      const [mem, info, xlens, applied, bullCompleted, bullEvents] = await Promise.all([
        memoryByClass(redis, prefix),
        redis.info('memory'),
        Promise.all(allStreamKeys(prefix, config.shards).map((k) => redis.xlen(k))),
        pool.query<{ n: string }>('SELECT count(*) AS n FROM orders'),
        redis.zcard(`${queue}:completed`),
        redis.xlen(`${queue}:events`),
      ]);
      const sample: Sample = {
        t: Math.round((Date.now() - started) / 1000),
        accepted,
        failed,
        applied: Number(applied.rows[0]?.n ?? 0),
        xlen: xlens.reduce((a, b) => a + b, 0),
        ...mem,
        bullCompleted,
        bullEvents,
        usedMemory: Number(/used_memory:(\d+)/.exec(info)?.[1] ?? 0),
        rss: { ingest: 0, work: 0, maintenance: 0 },
      };
      for (const role of ROLES) sample.rss[role] = rssOfPid(children.get(role)?.pid ?? -1) ?? 0;
      console.error(JSON.stringify(sample));
      return sample;
    };
    let next = started;
    while (!loadDone) {
      if (Date.now() >= next) {
        next += sampleMs;
        samples.push(await takeSample());
      }
      await Promise.race([
        loadResult.catch(() => {}),
        new Promise((r) => setTimeout(r, Math.max(10, next - Date.now()))),
      ]);
    }
    const result = await loadResult;
    load = result;
    // Drain: every accepted order applied (a failure here is reported, not hidden).
    drained = await waitFor(
      'the workers to apply every accepted order',
      async () =>
        Number((await pool.query<{ n: string }>('SELECT count(*) AS n FROM orders')).rows[0]?.n ?? 0) >=
        result.acceptedKeys.length,
      { timeoutMs: 120_000, intervalMs: 500 },
    ).catch(() => false);
    afterDrain = {
      ...(await takeSample()),
      accepted: result.acceptedKeys.length,
      failed: result.phases[0]?.failed ?? failed,
    };
    loadAvg.end = loadavg()[0] ?? 0;
  } finally {
    // Ingest first (no new orders), then the workers drain and ack, then maintenance.
    for (const role of ROLES) {
      const child = children.get(role);
      if (child) await stopChild(child);
    }
    redis.disconnect();
    await pool.end();
    await s.cleanup();
  }
  report(samples, { minutes, rate, ttl, sampleMs, connections, shards, load, drained, afterDrain, exits, loadAvg });
}

interface ReportInput {
  minutes: number;
  rate: number;
  ttl: number;
  sampleMs: number;
  connections: number;
  shards: number;
  load: MergedResult | undefined;
  drained: boolean;
  /** Taken once the workers applied every accepted order (no load): not used in the ratios. */
  afterDrain: Sample | undefined;
  exits: Map<Role, string>;
  loadAvg: { start: number; end: number };
}

function report(samples: Sample[], o: ReportInput): void {
  const runS = o.minutes * 60;
  // Baseline: the first sample at which everything bounded by design is at its bound — the records
  // one TTL in, BullMQ's completed history and events stream at their caps — if that comes within
  // the first two thirds of the run; otherwise the first sample after a third of the run.
  const atBounds = samples.find(
    (s) => s.t >= o.ttl && s.bullCompleted >= KEEP_COMPLETED && s.bullEvents >= EVENTS_MAX_LEN,
  );
  const bounded = atBounds !== undefined && atBounds.t <= (runS * 2) / 3;
  const warm = (bounded ? atBounds : samples.find((s) => s.t >= runS / 3)) ?? samples[0];
  const last = samples.at(-1);
  if (!warm || !last) throw new Error('no samples');
  const mb = (b: number) => (b / 1048576).toFixed(2);
  const ratio = (a: number, b: number) => (b === 0 ? 'n/a' : (a / b).toFixed(2));
  const phase = o.load?.phases[0];
  const ms = (p: number) =>
    phase && phase.histogram.totalCount > 0 ? (phase.histogram.getValueAtPercentile(p) / 1000).toFixed(1) : '-';
  const accepted = o.load?.acceptedKeys.length ?? last.accepted;
  const applied = o.afterDrain?.applied ?? last.applied;
  const row = (s: Sample, t: string) =>
    `| ${t} | ${s.accepted} | ${s.applied} | ` +
    `${s.xlen} | ${mb(s.bytes.streams)} | ${mb(s.bytes.records)} | ` +
    `${s.recordKeys} | ${mb(s.bytes.bullmq)} | ` +
    `${s.bullCompleted} / ${s.bullEvents} | ${mb(s.bytes.other)} | ` +
    `${mb(s.usedMemory)} | ${mb(s.rss.ingest)} | ` +
    `${mb(s.rss.work)} | ${mb(s.rss.maintenance)} |`;
  const plateauKeys = o.rate * o.ttl;
  const perRecord = last.recordKeys > 0 ? last.bytes.records / last.recordKeys : 0;
  const exits = [...o.exits].map(([role, code]) => `${role} ${code}`).join(', ');
  const command = [
    'node dist/cli/surge.js bench soak-maintenance',
    `--minutes ${o.minutes} --rate ${o.rate} --sample-seconds ${o.sampleMs / 1000}`,
    `--record-ttl-seconds ${o.ttl} --maintenance-interval-ms ${values['maintenance-interval-ms']}`,
    `--shards ${o.shards} --connections ${o.connections}`,
  ].join(' ');
  const lines = [
    '# Soak: the real stack under steady load, with maintenance',
    '',
    `Command: \`${command}\``,
    '',
    `Machine: ${cpus().length}× ${cpus()[0]?.model ?? '?'}, ${mb(totalmem())} MiB RAM, node ${process.version}. ` +
      `1-minute load average ${o.loadAvg.start.toFixed(2)} at the start, ` +
      `${o.loadAvg.end.toFixed(2)} at the end. The machine is shared ` +
      '(other engineers’ tests and benchmarks, ' +
      'and the shared Redis and PostgreSQL), and the load generator, ' +
      'the three Surge processes, ' +
      'Redis, PostgreSQL and this sampler all run on it: figures are indicative, trends are what counts.',
    '',
    `Stack: \`surge ingest\`, \`surge work\` and \`surge maintenance\` as child processes (${o.shards} shards, ` +
      `trim every ${values['maintenance-interval-ms']} ms, ` +
      `retention every 60 s, idempotency records live ${o.ttl} s — production default 86,400 s). ` +
      'Load: one open-model generator process ' +
      `(${o.connections} keep-alive connections) POSTing /v1/orders at ${o.rate}/s for ${o.minutes} min, ` +
      'no retries.',
    '',
    `Load: ${phase?.offered ?? '?'} offered, ` +
      `${accepted} accepted (202), ${phase?.failed ?? last.failed} failed, ` +
      `${phase?.dropped ?? '?'} dropped; ` +
      `accept latency p50 ${ms(50)} ms, p99 ${ms(99)} ms, ` +
      `p99.9 ${ms(99.9)} ms. Applied after the drain: ${applied} of ${accepted}` +
      `${o.drained ? '' : ' — NOT all accepted orders were applied within 2 minutes of the end of the load'}. ` +
      `Exit codes on SIGTERM: ${exits || '-'}.`,
    '',
    '| t (s) | accepted | applied | Σ XLEN | streams (MiB) | records (MiB) | record keys | ' +
      'BullMQ (MiB) | maintenance queue: completed / events | ' +
      'other (MiB) | Redis used_memory, whole shared server (MiB) | ' +
      'ingest RSS (MiB) | worker RSS (MiB) | maintenance RSS (MiB) |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...samples.map((s) => row(s, String(s.t))),
    ...(o.afterDrain ? [row(o.afterDrain, `${o.afterDrain.t} (drained, no load)`)] : []),
    '',
    `Baseline: ${
      bounded
        ? `t=${warm.t} s, ` +
          `the first sample with the records one TTL old and BullMQ's completed history (${KEEP_COMPLETED}) ` +
          `and events stream (${EVENTS_MAX_LEN}) at their caps`
        : `t=${warm.t} s, a third of the run: ` +
          'the records and BullMQ had not all reached their bounds within two thirds of it, ' +
          'so their ratios show growth toward the bound, not a plateau'
    }.`,
    '',
    `Ratios, last sample under load (t=${last.t} s) / baseline (t=${warm.t} s): ` +
      `streams ${ratio(last.bytes.streams, warm.bytes.streams)}, ` +
      `BullMQ ${ratio(last.bytes.bullmq, warm.bytes.bullmq)}, ` +
      `other ${ratio(last.bytes.other, warm.bytes.other)}, ` +
      `Σ XLEN ${ratio(last.xlen, warm.xlen)}, ` +
      `records ${ratio(last.bytes.records, warm.bytes.records)} (keys ${ratio(last.recordKeys, warm.recordKeys)}); ` +
      `RSS ingest ${ratio(last.rss.ingest, warm.rss.ingest)}, ` +
      `worker ${ratio(last.rss.work, warm.rss.work)}, ` +
      `maintenance ${ratio(last.rss.maintenance, warm.rss.maintenance)}.`,
    '',
    `Idempotency records: at a steady rate they plateau at rate × TTL = ${o.rate} × ${o.ttl} s = ${plateauKeys} keys ` +
      `(≈ ${mb(plateauKeys * perRecord)} MiB at the ${perRecord.toFixed(0)} bytes per record measured here; ` +
      'at the production TTL of 86,400 s: ' +
      `≈ ${mb(o.rate * 86_400 * perRecord)} MiB). ` +
      (warm.t >= o.ttl
        ? 'The baseline is taken after one TTL, so the records ratio checks the plateau.'
        : `The baseline comes before one TTL (${o.ttl} s): the records ratio is no plateau check.`),
    `Without trimming Σ XLEN would equal "accepted" (${accepted}). ` +
      "BullMQ's state grows until the maintenance queue holds its 100 completed jobs " +
      'and its events stream ~1,000 entries (the "completed / events" column; ' +
      'about 5 events per job), then stays (≈ 0.3 MiB; ' +
      'docs/maintenance.md "BullMQ\'s own memory").',
  ];
  const text = lines.join('\n');
  console.log(`\n${text}`);
  if (values.out) writeFileSync(values.out, `${text}\n`);
}

await main();
