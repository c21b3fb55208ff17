// Offline checks of docker-compose.yml (no Docker engine here): every Surge service runs a real
// role of the one image with configuration the code accepts, ports and health checks agree with
// that configuration, every other image is pinned, every name and file it refers to exists, and
// Prometheus/Grafana are wired to what the file runs.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, posix } from 'node:path';
import { parse } from 'yaml';
import { CONFIG_VARIABLES, type Config, loadConfig } from '../../common/config.js';
import { ROLES } from '../../common/roles.js';
import { jobsNamedIn, portKey, ROLE_PORTS } from './k8s.js';

export interface ComposeService {
  image?: string;
  build?: string | { context: string; dockerfile?: string };
  command?: string[] | string;
  environment?: Record<string, string | number | boolean>;
  ports?: string[];
  volumes?: string[];
  depends_on?: string[] | Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
  deploy?: { replicas?: number };
  read_only?: boolean;
  stop_grace_period?: string;
  [field: string]: unknown;
}
export interface ComposeFile {
  services: Record<string, ComposeService>;
  volumes?: Record<string, unknown>;
}

/** Bind-mounted files that another part of the project provides (metrics/: alert rules, dashboard). */
export const PROVIDED_ELSEWHERE = ['metrics/alerts.yml', 'metrics/dashboard.json'];

export function readCompose(root: string): ComposeFile {
  return parse(readFileSync(join(root, 'docker-compose.yml'), 'utf8'), { merge: true }) as ComposeFile;
}

function durationSeconds(d: string | undefined): number {
  const m = /^(\d+)(ms|s|m)$/.exec(d ?? '10s');
  if (!m) return Number.NaN;
  const n = Number(m[1]);
  return m[2] === 'ms' ? n / 1000 : m[2] === 'm' ? n * 60 : n;
}

function asList(c: string[] | string | undefined): string[] {
  return Array.isArray(c) ? c : c ? c.split(/\s+/) : [];
}

/** Every problem in a parsed compose file; `root` is where its relative paths start. */
export function composeProblems(doc: ComposeFile, root: string): string[] {
  const problems: string[] = [];
  const services = doc.services ?? {};
  const names = Object.keys(services);
  const surgeImages = new Set<string>();
  const rolePorts = new Map<string, RoleService>();

  for (const [name, s] of Object.entries(services)) {
    const where = `service ${name}`;
    for (const dep of Array.isArray(s.depends_on) ? s.depends_on : Object.keys(s.depends_on ?? {})) {
      if (!names.includes(dep)) problems.push(`${where}: depends_on ${dep}, which is not a service`);
    }
    for (const v of s.volumes ?? []) {
      const [source] = v.split(':');
      if (!source) continue;
      if (source.startsWith('.')) {
        const rel = posix.normalize(source);
        if (!existsSync(join(root, rel))) problems.push(`${where}: mounts ${rel}, which does not exist`);
      } else if (!(source in (doc.volumes ?? {}))) {
        problems.push(`${where}: uses volume ${source}, which is not declared`);
      }
    }
    if (s.build !== undefined) {
      const context = typeof s.build === 'string' ? s.build : s.build.context;
      const dockerfile = typeof s.build === 'string' ? 'Dockerfile' : (s.build.dockerfile ?? 'Dockerfile');
      if (!existsSync(join(root, context, dockerfile)))
        problems.push(`${where}: builds ${join(context, dockerfile)}, which does not exist`);
      surgeImages.add(s.image ?? '(unnamed)');
    } else {
      const image = s.image ?? '';
      const tag = image.includes(':') ? image.slice(image.lastIndexOf(':') + 1) : '';
      if (tag === '' || tag === 'latest') problems.push(`${where}: image ${image} is not pinned to a version tag`);
      continue;
    }

    // A Surge service: the one image, a real role, configuration the code accepts.
    const command = asList(s.command);
    const role = command[0] ?? '';
    if (!(role in ROLE_PORTS)) {
      problems.push(`${where}: command "${role}" is not a surge role (${Object.keys(ROLE_PORTS).join(', ')})`);
      continue;
    }
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(s.environment ?? {})) env[k] = String(v);
    for (const k of Object.keys(env))
      if (!CONFIG_VARIABLES.includes(k)) problems.push(`${where}: sets ${k}, which common/config.ts does not read`);
    let config: Config | undefined;
    try {
      config = loadConfig(env);
    } catch (e) {
      problems.push(`${where}: configuration rejected: ${(e as Error).message}`);
    }
    if (!config) continue;
    if (config.listenHost !== '0.0.0.0') problems.push(`${where}: SURGE_LISTEN_HOST must be 0.0.0.0 in a container`);
    if (s.read_only !== true) problems.push(`${where}: root filesystem is not read-only`);
    if (durationSeconds(s.stop_grace_period) <= config.shutdownTimeoutMs / 1000) {
      problems.push(
        `${where}: stop_grace_period ${s.stop_grace_period ?? '10s (default)'} is not above SURGE_SHUTDOWN_TIMEOUT_MS`,
      );
    }
    for (const [key, url] of [
      ['DATABASE_URL', config.databaseUrl],
      ['REDIS_URL', config.redisUrl],
    ] as const) {
      const host = new URL(url).hostname;
      if (!names.includes(host)) problems.push(`${where}: ${key} points at ${host}, which is not a service`);
    }
    const vars = ROLE_PORTS[role];
    if (vars) {
      const port = config[portKey(vars.probes)];
      const metricsPort = config[portKey(vars.metrics)];
      rolePorts.set(role, { service: name, port, metricsPort, metricsVar: vars.metrics });
      for (const p of s.ports ?? []) {
        const container = Number(String(p).split(':').pop());
        if (container !== port && container !== metricsPort)
          problems.push(
            `${where}: publishes container port ${container}, but ${vars.probes} is ${port}` +
              (metricsPort === port ? '' : ` and ${vars.metrics} is ${metricsPort}`),
          );
      }
      const check = (s.healthcheck?.test ?? []).join(' ');
      const hp = /127\.0\.0\.1:(\d+)\/(readyz|healthz)/.exec(check);
      if (!hp) problems.push(`${where}: no health check on /readyz or /healthz`);
      else if (Number(hp[1]) !== port)
        problems.push(`${where}: health check on port ${hp[1]}, but ${vars.probes} is ${port}`);
    }
    if (role === 'lag-exporter' && (s.deploy?.replicas ?? 1) !== 1)
      problems.push(`${where}: the lag exporter must run exactly 1 replica`);
    if (role !== 'migrate') {
      const migrate = Object.entries(services).find(([, x]) => asList(x.command)[0] === 'migrate')?.[0];
      const deps = s.depends_on && !Array.isArray(s.depends_on) ? s.depends_on : {};
      if (!migrate || deps[migrate]?.condition !== 'service_completed_successfully') {
        problems.push(`${where}: does not wait for the migrate service to complete`);
      }
    }
  }
  if (surgeImages.size !== 1)
    problems.push(`Surge services use ${surgeImages.size} images; there is one image for every role`);
  for (const role of ROLES) if (!rolePorts.has(role)) problems.push(`no service runs surge ${role}`);

  // Redis as Surge needs it: AOF on, noeviction (SEMANTICS 2.7, 2.9).
  const redis = Object.entries(services).find(([, s]) => (s.image ?? '').startsWith('redis:'));
  if (!redis) problems.push('no Redis service');
  else {
    const args = asList(redis[1].command);
    const opt = (n: string) => args[args.indexOf(n) + 1];
    if (opt('--appendonly') !== 'yes') problems.push('redis: --appendonly is not yes');
    if (opt('--maxmemory-policy') !== 'noeviction') problems.push('redis: --maxmemory-policy is not noeviction');
  }

  problems.push(...prometheusProblems(doc, root, rolePorts));
  return problems;
}

