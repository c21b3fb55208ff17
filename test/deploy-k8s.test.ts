// The Kubernetes manifests, validated offline: each overlay is rendered with the real
// kustomize, every object is checked against the Kubernetes/KEDA/prometheus-operator schemas
// (and for unknown fields), and Surge's own rules are checked on the result. The second half
// breaks copies of the rendered dev overlay on purpose and shows each rule catches it.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { parse } from 'yaml';
import { PACKAGE_ROOT } from '../common/paths.js';
import { ROLES } from '../common/roles.js';
import {
  type K8sObject,
  kustomizeCommand,
  renderKustomize,
  schemaProblems,
  surgeProblems,
  typedModule,
} from './support/k8s.js';

const run = promisify(execFile);
const K8S = join(PACKAGE_ROOT, 'k8s');
const OVERLAYS = ['dev', 'production'] as const;

const rendered = new Map<string, K8sObject[]>();
before(async () => {
  const { version } = await kustomizeCommand();
  console.log(`# renderer: ${version}`);
  rendered.set('base', await renderKustomize(join(K8S, 'base')));
  for (const o of OVERLAYS) rendered.set(o, await renderKustomize(join(K8S, 'overlays', o)));
});

function objects(name: string): K8sObject[] {
  const o = rendered.get(name);
  assert.ok(o, `${name} was rendered`);
  return o;
}

function find(objs: readonly K8sObject[], kind: string, name: string): K8sObject & Record<string, never> {
  const o = objs.find((x) => x.kind === kind && x.metadata.name === name);
  assert.ok(o, `${kind}/${name} is rendered`);
  return o as K8sObject & Record<string, never>;
}

/** Removes one rendered object (it must be there). */
function remove(objs: K8sObject[], kind: string, name: string): void {
  objs.splice(objs.indexOf(find(objs, kind, name)), 1);
}

/** A deep copy of the rendered dev overlay to break. */
function devCopy(): K8sObject[] {
  return structuredClone(objects('dev'));
}

// biome-ignore lint/suspicious/noExplicitAny: test fixtures reach deep into rendered YAML
type Loose = any;
function deployment(objs: K8sObject[], name: string): Loose {
  return find(objs, 'Deployment', name);
}

/**
 * Compiles each object set as a typed module (kubernetes-models' types) with tsc: the excess-property
 * errors, as `<set>: <Kind/name>: <tsc message>`, none when every field is one its schema knows.
 */
