// The operator's commands: `surge lag-exporter` as a process (serves, stops on SIGTERM with exit 0)
// and `surge status` (text, --json, --watch) with the apply rate from PostgreSQL.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import pg from 'pg';
import { GROUP, streamKey } from '../common/keys.js';
import { PACKAGE_ROOT } from '../common/paths.js';
import { ensureGroups } from '../common/streams.js';
import type { StatusReport } from '../metrics/status.js';
import { createTestEnv, type TestEnv } from '../devkit/scratch.js';
import { waitFor } from '../devkit/wait.js';
import { scrape, value } from './support/prom.js';
import { spawnCli } from './support/procs.js';

const run = promisify(execFile);
const CLI = join(PACKAGE_ROOT, 'dist', 'cli', 'surge.js');

describe('surge lag-exporter and surge status', () => {
  let env: TestEnv;
  let redis: Redis;
  const s0 = () => streamKey(env.prefix, 0);
  const surge = (args: string[]) => run(process.execPath, [CLI, ...args], { env: { ...process.env, ...env.env } });

  before(async () => {
    env = await createTestEnv({ SURGE_SHARDS: '2' });
    redis = new Redis(env.redisUrl);
    await ensureGroups(redis, env.prefix, 2);
    for (let i = 0; i < 5; i++) await redis.xadd(s0(), '*', 'v', '1');
    await redis.xreadgroup('GROUP', GROUP, 'w-9', 'COUNT', 2, 'STREAMS', s0(), '>');
    // 3 applied and 1 rejected within the last minute, 2 applied 5 minutes ago.
    const db = new pg.Client({ connectionString: env.db.url });
    await db.connect();
    try {
      const insert = `INSERT INTO orders (client_id, idempotency_key, customer_id, currency, total_cents, status, reason, received_at, applied_at, stream, entry_id)
        VALUES ('c', $1, 'cust', 'EUR', 100, $2, $3, now() - interval '10 minutes', now() - $4::interval, 's', '1-0')`;
      const rows: Array<[string, string | null, string]> = [
        ['applied', null, '1 second'],
        ['applied', null, '2 seconds'],
        ['applied', null, '3 seconds'],
        ['rejected', 'out_of_stock', '2 seconds'],
        ['applied', null, '5 minutes'],
        ['applied', null, '6 minutes'],
      ];
      for (const [i, [status, reason, ago]] of rows.entries()) await db.query(insert, [`k${i}`, status, reason, ago]);
    } finally {
      await db.end();
    }
  });

  after(async () => {
    redis?.disconnect();
    await env?.cleanup();
  });

  test('surge lag-exporter serves /metrics and exits 0 on SIGTERM', async () => {
    const { child, output, exited } = spawnCli(['lag-exporter'], { ...env.env, SURGE_LOG_LEVEL: 'info' });
    try {
      const port = await waitFor('the listening log line', () => {
        const line = output()
          .split('\n')
          .find((l) => l.includes('lag exporter listening'));
        return line ? (JSON.parse(line) as { port: number }).port : undefined;
      });
      const m = await scrape(`http://127.0.0.1:${port}/metrics`);
      assert.equal(value(m, 'surge_consumer_group_backlog', { stream: s0(), group: GROUP }), 5);
      assert.equal(value(m, 'surge_consumer_group_lag', { stream: s0(), group: GROUP }), 3);
      assert.ok(
        m.some((s) => s.name === 'surge_process_process_cpu_user_seconds_total'),
        'default process metrics on the main thread',
      );
      assert.equal((await fetch(`http://127.0.0.1:${port}/readyz`)).status, 200);
    } finally {
      child.kill('SIGTERM');
    }
    assert.equal((await exited).code, 0, output());
  });

  test('surge status --json: the figures and the apply rate over the last minute', async () => {
    const { stdout } = await surge(['status', '--json']);
    const r = JSON.parse(stdout) as StatusReport;
    const g = r.shards[0]?.group;
    assert.equal(r.shards.length, 2);
    assert.equal(r.shards[0]?.length, 5);
    assert.deepEqual([g?.lag, g?.pending, g?.backlog], [3, 2, 5]);
    assert.deepEqual(
      g?.consumers.map((c) => [c.name, c.pending]),
      [['w-9', 2]],
    );
    assert.ok((g?.oldestPendingAgeSeconds ?? -1) >= 0 && (g?.oldestUndeliveredAgeSeconds ?? -1) >= 0);
    assert.equal(r.shards[1]?.length, 0);
    assert.deepEqual(r.applyRate, { windowSeconds: 60, applied: 3, rejected: 1, perSecond: 4 / 60 });
  });

  test('surge status: the table an operator reads', async () => {
    const { stdout } = await surge(['status']);
    assert.match(stdout, /Applied in the last 60 s: 4 orders \(0\.1\/s; 3 applied, 1 rejected\)/);
    const header = stdout.split('\n').find((l) => l.startsWith('SHARD  STREAM'));
    assert.ok(header?.includes('LAG') && header.includes('BACKLOG') && header.includes('OLDEST-UNDELIVERED'), stdout);
    const row = stdout.split('\n').find((l) => l.startsWith('0 ') && l.includes(s0()));
    assert.ok(row, stdout);
    assert.deepEqual(row.split(/\s+/).slice(0, 6), ['0', s0(), '5', '3', '2', '5']);
    assert.match(stdout, /^0\s+w-9\s+2\s+\S+$/m);
    assert.match(stdout, /Total: length 5, backlog 5 \(pending 2\)/);
  });

  test('surge status --watch redraws in place until interrupted, then exits 0', async () => {
    const child = spawn(process.execPath, [CLI, 'status', '--watch', '--interval', '100'], {
      env: { ...process.env, ...env.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      await waitFor('three frames', () => out.split('\x1b[H\x1b[2J').length > 3);
      // A change in Redis shows in a later frame.
      await redis.xadd(s0(), '*', 'v', '1');
      await waitFor('a frame with the new entry', () =>
        out.split('\x1b[H\x1b[2J').some((frame) => /Total: length 6,/.test(frame)),
      );
    } finally {
      child.kill('SIGINT');
    }
    assert.equal(await exited, 0);
    await redis.xtrim(s0(), 'MAXLEN', 5);
  });
});