/** A Surge service's ports: probes (`port`) and /metrics. */
interface RoleService {
  service: string;
  port: number;
  metricsPort: number;
  metricsVar: string;
}

/** Prometheus scrapes every Surge role at its /metrics port, and only there, and loads the mounted rules. */
function prometheusProblems(doc: ComposeFile, root: string, rolePorts: Map<string, RoleService>): string[] {
  const problems: string[] = [];
  const prom = Object.entries(doc.services).find(([, s]) => (s.image ?? '').startsWith('prom/prometheus:'));
  if (!prom) return ['no Prometheus service'];
  const mounts = (prom[1].volumes ?? []).map((v) => v.split(':'));
  const configMount = mounts.find((m) => m[1] === '/etc/prometheus/prometheus.yml');
  if (!configMount?.[0]) return ['prometheus: no prometheus.yml mounted'];
  const configPath = join(root, configMount[0]);
  if (!existsSync(configPath)) return [`prometheus: ${configMount[0]} does not exist`];
  const config = parse(readFileSync(configPath, 'utf8')) as {
    rule_files?: string[];
    scrape_configs?: Array<{
      job_name: string;
      static_configs?: Array<{ targets: string[] }>;
      dns_sd_configs?: Array<{ names: string[]; port: number }>;
    }>;
  };
  const targets: Array<{ host: string; port: number }> = [];
  for (const sc of config.scrape_configs ?? []) {
    for (const st of sc.static_configs ?? [])
      for (const t of st.targets) targets.push({ host: t.split(':')[0] ?? '', port: Number(t.split(':')[1]) });
    for (const d of sc.dns_sd_configs ?? []) for (const n of d.names) targets.push({ host: n, port: d.port });
  }
  for (const [role, { service, metricsPort, metricsVar }] of rolePorts) {
    if (!targets.some((t) => t.host === service && t.port === metricsPort))
      problems.push(`prometheus: does not scrape ${role} at ${service}:${metricsPort}`);
    for (const t of targets.filter((x) => x.host === service && x.port !== metricsPort))
      problems.push(`prometheus: scrapes ${role} at ${service}:${t.port}, not its /metrics port (${metricsVar})`);
  }
  for (const t of targets)
    if (!(t.host in doc.services)) problems.push(`prometheus: scrapes ${t.host}, which is not a service`);
  // Every scrape job an alert names (`up{job="surge-maintenance"}`) is a job here.
  const jobs = new Set((config.scrape_configs ?? []).map((sc) => sc.job_name));
  const rulesFile = join(root, 'metrics', 'alerts.yml');
  if (existsSync(rulesFile)) {
    for (const job of new Set(jobsNamedIn(readFileSync(rulesFile, 'utf8'))))
      if (!jobs.has(job)) problems.push(`prometheus: the alerts read job ${job}, which no scrape config defines`);
  }
  const rulesMount = mounts.find((m) => m[0] === './metrics/alerts.yml');
  if (!rulesMount?.[1]) problems.push('prometheus: metrics/alerts.yml is not mounted');
  else if (
    !(config.rule_files ?? []).some(
      (g) => dirname(g) === dirname(rulesMount[1] ?? '') && (g.endsWith('*.yml') || g === rulesMount[1]),
    )
  ) {
    problems.push(`prometheus: rule_files does not load ${rulesMount[1]}`);
  }
  return problems;
}
