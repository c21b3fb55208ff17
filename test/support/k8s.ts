// Offline validation of Surge's Kubernetes manifests: render a kustomization with the real
// kustomize (kubectl's built-in one, or a standalone `kustomize`), validate every object
// against the Kubernetes, KEDA and prometheus-operator schemas (kubernetes-models), then run
// Surge's own checks (probes, resources, security, env vars, shard streams, grace periods, …).
// Each check returns readable problems instead of throwing, so tests can show all of them and
// can prove, on broken copies, that a check catches what it claims to.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { IDeployment } from 'kubernetes-models/apps/v1/Deployment';
import { StatefulSet } from 'kubernetes-models/apps/v1/StatefulSet';
import { type INetworkPolicy, NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import type { INetworkPolicyEgressRule } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicyEgressRule';
import type { INetworkPolicyIngressRule } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicyIngressRule';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import {
  HorizontalPodAutoscaler,
  type IHorizontalPodAutoscaler,
} from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler';
import { Job } from 'kubernetes-models/batch/v1/Job';
import { PodDisruptionBudget, type IPodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { ConfigMap, type IConfigMap } from 'kubernetes-models/v1/ConfigMap';
import type { IContainer } from 'kubernetes-models/v1/Container';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import type { IPodTemplateSpec } from 'kubernetes-models/v1/PodTemplateSpec';
import { Secret, type ISecret } from 'kubernetes-models/v1/Secret';
import { type IService, Service } from 'kubernetes-models/v1/Service';
import { type IScaledObject, ScaledObject } from '@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject';
import { TriggerAuthentication } from '@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication';
import {
  type IPrometheusRule,
  PrometheusRule,
} from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule';
import {
  type IServiceMonitor,
  ServiceMonitor,
} from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor';
import type { Registry } from 'prom-client';
import { parseAllDocuments } from 'yaml';
import { CONFIG_VARIABLES, loadConfig } from '../../common/config.js';
import { allStreamKeys, GROUP } from '../../common/keys.js';
import { type RolePort, ROLE_PORTS as SERVED_PORTS, ROLES } from '../../common/roles.js';
import { createRegistry, lagMetrics } from '../../metrics/definitions.js';

const run = promisify(execFile);

/** A rendered Kubernetes object, as parsed from YAML. */
export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [field: string]: unknown;
}

/**
 * The roles of `surge` that run in containers, and the config variables naming the port of each
 * one's probes and of its /metrics: the long-running roles of common/roles.ts, each of which
 * every deployment must run, and the migration one-shot (no port).
 */
export const ROLE_PORTS: Readonly<Record<string, { probes: string; metrics: string } | undefined>> = {
  ...Object.fromEntries(
    ROLES.map((r) => [r, { probes: SERVED_PORTS[r].probes.variable, metrics: SERVED_PORTS[r].metrics.variable }]),
  ),
  migrate: undefined,
};

/** Secrets an operator creates out of band (production); the manifests may reference them unrendered. */
export const EXTERNAL_SECRETS = ['surge-secrets', 'surge-redis-auth'];

/** Which kustomize is here: `kubectl kustomize` (built in since kubectl 1.14) or `kustomize build`. */
export async function kustomizeCommand(): Promise<{ cmd: string; args: string[]; version: string }> {
  try {
    const { stdout } = await run('kubectl', ['version', '--client', '-o', 'json']);
    const v = JSON.parse(stdout) as { kustomizeVersion?: string };
    return { cmd: 'kubectl', args: ['kustomize'], version: `kubectl kustomize ${v.kustomizeVersion ?? '?'}` };
  } catch {
    try {
      const { stdout } = await run('kustomize', ['version']);
      return { cmd: 'kustomize', args: ['build'], version: `kustomize ${stdout.trim()}` };
    } catch {
      throw new Error('no kustomize renderer: install kubectl (has `kubectl kustomize`) or kustomize');
    }
  }
}

/** Renders a kustomization directory into its objects. */
export async function renderKustomize(dir: string): Promise<K8sObject[]> {
  const { cmd, args } = await kustomizeCommand();
  const { stdout } = await run(cmd, [...args, dir], { maxBuffer: 64 * 1024 * 1024 });
  return parseManifests(stdout);
}

export function parseManifests(text: string): K8sObject[] {
  return parseAllDocuments(text)
    .map((d) => {
      if (d.errors.length > 0) throw new Error(d.errors.map((e) => e.message).join('; '));
      return d.toJS() as K8sObject | null;
    })
    .filter((o): o is K8sObject => o !== null);
}

interface Validatable {
  validate(): void;
}
type ModelClass = new (data: never) => Validatable;

