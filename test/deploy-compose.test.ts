// docker-compose.yml, checked offline (no Docker engine here): it parses, refers only to
// images, services, files, ports and env vars that exist, and wires Prometheus and Grafana
// to what it runs. The second half breaks copies on purpose and shows each check catches it.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { parse } from 'yaml';
import { PACKAGE_ROOT } from '../common/paths.js';
import { ROLES } from '../common/roles.js';
import { type ComposeFile, composeProblems, PROVIDED_ELSEWHERE, readCompose } from './support/compose.js';

const doc = readCompose(PACKAGE_ROOT);

describe('docker-compose.yml', () => {
  test('parses, and every image, service, file, port and env var it names exists', () => {
    assert.deepEqual(composeProblems(doc, PACKAGE_ROOT), []);
  });

  test('runs the whole stack: Redis, PostgreSQL, migrate, ingest, 2 workers, 1 lag exporter, maintenance, Prometheus, Grafana', () => {
    const byCommand = (c: string) =>
      Object.entries(doc.services).filter(([, s]) => Array.isArray(s.command) && s.command[0] === c);
    assert.equal(byCommand('ingest').length, 1);
    assert.equal(byCommand('work')[0]?.[1].deploy?.replicas, 2);
    assert.equal(byCommand('lag-exporter').length, 1);
    assert.equal(byCommand('maintenance').length, 1);
    assert.deepEqual(byCommand('migrate')[0]?.[1].command, ['migrate', '--create-database']);
    for (const image of ['redis:', 'postgres:', 'prom/prometheus:', 'grafana/grafana:']) {
      assert.ok(
        Object.values(doc.services).some((s) => s.image?.startsWith(image)),
        image,
      );
    }
  });

  test('Grafana is provisioned with the Prometheus data source and the dashboard folder', () => {
    const grafana = Object.values(doc.services).find((s) => s.image?.startsWith('grafana/grafana:'));
    assert.ok(grafana);
    const mounts = new Map((grafana.volumes ?? []).map((v) => [v.split(':')[1], v.split(':')[0] ?? ''] as const));
    const ds = parse(
      readFileSync(join(PACKAGE_ROOT, mounts.get('/etc/grafana/provisioning/datasources/surge.yml') ?? ''), 'utf8'),
    ) as {
      datasources: Array<{ type: string; url: string }>;
    };
    const prom = ds.datasources.find((d) => d.type === 'prometheus');
    assert.ok(prom);
    assert.ok(new URL(prom.url).hostname in doc.services, 'the data source URL names the Prometheus service');
    const providers = parse(
      readFileSync(join(PACKAGE_ROOT, mounts.get('/etc/grafana/provisioning/dashboards/surge.yml') ?? ''), 'utf8'),
    ) as {
      providers: Array<{ options: { path: string } }>;
    };
    const dashboardTarget = [...mounts.keys()].find((k) => k?.endsWith('.json'));
    assert.ok(
      dashboardTarget?.startsWith(`${providers.providers[0]?.options.path}/`),
      'the dashboard is mounted where the provider looks',
    );
    assert.equal(mounts.get(dashboardTarget ?? ''), './metrics/dashboard.json');
  });

  test('the files it mounts from metrics/ (alerts.yml, dashboard.json) exist', () => {
    for (const f of PROVIDED_ELSEWHERE) assert.ok(existsSync(join(PACKAGE_ROOT, f)), f);
  });
});

