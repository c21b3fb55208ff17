// Writes a benchmark's results: results.json (everything, machine-readable), report.md (what a
// planner reads) and the SVG charts, into bench/results/<date>-<scenario>/ (or --out).
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import type { TopLevelSpec } from 'vega-lite';
import { cdfSpec, cpuSpec, latencyVsRateSpec, type RateMarks, renderSvg, throughputSpec } from './charts.js';
import { windowMeans } from './cpu.js';
import type { Ledger, SystemSummary } from './summary.js';

export interface Machine {
  cpuModel: string;
  cpus: number;
  cpuMHz: number;
  memoryGiB: number;
  freeMemoryGiB: number;
  os: string;
  node: string;
  loadAverage: number[];
}

export function describeMachine(): Machine {
  const cpus = os.cpus();
  return {
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    cpus: cpus.length,
    cpuMHz: cpus[0]?.speed ?? 0,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    freeMemoryGiB: Math.round((os.freemem() / 2 ** 30) * 10) / 10,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    loadAverage: os.loadavg().map((l) => Math.round(l * 100) / 100),
  };
}

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

export interface Table {
  title: string;
  headers: string[];
  rows: Array<Array<string | number>>;
}

export interface Chart {
  file: string;
  title: string;
  spec: TopLevelSpec;
}

export interface Report {
  scenario: string;
  title: string;
  startedAt: string;
  finishedAt: string;
  command: string;
  machine: Machine;
  options: Record<string, unknown>;
  /** Headline answers, one line each. */
  findings: string[];
  tables: Table[];
  checks: Check[];
  notes: string[];
  systems: SystemSummary[];
  extra: Record<string, unknown>;
}

export function resultsDir(root: string, scenario: string, at = new Date()): string {
  const stamp = at
    .toISOString()
    .replace(/:/g, '-')
    .replace(/\.\d+Z$/, 'Z');
  return join(root, `${stamp}-${scenario}`);
}

function mdTable(t: Table): string {
  const esc = (v: string | number) => String(v).replace(/\|/g, '\\|');
  return [
    `**${t.title}**`,
    '',
    `| ${t.headers.map(esc).join(' | ')} |`,
    `| ${t.headers.map(() => '---').join(' | ')} |`,
    ...t.rows.map((r) => `| ${r.map(esc).join(' | ')} |`),
  ].join('\n');
}

const fixed = (n: number | null | undefined, d = 1) => (n === null || n === undefined ? '–' : n.toFixed(d));

const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/** `202: 28428, 503: 7070` — answered submissions by final status, most frequent first. */
function statusSplit(l: Ledger): string {
  const e = Object.entries(l.byStatus).sort((a, b) => b[1] - a[1]);
  return e.length === 0 ? 'none' : e.map(([k, v]) => `${k}: ${v}`).join(', ');
}

/**
 * The ledger of one system's submissions, as the first lines of Answers: it either balances
 * (and says it was checked) or shows the discrepancy in capitals.
 */
export function ledgerFindings(s: SystemSummary, maxInFlight: number): string[] {
  const l = s.ledger;
  const terms =
    `answered ${l.answered} (${statusSplit(l)}) + dropped by the generator ${l.dropped} ` +
    `(in-flight limit ${maxInFlight}) + timed out ${l.timedOut} + failed ${l.failed} (connection errors)` +
    `${l.unanswered > 0 ? ` + unanswered ${l.unanswered} (still open when the generator stopped waiting)` : ''}`;
  const head =
    l.discrepancy === 0
      ? `Ledger (${s.label}): offered ${l.offered} = ${terms}; checked: it balances.`
      : `LEDGER DOES NOT BALANCE (${s.label}): offered ${l.offered} ≠ ${terms} = ` +
        `${l.offered - l.discrepancy}; ${Math.abs(l.discrepancy)} submissions ` +
        `${l.discrepancy > 0 ? 'unaccounted for' : 'counted twice'}.`;
  const extra: string[] = [];
  if (l.retries > 0) extra.push(`${plural(l.retries, 'retry', 'retries')} inside those submissions`);
  if (l.duplicatesSent > 0) extra.push(`${l.duplicatesSent} were deliberate duplicates`);
  if (l.replayed > 0) extra.push(`${l.replayed} answered as idempotent replays`);
  const lat = Object.entries(l.latencyByStatus)
    .filter(([, p]) => p.count > 0)
    .sort((a, b) => b[1].count - a[1].count)
    .map(([k, p]) => `${k} p50 ${fixed(p.p50Ms)} / p99 ${fixed(p.p99Ms)} ms (${p.count})`);
  return [
    extra.length > 0 ? `${head} Of them: ${extra.join('; ')}.` : head,
    ...(lat.length > 0
      ? [`Latency to the final answer, from the intended send time, by outcome: ${lat.join('; ')}.`]
      : []),
  ];
}

