// Soak: steady order load with `surge maintenance` running; samples Redis memory, stream length
// and the RSS of the applier and maintenance processes, and reports whether they stay flat.
//
//   npm run build && node dist/bench/soak-maintenance.js --minutes 30 --rate 300
//
// Stand-in applier: until the workers are merged, the applier child process is the minimal
// test applier (test/support/deadletters.ts: INSERT … ON CONFLICT DO NOTHING, XACK after).
// Needs the machine's Redis and PostgreSQL; uses its own database and key prefix, removed at the end.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import pg from 'pg';
import { ensureDatabase } from '../common/db.js';
import { allStreamKeys, shardFor, streamKey } from '../common/keys.js';
import { migrate } from '../common/migrate.js';
import { encodeEntry } from '../common/order.js';
import { PACKAGE_ROOT } from '../common/paths.js';
import { ensureGroups } from '../common/streams.js';
import { applyAvailable, sampleOrder } from '../test/support/deadletters.js';

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '30' },
    rate: { type: 'string', default: '300' },
    'sample-seconds': { type: 'string', default: '10' },
    'maintenance-interval-ms': { type: 'string', default: '5000' },
    shards: { type: 'string', default: '4' },
    out: { type: 'string' },
    role: { type: 'string', default: 'main' },
  },
});

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const ADMIN_DB = process.env.SURGE_TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const shards = Number(values.shards);

async function applierRole(): Promise<void> {
  const prefix = process.env.SURGE_REDIS_PREFIX as string;
  const redis = new Redis(REDIS_URL);
  const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 2 });
  let stop = false;
  process.on('SIGTERM', () => {
    stop = true;
  });
  while (!stop) {
    const t = await applyAvailable(redis, pool, prefix, shards);
    if (t.inserted + t.duplicate + t.deadLettered === 0) await new Promise((r) => setTimeout(r, 50));
  }
  redis.disconnect();
  await pool.end();
}

