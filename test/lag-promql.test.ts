// Metric names bound in both directions. The dashboard and the alert rules query only what Surge
// exports: every metric name in every PromQL expression of metrics/dashboard.json (panels and
// template variables) and metrics/alerts.yml is one the registries of metrics/definitions.ts
// export (read by instantiating them, never from a list here), and every label they group or
// match by is one those metrics carry. The reverse: every metric Surge exports is on the
// dashboard or in NO_PANEL with the reason it needs none. Every dashboard query is filtered by
// the namespace, job and instance variables, so two deployments in one Prometheus stay apart.
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
  /** Exported series name → the metric it belongs to (`x_bucket` → `x`). */
  family: Map<string, string>;
  /** Surge's own metrics (the `*Metrics` sets), by name. */
  own: Set<string>;
  /** prom-client's process and runtime metrics (`collectDefaultMetrics`), by name. */
  runtime: Set<string>;
}

/** Every series Surge exports, from the definitions themselves (every `*Metrics(registry)` set). */
function knownSeries(): Known {
  const runtimeRegistry = definitions.createRegistry({ defaultMetrics: true, role: 'check' });
  const runtime = new Set(runtimeRegistry.getMetricsAsArray().map((m) => m.name));
  runtimeRegistry.clear();
  const registry = definitions.createRegistry({ defaultMetrics: true, role: 'check' });
  for (const [name, fn] of Object.entries(definitions)) {
    if (name.endsWith('Metrics') && typeof fn === 'function') (fn as (r: Registry) => unknown)(registry);
  }
  // Prometheus adds job and instance to every series, prometheus-operator also namespace (compose
  // has none: the dashboard's `namespace=~".*"` matches its absence); `role` is Surge's default label.
  const common = ['job', 'instance', 'namespace', 'role'];
  const series = new Map<string, Set<string>>();
  const family = new Map<string, string>();
  const surge = new Set<string>();
  for (const m of registry.getMetricsAsArray()) {
    if (!runtime.has(m.name)) surge.add(m.name);
    const own = (m as unknown as { labelNames?: readonly string[] }).labelNames ?? [];
    // A metric's own `job` label reaches Prometheus as `exported_job`: the target's `job` wins.
    const labels = new Set([...common, ...own.map((l) => (l === 'job' ? 'exported_job' : l))]);
    const type = String(m.type);
    const add = (name: string, labelSet: Set<string>) => {
      series.set(name, labelSet);
      family.set(name, m.name);
    };
    if (type === 'histogram') {
      add(`${m.name}_bucket`, new Set([...labels, 'le']));
      add(`${m.name}_sum`, labels);
      add(`${m.name}_count`, labels);
    } else if (type === 'summary') {
      add(m.name, new Set([...labels, 'quantile']));
      add(`${m.name}_sum`, labels);
      add(`${m.name}_count`, labels);
    } else add(m.name, labels);
  }
  registry.clear();
  // Prometheus' own target-health series, used by the role down-or-absent alerts and panels.
  series.set('up', new Set(['job', 'instance', 'namespace']));
  return { series, family, own: surge, runtime };
}

/**
 * Metrics Surge exports that have no dashboard panel, each with why an operator does not need
 * one. A metric added to metrics/definitions.ts goes on the dashboard or here.
 */
const NO_PANEL: Record<string, string> = {
  surge_ingest_accept_call_orders:
    'how many orders share one Redis accept call: a figure for tuning the hot path (benchmarks, profiles), ' +
    'not a sign of health; load and latency panels show its effect',
  surge_ingest_batches_prepared_total:
    'whether :batch bodies were parsed on a thread or the main thread: checks SURGE_INGEST_BATCH_THREADS ' +
    'when tuning, not a sign of health',
};

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
  /** Each metric with the matchers of its selector (`job=~"$job"`, …; none without braces). */
  selectors: Array<{ metric: string; matchers: string[] }>;
}

const STRING = /"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g;

