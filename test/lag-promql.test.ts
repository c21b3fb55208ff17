// The dashboard and the alert rules query only what Surge exports: every metric name in every
// PromQL expression of metrics/dashboard.json and metrics/alerts.yml is one that
// metrics/definitions.ts defines, and every label they group or match by is one those metrics carry.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { Registry } from 'prom-client';
import { parse as parseYaml } from 'yaml';
import { PACKAGE_ROOT } from '../common/paths.js';
import * as definitions from '../metrics/definitions.js';

interface Known {
  /** Exported series name → label names it can carry. */
  series: Map<string, Set<string>>;
}

/** Every series Surge exports, from the definitions themselves (every `*Metrics(registry)` set). */
function knownSeries(): Known {
  const registry = definitions.createRegistry({ defaultMetrics: true, role: 'check' });
  for (const [name, fn] of Object.entries(definitions)) {
    if (name.endsWith('Metrics') && typeof fn === 'function') (fn as (r: Registry) => unknown)(registry);
  }
  // Prometheus adds job and instance to every series, prometheus-operator also namespace (compose
  // has none: the dashboard's `namespace=~".*"` matches its absence); `role` is Surge's default label.
  const common = ['job', 'instance', 'namespace', 'role'];
  const series = new Map<string, Set<string>>();
  for (const m of registry.getMetricsAsArray()) {
    const own = (m as unknown as { labelNames?: readonly string[] }).labelNames ?? [];
    // A metric's own `job` label reaches Prometheus as `exported_job`: the target's `job` wins.
    const labels = new Set([...common, ...own.map((l) => (l === 'job' ? 'exported_job' : l))]);
    const type = String(m.type);
    if (type === 'histogram') {
      series.set(`${m.name}_bucket`, new Set([...labels, 'le']));
      series.set(`${m.name}_sum`, labels);
      series.set(`${m.name}_count`, labels);
    } else if (type === 'summary') {
      series.set(m.name, new Set([...labels, 'quantile']));
      series.set(`${m.name}_sum`, labels);
      series.set(`${m.name}_count`, labels);
    } else series.set(m.name, labels);
  }
  registry.clear();
  // Prometheus' own target-health series, used by the role down-or-absent alerts.
  series.set('up', new Set(['job', 'instance', 'namespace']));
  return { series };
}

const KEYWORDS = new Set([
  'and',
  'or',
  'unless',
  'bool',
  'offset',
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'inf',
  'nan',
  'atan2',
]);

interface PromqlRefs {
  metrics: string[];
  /** Labels in by/without/on/ignoring/group_* clauses and in {…} matchers. */
  labels: string[];
}

/** The metric names and label names a PromQL expression refers to (a tokenizer, not a full parser). */
function promqlRefs(expr: string): PromqlRefs {
  const labels: string[] = [];
  let s = expr.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""');
  s = s.replace(/\{([^}]*)\}/g, (_, inner: string) => {
    for (const [, label] of inner.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)/g)) if (label) labels.push(label);
    return ' ';
  });
  s = s.replace(/\[[^\]]*\]/g, ' ');
  s = s.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)/g, (_, _kw: string, list: string) => {
    for (const l of list.split(',')) if (l.trim()) labels.push(l.trim());
    return ' ';
  });
  const metrics: string[] = [];
  const tokens = [
    ...s.matchAll(/\d+(?:\.\d+)?(?:e[+-]?\d+)?(?:ms|[smhdwy])?|\$[a-zA-Z_]\w*|[a-zA-Z_:][a-zA-Z0-9_:]*|\S/gi),
  ];
  for (const [i, t] of tokens.entries()) {
    const tok = t[0];
    if (!/^[a-zA-Z_:]/.test(tok) || KEYWORDS.has(tok.toLowerCase())) continue;
    if (tokens[i + 1]?.[0] === '(') continue; // a function or an aggregation
    metrics.push(tok);
  }
  return { metrics, labels };
}

/** Problems with one expression: unknown metrics, or labels none of its metrics carry. */
function check(known: Known, where: string, expr: string): string[] {
  const refs = promqlRefs(expr);
  const problems: string[] = [];
  if (refs.metrics.length === 0) problems.push(`${where}: no metric in ${JSON.stringify(expr)}`);
  const allowed = new Set<string>();
  for (const name of refs.metrics) {
    const labels = known.series.get(name);
    if (!labels) problems.push(`${where}: ${name} is not a metric Surge exports`);
    else for (const l of labels) allowed.add(l);
  }
  for (const l of refs.labels)
    if (!allowed.has(l)) problems.push(`${where}: label ${l} is not on ${refs.metrics.join(', ')}`);
  return problems;
}