export function ledgerCheck(s: SystemSummary): Check {
  const l = s.ledger;
  return {
    name: `${s.label}: offered = answered + dropped + timed out + failed + unanswered`,
    ok: l.discrepancy === 0,
    detail:
      `${l.offered} ${l.discrepancy === 0 ? '=' : '≠'} ${l.answered} + ${l.dropped} + ${l.timedOut} + ` +
      `${l.failed} + ${l.unanswered}${l.discrepancy === 0 ? '' : ` (off by ${l.discrepancy})`}`,
  };
}

/**
 * CPU per process over the run: seconds from the start of the load to the end of the drain, µs per
 * accepted order, and cores (all threads, and the busiest main thread) over the bottleneck's window.
 */
export function cpuTable(s: SystemSummary): Table {
  const c = s.cpu;
  const w = windowMeans(c.usage, c.window.from, c.window.to);
  const orders = s.outcome.accepted;
  const rows: Table['rows'] = c.usage.groups.map((g) => {
    const m = w.groups[g.name];
    return g.measured
      ? [
          g.name,
          g.pids.length,
          fixed(g.seconds, 2),
          orders > 0 ? fixed((g.seconds * 1e6) / orders, 0) : '–',
          fixed(m?.cores, 2),
          fixed(m?.mainCores, 2),
          `${fixed(((m?.cores ?? 0) / c.usage.cpus) * 100, 0)} %`,
          g.shared ?? '',
        ]
      : [g.name, 0, '–', '–', '–', '–', '–', 'not readable from /proc here'];
  });
  const total = c.usage.groups.reduce((a, g) => a + g.seconds, 0);
  rows.push([
    `machine (${c.usage.cpus} cores, everything on it)`,
    '–',
    fixed(c.usage.machineBusySeconds, 2),
    orders > 0 && c.usage.machineBusySeconds !== null ? fixed((c.usage.machineBusySeconds * 1e6) / orders, 0) : '–',
    fixed(w.machineCores, 2),
    '–',
    w.machineCores === null ? '–' : `${fixed((w.machineCores / c.usage.cpus) * 100, 0)} %`,
    `the rows above: ${fixed(total, 2)} s`,
  ]);
  return {
    title:
      `${s.label}: CPU per process (seconds and µs per accepted order over load + drain; ` +
      `cores over ${c.window.what})`,
    headers: [
      'process',
      'processes',
      'CPU s',
      'µs / order',
      'cores',
      'busiest main thread (cores of 1)',
      'share of the machine',
      'note',
    ],
    rows,
  };
}

/** The per-system table every report has. */
export function systemsTable(systems: readonly SystemSummary[]): Table {
  return {
    title: 'Per system',
    headers: [
      'system',
      'accepted',
      'applied',
      'rejected',
      'dead-lettered',
      'missing',
      'accept p50 / p99 ms',
      'commit p50 / p99 ms',
      'accepted/s',
      'committed/s',
      'peak backlog',
      'drain s',
    ],
    rows: systems.map((s) => [
      s.label,
      s.outcome.accepted,
      s.outcome.applied,
      s.outcome.rejected,
      s.outcome.deadLettered,
      s.outcome.missing,
      `${fixed(s.accept.p50Ms)} / ${fixed(s.accept.p99Ms)}`,
      `${fixed(s.commit.p50Ms)} / ${fixed(s.commit.p99Ms)}`,
      fixed(s.acceptedPerSec),
      fixed(s.committedPerSec),
      s.peakBacklog ?? '–',
      fixed(s.drainSeconds),
    ]),
  };
}