/** The schema for each apiVersion/kind Surge uses. A kind not listed here fails validation. */
const SCHEMAS: Record<string, ModelClass> = {
  'v1/ConfigMap': ConfigMap,
  'v1/Secret': Secret,
  'v1/Service': Service,
  'v1/Namespace': Namespace,
  'apps/v1/Deployment': Deployment,
  'apps/v1/StatefulSet': StatefulSet,
  'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy,
  'batch/v1/Job': Job,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler,
  'keda.sh/v1alpha1/ScaledObject': ScaledObject,
  'keda.sh/v1alpha1/TriggerAuthentication': TriggerAuthentication,
  'monitoring.coreos.com/v1/ServiceMonitor': ServiceMonitor,
  'monitoring.coreos.com/v1/PrometheusRule': PrometheusRule,
};

export function ref(o: K8sObject): string {
  return `${o.kind}/${o.metadata?.name ?? '?'}`;
}

/** Schema problems of every object (kubernetes-models' JSON schemas: types, required fields, enums). */
export function schemaProblems(objects: readonly K8sObject[]): string[] {
  const problems: string[] = [];
  for (const o of objects) {
    const Model = SCHEMAS[`${o.apiVersion}/${o.kind}`];
    if (!Model) {
      problems.push(`${ref(o)}: no schema for ${o.apiVersion} ${o.kind}`);
      continue;
    }
    try {
      new Model(o as never).validate();
    } catch (e) {
      problems.push(`${ref(o)}: ${(e as Error).message}`);
    }
  }
  return problems;
}

function ofKind<T>(objects: readonly K8sObject[], kind: string): Array<T & K8sObject> {
  return objects.filter((o) => o.kind === kind) as Array<T & K8sObject>;
}

/** Workloads with a pod template: Deployments, StatefulSets, Jobs. */
function workloads(objects: readonly K8sObject[]): Array<{ o: K8sObject; template: IPodTemplateSpec }> {
  return objects
    .filter((o) => ['Deployment', 'StatefulSet', 'Job'].includes(o.kind))
    .map((o) => ({ o, template: (o as unknown as { spec: { template: IPodTemplateSpec } }).spec.template }));
}

function isSurge(o: K8sObject): boolean {
  return o.metadata.labels?.['app.kubernetes.io/part-of'] === 'surge';
}