function dashboardExprs(): Array<{ where: string; expr: string }> {
  const dash = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'metrics', 'dashboard.json'), 'utf8')) as {
    panels: unknown[];
  };
  const out: Array<{ where: string; expr: string }> = [];
  const walk = (node: unknown, where: string) => {
    if (Array.isArray(node)) {
      for (const [i, n] of node.entries()) walk(n, `${where}[${i}]`);
    } else if (node && typeof node === 'object') {
      const o = node as Record<string, unknown>;
      const here = typeof o.title === 'string' ? `${where} "${o.title}"` : where;
      for (const [k, v] of Object.entries(o)) {
        if (k === 'expr' && typeof v === 'string') out.push({ where: here, expr: v });
        else walk(v, k === 'panels' || k === 'targets' ? here : `${here}.${k}`);
      }
    }
  };
  walk(dash.panels, 'dashboard');
  return out;
}

interface Rules {
  groups: Array<{ name: string; rules: Array<{ alert?: string; record?: string; expr: string }> }>;
}

function alertRules(): Rules {
  return parseYaml(readFileSync(join(PACKAGE_ROOT, 'metrics', 'alerts.yml'), 'utf8')) as Rules;
}

describe('dashboard and alerts name only what Surge exports', () => {
  const known = knownSeries();

  test('the checker itself catches a misspelt metric and a label no metric has', () => {
    assert.deepEqual(promqlRefs('sum by (le) (rate(surge_x_bucket{code=~"5.."}[5m])) / ignoring(a) 2e3 offset 5m'), {
      metrics: ['surge_x_bucket'],
      labels: ['code', 'le', 'a'],
    });
    assert.deepEqual(check(known, 'x', 'rate(surge_ingest_request_total[5m])'), [
      'x: surge_ingest_request_total is not a metric Surge exports',
    ]);
    assert.deepEqual(check(known, 'x', 'sum by (shard) (surge_consumer_group_backlog)'), [
      'x: label shard is not on surge_consumer_group_backlog',
    ]);
    assert.deepEqual(check(known, 'x', 'max by (stream) (surge_consumer_group_lag_seconds)'), []);
  });

  test('the dashboard parses and every expression is sound', () => {
    const exprs = dashboardExprs();
    assert.ok(exprs.length >= 10, `${exprs.length} expressions`);
    const problems = exprs.flatMap(({ where, expr }) => check(known, where, expr));
    assert.deepEqual(problems, []);
    // It shows what an operator needs to see: ingest traffic and latency, backlog and lag, the
    // oldest pending entry, applied orders, end-to-end latency, dead letters and Redis memory.
    const used = new Set(exprs.flatMap(({ expr }) => promqlRefs(expr).metrics));
    for (const name of [
      'surge_ingest_requests_total',
      'surge_ingest_request_duration_seconds_bucket',
      'surge_consumer_group_backlog',
      'surge_consumer_group_lag_seconds',
      'surge_oldest_pending_age_seconds',
      'surge_orders_applied_total',
      'surge_order_end_to_end_seconds_bucket',
      'surge_dlq_depth',
      'surge_redis_used_memory_bytes',
    ]) {
      assert.ok(used.has(name), `dashboard shows ${name}`);
    }
  });

  test('the alert rules parse and every expression is sound', () => {
    const rules = alertRules().groups.flatMap((g) => g.rules);
    const problems = rules.flatMap((r) => check(known, `alert ${r.alert ?? r.record}`, r.expr));
    assert.deepEqual(problems, []);
    assert.deepEqual(rules.map((r) => r.alert).sort(), [
      'SurgeBacklogAgeOverSLO',
      'SurgeBacklogGrowing',
      'SurgeConsumerIdleWithPending',
      'SurgeDeadLetters',
      'SurgeEntriesLost',
      'SurgeIngest5xxRatio',
      'SurgeIngestDown',
      'SurgeLagExporterDown',
      'SurgeLagExporterRedisUnreadable',
      'SurgeMaintenanceDown',
      'SurgeMaintenanceJobFailing',
      'SurgeRedisMemoryHigh',
      'SurgeStreamTrimStalled',
      'SurgeWorkersDown',
    ]);
  });
});
