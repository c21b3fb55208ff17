// The alert rules and their docs agree: every rule in metrics/alerts.yml has a section in
// docs/runbooks.md (what it means, how to confirm it, what to do) and a row in the alerts tables
// of docs/operations.md and docs/metrics.md, and nothing else does; every rule's runbook_url is
// the documented base plus an anchor that docs/runbooks.md has. Every rule has promtool unit
// tests (run by test/lag-prometheus.test.ts) where it fires and where it stays quiet, whose
// expectations carry the same URL.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { parse } from 'yaml';
import { PACKAGE_ROOT } from '../common/paths.js';
import { headings, slug } from './support/markdown.js';

/** Where docs/runbooks.md is published; the page says how to change it. */
const RUNBOOK_BASE = 'https://surge.dev/docs/runbooks';

interface Rule {
  alert?: string;
  annotations?: Record<string, string>;
}

function read(...path: string[]): string {
  return readFileSync(join(PACKAGE_ROOT, ...path), 'utf8');
}

function alertRules(text: string): Rule[] {
  const file = parse(text) as { groups: Array<{ rules: Rule[] }> };
  return file.groups.flatMap((g) => g.rules).filter((r) => r.alert !== undefined);
}

/** Level-2 headings of a Markdown page (outside code fences). */
const sections = (markdown: string) => headings(markdown, [2]);

/** Alert names in the first column of the Markdown table(s) whose header's first cell is `alert`. */
function tableAlerts(markdown: string): string[] {
  const out: string[] = [];
  let inTable = false;
  for (const line of markdown.split('\n')) {
    if (!line.startsWith('|')) {
      inTable = false;
      continue;
    }
    const first = line.split('|')[1]?.trim() ?? '';
    if (first.toLowerCase() === 'alert') inTable = true;
    else if (inTable && !/^-+$/.test(first)) {
      const name = /`(Surge\w*)`/.exec(first)?.[1];
      out.push(name ?? `unparsed row: ${first}`);
    }
  }
  return out;
}