function matches(selector: Record<string, string> | undefined, labels: Record<string, string> | undefined): boolean {
  if (!selector || Object.keys(selector).length === 0) return false;
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

/** The environment a Surge container gets: its env entries and every key of its envFrom sources. */
function containerEnv(
  c: IContainer,
  objects: readonly K8sObject[],
  problems: string[],
  where: string,
): Map<string, string | undefined> {
  const env = new Map<string, string | undefined>();
  for (const src of c.envFrom ?? []) {
    if (src.configMapRef) {
      const cm = ofKind<IConfigMap>(objects, 'ConfigMap').find((m) => m.metadata.name === src.configMapRef?.name);
      if (!cm) problems.push(`${where}: envFrom ConfigMap ${src.configMapRef.name} is not in the rendered output`);
      for (const [k, v] of Object.entries(cm?.data ?? {})) env.set(k, v);
    }
    if (src.secretRef) {
      const name = src.secretRef.name ?? '';
      const secret = ofKind<ISecret>(objects, 'Secret').find((s) => s.metadata.name === name);
      if (secret) {
        for (const [k, v] of Object.entries(secret.stringData ?? {})) env.set(k, v);
        for (const [k, v] of Object.entries(secret.data ?? {})) env.set(k, Buffer.from(v, 'base64').toString('utf8'));
      } else if (!EXTERNAL_SECRETS.some((e) => name === e || name.startsWith(`${e}-`))) {
        problems.push(`${where}: envFrom Secret ${name} is neither rendered nor a documented external Secret`);
      }
    }
  }
  for (const e of c.env ?? []) env.set(e.name, e.value);
  return env;
}

function roleOf(c: IContainer): string | undefined {
  return c.args?.[0];
}

/**
 * Surge's rules for its manifests. `objects` is one rendered overlay (or the base).
 * Returns every problem found; an empty list means the manifests pass.
 */
export function surgeProblems(objects: readonly K8sObject[]): string[] {
  const problems: string[] = [];
  const deployments = ofKind<IDeployment>(objects, 'Deployment');
  const services = ofKind<IService>(objects, 'Service');
  const surgeImages = new Set<string>();
  const surgePods: SurgePod[] = [];
  const surgeRoles = new Map<
    string,
    { o: K8sObject; c: IContainer; env: Map<string, string | undefined>; template: IPodTemplateSpec }
  >();

  for (const { o, template } of workloads(objects)) {
    const pod = template.spec;
    if (!pod) {
      problems.push(`${ref(o)}: no pod spec`);
      continue;
    }
    const longRunning = o.kind !== 'Job';
    for (const c of pod.containers) {
      const where = `${ref(o)} container ${c.name}`;
      if (longRunning && !c.readinessProbe) problems.push(`${where}: no readinessProbe`);
      if (longRunning && !c.livenessProbe) problems.push(`${where}: no livenessProbe`);
      const req = c.resources?.requests ?? {};
      if (req.cpu === undefined || req.memory === undefined)
        problems.push(`${where}: resources.requests needs cpu and memory`);
      if (c.resources?.limits?.memory === undefined) problems.push(`${where}: resources.limits.memory is not set`);
      const runAsNonRoot = c.securityContext?.runAsNonRoot ?? pod.securityContext?.runAsNonRoot;
      const runAsUser = c.securityContext?.runAsUser ?? pod.securityContext?.runAsUser;
      if (runAsNonRoot !== true) problems.push(`${where}: runAsNonRoot is not true`);
      if (runAsUser === 0) problems.push(`${where}: runs as uid 0`);
      if (c.securityContext?.allowPrivilegeEscalation !== false)
        problems.push(`${where}: allowPrivilegeEscalation is not false`);
      if (!c.securityContext?.capabilities?.drop?.includes('ALL'))
        problems.push(`${where}: capabilities do not drop ALL`);
      const seccomp = c.securityContext?.seccompProfile?.type ?? pod.securityContext?.seccompProfile?.type;
      if (seccomp !== 'RuntimeDefault' && seccomp !== 'Localhost')
        problems.push(`${where}: no RuntimeDefault seccomp profile`);
      for (const probe of [c.readinessProbe, c.livenessProbe]) {
        const port = probe?.httpGet?.port ?? probe?.tcpSocket?.port;
        if (typeof port === 'string' && !(c.ports ?? []).some((p) => p.name === port))
          problems.push(`${where}: probe names port ${port}, which the container does not declare`);
      }
      if (!isSurge(o)) continue;

      // Surge containers: the one image, a known role, restricted, config the code accepts.
      surgeImages.add(c.image ?? '');
      const role = roleOf(c);
      if (role === undefined || !(role in ROLE_PORTS)) {
        problems.push(`${where}: args[0] "${role}" is not a surge role (${Object.keys(ROLE_PORTS).join(', ')})`);
        continue;
      }
      if (c.securityContext?.readOnlyRootFilesystem !== true)
        problems.push(`${where}: readOnlyRootFilesystem is not true`);
      if (pod.automountServiceAccountToken !== false)
        problems.push(`${where}: the pod mounts a service account token it does not need`);
      if (longRunning) {
        if (c.readinessProbe?.httpGet?.path !== '/readyz') problems.push(`${where}: readinessProbe is not GET /readyz`);
        if (c.livenessProbe?.httpGet?.path !== '/healthz') problems.push(`${where}: livenessProbe is not GET /healthz`);
      }
      const env = containerEnv(c, objects, problems, where);
      surgePods.push({ o, c, env, role, template });
      for (const name of env.keys()) {
        if (!CONFIG_VARIABLES.includes(name))
          problems.push(`${where}: sets ${name}, which common/config.ts does not read`);
      }
      if (env.get('SURGE_LISTEN_HOST') !== '0.0.0.0')
        problems.push(`${where}: SURGE_LISTEN_HOST must be 0.0.0.0 in a container`);
      // The values must pass the same validation the process runs at start. Secrets that are
      // created out of band are stood in for by the defaults.
      const values: Record<string, string> = {};
      for (const [k, v] of env) if (v !== undefined) values[k] = v;
      try {
        loadConfig(values);
      } catch (e) {
        problems.push(`${where}: configuration rejected: ${(e as Error).message}`);
      }
      const vars = ROLE_PORTS[role];
      if (vars) {
        for (const portVar of new Set([vars.probes, vars.metrics])) {
          const expected = portFromEnv(env, portVar);
          if (!(c.ports ?? []).some((p) => p.containerPort === expected))
            problems.push(`${where}: no containerPort ${expected} (${portVar})`);
        }
        // The probes reach the port that serves /healthz and /readyz (for ingest, the API port:
        // its metrics port answers /metrics alone).
        const probesPort = portFromEnv(env, vars.probes);
        for (const [what, probe] of [
          ['readinessProbe', c.readinessProbe],
          ['livenessProbe', c.livenessProbe],
        ] as const) {
          const port = containerPortOf(c, probe?.httpGet?.port);
          if (longRunning && port !== undefined && port !== probesPort)
            problems.push(`${where}: ${what} on port ${port}, but ${vars.probes} (/healthz, /readyz) is ${probesPort}`);
        }
      }
      if (o.kind === 'Deployment') {
        const timeoutMs = Number(env.get('SURGE_SHUTDOWN_TIMEOUT_MS') ?? loadConfig({}).shutdownTimeoutMs);
        const preStop = c.lifecycle?.preStop?.exec?.command;
        const preStopSeconds =
          preStop?.[0] === 'sleep' ? Number(preStop[1]) : (c.lifecycle?.preStop?.sleep?.seconds ?? 0);
        const grace = pod.terminationGracePeriodSeconds ?? 30;
        if (grace <= preStopSeconds + timeoutMs / 1000) {
          problems.push(
            `${where}: terminationGracePeriodSeconds ${grace} is not above ` +
              `preStop ${preStopSeconds} s + SURGE_SHUTDOWN_TIMEOUT_MS ${timeoutMs / 1000} s`,
          );
        }
        surgeRoles.set(role, { o, c, env, template });
      }
    }
  }
  if (surgeImages.size > 1)
    problems.push(
      `Surge containers use several images (${[...surgeImages].join(', ')}); there is one image for every role`,
    );

  for (const role of ROLES) {
    if (!surgeRoles.has(role)) problems.push(`no Deployment runs surge ${role}`);
  }
  const lag = surgeRoles.get('lag-exporter');
  if (lag) {
    const spec = (lag.o as unknown as IDeployment).spec;
    if (spec?.replicas !== 1)
      problems.push(`${ref(lag.o)}: the lag exporter must run exactly 1 replica (has ${spec?.replicas})`);
    if (spec?.strategy?.type !== 'Recreate')
      problems.push(`${ref(lag.o)}: the lag exporter needs strategy Recreate (a rolling update runs two)`);
  }

  // Every Deployment is covered by exactly one PodDisruptionBudget.
  const pdbs = ofKind<IPodDisruptionBudget>(objects, 'PodDisruptionBudget');
  for (const d of deployments) {
    const labels = d.spec?.template.metadata?.labels;
    const covering = pdbs.filter((p) => matches(p.spec?.selector?.matchLabels, labels));
    if (covering.length !== 1) problems.push(`${ref(d)}: covered by ${covering.length} PodDisruptionBudgets (want 1)`);
    for (const p of covering) {
      if (d.spec?.replicas === 1 && p.spec?.minAvailable !== undefined && p.spec.minAvailable !== 0) {
        problems.push(`${ref(p)}: minAvailable on a 1-replica Deployment blocks every node drain`);
      }
    }
  }

  // Services select pods that exist and target ports those pods declare.
  for (const s of services) {
    const selector = s.spec?.selector;
    const targets = workloads(objects).filter(({ template }) => matches(selector, template.metadata?.labels));
    if (targets.length === 0) {
      problems.push(`${ref(s)}: selects no workload`);
      continue;
    }
    for (const p of s.spec?.ports ?? []) {
      const tp = p.targetPort ?? p.port;
      const found = targets.some(({ template }) =>
        (template.spec?.containers ?? []).some((c) =>
          (c.ports ?? []).some((cp) => cp.name === tp || cp.containerPort === tp),
        ),
      );
      if (!found) problems.push(`${ref(s)}: targetPort ${tp} is not a port of the selected pods`);
    }
  }

  // ServiceMonitors select Surge Services and scrape ports they have.
  for (const sm of ofKind<IServiceMonitor>(objects, 'ServiceMonitor')) {
    const selected = services.filter((s) => matches(sm.spec.selector.matchLabels, s.metadata?.labels));
    if (selected.length === 0) problems.push(`${ref(sm)}: selects no Service`);
    const portNames = new Set(selected.flatMap((s) => (s.spec?.ports ?? []).map((p) => p.name)));
    for (const ep of sm.spec.endpoints ?? []) {
      if (ep.port && !portNames.has(ep.port))
        problems.push(`${ref(sm)}: endpoint port ${ep.port} is on none of the selected Services`);
    }
    for (const s of services.filter(isSurge)) {
      if (!selected.includes(s)) problems.push(`${ref(sm)}: does not scrape ${ref(s)}`);
    }
  }

  // Prometheus scrapes each role's /metrics port and only that: a ServiceMonitor endpoint on
  // ingest's API port would find no /metrics there (404) and mark the target down.
  for (const [role, { o, c, env, template }] of surgeRoles) {
    const metricsVar = ROLE_PORTS[role]?.metrics;
    if (!metricsVar) continue;
    const metricsPort = portFromEnv(env, metricsVar);
    let scraped = false;
    for (const s of services.filter((x) => matches(x.spec?.selector, template.metadata?.labels))) {
      for (const m of ofKind<IServiceMonitor>(objects, 'ServiceMonitor')) {
        if (!matches(m.spec.selector.matchLabels, s.metadata?.labels)) continue;
        for (const ep of m.spec.endpoints ?? []) {
          const sp = (s.spec?.ports ?? []).find((p) => p.name === ep.port);
          const port = sp && containerPortOf(c, sp.targetPort ?? sp.port);
          if (port === undefined) continue;
          if (port === metricsPort) scraped = true;
          else
            problems.push(
              `${ref(m)}: scrapes ${ref(o)} on ${ref(s)} port ${ep.port} (container port ${port}), ` +
                `not its /metrics port ${metricsPort} (${metricsVar})`,
            );
        }
      }
    }
    if (!scraped)
      problems.push(`${ref(o)}: no ServiceMonitor scrapes its /metrics port ${metricsPort} (${metricsVar})`);
  }

  // Every scrape job an alert names (`up{job="surge-maintenance"}`) is scraped: the operator's
  // job label is the Service name unless a ServiceMonitor sets jobLabel.
  const monitors = ofKind<IServiceMonitor>(objects, 'ServiceMonitor');
  const scraped = new Set(
    services
      .filter((s) => monitors.some((m) => !m.spec.jobLabel && matches(m.spec.selector.matchLabels, s.metadata?.labels)))
      .map((s) => s.metadata?.name),
  );
  for (const rule of ofKind<IPrometheusRule>(objects, 'PrometheusRule')) {
    for (const group of rule.spec?.groups ?? [])
      for (const r of group.rules ?? [])
        for (const job of jobsNamedIn(String(r.expr ?? '')))
          if (!scraped.has(job))
            problems.push(`${ref(rule)}: ${r.alert ?? r.record} reads job ${job}, which no ServiceMonitor scrapes`);
  }

  // Autoscalers target existing Deployments; ingest on CPU needs CPU requests; never the lag exporter.
  for (const h of ofKind<IHorizontalPodAutoscaler>(objects, 'HorizontalPodAutoscaler')) {
    const target = deployments.find((d) => d.metadata?.name === h.spec?.scaleTargetRef.name);
    if (!target) problems.push(`${ref(h)}: scales ${h.spec?.scaleTargetRef.name}, which is not rendered`);
    if (target && target === lag?.o) problems.push(`${ref(h)}: autoscales the lag exporter`);
    const usesCpu = (h.spec?.metrics ?? []).some((m) => m.resource?.name === 'cpu');
    const cpuRequests = (target?.spec?.template.spec?.containers ?? []).every(
      (c) => c.resources?.requests?.cpu !== undefined,
    );
    if (usesCpu && !cpuRequests)
      problems.push(`${ref(h)}: scales on CPU utilisation but the target has no CPU requests`);
  }

  problems.push(...networkPolicyProblems(objects, surgePods));

  for (const so of ofKind<IScaledObject>(objects, 'ScaledObject'))
    problems.push(...scaledObjectProblems(so, objects, surgeRoles.get('work')?.env, lag?.o));

  // An autoscaled Deployment sets no replicas: every `kubectl apply` would reset the autoscaler's count.
  const scaled = [
    ...ofKind<IHorizontalPodAutoscaler>(objects, 'HorizontalPodAutoscaler').map((h) => h.spec?.scaleTargetRef.name),
    ...ofKind<IScaledObject>(objects, 'ScaledObject').map((s) => s.spec?.scaleTargetRef.name),
  ];
  for (const d of deployments) {
    if (scaled.includes(d.metadata?.name) && d.spec?.replicas !== undefined)
      problems.push(`${ref(d)}: sets replicas ${d.spec.replicas}, but an autoscaler owns the count`);
  }

  // No secret values in git: whatever Secret is rendered holds no password.
  for (const s of ofKind<ISecret>(objects, 'Secret')) {
    const values = [
      ...Object.values(s.stringData ?? {}),
      ...Object.values(s.data ?? {}).map((v) => Buffer.from(v, 'base64').toString('utf8')),
    ];
    for (const v of values) {
      let password = false;
      try {
        password = new URL(v).password !== '';
      } catch {
        password = true; // not a URL: a literal secret value
      }
      if (password) problems.push(`${ref(s)}: holds a secret value; create it out of band instead`);
    }
  }
  return problems;
}

interface SurgePod {
  o: K8sObject;
  c: IContainer;
  env: Map<string, string | undefined>;
  role: string;
  template: IPodTemplateSpec;
}

/** What each role connects to (its code's clients), for the egress check. */
const USES: Record<string, { redis: boolean; postgres: boolean }> = {
  ingest: { redis: true, postgres: true },
  work: { redis: true, postgres: true },
  'lag-exporter': { redis: true, postgres: false },
  maintenance: { redis: true, postgres: true },
  migrate: { redis: false, postgres: true },
};

function urlPort(url: string | undefined, fallback: number): number {
  try {
    return Number(new URL(url ?? '').port) || fallback;
  } catch {
    return fallback;
  }
}

/**
 * One NetworkPolicy per Surge pod, with both policy types: ingress opens every port the pod
 * declares, only ingest's API port to anyone; egress allows DNS and the Redis and PostgreSQL
 * ports the role's configuration names.
 */
function networkPolicyProblems(objects: readonly K8sObject[], pods: readonly SurgePod[]): string[] {
  const problems: string[] = [];
  const policies = ofKind<INetworkPolicy>(objects, 'NetworkPolicy');
  const defaults = loadConfig({});
  const seen = new Set<K8sObject>();
  for (const { o, c, env, role, template } of pods) {
    if (seen.has(o)) continue;
    seen.add(o);
    const covering = policies.filter((p) => matches(p.spec?.podSelector?.matchLabels, template.metadata?.labels));
    if (covering.length !== 1) {
      problems.push(`${ref(o)}: selected by ${covering.length} NetworkPolicies (want 1)`);
      continue;
    }
    const [np] = covering;
    const spec = np?.spec;
    const where = `${ref(np as K8sObject)} for ${ref(o)}`;
    for (const t of ['Ingress', 'Egress'] as const)
      if (!(spec?.policyTypes ?? []).includes(t)) problems.push(`${where}: policyTypes lacks ${t}`);
    const opens = (
      rule: INetworkPolicyIngressRule | INetworkPolicyEgressRule,
      name: string | undefined,
      port: number,
    ) => (rule.ports ?? [{}]).some((p) => p.port === undefined || p.port === name || p.port === port);
    for (const p of c.ports ?? []) {
      const rules = (spec?.ingress ?? []).filter((r) => opens(r, p.name, p.containerPort));
      if (rules.length === 0) problems.push(`${where}: admits nothing on port ${p.name ?? p.containerPort}`);
      const publicPort =
        role === 'ingest' && p.containerPort === Number(env.get('SURGE_INGEST_PORT') ?? defaults.ingestPort);
      if (!publicPort && rules.some((r) => (r.from ?? []).length === 0))
        problems.push(`${where}: admits port ${p.name ?? p.containerPort} from anywhere (only from monitoring)`);
    }
    const uses = USES[role] ?? { redis: true, postgres: true };
    const wanted: Array<[string, number, string]> = [['DNS', 53, 'UDP']];
    if (uses.postgres) wanted.push(['PostgreSQL', urlPort(env.get('DATABASE_URL'), 5432), 'TCP']);
    if (uses.redis) {
      const cluster = env.get('REDIS_CLUSTER_NODES');
      const ports = cluster
        ? cluster.split(',').map((n) => Number(n.split(':').pop()))
        : [urlPort(env.get('REDIS_URL'), 6379)];
      for (const port of new Set(ports)) wanted.push(['Redis', port, 'TCP']);
    }
    for (const [what, port, protocol] of wanted) {
      const allowed = (spec?.egress ?? []).some((r) =>
        (r.ports ?? [{}]).some((p) => (p.port === undefined || p.port === port) && (p.protocol ?? 'TCP') === protocol),
      );
      if (!allowed) problems.push(`${where}: does not allow egress to ${what} port ${port}/${protocol}`);
    }
  }
  return problems;
}

/** The scrape jobs a PromQL expression selects by name (`job="…"`; not `exported_job`). */
export function jobsNamedIn(expr: string): string[] {
  return [...expr.matchAll(/(?<![\w])job="([^"]+)"/g)].map((m) => m[1] ?? '');
}

/** The Config field holding the port that a ROLE_PORTS variable sets. */
export function portKey(variable: string): RolePort['key'] {
  const found = Object.values(SERVED_PORTS)
    .flatMap((p) => [p.probes, p.metrics])
    .find((p) => p.variable === variable);
  if (!found) throw new Error(`${variable} names no role's port`);
  return found.key;
}

/** The port a role variable sets in a container's environment, else its default. */
function portFromEnv(env: Map<string, string | undefined>, variable: string): number {
  return Number(env.get(variable) ?? loadConfig({})[portKey(variable)]);
}

/** The container port a probe or a Service's targetPort names (by name or number). */
function containerPortOf(c: IContainer, port: number | string | undefined): number | undefined {
  if (port === undefined) return undefined;
  if (typeof port === 'number') return port;
  return (c.ports ?? []).find((p) => p.name === port)?.containerPort;
}

/** The metric names the lag exporter exports (from metrics/definitions.ts). */
function lagMetricNames(): Set<string> {
  const registry: Registry = createRegistry({ defaultMetrics: false, role: 'check' });
  lagMetrics(registry);
  return new Set(registry.getMetricsAsArray().map((m) => m.name));
}

function scaledObjectProblems(
  so: IScaledObject & K8sObject,
  objects: readonly K8sObject[],
  workerEnv: Map<string, string | undefined> | undefined,
  lagExporter: K8sObject | undefined,
): string[] {
  const problems: string[] = [];
  const where = ref(so);
  const target = objects.find((o) => o.kind === 'Deployment' && o.metadata.name === so.spec?.scaleTargetRef.name);
  if (!target) problems.push(`${where}: scales ${so.spec?.scaleTargetRef.name}, which is not rendered`);
  if (target && target === lagExporter) problems.push(`${where}: autoscales the lag exporter`);
  if ((so.spec?.minReplicaCount ?? 0) < 1)
    problems.push(`${where}: minReplicaCount below 1 leaves pending entries with no consumer`);
  if (!workerEnv) return [...problems, `${where}: no worker Deployment to read SURGE_SHARDS from`];

  const defaults = loadConfig({});
  const prefix = workerEnv.get('SURGE_REDIS_PREFIX') ?? defaults.redisPrefix;
  const shards = Number(workerEnv.get('SURGE_SHARDS') ?? defaults.shards);
  const expected = allStreamKeys(prefix, shards);
  const triggers = so.spec?.triggers ?? [];
  const redis = triggers.filter((t) => t.type === 'redis-streams' || t.type === 'redis-cluster-streams');
  const streams = redis.map((t) => t.metadata.stream);
  const missing = expected.filter((s) => !streams.includes(s));
  const extra = streams.filter((s) => !expected.includes(s ?? ''));
  if (missing.length > 0) problems.push(`${where}: no trigger for ${missing.join(', ')} (SURGE_SHARDS=${shards})`);
  if (extra.length > 0) problems.push(`${where}: triggers name streams Surge does not write: ${extra.join(', ')}`);
  if (new Set(streams).size !== streams.length) problems.push(`${where}: a stream has two triggers`);
  const cluster = (workerEnv.get('REDIS_CLUSTER_NODES') ?? '') !== '';
  for (const t of redis) {
    const m = t.metadata;
    const w = `${where} trigger ${m.stream}`;
    if (m.consumerGroup !== GROUP) problems.push(`${w}: consumerGroup ${m.consumerGroup} is not ${GROUP}`);
    if (m.lagCount === undefined || m.pendingEntriesCount !== undefined || m.streamLength !== undefined)
      problems.push(`${w}: not in lag mode (lagCount only)`);
    if (m.lagCount !== undefined && !(Number(m.lagCount) > 0))
      problems.push(`${w}: lagCount must be a positive number`);
    if (cluster && t.type !== 'redis-cluster-streams')
      problems.push(`${w}: Surge runs on Redis Cluster (REDIS_CLUSTER_NODES) but the trigger is ${t.type}`);
    if (!cluster && t.type !== 'redis-streams')
      problems.push(`${w}: Surge uses a single Redis node but the trigger is ${t.type}`);
    if (t.type === 'redis-cluster-streams' && m.addressesFromEnv !== undefined && !workerEnv.has(m.addressesFromEnv)) {
      problems.push(`${w}: addressesFromEnv ${m.addressesFromEnv} is not set in the worker container`);
    }
    if (t.type === 'redis-streams') {
      const host = (m.address ?? '').split(':')[0] ?? '';
      const inCluster = /^([a-z0-9-]+)\.([a-z0-9-]+)\.svc(\.cluster\.local)?$/.exec(host);
      if (!host.includes('.'))
        problems.push(
          `${w}: address ${m.address} is a bare name: KEDA's operator resolves it from its own namespace ` +
            '(use <service>.<namespace>.svc.cluster.local)',
        );
      else if (
        inCluster &&
        !objects.some(
          (o) =>
            o.kind === 'Service' && o.metadata.name === inCluster[1] && (o.metadata.namespace ?? '') === inCluster[2],
        )
      ) {
        problems.push(`${w}: address ${m.address} names no rendered Service`);
      }
    }
    if (
      t.authenticationRef &&
      !objects.some((o) => o.kind === 'TriggerAuthentication' && o.metadata.name === t.authenticationRef?.name)
    ) {
      problems.push(`${w}: authenticationRef ${t.authenticationRef.name} is not rendered`);
    }
  }
  const names = lagMetricNames();
  const backlog = triggers.filter((t) => t.type === 'prometheus');
  // The HPA takes the largest trigger, not the sum: a per-shard trigger sees 1/shards of an even
  // backlog, so its lagCount is the summed trigger's threshold ÷ SURGE_SHARDS for both to agree.
  const threshold = Number(backlog[0]?.metadata.threshold);
  for (const t of redis) {
    const want = Math.ceil(threshold / shards);
    if (backlog.length > 0 && Number(t.metadata.lagCount) !== want)
      problems.push(
        `${where} trigger ${t.metadata.stream}: lagCount ${t.metadata.lagCount} is not the backlog threshold ` +
          `${threshold} ÷ SURGE_SHARDS ${shards} = ${want} (the HPA takes the largest trigger, not the sum)`,
      );
  }
  if (backlog.length === 0)
    problems.push(`${where}: no Prometheus trigger on surge_consumer_group_backlog (Redis lag misses pending entries)`);
  for (const t of backlog) {
    const query = t.metadata.query ?? '';
    for (const metric of query.match(/surge_[a-z_]+/g) ?? []) {
      if (!names.has(metric))
        problems.push(`${where}: Prometheus query uses ${metric}, which the lag exporter does not export`);
    }
    if (!query.includes('surge_consumer_group_backlog'))
      problems.push(`${where}: the Prometheus trigger does not read surge_consumer_group_backlog`);
    const ns = /namespace="([^"]*)"/.exec(query)?.[1];
    if (so.metadata.namespace && ns !== so.metadata.namespace)
      problems.push(
        `${where}: the Prometheus query reads namespace "${ns}" but Surge runs in "${so.metadata.namespace}"`,
      );
  }
  return problems;
}

