// Copies Surge's alert rules and Grafana dashboard from metrics/ into k8s/base/monitoring/,
// where kustomize can read them (it refuses files outside the kustomization's directory):
//   metrics/alerts.yml      → k8s/base/monitoring/prometheusrule.yaml (a PrometheusRule)
//   metrics/dashboard.json  → k8s/base/monitoring/dashboard.json (configMapGenerator input)
// `node scripts/sync-k8s-monitoring.mjs` writes them; `--check` exits 1 if they are stale.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const ALERTS_SOURCE = join(root, 'metrics', 'alerts.yml');
export const DASHBOARD_SOURCE = join(root, 'metrics', 'dashboard.json');
export const RULE_TARGET = join(root, 'k8s', 'base', 'monitoring', 'prometheusrule.yaml');
export const DASHBOARD_TARGET = join(root, 'k8s', 'base', 'monitoring', 'dashboard.json');

/** The PrometheusRule manifest for a Prometheus rule file's text. */
export function prometheusRuleFor(alertsText) {
  const rules = parse(alertsText);
  if (!rules || !Array.isArray(rules.groups))
    throw new Error('metrics/alerts.yml: expected a rule file with `groups:`');
  const rule = {
    apiVersion: 'monitoring.coreos.com/v1',
    kind: 'PrometheusRule',
    metadata: { name: 'surge', labels: { 'app.kubernetes.io/name': 'surge', 'app.kubernetes.io/part-of': 'surge' } },
    spec: { groups: rules.groups },
  };
  const header =
    '# Generated from metrics/alerts.yml by scripts/sync-k8s-monitoring.mjs (npm run sync:k8s). Do not edit.';
  return `${header}\n${stringify(rule, { lineWidth: 0 })}`;
}

function main() {
  const check = process.argv.includes('--check');
  const missing = [ALERTS_SOURCE, DASHBOARD_SOURCE].filter((p) => !existsSync(p));
  if (missing.length > 0) {
    console.error(`sync-k8s-monitoring: missing ${missing.map((p) => p.slice(root.length + 1)).join(', ')}`);
    process.exit(1);
  }
  const wanted = [
    [RULE_TARGET, prometheusRuleFor(readFileSync(ALERTS_SOURCE, 'utf8'))],
    [DASHBOARD_TARGET, readFileSync(DASHBOARD_SOURCE, 'utf8')],
  ];
  let stale = 0;
  for (const [path, text] of wanted) {
    const current = existsSync(path) ? readFileSync(path, 'utf8') : undefined;
    if (current === text) continue;
    stale++;
    if (check) console.error(`stale: ${path.slice(root.length + 1)} (run npm run sync:k8s)`);
    else writeFileSync(path, text);
  }
  if (check && stale > 0) process.exit(1);
  if (!check)
    console.log(stale === 0 ? 'k8s/base/monitoring is up to date' : `updated ${stale} file(s) in k8s/base/monitoring`);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main();
