// The latest result of every benchmark in bench/results/, read from the result files themselves:
// what `surge bench report` combines and what bench/results/README.md indexes. No dev
// dependencies: the CLI loads it as it is.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

export interface ResultEntry {
  /** `surge bench` subcommand (or other source) that wrote it. */
  scenario: string;
  /** Path relative to the results root: a scenario folder (ending in /) or a file. */
  path: string;
  date: string;
  machine: string;
  command: string;
  headline: string;
  /** Answers of a scenario report (empty for other benchmarks). */
  findings: string[];
  failedChecks: string[];
  /** SVG files in the folder, in the report's order. */
  charts: string[];
}

/** Results without a machine-readable file of their own are described in this file, by hand. */
export const MANUAL_FILE = 'manual-results.json';
/** Where `surge bench report` writes by default; never indexed as a result. */
export const REPORT_DIR = 'report';

type Json = Record<string, unknown>;
const read = (p: string): Json => JSON.parse(readFileSync(p, 'utf8')) as Json;
const str = (v: unknown) => (typeof v === 'string' ? v : v === undefined || v === null ? '' : String(v));
const num = (v: unknown) => (typeof v === 'number' ? v : undefined);

function machineOf(m: Json | undefined): string {
  if (!m) return 'unknown';
  const cpus = num(m.cpus) ?? num(m.cores);
  const model = str(m.cpuModel ?? m.cpu)
    .replace(/\(R\)|Processor/g, '')
    .replace(/\s+/g, ' ')
    .trim();
  const load = (m.loadAverage ?? m.loadavg ?? m.loadAverageBefore) as number[] | undefined;
  return `${cpus ?? '?'} × ${model || '?'}${load?.[0] !== undefined ? `, load ${load[0]}` : ''}`;
}

/** The lines every scenario report leads with; the headline is the scenario's own first answer. */
const GENERAL =
  /^(Ledger|LEDGER|Latency to the final answer|What limited it|.*: What limited it|Generator check|GENERATOR)/;

function scenarioEntry(root: string, dir: string): ResultEntry | undefined {
  const file = join(root, dir, 'results.json');
  if (!existsSync(file)) return undefined;
  const j = read(file);
  const findings = (j.findings as string[] | undefined) ?? [];
  const checks = (j.checks as Array<{ name: string; ok: boolean; detail: string }> | undefined) ?? [];
  const own = findings.filter((f) => !GENERAL.test(f));
  const limited = findings.find((f) => f.includes('What limited it'));
  return {
    scenario: str(j.scenario),
    path: `${dir}/`,
    date: str(j.startedAt).slice(0, 10),
    machine: machineOf(j.machine as Json),
    command: str(j.command),
    headline: [own[0], limited?.replace(/^.*What limited it: /, 'limited by ')].filter(Boolean).join(' — '),
    findings,
    failedChecks: checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.detail}`),
    charts: ((j.charts as string[] | undefined) ?? []).filter((c) => existsSync(join(root, dir, c))),
  };
}

function fileEntry(root: string, file: string): ResultEntry | undefined {
  const [, kind, date] = /^(e2e|apply|ingest)-(\d{4}-\d{2}-\d{2})\.json$/.exec(file) ?? [];
  if (kind === undefined || date === undefined) return undefined;
  const j = read(join(root, file));
  let headline = '';
  if (kind === 'e2e') {
    const w = j.wholeOverAlone as Json | undefined;
    const l = j.limitedBy as Json | undefined;
    headline = `whole ÷ ingest alone ${str(w?.median)}; limited by ${str(l?.process)} (${str(l?.usPerOrder)} of ${str(l?.totalUsPerOrder)} µs/order)`;
  } else if (kind === 'apply') {
    const x = j.median as Json | undefined;
    headline = `Surge ${Math.round(num(x?.surgeOrdersPerSecond) ?? 0)} orders/s; surge / raw COPY ${str(x?.surgeVsRawCopy)}, surge / BullMQ ${str(x?.surgeVsBullmq)}`;
  } else {
    const r = j.ratios as Record<string, Json> | undefined;
    headline = `b/a ${str(r?.surgeOverBaseline?.median)}, c/b ${str(r?.batchOrdersOverSingleOrders?.median)}`;
  }
  const md = file.replace(/\.json$/, '.md');
  return {
    scenario: kind,
    path: existsSync(join(root, md)) ? md : file,
    date,
    machine: machineOf(j.machine as Json),
    command: str(j.command),
    headline,
    findings: [],
    failedChecks: [],
    charts: [],
  };
}

/** The latest result of each scenario or benchmark under `root`, in a stable order. */
export function latestResults(root: string): ResultEntry[] {
  const entries: ResultEntry[] = [];
  for (const name of readdirSync(root).sort()) {
    if (name === REPORT_DIR) continue;
    const full = join(root, name);
    const e = statSync(full).isDirectory() ? scenarioEntry(root, name) : fileEntry(root, name);
    if (e) entries.push(e);
  }
  if (existsSync(join(root, MANUAL_FILE))) {
    const manual = JSON.parse(readFileSync(join(root, MANUAL_FILE), 'utf8')) as Array<
      Omit<ResultEntry, 'findings' | 'failedChecks' | 'charts'>
    >;
    for (const m of manual) entries.push({ ...m, findings: [], failedChecks: [], charts: [] });
  }
  // Latest per scenario: the later date wins, then the later path (folders are stamped).
  const latest = new Map<string, ResultEntry>();
  for (const e of entries) {
    const prev = latest.get(e.scenario);
    if (!prev || `${e.date} ${e.path}` > `${prev.date} ${prev.path}`) latest.set(e.scenario, e);
  }
  const order = ['steady', 'ramp', 'flash-sale', 'soak', 'compare', 'sweep', 'ingest', 'ingest-ab', 'apply', 'e2e'];
  const rank = (s: string) => (order.includes(s) ? order.indexOf(s) : order.length);
  return [...latest.values()].sort(
    (a, b) => rank(a.scenario) - rank(b.scenario) || a.scenario.localeCompare(b.scenario),
  );
}
/** A command without its --note texts (they are the report's notes, not how to reproduce it). */
const shortCommand = (c: string) => (c.includes(' --note ') ? `${c.slice(0, c.indexOf(' --note '))} --note …` : c);
const cell = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

/** bench/results/README.md: generated from the result files (a test keeps the committed one equal). */
export function resultsIndexMarkdown(root: string): string {
  const rows = latestResults(root).map(
    (e) =>
      `| ${e.scenario} | [\`${e.path}\`](${e.path}) | ${e.date} | ${cell(e.machine)} | \`${cell(shortCommand(e.command))}\` | ${cell(e.headline)} |`,
  );
  return [
    '# Benchmark results',
    '',
    '<!-- Generated by `surge bench index` from the result files; do not edit by hand. -->',
    '',
    'The latest result of each benchmark. Machines are 2-vCPU virtual machines shared with other work,',
    'so absolute figures are "this machine"; ratios within one run are the comparable part. What each',
    'figure means: [docs/performance.md](../../docs/performance.md). How earlier figures led to the',
    `current design: [HISTORY.md](HISTORY.md). Results without a JSON file of their own are described in`,
    `[${MANUAL_FILE}](${MANUAL_FILE}). \`surge bench report\` combines the latest of each into one report.`,
    '',
    '| benchmark | result | date | machine | command | headline |',
    '| --- | --- | --- | --- | --- | --- |',
    ...rows,
    '',
    'The scenario folders hold `report.md`, `results.json` and SVG charts; `bench/report.ts` writes them.',
    '',
  ].join('\n');
}