describe('the compose checks catch what they claim to', () => {
  const cases: Array<[string, (d: ComposeFile) => void, RegExp]> = [
    [
      'an env var Surge does not read',
      (d) => (d.services.ingest!.environment = { ...d.services.ingest!.environment, SURGE_PORT: '8080' }),
      /service ingest: sets SURGE_PORT/,
    ],
    [
      'a config value Surge rejects',
      (d) => (d.services.worker!.environment = { ...d.services.worker!.environment, SURGE_SHARDS: '0' }),
      /service worker: configuration rejected: SURGE_SHARDS/,
    ],
    [
      'a published port that is not the configured one',
      (d) => (d.services.ingest!.ports = ['8080:3000']),
      /publishes container port 3000, but SURGE_INGEST_PORT is 8080/,
    ],
    [
      'Prometheus scraping ingest elsewhere than its metrics port',
      (d) =>
        (d.services.ingest!.environment = { ...d.services.ingest!.environment, SURGE_INGEST_METRICS_PORT: '9999' }),
      /prometheus: scrapes ingest at ingest:9463, not its \/metrics port \(SURGE_INGEST_METRICS_PORT\)/,
    ],
    [
      "ingest's metrics port never scraped",
      (d) =>
        (d.services.ingest!.environment = { ...d.services.ingest!.environment, SURGE_INGEST_METRICS_PORT: '9999' }),
      /prometheus: does not scrape ingest at ingest:9999/,
    ],
    [
      "ingest's health check on its metrics port",
      (d) =>
        (d.services.ingest!.healthcheck = { test: ['CMD', 'node', '-e', "fetch('http://127.0.0.1:9463/readyz')"] }),
      /service ingest: health check on port 9463, but SURGE_INGEST_PORT is 8080/,
    ],
    ['an unknown role', (d) => (d.services.worker!.command = ['worker']), /command "worker" is not a surge role/],
    ['a floating image tag', (d) => (d.services.redis!.image = 'redis:latest'), /image redis:latest is not pinned/],
    [
      'a URL naming no service',
      (d) => (d.services.ingest!.environment = { ...d.services.ingest!.environment, REDIS_URL: 'redis://cache:6379' }),
      /REDIS_URL points at cache/,
    ],
    [
      'Redis without AOF',
      (d) => (d.services.redis!.command = ['redis-server', '--appendonly', 'no', '--maxmemory-policy', 'noeviction']),
      /--appendonly is not yes/,
    ],
    [
      'Redis that evicts',
      (d) => (d.services.redis!.command = ['redis-server', '--appendonly', 'yes', '--maxmemory-policy', 'allkeys-lru']),
      /noeviction/,
    ],
    [
      'a short stop grace period',
      (d) => (d.services.worker!.stop_grace_period = '10s'),
      /stop_grace_period 10s is not above/,
    ],
    [
      'a missing mounted file',
      (d) => (d.services.prometheus!.volumes = ['./deploy/compose/nope.yml:/etc/prometheus/prometheus.yml:ro']),
      /mounts deploy\/compose\/nope.yml, which does not exist/,
    ],
    // Every long-running role of common/roles.ts, whichever service runs it.
    ...ROLES.map((role): [string, (d: ComposeFile) => void, RegExp] => [
      `surge ${role} with no service`,
      (d) => {
        const name = Object.entries(d.services).find(([, s]) => Array.isArray(s.command) && s.command[0] === role)?.[0];
        assert.ok(name, `a service runs surge ${role}`);
        delete d.services[name];
      },
      new RegExp(`no service runs surge ${role}$`),
    ]),
    [
      'two lag exporters',
      (d) => (d.services['lag-exporter']!.deploy = { replicas: 2 }),
      /lag exporter must run exactly 1 replica/,
    ],
    [
      'a service started before migrations',
      (d) => (d.services.worker!.depends_on = { redis: { condition: 'service_healthy' } }),
      /service worker: does not wait for the migrate service/,
    ],
    [
      'a dangling depends_on',
      (d) =>
        (d.services.ingest!.depends_on = {
          migrate: { condition: 'service_completed_successfully' },
          cache: { condition: 'service_healthy' },
        }),
      /depends_on cache/,
    ],
  ];
  for (const [what, mutate, expected] of cases) {
    test(`catches ${what}`, () => {
      const copy = structuredClone(doc);
      mutate(copy);
      const problems = composeProblems(copy, PACKAGE_ROOT);
      assert.ok(
        problems.some((p) => expected.test(p)),
        `expected ${expected}, got:\n${problems.join('\n') || '(none)'}`,
      );
    });
  }
});
