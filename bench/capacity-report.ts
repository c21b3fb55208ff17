// `surge bench report`: one capacity report from the latest result of every benchmark in
// bench/results/ — index.md, index.html (what a planner opens in a browser) and the SVG charts:
// an overview of the maximum sustainable rates, then each benchmark's answers and charts.
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { capacitySpec, renderSvg } from './charts.js';
import { latestResults, type ResultEntry } from './results-index.js';

interface KneeLike {
  maxSustainableRate: number | null;
}

/** Max sustainable rate per system or configuration, from the ramp, compare and sweep results. */
function knees(root: string, entries: readonly ResultEntry[]): Array<{ config: string; maxRate: number }> {
  const out: Array<{ config: string; maxRate: number }> = [];
  for (const e of entries) {
    if (!['ramp', 'compare', 'sweep'].includes(e.scenario)) continue;
    const j = JSON.parse(readFileSync(join(root, e.path, 'results.json'), 'utf8')) as {
      extra: {
        knee?: KneeLike;
        knees?: Record<string, KneeLike>;
        capacity?: Array<{ workers: number; shards: number; batchSize: number; knee: KneeLike }>;
      };
    };
    const x = j.extra;
    if (x.knee) out.push({ config: `ramp: Surge`, maxRate: x.knee.maxSustainableRate ?? 0 });
    for (const [system, k] of Object.entries(x.knees ?? {}))
      out.push({ config: `compare: ${system}`, maxRate: k.maxSustainableRate ?? 0 });
    for (const c of x.capacity ?? [])
      out.push({
        config: `sweep: ${c.workers} worker${c.workers > 1 ? 's' : ''}, ${c.shards} shards, batch ${c.batchSize}`,
        maxRate: c.knee.maxSustainableRate ?? 0,
      });
  }
  return out;
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

export interface CapacityReport {
  dir: string;
  files: string[];
  entries: ResultEntry[];
}

export async function writeCapacityReport(root: string, out: string, now = new Date()): Promise<CapacityReport> {
  const entries = latestResults(root);
  mkdirSync(out, { recursive: true });
  const files: string[] = [];
  const overview = knees(root, entries);
  if (overview.length > 0) {
    writeFileSync(join(out, 'overview.svg'), await renderSvg(capacitySpec(overview)));
    files.push('overview.svg');
  }
  const charts = new Map<ResultEntry, string[]>();
  for (const e of entries) {
    const copied = e.charts.map((c) => {
      const name = `${e.scenario}-${c}`;
      copyFileSync(join(root, e.path, c), join(out, name));
      files.push(name);
      return name;
    });
    charts.set(e, copied);
  }
  const rel = (e: ResultEntry) => relative(out, join(root, e.path)) + (e.path.endsWith('/') ? '/' : '');
  const title = 'Surge capacity report';
  const stamp = now.toISOString().replace(/\.\d+Z$/, 'Z');
  const md = [
    `# ${title}`,
    '',
    `Built ${stamp} by \`surge bench report\` from the latest result of each benchmark in bench/results/.`,
    '',
    ...(overview.length > 0
      ? ['## Maximum sustainable rates', '', '![Maximum sustainable rates](overview.svg)', '']
      : []),
    '| benchmark | date | machine | headline |',
    '| --- | --- | --- | --- |',
    ...entries.map(
      (e) => `| [${e.scenario}](#${e.scenario}) | ${e.date} | ${e.machine} | ${e.headline.replace(/\|/g, '\\|')} |`,
    ),
    '',
    ...entries.flatMap((e) => [
      `## ${e.scenario}`,
      '',
      `${e.date}, ${e.machine}: \`${e.command}\` ([result](${rel(e)}))`,
      '',
      ...(e.findings.length > 0 ? ['**Answers**', '', ...e.findings.map((f) => `- ${f}`), ''] : [`${e.headline}`, '']),
      ...(e.failedChecks.length > 0 ? ['**Failed checks**', '', ...e.failedChecks.map((c) => `- FAIL ${c}`), ''] : []),
      ...(charts.get(e) ?? []).flatMap((c) => [`![${c}](${c})`, '']),
    ]),
  ].join('\n');
  writeFileSync(join(out, 'index.md'), md);
  files.push('index.md');
  const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${esc(title)}</title>
<style>
  body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
  h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
  table { border-collapse: collapse; width: 100%; } td, th { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
  th { background: #f3f3f3; } code { background: #f5f5f5; padding: 1px 3px; } .fail { color: #b00; font-weight: bold; }
  img { max-width: 100%; display: block; margin: 1em 0; } .meta { color: #555; }
</style>
</head>
<body>
<h1>${esc(title)}</h1>
<p class="meta">Built ${esc(stamp)} by <code>surge bench report</code> from the latest result of each benchmark in bench/results/.</p>
${overview.length > 0 ? '<h2>Maximum sustainable rates</h2>\n<img src="overview.svg" alt="Maximum sustainable rates">' : ''}
<table>
<tr><th>benchmark</th><th>date</th><th>machine</th><th>headline</th></tr>
${entries.map((e) => `<tr><td><a href="#${esc(e.scenario)}">${esc(e.scenario)}</a></td><td>${esc(e.date)}</td><td>${esc(e.machine)}</td><td>${esc(e.headline)}</td></tr>`).join('\n')}
</table>
${entries
  .map(
    (e) => `<h2 id="${esc(e.scenario)}">${esc(e.scenario)}</h2>
<p class="meta">${esc(e.date)}, ${esc(e.machine)}: <code>${esc(e.command)}</code> (<a href="${esc(rel(e))}">result</a>)</p>
${e.findings.length > 0 ? `<ul>\n${e.findings.map((f) => `<li${/^(LEDGER DOES NOT|GENERATOR SATURATED)/.test(f) ? ' class="fail"' : ''}>${esc(f)}</li>`).join('\n')}\n</ul>` : `<p>${esc(e.headline)}</p>`}
${e.failedChecks.length > 0 ? `<ul>\n${e.failedChecks.map((c) => `<li class="fail">FAIL ${esc(c)}</li>`).join('\n')}\n</ul>` : ''}
${(charts.get(e) ?? []).map((c) => `<img src="${esc(c)}" alt="${esc(c)}">`).join('\n')}`,
  )
  .join('\n')}
</body>
</html>
`;
  writeFileSync(join(out, 'index.html'), html);
  files.push('index.html');
  return { dir: out, files, entries };
}