/** The kubernetes-models interface for each kind, for the unknown-field check below. */
const TYPES: Record<string, { module: string; type: string }> = {
  'v1/ConfigMap': { module: 'kubernetes-models/v1/ConfigMap', type: 'IConfigMap' },
  'v1/Secret': { module: 'kubernetes-models/v1/Secret', type: 'ISecret' },
  'v1/Service': { module: 'kubernetes-models/v1/Service', type: 'IService' },
  'v1/Namespace': { module: 'kubernetes-models/v1/Namespace', type: 'INamespace' },
  'apps/v1/Deployment': { module: 'kubernetes-models/apps/v1/Deployment', type: 'IDeployment' },
  'apps/v1/StatefulSet': { module: 'kubernetes-models/apps/v1/StatefulSet', type: 'IStatefulSet' },
  'networking.k8s.io/v1/NetworkPolicy': {
    module: 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy',
    type: 'INetworkPolicy',
  },
  'batch/v1/Job': { module: 'kubernetes-models/batch/v1/Job', type: 'IJob' },
  'policy/v1/PodDisruptionBudget': {
    module: 'kubernetes-models/policy/v1/PodDisruptionBudget',
    type: 'IPodDisruptionBudget',
  },
  'autoscaling/v2/HorizontalPodAutoscaler': {
    module: 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler',
    type: 'IHorizontalPodAutoscaler',
  },
  'keda.sh/v1alpha1/ScaledObject': {
    module: '@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject',
    type: 'IScaledObject',
  },
  'keda.sh/v1alpha1/TriggerAuthentication': {
    module: '@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication',
    type: 'ITriggerAuthentication',
  },
  'monitoring.coreos.com/v1/ServiceMonitor': {
    module: '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor',
    type: 'IServiceMonitor',
  },
  'monitoring.coreos.com/v1/PrometheusRule': {
    module: '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule',
    type: 'IPrometheusRule',
  },
};