/** Alert sections of a runbook page that lack one of the three parts every section has. */
function sectionProblems(markdown: string): string[] {
  const problems: string[] = [];
  const parts = markdown.split(/^## /m).slice(1);
  for (const part of parts) {
    const heading = part.split('\n')[0]?.trim() ?? '';
    if (!/^Surge\w*$/.test(heading)) continue;
    for (const p of ['Means', 'Confirm', 'Do'])
      if (!new RegExp(`^\\*\\*${p}\\.\\*\\*`, 'm').test(part)) problems.push(`${heading}: no **${p}.** paragraph`);
  }
  return problems;
}

/** Runbook problems of a rule file against a runbook page. */
function runbookProblems(rules: Rule[], runbooks: string): string[] {
  const problems: string[] = [];
  const anchors = new Set(sections(runbooks).map(slug));
  for (const r of rules) {
    const url = r.annotations?.runbook_url;
    if (!url) {
      problems.push(`${r.alert}: no runbook_url`);
      continue;
    }
    const [base, anchor] = url.split('#');
    if (base !== RUNBOOK_BASE) problems.push(`${r.alert}: runbook_url base ${base} is not ${RUNBOOK_BASE}`);
    if (!anchor || !anchors.has(anchor))
      problems.push(`${r.alert}: runbook_url anchor #${anchor} is not in runbooks.md`);
    else if (anchor !== slug(r.alert ?? '')) problems.push(`${r.alert}: runbook_url points at #${anchor}`);
  }
  return problems;
}

const sorted = (xs: Iterable<string>) => [...xs].sort();

describe('alert rules and their runbooks agree', () => {
  const rules = alertRules(read('metrics', 'alerts.yml'));
  const names = sorted(rules.map((r) => r.alert ?? ''));
  const runbooks = read('docs', 'runbooks.md');

  test('the helpers read headings, anchors and tables as GitHub renders them', () => {
    assert.equal(slug('SurgeBacklogAgeOverSLO'), 'surgebacklogageoverslo');
    assert.equal(slug('Where the links point'), 'where-the-links-point');
    assert.deepEqual(sections('# T\n## A\n```sh\n## not a heading\n```\n## B c\n'), ['A', 'B c']);
    assert.deepEqual(tableAlerts('| Alert | x |\n| --- | - |\n| [`SurgeA`](r.md#surgea) | 1 |\n| `SurgeB` | 2 |\n\n'), [
      'SurgeA',
      'SurgeB',
    ]);
  });

  test('every rule has a section in docs/runbooks.md and every alert section a rule', () => {
    const alertSections = sections(runbooks).filter((h) => /^Surge\w*$/.test(h));
    assert.deepEqual(sorted(alertSections), names);
  });

  test('every alert section says what it means, how to confirm it and what to do', () => {
    assert.deepEqual(sectionProblems(runbooks), []);
    assert.deepEqual(
      sectionProblems('## SurgeA\n\n**Means.** x\n\n**Do.** y\n## SurgeB\n**Means.** a\n**Confirm.** b\n**Do.** c\n'),
      ['SurgeA: no **Confirm.** paragraph'],
    );
  });

  test('every rule links to its own section of docs/runbooks.md under the documented base', () => {
    assert.deepEqual(runbookProblems(rules, runbooks), []);
    assert.ok(runbooks.includes(RUNBOOK_BASE), 'docs/runbooks.md names the base it documents');
  });

  test('a missing anchor, a wrong base and a missing runbook_url are caught', () => {
    const mutated = alertRules(read('metrics', 'alerts.yml'));
    const [a, b, c] = mutated;
    assert.ok(a?.annotations && b?.annotations && c?.annotations);
    a.annotations.runbook_url = `${RUNBOOK_BASE}#no-such-section`;
    b.annotations.runbook_url = `https://example.com/runbooks#${slug(b.alert ?? '')}`;
    delete c.annotations.runbook_url;
    assert.deepEqual(runbookProblems(mutated, runbooks), [
      `${a.alert}: runbook_url anchor #no-such-section is not in runbooks.md`,
      `${b.alert}: runbook_url base https://example.com/runbooks is not ${RUNBOOK_BASE}`,
      `${c.alert}: no runbook_url`,
    ]);
  });

  test("docs/operations.md's alerts table lists exactly the rules, each linking to its runbook", () => {
    const ops = read('docs', 'operations.md');
    assert.deepEqual(sorted(tableAlerts(ops)), names);
    for (const name of names) assert.ok(ops.includes(`[\`${name}\`](runbooks.md#${slug(name)})`), `${name} links`);
  });

  test("docs/metrics.md's alerts table lists exactly the rules", () => {
    assert.deepEqual(sorted(tableAlerts(read('docs', 'metrics.md'))), names);
  });

  test('every alert has promtool unit tests where it fires and where it does not, with the same runbook_url', () => {
    const urls = new Map(rules.map((r) => [r.alert, r.annotations?.runbook_url]));
    const file = parse(read('metrics', 'alerts.test.yml')) as {
      tests: Array<{
        alert_rule_test?: Array<{
          alertname: string;
          exp_alerts?: Array<{ exp_annotations?: Record<string, string> }>;
        }>;
      }>;
    };
    const fires = new Set<string>();
    const quiet = new Set<string>();
    for (const t of file.tests)
      for (const a of t.alert_rule_test ?? []) {
        (a.exp_alerts?.length ? fires : quiet).add(a.alertname);
        for (const e of a.exp_alerts ?? [])
          assert.equal(e.exp_annotations?.runbook_url, urls.get(a.alertname), `${a.alertname} expectation`);
      }
    assert.deepEqual(sorted(fires), names, 'every alert has a promtool unit test where it fires');
    assert.deepEqual(sorted(quiet), names, 'and one where it stays quiet');
  });
});