export function phasesTable(s: SystemSummary): Table {
  return {
    title: `${s.label}: per phase (offered rate step; phases never reached are left out)`,
    headers: [
      'phase',
      'offered/s',
      'seconds',
      'accepted',
      'failed',
      'dropped',
      'accept p50 / p99 / p99.9 ms',
      'commit p50 / p99 ms',
      'max backlog',
      'max backlog age s',
      "generator's longest loop delay ms",
    ],
    rows: s.phases
      .filter((p) => p.offered > 0)
      .map((p) => [
        p.phase,
        p.offeredRate,
        fixed(p.durationS),
        p.accepted,
        p.failed,
        p.dropped,
        `${fixed(p.accept.p50Ms)} / ${fixed(p.accept.p99Ms)} / ${fixed(p.accept.p999Ms)}`,
        `${fixed(p.commit.p50Ms)} / ${fixed(p.commit.p99Ms)}`,
        p.backlogMax ?? '–',
        fixed(p.backlogAgeMaxS),
        fixed(p.generatorLoopDelayMaxMs),
      ]),
  };
}

export function littleTable(systems: readonly SystemSummary[]): Table {
  return {
    title: "Little's law sanity checks (L = λ·W on steady samples)",
    headers: ['system', 'check', 'λ /s', 'W s', 'λ·W', 'measured L', 'ratio', 'ok'],
    rows: systems.flatMap((s) =>
      s.littles.map((l) => [
        s.label,
        l.what,
        l.lambda,
        l.wSeconds,
        l.predicted,
        l.measured,
        l.ratio ?? '–',
        l.ok ? 'yes' : 'NO',
      ]),
    ),
  };
}

/** The charts every report has: throughput/backlog and CPU per system, latency vs rate, CDF. */
export function standardCharts(systems: readonly SystemSummary[], marks: RateMarks = {}): Chart[] {
  const many = systems.length > 1;
  return [
    ...systems.map((s) => ({
      file: many ? `throughput-${s.system}.svg` : 'throughput.svg',
      title: `${s.label}: throughput and backlog over time`,
      spec: throughputSpec(s),
    })),
    ...systems.map((s) => ({
      file: many ? `cpu-${s.system}.svg` : 'cpu.svg',
      title: `${s.label}: CPU per process over time`,
      spec: cpuSpec(s),
    })),
    {
      file: 'latency-vs-rate.svg',
      title: 'Latency percentiles vs offered rate',
      spec: latencyVsRateSpec(systems, marks),
    },
    { file: 'latency-cdf.svg', title: 'Latency CDF', spec: cdfSpec(systems) },
  ];
}

export async function writeReport(
  report: Report,
  dir: string,
  charts: readonly Chart[],
): Promise<{ dir: string; files: string[] }> {
  mkdirSync(dir, { recursive: true });
  const files: string[] = [];
  for (const c of charts) {
    writeFileSync(join(dir, c.file), await renderSvg(c.spec));
    files.push(c.file);
  }
  writeFileSync(
    join(dir, 'results.json'),
    `${JSON.stringify({ ...report, charts: charts.map((c) => c.file) }, null, 2)}\n`,
  );
  files.push('results.json');
  const m = report.machine;
  const md = [
    `# ${report.title}`,
    '',
    `Scenario \`${report.scenario}\`, ${report.startedAt} → ${report.finishedAt}.`,
    '',
    '```',
    report.command,
    '```',
    '',
    '## Answers',
    '',
    ...report.findings.map((f) => `- ${f}`),
    '',
    '## Checks',
    '',
    ...report.checks.map((c) => `- ${c.ok ? 'PASS' : 'FAIL'} — ${c.name}: ${c.detail}`),
    '',
    '## Figures',
    '',
    ...report.tables.flatMap((t) => [mdTable(t), '']),
    '## Charts',
    '',
    ...charts.flatMap((c) => [`![${c.title}](${c.file})`, '']),
    '## Machine',
    '',
    `- ${m.cpus} × ${m.cpuModel} (${m.cpuMHz} MHz), ${m.memoryGiB} GiB RAM (${m.freeMemoryGiB} GiB free at start)`,
    `- ${m.os}, Node ${m.node}, load average at start ${m.loadAverage.join(' / ')}`,
    '',
    '## Configuration',
    '',
    '```json',
    JSON.stringify(
      { options: report.options, systems: Object.fromEntries(report.systems.map((s) => [s.label, s.settings])) },
      null,
      2,
    ),
    '```',
    '',
    ...(report.notes.length > 0 ? ['## Notes', '', ...report.notes.map((n) => `- ${n}`), ''] : []),
  ].join('\n');
  writeFileSync(join(dir, 'report.md'), md);
  files.push('report.md');
  return { dir, files };
}
