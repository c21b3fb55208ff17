// The real Prometheus (Debian's `prometheus` package: /usr/bin/prometheus and /usr/bin/promtool)
// against Surge: promtool accepts the alert rules and their unit tests and Surge's /metrics text,
// and a Prometheus server on loopback scraping a running lag exporter answers a PromQL query for
// the backlog with the value we built in Redis, evaluates the alert rules, runs every query of
// the Grafana dashboard as its "All" variables make it, and resolves the dead-letter alert once
// the dead letter is replayed (the DLQ stream's depth would not have dropped).
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import pg from 'pg';
import type { Registry } from 'prom-client';
import { dlqKey, GROUP, streamKey } from '../common/keys.js';
import { PACKAGE_ROOT } from '../common/paths.js';
import { ensureGroups } from '../common/streams.js';
import * as definitions from '../metrics/definitions.js';
import { type LagExporter, startLagExporter } from '../metrics/exporter.js';
import { replayDeadLetter } from '../maintenance/dlq.js';
import { type MaintenanceHandle, startMaintenance } from '../maintenance/service.js';
import { canonicalOrderJson } from '../common/order.js';
import { sampleOrder } from './support/deadletters.js';
import { createTestEnv, type TestEnv } from '../devkit/scratch.js';
import { freePort } from '../common/net.js';
import { waitFor } from '../devkit/wait.js';
import { defined } from './support/defined.js';

const ALERTS = join(PACKAGE_ROOT, 'metrics', 'alerts.yml');
const ALERT_TESTS = join(PACKAGE_ROOT, 'metrics', 'alerts.test.yml');
const DASHBOARD = join(PACKAGE_ROOT, 'metrics', 'dashboard.json');

interface DashboardFile {
  panels: Array<{ title?: string; targets?: Array<{ expr: string }> }>;
  templating: { list: Array<{ name: string; type: string; allValue?: string; query?: { query: string } }> };
}
/** How many rules metrics/alerts.yml holds (each starts with `- alert:`). */
const RULE_COUNT = readFileSync(ALERTS, 'utf8').match(/^\s*- alert: /gm)?.length ?? 0;

function requireBinary(name: string): void {
  const found = spawnSync('sh', ['-c', `command -v ${name}`]).status === 0;
  assert.ok(
    found,
    `${name} is not installed. These tests need the real Prometheus: apt-get install -y prometheus ` +
      '(Debian package; provides /usr/bin/prometheus and /usr/bin/promtool). CI installs it in .ci/run.',
  );
}

/** Runs a command with optional stdin; resolves with its exit code and output. */
function runTool(cmd: string, args: string[], input?: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err
        ? typeof (err as { code?: unknown }).code === 'number'
          ? (err as { code: number }).code
          : 1
        : 0;
      resolve({ code, out: `${stdout}${stderr}` });
    });
    if (input !== undefined) child.stdin?.end(input);
  });
}

interface PromResult {
  status: string;
  data: { resultType: string; result: Array<{ metric: Record<string, string>; value: [number, string] }> };
}

