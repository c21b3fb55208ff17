// Charts: vega-lite specs compiled with vega-lite and rendered to SVG by vega's headless View
// (renderer 'none' + toSVG: no canvas, no browser).
import * as vega from 'vega';
import * as vl from 'vega-lite';
import type { TopLevelSpec } from 'vega-lite';
import type { SystemSummary } from './summary.js';

export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const compiled = vl.compile(spec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

const WIDTH = 640;

/** Offered, accepted and committed per second, and the backlog, over time (one system). */
export function throughputSpec(s: SystemSummary): TopLevelSpec {
  const rates = s.samples.flatMap((x) => [
    { t: x.t, series: 'offered/s', value: x.offered },
    { t: x.t, series: 'accepted/s', value: x.accepted },
    { t: x.t, series: 'committed/s', value: x.committed },
  ]);
  const backlog = s.samples
    .filter((x) => x.backlog !== null)
    .map((x) => ({ t: x.t, series: 'backlog (entries)', value: x.backlog }));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: `${s.label}: throughput and backlog over time`,
    vconcat: [
      {
        width: WIDTH,
        height: 200,
        data: { values: rates },
        mark: { type: 'line', interpolate: 'step-after' },
        encoding: {
          x: { field: 't', type: 'quantitative', title: 'seconds since start' },
          y: { field: 'value', type: 'quantitative', title: 'orders per second' },
          color: { field: 'series', type: 'nominal', title: null },
        },
      },
      {
        width: WIDTH,
        height: 120,
        data: { values: backlog.length > 0 ? backlog : [{ t: 0, series: 'backlog (not sampled)', value: 0 }] },
        mark: { type: 'area', interpolate: 'step-after', opacity: 0.6 },
        encoding: {
          x: { field: 't', type: 'quantitative', title: 'seconds since start' },
          y: { field: 'value', type: 'quantitative', title: 'backlog (entries)' },
          color: { field: 'series', type: 'nominal', title: null },
        },
      },
    ],
  };
}

/** Accept and accept-to-commit latency percentiles against the offered rate (per phase). */
export function latencyVsRateSpec(systems: readonly SystemSummary[]): TopLevelSpec {
  const values = systems.flatMap((s) =>
    s.phases
      .filter((p) => p.accepted > 0)
      .flatMap((p) => [
        { rate: p.offeredRate, system: s.label, metric: 'accept p50', ms: Math.max(0.01, p.accept.p50Ms) },
        { rate: p.offeredRate, system: s.label, metric: 'accept p99', ms: Math.max(0.01, p.accept.p99Ms) },
        { rate: p.offeredRate, system: s.label, metric: 'commit p50', ms: Math.max(0.01, p.commit.p50Ms) },
        { rate: p.offeredRate, system: s.label, metric: 'commit p99', ms: Math.max(0.01, p.commit.p99Ms) },
      ]),
  );
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: 'Latency percentiles vs offered rate',
    width: WIDTH,
    height: 300,
    data: { values },
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: 'rate', type: 'quantitative', title: 'offered rate (orders/s)' },
      y: { field: 'ms', type: 'quantitative', title: 'latency (ms, log)', scale: { type: 'log' } },
      color: { field: systems.length > 1 ? 'system' : 'metric', type: 'nominal', title: null },
      strokeDash: { field: 'metric', type: 'nominal', title: null },
      detail: { field: 'system', type: 'nominal' },
    },
  };
}

/** Latency CDF on a "nines" axis: 1 = 90 %, 2 = 99 %, 3 = 99.9 %. */
export function cdfSpec(systems: readonly SystemSummary[]): TopLevelSpec {
  const values = systems.flatMap((s) =>
    (['accept', 'commit'] as const).flatMap((kind) =>
      s.cdf[kind]
        .filter((c) => c.percentile < 100)
        .map((c) => ({
          series: `${s.label} ${kind}`,
          nines: Math.round(-Math.log10(1 - c.percentile / 100) * 1000) / 1000,
          percentile: c.percentile,
          ms: Math.max(0.01, c.ms),
        })),
    ),
  );
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: 'Latency distribution (accept = client, commit = applied_at − received_at)',
    width: WIDTH,
    height: 300,
    data: { values },
    mark: { type: 'line', point: true },
    encoding: {
      x: {
        field: 'nines',
        type: 'quantitative',
        title: 'percentile (0 = p0, 1 = p90, 2 = p99, 3 = p99.9, 4 = p99.99)',
      },
      y: { field: 'ms', type: 'quantitative', title: 'latency (ms, log)', scale: { type: 'log' } },
      color: { field: 'series', type: 'nominal', title: null },
      tooltip: [{ field: 'percentile' }, { field: 'ms' }],
    },
  };
}

/** Resident memory of each process over time (soak). */
export function memorySpec(s: SystemSummary): TopLevelSpec {
  const values = s.samples.flatMap((x) => Object.entries(x.memoryMiB).map(([role, mib]) => ({ t: x.t, role, mib })));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: `${s.label}: resident memory over time`,
    width: WIDTH,
    height: 220,
    data: { values: values.length > 0 ? values : [{ t: 0, role: 'not sampled', mib: 0 }] },
    mark: 'line',
    encoding: {
      x: { field: 't', type: 'quantitative', title: 'seconds since start' },
      y: { field: 'mib', type: 'quantitative', title: 'RSS (MiB)' },
      color: { field: 'role', type: 'nominal', title: null },
    },
  };
}

/** Max sustainable rate per configuration (sweep). */
export function capacitySpec(rows: ReadonlyArray<{ config: string; maxRate: number }>): TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: 'Max sustainable rate per configuration',
    width: WIDTH,
    height: Math.max(120, rows.length * 28),
    data: { values: rows.map((r) => ({ ...r })) },
    mark: 'bar',
    encoding: {
      y: { field: 'config', type: 'nominal', sort: null, title: null },
      x: { field: 'maxRate', type: 'quantitative', title: 'max sustainable orders/s' },
    },
  };
}

/** A plain multi-series line chart. */
export function lineSpec(
  title: string,
  values: ReadonlyArray<{ x: number; y: number; series: string }>,
  xTitle: string,
  yTitle: string,
): TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    width: WIDTH,
    height: 220,
    data: { values: values.length > 0 ? values.map((v) => ({ ...v })) : [{ x: 0, y: 0, series: 'no data' }] },
    mark: 'line',
    encoding: {
      x: { field: 'x', type: 'quantitative', title: xTitle },
      y: { field: 'y', type: 'quantitative', title: yTitle },
      color: { field: 'series', type: 'nominal', title: null },
    },
  };
}
