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
/** Long labels ("2 workers, 4 shards, batch 500") are drawn whole, never cut with an ellipsis. */
const CONFIG = { axis: { labelLimit: 1000 }, legend: { labelLimit: 1000 }, title: { limit: 0 } } as const;

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
    config: CONFIG,
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

/** What a latency-vs-rate chart marks: the ramp's latency bounds and each system's knee. */
export interface RateMarks {
  bounds?: Array<{ label: string; ms: number }>;
  knees?: Array<{ label: string; rate: number }>;
}

/** Accept and accept-to-commit latency percentiles against the offered rate (per phase reached). */
export function latencyVsRateSpec(systems: readonly SystemSummary[], marks: RateMarks = {}): TopLevelSpec {
  const values = systems.flatMap((s) =>
    s.phases
      .filter((p) => p.offered > 0 && p.accepted > 0)
      .flatMap((p) => [
        { rate: p.offeredRate, system: s.label, metric: 'accept p50', ms: Math.max(0.01, p.accept.p50Ms) },
        { rate: p.offeredRate, system: s.label, metric: 'accept p99', ms: Math.max(0.01, p.accept.p99Ms) },
        { rate: p.offeredRate, system: s.label, metric: 'commit p50', ms: Math.max(0.01, p.commit.p50Ms) },
        { rate: p.offeredRate, system: s.label, metric: 'commit p99', ms: Math.max(0.01, p.commit.p99Ms) },
      ]),
  );
  const x = { field: 'rate', type: 'quantitative', title: 'offered rate (orders/s)' } as const;
  const y = { field: 'ms', type: 'quantitative', title: 'latency (ms, log)', scale: { type: 'log' } } as const;
  const bounds = (marks.bounds ?? []).map((b) => ({ ...b, text: `${b.label} ${b.ms} ms` }));
  const knees = (marks.knees ?? []).map((k) => ({ ...k, text: `knee ${k.label}: ${k.rate}/s` }));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    config: CONFIG,
    title: 'Latency percentiles vs offered rate',
    width: WIDTH,
    height: 300,
    layer: [
      {
        data: { values },
        mark: { type: 'line', point: true },
        encoding: {
          x,
          y,
          color: { field: systems.length > 1 ? 'system' : 'metric', type: 'nominal', title: null },
          strokeDash: { field: 'metric', type: 'nominal', title: null },
          detail: { field: 'system', type: 'nominal' },
        },
      },
      ...(bounds.length > 0
        ? [
            {
              data: { values: bounds },
              layer: [
                {
                  mark: { type: 'rule', color: '#b00', strokeDash: [6, 3] },
                  encoding: { y: { field: 'ms', type: 'quantitative', scale: { type: 'log' } } },
                },
                {
                  mark: { type: 'text', align: 'left', dx: 4, dy: -6, color: '#b00' },
                  encoding: { y: { field: 'ms', type: 'quantitative' }, x: { datum: 0 }, text: { field: 'text' } },
                },
              ],
            },
          ]
        : []),
      ...(knees.length > 0
        ? [
            {
              data: { values: knees },
              layer: [
                {
                  mark: { type: 'rule', color: '#333', strokeWidth: 2 },
                  encoding: { x: { field: 'rate', type: 'quantitative' } },
                },
                {
                  mark: { type: 'text', angle: 270, align: 'right', baseline: 'bottom', dx: -4, dy: -3, color: '#333' },
                  encoding: { x: { field: 'rate', type: 'quantitative' }, y: { value: 0 }, text: { field: 'text' } },
                },
              ],
            },
          ]
        : []),
    ],
  } as TopLevelSpec;
}

/** Cores per process over time (stacked), and the whole machine's busy cores as a line (one system). */
export function cpuSpec(s: SystemSummary): TopLevelSpec {
  const samples = s.cpu.usage.samples;
  const stacked = samples.flatMap((x) =>
    Object.entries(x.groups).map(([process, g]) => ({ t: x.t, process, cores: Math.round(g.cores * 1000) / 1000 })),
  );
  const machine = samples
    .filter((x) => x.machineCores !== null)
    .map((x) => ({ t: x.t, cores: Math.round((x.machineCores ?? 0) * 1000) / 1000 }));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    config: CONFIG,
    title: `${s.label}: CPU per process over time (cores; line: the whole machine)`,
    width: WIDTH,
    height: 240,
    layer: [
      {
        data: { values: stacked.length > 0 ? stacked : [{ t: 0, process: 'not sampled', cores: 0 }] },
        mark: { type: 'area', interpolate: 'step-before' },
        encoding: {
          x: { field: 't', type: 'quantitative', title: 'seconds since the load started' },
          y: { field: 'cores', type: 'quantitative', stack: 'zero', title: 'cores' },
          color: { field: 'process', type: 'nominal', title: null },
        },
      },
      {
        data: { values: machine.length > 0 ? machine : [{ t: 0, cores: 0 }] },
        mark: { type: 'line', interpolate: 'step-before', color: '#000', strokeDash: [4, 2] },
        encoding: { x: { field: 't', type: 'quantitative' }, y: { field: 'cores', type: 'quantitative' } },
      },
      {
        data: { values: [{ cores: s.cpu.usage.cpus }] },
        mark: { type: 'rule', color: '#b00' },
        encoding: { y: { field: 'cores', type: 'quantitative' } },
      },
    ],
  } as TopLevelSpec;
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
    config: CONFIG,
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
    config: CONFIG,
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
    config: CONFIG,
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
    config: CONFIG,
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