describe('Prometheus and promtool against Surge', () => {
  let env: TestEnv;
  let redis: Redis;
  let exporter: LagExporter;
  let maintenance: MaintenanceHandle | undefined;
  let prometheus: ChildProcess | undefined;
  let promDir: string | undefined;
  let promUrl: string;
  let pool: pg.Pool;
  let deadLetterId: number;

  before(async () => {
    requireBinary('promtool');
    requireBinary('prometheus');
    env = await createTestEnv({ SURGE_SHARDS: '2', SURGE_LAG_CACHE_MS: '0' });
    redis = new Redis(env.redisUrl);
    await ensureGroups(redis, env.prefix, 2);
    // Shard 0: 7 entries, 3 delivered, 1 of them acked: lag 4, pending 2, backlog 6.
    const s0 = streamKey(env.prefix, 0);
    for (let i = 0; i < 7; i++) await redis.xadd(s0, '*', 'v', '1');
    const read = (await redis.xreadgroup('GROUP', GROUP, 'w-1', 'COUNT', 3, 'STREAMS', s0, '>')) as Array<
      [string, Array<[string, string[]]>]
    >;
    await redis.xack(s0, GROUP, defined(read[0]?.[1][0]?.[0], 'the first entry read'));
    // Shard 1: 5 entries, one undelivered deleted: lag NULL, backlog 4 (counted).
    const s1 = streamKey(env.prefix, 1);
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await redis.xadd(s1, '*', 'v', '1')) as string);
    await redis.xdel(s1, defined(ids[2], 'the third entry'));
    await redis.xadd(dlqKey(env.prefix, 0), '*', 'dl_reason', 'test');
    exporter = await startLagExporter(env.config);
    // One dead letter never replayed: maintenance exports it as unresolved, until the last test
    // replays it. The gauge is recounted often so the alert clears within the test.
    pool = new pg.Pool({ connectionString: env.db.url, max: 2 });
    const dead = await pool.query<{ id: string }>(
      `INSERT INTO dead_letters (client_id, idempotency_key, stream, entry_id, reason, payload)
       VALUES ('prom-client', 'prom-1', $1, '1-0', 'permanent_error', $2) RETURNING id`,
      [s0, canonicalOrderJson(sampleOrder())],
    );
    deadLetterId = Number(dead.rows[0]?.id);
    maintenance = await startMaintenance(env.config, { metricsPort: 0, replayWorker: false, deadLetterGaugeMs: 200 });
  });

  after(async () => {
    if (prometheus && prometheus.exitCode === null && prometheus.signalCode === null) {
      const exited = new Promise((resolve) => prometheus?.once('exit', resolve));
      prometheus.kill('SIGTERM');
      await exited;
    }
    if (promDir) rmSync(promDir, { recursive: true, force: true });
    await exporter?.stop();
    await maintenance?.stop();
    await pool?.end();
    redis?.disconnect();
    await env?.cleanup();
  });

  test('promtool check rules metrics/alerts.yml', async () => {
    const r = await runTool('promtool', ['check', 'rules', ALERTS]);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, new RegExp(`SUCCESS: ${RULE_COUNT} rules found`));
  });

  test('promtool test rules metrics/alerts.test.yml: every alert fires when it should, and only then', async () => {
    const r = await runTool('promtool', ['test', 'rules', ALERT_TESTS]);
    assert.equal(r.code, 0, r.out);
  });

  test("promtool check metrics accepts the lag exporter's /metrics", async () => {
    const text = await (await fetch(`http://127.0.0.1:${exporter.port}/metrics`)).text();
    assert.match(text, /surge_consumer_group_backlog\{/);
    const r = await runTool('promtool', ['check', 'metrics'], text);
    assert.equal(r.code, 0, r.out);
  });

  test('promtool check metrics accepts every metric Surge defines (ingest and workers too)', async () => {
    const registry = definitions.createRegistry({ defaultMetrics: true, role: 'check' });
    const sets: Record<string, unknown> = {};
    for (const [name, fn] of Object.entries(definitions)) {
      if (name.endsWith('Metrics') && typeof fn === 'function') sets[name] = (fn as (r: Registry) => unknown)(registry);
    }
    // One observation everywhere so every series (buckets included) is printed.
    for (const m of registry.getMetricsAsArray()) {
      const metric = m as unknown as {
        labelNames?: readonly string[];
        inc?: (l: object, v: number) => void;
        set?: (l: object, v: number) => void;
        observe?: (l: object, v: number) => void;
      };
      const labels = Object.fromEntries((metric.labelNames ?? []).map((l) => [l, 'x']));
      if (typeof metric.observe === 'function') metric.observe(labels, 0.5);
      else if (typeof metric.set === 'function') metric.set(labels, 1);
      else if (typeof metric.inc === 'function') metric.inc(labels, 1);
    }
    const r = await runTool('promtool', ['check', 'metrics'], await registry.metrics());
    assert.equal(r.code, 0, r.out);
    assert.ok(Object.keys(sets).length >= 3);
  });

  test('a Prometheus server scraping the lag exporter answers the backlog query with the right value', async () => {
    promDir = mkdtempSync(join(tmpdir(), 'surge-prometheus-'));
    const port = await freePort();
    promUrl = `http://127.0.0.1:${port}`;
    writeFileSync(
      join(promDir, 'prometheus.yml'),
      [
        'global:',
        '  scrape_interval: 1s',
        '  evaluation_interval: 1s',
        'rule_files:',
        `  - ${JSON.stringify(ALERTS)}`,
        'scrape_configs:',
        '  - job_name: surge-lag-exporter',
        '    static_configs:',
        `      - targets: ["127.0.0.1:${exporter.port}"]`,
        '  - job_name: surge-maintenance',
        '    static_configs:',
        `      - targets: ["127.0.0.1:${maintenance?.metricsPort}"]`,
        '',
      ].join('\n'),
    );
    prometheus = spawn(
      'prometheus',
      [
        `--config.file=${join(promDir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(promDir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--log.level=warn',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let log = '';
    prometheus.stderr?.on('data', (d: Buffer) => {
      log += d.toString();
    });
    const get = async <T>(path: string): Promise<T> => (await (await fetch(`${promUrl}${path}`)).json()) as T;
    await waitFor(
      'Prometheus ready',
      async () => {
        if (prometheus?.exitCode !== null) throw new Error(`prometheus exited: ${log}`);
        return (await fetch(`${promUrl}/-/ready`)).status === 200;
      },
      { timeoutMs: 30_000, intervalMs: 100 },
    );
    await waitFor(
      'the lag exporter target up',
      async () => {
        const t = await get<{ data: { activeTargets: Array<{ health: string; labels: Record<string, string> }> } }>(
          '/api/v1/targets',
        );
        return t.data.activeTargets.some((a) => a.labels.job === 'surge-lag-exporter' && a.health === 'up');
      },
      { timeoutMs: 30_000, intervalMs: 100 },
    );
    const query = async (q: string) => {
      const r = await get<PromResult>(`/api/v1/query?query=${encodeURIComponent(q)}`);
      assert.equal(r.status, 'success');
      return r.data.result;
    };
    const s0 = streamKey(env.prefix, 0);
    const s1 = streamKey(env.prefix, 1);
    const backlog = await waitFor('backlog in Prometheus', async () => {
      const r = await query(`surge_consumer_group_backlog{stream="${s0}",group="${GROUP}"}`);
      return r.length === 1 ? r : undefined;
    });
    assert.equal(backlog[0]?.value[1], '6');
    assert.equal(backlog[0]?.metric.job, 'surge-lag-exporter');
    assert.equal((await query(`surge_consumer_group_lag{stream="${s0}"}`))[0]?.value[1], '4');
    assert.equal((await query(`surge_consumer_group_pending{stream="${s0}"}`))[0]?.value[1], '2');
    // NULL lag: no lag series in Prometheus at all, the backlog counted.
    assert.deepEqual(await query(`surge_consumer_group_lag{stream="${s1}"}`), []);
    assert.equal((await query(`surge_consumer_group_backlog{stream="${s1}"}`))[0]?.value[1], '4');
    assert.equal((await query(`sum(surge_consumer_group_backlog{stream=~"${env.prefix}:.*"})`))[0]?.value[1], '10');

    // The rules loaded into the server are healthy, and the DLQ alert fires on maintenance's gauge.
    const rules = await get<{
      data: { groups: Array<{ rules: Array<{ name: string; health: string; lastError?: string }> }> };
    }>('/api/v1/rules');
    const loaded = rules.data.groups.flatMap((g) => g.rules);
    assert.equal(loaded.length, RULE_COUNT);
    await waitFor('every rule evaluated without error', async () => {
      const g = await get<{ data: { groups: Array<{ rules: Array<{ name: string; health: string }> }> } }>(
        '/api/v1/rules',
      );
      return g.data.groups.flatMap((x) => x.rules).every((r) => r.health === 'ok');
    });
    await waitFor('SurgeDeadLetters firing', async () => {
      const a = await get<{ data: { alerts: Array<{ labels: Record<string, string>; state: string }> } }>(
        '/api/v1/alerts',
      );
      return a.data.alerts.some((x) => x.labels.alertname === 'SurgeDeadLetters' && x.state === 'firing');
    });
  });

  test('Prometheus runs every dashboard query as "All" makes it; lag exporter and maintenance panels have data', async () => {
    assert.ok(promUrl, 'the Prometheus of the test above');
    const dash = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as DashboardFile;
    // Grafana substitutes each variable's allValue for "All", and a range for $__rate_interval.
    const all = new Map(dash.templating.list.filter((v) => v.allValue).map((v) => [`$${v.name}`, v.allValue ?? '']));
    const expand = (expr: string) =>
      expr.replace(/\$[a-zA-Z_]\w*/g, (v) => (v === '$__rate_interval' ? '1m' : (all.get(v) ?? v)));
    const query = async (q: string) => {
      const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(q)}`);
      const body = (await res.json()) as PromResult & { error?: string };
      assert.equal(body.status, 'success', `${q}: ${body.error}`);
      return body.data.result;
    };
    for (const v of dash.templating.list.filter((x) => x.type === 'query')) {
      const selector = /^label_values\((.*),\s*\w+\)$/.exec(v.query?.query ?? '')?.[1];
      assert.ok(selector, `variable ${v.name} is label_values(<selector>, <label>)`);
      await query(expand(selector));
    }
    const jobs = (await query(expand('up{job=~"surge-.*"}'))).map((r) => r.metric.job).sort();
    assert.deepEqual(jobs, ['surge-lag-exporter', 'surge-maintenance'], 'the job variable lists the scraped jobs');
    const results = new Map<string, number>();
    for (const p of dash.panels) {
      for (const t of p.targets ?? []) {
        const r = await query(expand(t.expr));
        results.set(p.title ?? '', (results.get(p.title ?? '') ?? 0) + r.length);
      }
    }
    // Without a namespace label (no operator here) the filters still match.
    for (const title of ['Backlog (orders not yet applied)', 'Lag exporter up', 'Unresolved dead letters'])
      assert.ok((results.get(title) ?? 0) > 0, `panel "${title}" has data`);
  });

  test('SurgeDeadLetters clears once the dead letter is replayed, though the DLQ stream keeps it', async () => {
    assert.ok(promUrl, 'the Prometheus of the tests above');
    const active = async () => {
      const a = (await (await fetch(`${promUrl}/api/v1/alerts`)).json()) as {
        data: { alerts: Array<{ labels: Record<string, string>; state: string }> };
      };
      return a.data.alerts.some((x) => x.labels.alertname === 'SurgeDeadLetters');
    };
    assert.ok(await active(), 'firing before the replay');
    const outcome = await replayDeadLetter(
      { pool, redis, prefix: env.prefix, shards: env.config.shards },
      deadLetterId,
    );
    assert.equal(outcome.outcome, 'replayed');
    await waitFor('SurgeDeadLetters no longer active', async () => !(await active()), {
      timeoutMs: 30_000,
      intervalMs: 200,
    });
    const gauge = (await (
      await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent('max(surge_dead_letters_unresolved)')}`)
    ).json()) as PromResult;
    assert.equal(gauge.data.result[0]?.value[1], '0');
    assert.equal(await redis.xlen(dlqKey(env.prefix, 0)), 1, 'the DLQ stream is as deep as before');
  });
});
