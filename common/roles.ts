// The long-running roles: each is `surge <role>`, started through cli/common.ts serve(), runs until
// SIGTERM and serves /metrics, /healthz and /readyz on the port its variable names. Every deployment
// runs each of them (k8s/, docker-compose.yml, `surge up`); test/deploy-*.test.ts check it.
import type { Config } from './config.js';

export const ROLE_PORTS = {
  ingest: { variable: 'SURGE_INGEST_PORT', key: 'ingestPort' },
  work: { variable: 'SURGE_WORKER_METRICS_PORT', key: 'workerMetricsPort' },
  'lag-exporter': { variable: 'SURGE_LAG_EXPORTER_PORT', key: 'lagExporterPort' },
  maintenance: { variable: 'SURGE_MAINTENANCE_METRICS_PORT', key: 'maintenanceMetricsPort' },
} as const satisfies Record<string, { variable: string; key: keyof Config }>;

export type Role = keyof typeof ROLE_PORTS;

export const ROLES: readonly Role[] = ['ingest', 'work', 'lag-exporter', 'maintenance'];