/**
 * A TypeScript module that assigns every object, as an object literal, to its kubernetes-models
 * interface. The JSON schemas above accept unknown fields (a misspelt `readinessProbes` would
 * pass, and the API server would then reject or drop it); TypeScript's excess-property check on
 * object literals does not, so compiling this module finds them. Returns the source and, per
 * line, which object it holds.
 */
export function typedModule(objects: readonly K8sObject[]): { source: string; objectAtLine: (line: number) => string } {
  const imports = new Map<string, string>();
  const lines: string[] = [];
  const owners: string[] = [];
  objects.forEach((o, i) => {
    const t = TYPES[`${o.apiVersion}/${o.kind}`];
    if (!t) return; // schemaProblems already reports kinds without a schema
    imports.set(t.type, t.module);
    const body = JSON.stringify(o, null, 1).split('\n');
    body[0] = `export const o${i}: ${t.type} = ${body[0]}`;
    body[body.length - 1] += ';';
    for (const l of body) {
      lines.push(l);
      owners.push(ref(o));
    }
  });
  const head = [...imports].map(([type, module]) => `import type { ${type} } from '${module}';`);
  return {
    source: [...head, ...lines, ''].join('\n'),
    objectAtLine: (line: number) => owners[line - 1 - head.length] ?? '?',
  };
}