function rssBytes(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

interface Sample {
  t: number;
  produced: number;
  applied: number;
  usedMemory: number;
  /** Σ MEMORY USAGE of this run's keys (streams, DLQ, BullMQ): the server is shared. */
  ownMemory: number;
  xlen: number;
  applierRss: number;
  maintenanceRss: number;
}

async function main(): Promise<void> {
  const minutes = Number(values.minutes);
  const rate = Number(values.rate);
  const sampleMs = Number(values['sample-seconds']) * 1000;
  const tag = `${Date.now().toString(36)}${randomBytes(2).toString('hex')}`;
  const prefix = `surge-soak-${tag}`;
  const dbUrl = new URL(ADMIN_DB);
  dbUrl.pathname = `/surge_soak_${tag}`;
  await ensureDatabase(dbUrl.toString());
  await migrate(dbUrl.toString());
  const redis = new Redis(REDIS_URL);
  await ensureGroups(redis, prefix, shards);
  const env = {
    ...process.env,
    DATABASE_URL: dbUrl.toString(),
    REDIS_URL,
    SURGE_REDIS_PREFIX: prefix,
    SURGE_SHARDS: String(shards),
    SURGE_MAINTENANCE_INTERVAL_MS: values['maintenance-interval-ms'],
    SURGE_RETENTION_INTERVAL_MS: '60000',
    SURGE_MAINTENANCE_METRICS_PORT: '0',
    SURGE_LOG_LEVEL: 'warn',
  };
  const script = join(PACKAGE_ROOT, 'dist', 'bench', 'soak-maintenance.js');
  const children: ChildProcess[] = [
    spawn(process.execPath, [script, '--role', 'applier', '--shards', String(shards)], { env, stdio: 'inherit' }),
    spawn(process.execPath, [join(PACKAGE_ROOT, 'dist', 'cli', 'surge.js'), 'maintenance'], { env, stdio: 'inherit' }),
  ];
  const [applier, maintenance] = children;
  const pool = new pg.Pool({ connectionString: dbUrl.toString(), max: 1 });
  let produced = 0;
  const started = Date.now();
  const end = started + minutes * 60_000;
  const samples: Sample[] = [];
  let nextSample = started;
  try {
    while (Date.now() < end) {
      // 100 ms ticks: enough entries to keep `rate` per second.
      const due = Math.floor(((Date.now() - started) / 1000) * rate) - produced;
      if (due > 0) {
        const p = redis.pipeline();
        for (let i = 0; i < due; i++) {
          const key = `soak-${produced + i}`;
          p.xadd(streamKey(prefix, shardFor('soak', key, shards)), '*', ...encodeEntry('soak', key, sampleOrder(`c${(produced + i) % 1000}`)));
        }
        await p.exec();
        produced += due;
      }
      if (Date.now() >= nextSample) {
        nextSample += sampleMs;
        const info = await redis.info('memory');
        const xlens = await Promise.all(allStreamKeys(prefix, shards).map((k) => redis.xlen(k)));
        let ownMemory = 0;
        let cursor = '0';
        do {
          const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
          cursor = next;
          for (const k of keys) ownMemory += Number((await redis.memory('USAGE', k, 'SAMPLES', 0)) ?? 0);
        } while (cursor !== '0');
        const applied = Number((await pool.query('SELECT count(*) AS n FROM orders')).rows[0].n);
        const s: Sample = {
          t: Math.round((Date.now() - started) / 1000),
          produced,
          applied,
          usedMemory: Number(/used_memory:(\d+)/.exec(info)?.[1] ?? 0),
          ownMemory,
          xlen: xlens.reduce((a, b) => a + b, 0),
          applierRss: rssBytes(applier?.pid),
          maintenanceRss: rssBytes(maintenance?.pid),
        };
        samples.push(s);
        console.log(JSON.stringify(s));
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    for (const c of children) c.kill('SIGTERM');
    await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.once('exit', r)))));
    await pool.end();
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length) await redis.unlink(...keys);
    } while (cursor !== '0');
    redis.disconnect();
    const admin = new pg.Client({ connectionString: ADMIN_DB });
    await admin.connect();
    await admin.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(`surge_soak_${tag}`)} WITH (FORCE)`);
    await admin.end();
  }
  report(samples, { minutes, rate, sampleMs });
}

function report(samples: Sample[], o: { minutes: number; rate: number; sampleMs: number }): void {
  // Baseline: the first sample after one minute of warm-up (or the first third of a short run).
  const warm = samples.find((s) => s.t >= Math.min(60, (o.minutes * 60) / 3)) ?? samples[0];
  const last = samples.at(-1);
  if (!warm || !last) throw new Error('no samples');
  const mb = (b: number) => (b / 1048576).toFixed(2);
  const ratio = (a: number, b: number) => (b === 0 ? 'n/a' : (a / b).toFixed(2));
  const lines = [
    `# Soak: maintenance under steady load`,
    '',
    `Command: \`node dist/bench/soak-maintenance.js --minutes ${o.minutes} --rate ${o.rate} --sample-seconds ${o.sampleMs / 1000}\``,
    `Machine: ${cpus().length}× ${cpus()[0]?.model ?? '?'}, ${mb(totalmem())} MiB RAM, node ${process.version}; shared with other work (numbers are indicative).`,
    `Applier: the minimal test applier (one INSERT … ON CONFLICT per entry), not the production workers.`,
    `Maintenance: \`surge maintenance\`, trim every ${values['maintenance-interval-ms']} ms.`,
    '',
    '| t (s) | produced | applied | Surge keys MEMORY USAGE (MiB) | Redis used_memory, whole shared server (MiB) | Σ XLEN | applier RSS (MiB) | maintenance RSS (MiB) |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...samples.map((s) => `| ${s.t} | ${s.produced} | ${s.applied} | ${mb(s.ownMemory)} | ${mb(s.usedMemory)} | ${s.xlen} | ${mb(s.applierRss)} | ${mb(s.maintenanceRss)} |`),
    '',
    `Ratios, last sample (t=${last.t}s) / baseline after warm-up (t=${warm.t}s): Surge keys' memory ${ratio(last.ownMemory, warm.ownMemory)}, Redis used_memory ${ratio(last.usedMemory, warm.usedMemory)} (shared server), ` +
      `Σ XLEN ${ratio(last.xlen, warm.xlen)}, applier RSS ${ratio(last.applierRss, warm.applierRss)}, maintenance RSS ${ratio(last.maintenanceRss, warm.maintenanceRss)}.`,
    `Without trimming Σ XLEN would equal "produced" (${last.produced}).`,
  ];
  const text = lines.join('\n');
  console.log(`\n${text}`);
  if (values.out) writeFileSync(values.out, `${text}\n`);
}

if (values.role === 'applier') await applierRole();
else await main();