async function typeProblems(sets: ReadonlyArray<{ name: string; objs: K8sObject[] }>): Promise<string[]> {
  const dir = mkdtempSync(join(PACKAGE_ROOT, 'dist', '.k8s-typecheck-'));
  try {
    const files = sets.map(({ name, objs }) => {
      const { source, objectAtLine } = typedModule(objs);
      const file = join(dir, `${name}.ts`);
      writeFileSync(file, source);
      return { name, file, objectAtLine };
    });
    const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
    const options = '--noEmit --strict --skipLibCheck --target es2022 --module nodenext --moduleResolution nodenext';
    const args = [...options.split(' '), '--types', 'node', ...files.map((f) => f.file)];
    const out = await run(process.execPath, [tsc, ...args]).then(
      () => '',
      (e: { stdout: string }) => e.stdout,
    );
    return out
      .split('\n')
      .filter((l) => l.includes('error TS'))
      .map((l) => {
        const [, name, line, message] = /([^/]+)\.ts\((\d+),\d+\): (.*)$/.exec(l) ?? [];
        const f = files.find((x) => x.name === name);
        return f ? `${name}: ${f.objectAtLine(Number(line))}: ${message}` : l;
      });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('kustomize overlays', () => {
  for (const name of ['base', ...OVERLAYS]) {
    test(`${name}: every object passes the Kubernetes, KEDA and prometheus-operator schemas`, () => {
      const objs = objects(name);
      assert.ok(objs.length > 10, `${name} renders objects`);
      assert.deepEqual(schemaProblems(objs), []);
    });
  }

  for (const name of OVERLAYS) {
    test(`${name}: Surge's rules hold (probes, resources, security, env vars, shard streams, grace, PDBs, services)`, () => {
      assert.deepEqual(surgeProblems(objects(name)), []);
    });
  }

  test('no object has a field its schema does not know (TypeScript excess-property check)', async () => {
    assert.deepEqual(await typeProblems(['base', ...OVERLAYS].map((name) => ({ name, objs: objects(name) }))), []);
  });

  test('the check for unknown fields catches a misspelt field', async () => {
    const objs = devCopy();
    deployment(objs, 'surge-worker').spec.template.spec.containers[0].readinessProbes = {
      httpGet: { path: '/readyz', port: 9464 },
    };
    assert.deepEqual(schemaProblems(objs), [], 'the JSON schemas alone accept it');
    const problems = await typeProblems([{ name: 'broken', objs }]);
    assert.equal(problems.length, 1, problems.join('\n'));
    assert.match(problems[0] ?? '', /^broken: Deployment\/surge-worker: .*readinessProbes/);
  });

  test('dev: a working stack — Redis with AOF and noeviction, PostgreSQL, URLs that name rendered Services', () => {
    const objs = objects('dev');
    const redis = find(objs, 'StatefulSet', 'redis') as Loose;
    const args: string[] = redis.spec.template.spec.containers[0].args;
    const opt = (name: string) => args[args.indexOf(name) + 1];
    assert.equal(opt('--appendonly'), 'yes');
    assert.equal(opt('--maxmemory-policy'), 'noeviction');
    find(objs, 'StatefulSet', 'postgres');
    const secret = objs.find((o) => o.kind === 'Secret' && o.metadata.name.startsWith('surge-secrets-')) as Loose;
    assert.ok(secret, 'the dev Secret is generated');
    const services = objs.filter((o) => o.kind === 'Service') as Loose[];
    for (const key of ['DATABASE_URL', 'REDIS_URL']) {
      const url = new URL(Buffer.from(secret.data[key], 'base64').toString('utf8'));
      const svc = services.find((s) => s.metadata.name === url.hostname);
      assert.ok(svc, `${key} host ${url.hostname} is a rendered Service`);
      assert.ok(
        svc.spec.ports.some((p: { port: number }) => p.port === Number(url.port)),
        `${key} port ${url.port} is a port of Service ${url.hostname}`,
      );
    }
    const namespaces = new Set(objs.filter((o) => o.kind !== 'Namespace').map((o) => o.metadata.namespace));
    assert.deepEqual([...namespaces], ['surge']);
    assert.ok(objs.some((o) => o.kind === 'Namespace' && o.metadata.name === 'surge'));
  });

  test('production: external Redis Cluster, no Secret in git, more replicas than dev', () => {
    const objs = objects('production');
    assert.deepEqual(
      objs.filter((o) => o.kind === 'Secret' || o.kind === 'StatefulSet').map((o) => o.kind),
      [],
      'production renders no Secret and no in-cluster database',
    );
    const config = objs.find((o) => o.kind === 'ConfigMap' && o.metadata.name.startsWith('surge-config-')) as Loose;
    assert.ok(config.data.REDIS_CLUSTER_NODES.split(',').length >= 3, 'Redis Cluster seed nodes are configured');
    const hpa = (name: string, objs2: K8sObject[]) => find(objs2, 'HorizontalPodAutoscaler', name) as Loose;
    assert.ok(hpa('surge-ingest', objs).spec.maxReplicas > hpa('surge-ingest', objects('dev')).spec.maxReplicas);
    const so = (objs2: K8sObject[]) => find(objs2, 'ScaledObject', 'surge-worker') as Loose;
    assert.ok(so(objs).spec.maxReplicaCount > so(objects('dev')).spec.maxReplicaCount);
  });

  test("docs/operations.md's KEDA arithmetic is each overlay's threshold ÷ SURGE_SHARDS = lagCount", () => {
    const docs = readFileSync(join(PACKAGE_ROOT, 'docs', 'operations.md'), 'utf8');
    for (const name of OVERLAYS) {
      const objs = objects(name);
      const triggers = (find(objs, 'ScaledObject', 'surge-worker') as Loose).spec.triggers as Array<{
        type: string;
        metadata: Record<string, string>;
      }>;
      const threshold = triggers.find((t) => t.type === 'prometheus')?.metadata.threshold;
      const lagCount = triggers.find((t) => t.type.startsWith('redis'))?.metadata.lagCount;
      const config = objs.find((o) => o.kind === 'ConfigMap' && o.metadata.name.startsWith('surge-config-')) as Loose;
      const line = `${threshold} ÷ ${config.data.SURGE_SHARDS} = ${lagCount}`;
      assert.ok(docs.includes(line), `${name}: docs/operations.md says ${line}`);
    }
  });

  test('k8s/base/monitoring holds the current metrics/alerts.yml and metrics/dashboard.json', async () => {
    const alerts = join(PACKAGE_ROOT, 'metrics', 'alerts.yml');
    const dashboard = join(PACKAGE_ROOT, 'metrics', 'dashboard.json');
    const r = await run(process.execPath, [join(PACKAGE_ROOT, 'scripts', 'sync-k8s-monitoring.mjs'), '--check']).then(
      () => '',
      (e: { stderr: string }) => e.stderr,
    );
    assert.equal(r, '', 'run `npm run sync:k8s` and commit');
    const rule = find(objects('production'), 'PrometheusRule', 'surge') as Loose;
    assert.deepEqual(rule.spec.groups, (parse(readFileSync(alerts, 'utf8')) as { groups: unknown }).groups);
    const cm = find(objects('production'), 'ConfigMap', 'surge-dashboard') as Loose;
    assert.deepEqual(JSON.parse(cm.data['surge.json']), JSON.parse(readFileSync(dashboard, 'utf8')));
  });
});

describe("Surge's manifest rules catch what they claim to", () => {
  function problemsAfter(mutate: (objs: K8sObject[]) => void): string[] {
    const objs = devCopy();
    mutate(objs);
    return [...schemaProblems(objs), ...surgeProblems(objs)];
  }
  const cases: Array<[string, (objs: K8sObject[]) => void, RegExp]> = [
    [
      'a worker without a readiness probe',
      (o) => delete deployment(o, 'surge-worker').spec.template.spec.containers[0].readinessProbe,
      /surge-worker container worker: no readinessProbe/,
    ],
    [
      'ingest without resources',
      (o) => delete deployment(o, 'surge-ingest').spec.template.spec.containers[0].resources,
      /surge-ingest container ingest: resources.requests needs cpu and memory/,
    ],
    [
      'a pod that may run as root',
      (o) => {
        const d = deployment(o, 'surge-lag-exporter').spec.template.spec;
        d.securityContext.runAsNonRoot = false;
        d.containers[0].securityContext.runAsNonRoot = false;
      },
      /surge-lag-exporter container lag-exporter: runAsNonRoot is not true/,
    ],
    [
      'a writable root filesystem',
      (o) =>
        (deployment(o, 'surge-ingest').spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem = false),
      /readOnlyRootFilesystem is not true/,
    ],
    [
      'an env var Surge does not read',
      (o) =>
        (deployment(o, 'surge-ingest').spec.template.spec.containers[0].env = [{ name: 'SURGE_SHARD', value: '4' }]),
      /sets SURGE_SHARD, which common\/config.ts does not read/,
    ],
    [
      'a config value Surge rejects',
      (o) => ((o.find((x) => x.metadata.name.startsWith('surge-config-')) as Loose).data.SURGE_DURABILITY = 'maybe'),
      /configuration rejected: SURGE_DURABILITY/,
    ],
    [
      'more shards than triggers',
      (o) => ((o.find((x) => x.metadata.name.startsWith('surge-config-')) as Loose).data.SURGE_SHARDS = '5'),
      /no trigger for surge:\{s4\}:orders \(SURGE_SHARDS=5\)/,
    ],
    [
      'a trigger on a stream Surge does not write',
      (o) => ((find(o, 'ScaledObject', 'surge-worker') as Loose).spec.triggers[0].metadata.stream = 'surge:s0:orders'),
      /streams Surge does not write: surge:s0:orders/,
    ],
    [
      'a trigger in pending mode',
      (o) => {
        const m = (find(o, 'ScaledObject', 'surge-worker') as Loose).spec.triggers[1].metadata;
        delete m.lagCount;
        m.pendingEntriesCount = '10';
      },
      /not in lag mode/,
    ],
    [
      'no backlog trigger',
      (o) => {
        const so = (find(o, 'ScaledObject', 'surge-worker') as Loose).spec;
        so.triggers = so.triggers.filter((t: { type: string }) => t.type !== 'prometheus');
      },
      /no Prometheus trigger on surge_consumer_group_backlog/,
    ],
    [
      'a backlog query on a metric Surge does not export',
      (o) => {
        const t = (find(o, 'ScaledObject', 'surge-worker') as Loose).spec.triggers.find(
          (x: { type: string }) => x.type === 'prometheus',
        );
        t.metadata.query = 'sum(surge_consumer_group_backlogs{namespace="surge"})';
      },
      /uses surge_consumer_group_backlogs, which the lag exporter does not export/,
    ],
    [
      'scaling workers to zero',
      (o) => ((find(o, 'ScaledObject', 'surge-worker') as Loose).spec.minReplicaCount = 0),
      /minReplicaCount below 1/,
    ],
    [
      'a bare Redis host name in a trigger',
      (o) => ((find(o, 'ScaledObject', 'surge-worker') as Loose).spec.triggers[2].metadata.address = 'redis:6379'),
      /address redis:6379 is a bare name/,
    ],
    [
      'a grace period below the drain timeout',
      (o) => (deployment(o, 'surge-worker').spec.template.spec.terminationGracePeriodSeconds = 20),
      /terminationGracePeriodSeconds 20 is not above preStop 0 s \+ SURGE_SHUTDOWN_TIMEOUT_MS 20 s/,
    ],
    [
      'preStop eating the grace period',
      (o) =>
        (deployment(o, 'surge-ingest').spec.template.spec.containers[0].lifecycle.preStop.exec.command = [
          'sleep',
          '20',
        ]),
      /terminationGracePeriodSeconds 35 is not above preStop 20 s/,
    ],
    [
      'two lag exporters',
      (o) => (deployment(o, 'surge-lag-exporter').spec.replicas = 2),
      /the lag exporter must run exactly 1 replica/,
    ],
    [
      'a Deployment without a PDB',
      (o) => remove(o, 'PodDisruptionBudget', 'surge-worker'),
      /Deployment\/surge-worker: covered by 0 PodDisruptionBudgets/,
    ],
    [
      'replicas on a Deployment KEDA scales',
      (o) => (deployment(o, 'surge-worker').spec.replicas = 2),
      /Deployment\/surge-worker: sets replicas 2, but an autoscaler owns the count/,
    ],
    [
      'replicas on a Deployment the HPA scales',
      (o) => (deployment(o, 'surge-ingest').spec.replicas = 2),
      /Deployment\/surge-ingest: sets replicas 2, but an autoscaler owns the count/,
    ],
    [
      'a per-shard lagCount that under-asks',
      (o) => ((find(o, 'ScaledObject', 'surge-worker') as Loose).spec.triggers[0].metadata.lagCount = '5000'),
      /lagCount 5000 is not the backlog threshold 5000 ÷ SURGE_SHARDS 4 = 1250/,
    ],
    [
      'a pod no NetworkPolicy selects',
      (o) => remove(o, 'NetworkPolicy', 'surge-worker'),
      /Deployment\/surge-worker: selected by 0 NetworkPolicies/,
    ],
    [
      'metrics open to anyone',
      (o) => delete (find(o, 'NetworkPolicy', 'surge-maintenance') as Loose).spec.ingress[0].from,
      /NetworkPolicy\/surge-maintenance for Deployment\/surge-maintenance: admits port metrics from anywhere/,
    ],
    [
      'a declared port no ingress rule opens',
      (o) => ((find(o, 'NetworkPolicy', 'surge-ingest') as Loose).spec.ingress[0].ports[0].port = 'https'),
      /NetworkPolicy\/surge-ingest for Deployment\/surge-ingest: admits nothing on port http/,
    ],
    [
      'egress that misses PostgreSQL',
      (o) => ((find(o, 'NetworkPolicy', 'surge-migrate') as Loose).spec.egress[1].ports[0].port = 5433),
      /NetworkPolicy\/surge-migrate for Job\/surge-migrate: does not allow egress to PostgreSQL port 5432\/TCP/,
    ],
    [
      'egress without DNS',
      (o) => (find(o, 'NetworkPolicy', 'surge-lag-exporter') as Loose).spec.egress.shift(),
      /surge-lag-exporter: does not allow egress to DNS port 53\/UDP/,
    ],
    // Every long-running role of common/roles.ts, whichever Deployment runs it.
    ...ROLES.map((role): [string, (objs: K8sObject[]) => void, RegExp] => [
      `surge ${role} with no Deployment`,
      (o) => {
        const d = o.find(
          (x) => x.kind === 'Deployment' && (x as Loose).spec.template.spec.containers[0].args?.[0] === role,
        );
        assert.ok(d, `a Deployment runs surge ${role}`);
        o.splice(o.indexOf(d), 1);
      },
      new RegExp(`no Deployment runs surge ${role}$`),
    ]),
    [
      'an alert on a job nobody scrapes',
      (o) => ((find(o, 'Service', 'surge-maintenance') as Loose).metadata.name = 'surge-housekeeping'),
      /SurgeMaintenanceDown reads job surge-maintenance, which no ServiceMonitor scrapes/,
    ],
    [
      'a second image',
      (o) => (deployment(o, 'surge-worker').spec.template.spec.containers[0].image = 'surge:other'),
      /several images/,
    ],
    [
      'an unknown role',
      (o) => (deployment(o, 'surge-worker').spec.template.spec.containers[0].args = ['worker']),
      /args\[0\] "worker" is not a surge role/,
    ],
    [
      'a container port that does not match the config',
      (o) => (deployment(o, 'surge-ingest').spec.template.spec.containers[0].ports[0].containerPort = 3000),
      /no containerPort 8080 \(SURGE_INGEST_PORT\)/,
    ],
    [
      'ingest without its metrics port',
      (o) => deployment(o, 'surge-ingest').spec.template.spec.containers[0].ports.pop(),
      /no containerPort 9463 \(SURGE_INGEST_METRICS_PORT\)/,
    ],
    [
      "a ServiceMonitor scraping ingest's API port",
      (o) => (find(o, 'ServiceMonitor', 'surge') as Loose).spec.endpoints.push({ port: 'http', path: '/metrics' }),
      /scrapes Deployment\/surge-ingest on Service\/surge-ingest port http \(container port 8080\), not its \/metrics port 9463/,
    ],
    [
      "ingest's metrics port scraped by nobody",
      (o) => ((find(o, 'Service', 'surge-ingest') as Loose).spec.ports[1].name = 'prom'),
      /Deployment\/surge-ingest: no ServiceMonitor scrapes its \/metrics port 9463 \(SURGE_INGEST_METRICS_PORT\)/,
    ],
    [
      "a probe on ingest's metrics port",
      (o) => (deployment(o, 'surge-ingest').spec.template.spec.containers[0].readinessProbe.httpGet.port = 'metrics'),
      /readinessProbe on port 9463, but SURGE_INGEST_PORT \(\/healthz, \/readyz\) is 8080/,
    ],
    [
      "ingest's metrics port open to anyone",
      (o) => {
        const np = find(o, 'NetworkPolicy', 'surge-ingest') as Loose;
        delete np.spec.ingress[1].from;
      },
      /surge-ingest: admits port metrics from anywhere/,
    ],
    [
      'a Service selecting nothing',
      (o) => ((find(o, 'Service', 'surge-worker') as Loose).spec.selector['app.kubernetes.io/component'] = 'workers'),
      /Service\/surge-worker: selects no workload/,
    ],
    [
      'a password in git',
      (o) => {
        const s = o.find((x) => x.kind === 'Secret') as Loose;
        s.data.DATABASE_URL = Buffer.from('postgres://u:hunter2@db/surge').toString('base64');
      },
      /holds a secret value/,
    ],
    [
      'a schema violation',
      (o) => (deployment(o, 'surge-ingest').spec.template.spec.containers[0].ports[0].containerPort = '8080'),
      /containerPort must be integer/,
    ],
    [
      'a kind with no schema',
      (o) => o.push({ apiVersion: 'example.com/v1', kind: 'Widget', metadata: { name: 'w' } }),
      /Widget\/w: no schema/,
    ],
  ];
  for (const [what, mutate, expected] of cases) {
    test(`catches ${what}`, () => {
      const problems = problemsAfter(mutate);
      assert.ok(
        problems.some((p) => expected.test(p)),
        `expected a problem matching ${expected}, got:\n${problems.join('\n') || '(none)'}`,
      );
    });
  }
});
