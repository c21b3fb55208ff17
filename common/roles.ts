// The long-running roles: each is `surge <role>`, started through cli/common.ts serve(), runs until
// SIGTERM, answers the probes (/healthz, /readyz) on one port and /metrics on one port, each named
// by a variable. They are the same port except for ingest, whose /metrics is kept off the public
// API port. Every deployment runs each of them (k8s/, docker-compose.yml, `surge up`);
// test/deploy-*.test.ts check it.
import type { Config } from './config.js';

/** A port a role listens on: its config variable and the Config field it sets. */
export interface RolePort {
  readonly variable: string;
  readonly key: keyof Config & `${string}Port`;
}

const port = <K extends keyof Config & `${string}Port`>(variable: string, key: K) => ({ variable, key }) as const;

const WORKER = port('SURGE_WORKER_METRICS_PORT', 'workerMetricsPort');
const LAG_EXPORTER = port('SURGE_LAG_EXPORTER_PORT', 'lagExporterPort');
const MAINTENANCE = port('SURGE_MAINTENANCE_METRICS_PORT', 'maintenanceMetricsPort');

export const ROLE_PORTS = {
  ingest: {
    probes: port('SURGE_INGEST_PORT', 'ingestPort'),
    metrics: port('SURGE_INGEST_METRICS_PORT', 'ingestMetricsPort'),
  },
  work: { probes: WORKER, metrics: WORKER },
  'lag-exporter': { probes: LAG_EXPORTER, metrics: LAG_EXPORTER },
  maintenance: { probes: MAINTENANCE, metrics: MAINTENANCE },
} as const satisfies Record<string, { probes: RolePort; metrics: RolePort }>;

export type Role = keyof typeof ROLE_PORTS;

export const ROLES: readonly Role[] = ['ingest', 'work', 'lag-exporter', 'maintenance'];

/** Every port a role listens on (one when probes and /metrics share it). */
export function rolePorts(role: Role): RolePort[] {
  const { probes, metrics } = ROLE_PORTS[role];
  return probes.variable === metrics.variable ? [probes] : [probes, metrics];
}