/** The metric names and label names a PromQL expression refers to (a tokenizer, not a full parser). */
function promqlRefs(expr: string): PromqlRefs {
  const labels: string[] = [];
  // Selectors' braces first, kept aside as `@n` (their values hold `$job` and the like).
  const braces: string[][] = [];
  let s = expr.replace(/\{([^}]*)\}/g, (_, inner: string) => {
    const matchers = [...inner.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*")/g)].map(
      ([, label = '', op = '', value = '']) => `${label}${op}${value}`,
    );
    const bare = inner.replace(STRING, '""');
    for (const [, label] of bare.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)/g)) if (label) labels.push(label);
    braces.push(matchers);
    return ` @${braces.length - 1} `;
  });
  s = s.replace(STRING, '""');
  s = s.replace(/\[[^\]]*\]/g, ' ');
  s = s.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)/g, (_, _kw: string, list: string) => {
    for (const l of list.split(',')) if (l.trim()) labels.push(l.trim());
    return ' ';
  });
  const metrics: string[] = [];
  const selectors: PromqlRefs['selectors'] = [];
  const tokens = [
    ...s.matchAll(/@\d+|\d+(?:\.\d+)?(?:e[+-]?\d+)?(?:ms|[smhdwy])?|\$[a-zA-Z_]\w*|[a-zA-Z_:][a-zA-Z0-9_:]*|\S/gi),
  ];
  for (const [i, t] of tokens.entries()) {
    const tok = t[0];
    if (!/^[a-zA-Z_:]/.test(tok) || KEYWORDS.has(tok.toLowerCase())) continue;
    if (tokens[i + 1]?.[0] === '(') continue; // a function or an aggregation
    metrics.push(tok);
    const next = tokens[i + 1]?.[0] ?? '';
    selectors.push({ metric: tok, matchers: next.startsWith('@') ? (braces[Number(next.slice(1))] ?? []) : [] });
  }
  return { metrics, labels, selectors };
}

/** The three variables every dashboard query is filtered by, as its selectors must match them. */
const VARIABLE_MATCHERS = ['namespace=~"$namespace"', 'job=~"$job"', 'instance=~"$instance"'];

/** Selectors of an expression that miss one of the variable matchers. */
function unfiltered(where: string, expr: string): string[] {
  return promqlRefs(expr).selectors.flatMap(({ metric, matchers }) =>
    VARIABLE_MATCHERS.filter((m) => !matchers.includes(m)).map((m) => `${where}: ${metric} is not filtered by ${m}`),
  );
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

interface Dashboard {
  panels: unknown[];
  templating: { list: Array<{ name: string; type: string; query?: { query: string } | string; allValue?: string }> };
}

function readDashboard(): Dashboard {
  return JSON.parse(readFileSync(join(PACKAGE_ROOT, 'metrics', 'dashboard.json'), 'utf8')) as Dashboard;
}

/** The PromQL inside each query variable's `label_values(<selector>, <label>)`. */
function variableExprs(dash: Dashboard): Array<{ where: string; expr: string; label: string }> {
  return dash.templating.list
    .filter((v) => v.type === 'query')
    .map((v) => {
      const q = typeof v.query === 'string' ? v.query : (v.query?.query ?? '');
      const m = /^label_values\((.*),\s*([a-zA-Z_]\w*)\)$/.exec(q);
      return { where: `variable ${v.name}`, expr: m?.[1] ?? q, label: m?.[2] ?? '' };
    });
}

function dashboardExprs(dash: Dashboard = readDashboard()): Array<{ where: string; expr: string }> {
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

/** Surge's metrics that no dashboard expression reads. */
function withoutPanel(known: Known, exprs: ReadonlyArray<{ expr: string }>): string[] {
  const shown = new Set(
    exprs.flatMap(({ expr }) => promqlRefs(expr).metrics.map((name) => known.family.get(name) ?? name)),
  );
  return [...known.own].filter((name) => !shown.has(name)).sort();
}

describe('dashboard and alerts name only what Surge exports, and the dashboard shows what it exports', () => {
  const known = knownSeries();

  test('the checker itself catches a misspelt metric and a label no metric has', () => {
    assert.deepEqual(
      promqlRefs('sum by (le) (rate(surge_x_bucket{code=~"5..", job=~"$job"}[5m])) / ignoring(a) 2e3 offset 5m'),
      {
        metrics: ['surge_x_bucket'],
        labels: ['code', 'job', 'le', 'a'],
        selectors: [{ metric: 'surge_x_bucket', matchers: ['code=~"5.."', 'job=~"$job"'] }],
      },
    );
    assert.deepEqual(check(known, 'x', 'rate(surge_ingest_request_total[5m])'), [
      'x: surge_ingest_request_total is not a metric Surge exports',
    ]);
    assert.deepEqual(check(known, 'x', 'sum by (shard) (surge_consumer_group_backlog)'), [
      'x: label shard is not on surge_consumer_group_backlog',
    ]);
    assert.deepEqual(check(known, 'x', 'max by (stream) (surge_consumer_group_lag_seconds)'), []);
  });

  test('the checkers catch a selector without the variables, and a metric with no panel', () => {
    assert.deepEqual(
      unfiltered('x', 'sum(rate(surge_a{job=~"$job", namespace=~"$namespace", instance=~"$instance"}[5m])) / surge_b'),
      [
        'x: surge_b is not filtered by namespace=~"$namespace"',
        'x: surge_b is not filtered by job=~"$job"',
        'x: surge_b is not filtered by instance=~"$instance"',
      ],
    );
    assert.deepEqual(unfiltered('x', 'up{namespace=~"$namespace", job="j", instance=~"$instance"}'), [
      'x: up is not filtered by job=~"$job"',
    ]);
    const histogram = known.family.get('surge_apply_batch_size_count') ?? '';
    const missing = withoutPanel(known, [{ expr: 'rate(surge_apply_batch_size_count[5m])' }]);
    assert.equal(histogram, 'surge_apply_batch_size');
    assert.deepEqual(
      missing,
      [...known.own].filter((m) => m !== histogram).sort(),
      'a histogram is shown by any of its series; every other metric of Surge is missing',
    );
    assert.ok(![...known.runtime].some((m) => missing.includes(m)), 'runtime metrics are not held to a panel');
  });

  test('the dashboard parses and every expression is sound', () => {
    const dash = readDashboard();
    const exprs = dashboardExprs(dash);
    assert.ok(exprs.length >= 10, `${exprs.length} expressions`);
    const problems = exprs.flatMap(({ where, expr }) => check(known, where, expr));
    for (const { where, expr, label } of variableExprs(dash)) {
      problems.push(...check(known, where, expr));
      if (!['namespace', 'job', 'instance'].includes(label)) problems.push(`${where}: lists label ${label}`);
    }
    assert.deepEqual(problems, []);
  });

  test('the dashboard has namespace, job and instance variables and every query is filtered by all three', () => {
    const dash = readDashboard();
    const variables = dash.templating.list.filter((v) => v.type === 'query');
    assert.deepEqual(
      variables.map((v) => v.name),
      ['namespace', 'job', 'instance'],
    );
    // "All" must still select only Surge's jobs (the job variable also filters `up`) and, for the
    // others, match a series without the label (compose's Prometheus sets no namespace).
    assert.deepEqual(
      variables.map((v) => v.allValue),
      ['.*', 'surge-.*', '.*'],
    );
    const problems = dashboardExprs(dash).flatMap(({ where, expr }) => unfiltered(where, expr));
    assert.deepEqual(problems, []);
  });

  test('every metric Surge exports is on the dashboard, or in NO_PANEL with a reason', () => {
    const missing = withoutPanel(known, dashboardExprs());
    assert.deepEqual(
      missing.filter((m) => !(m in NO_PANEL)),
      [],
      'metrics with no panel: add one to metrics/dashboard.json, or say in NO_PANEL why none is needed',
    );
    for (const [name, why] of Object.entries(NO_PANEL)) {
      assert.ok(known.own.has(name), `NO_PANEL names ${name}, which Surge does not export`);
      assert.ok(missing.includes(name), `NO_PANEL names ${name}, which the dashboard shows`);
      assert.ok(why.length > 20, `NO_PANEL says why ${name} needs no panel`);
    }
    // Process and runtime metrics (prom-client's defaults, in every process) are not held to a
    // panel each: the generic Node.js dashboards read them. Memory per role is shown.
    const shown = new Set(dashboardExprs().flatMap(({ expr }) => promqlRefs(expr).metrics));
    assert.ok(shown.has('surge_process_process_resident_memory_bytes'));
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
