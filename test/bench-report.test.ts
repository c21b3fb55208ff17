// The generated results index, and `surge bench report`: the combined capacity report from the committed results — every benchmark
// in it, Markdown and HTML, and the HTML rendered by headless Chromium to a screenshot of the
// expected size that is not blank.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { inflateSync } from 'node:zlib';
import { latestResults, resultsIndexMarkdown } from '../bench/results-index.js';
import { PACKAGE_ROOT } from '../common/paths.js';

const RESULTS = join(PACKAGE_ROOT, 'bench', 'results');
const CHROMIUM = ['chromium', 'chromium-browser', 'google-chrome'].find(
  (c) => spawnSync('sh', ['-c', `command -v ${c}`]).status === 0,
);

/** Width, height and the share of decoded bytes that are neither 0 nor 255 (0 for a blank page). */
function pngStats(file: string): { width: number; height: number; inked: number } {
  const b = readFileSync(file);
  assert.equal(b.subarray(1, 4).toString(), 'PNG');
  const idat: Buffer[] = [];
  for (let i = 8; i < b.length; ) {
    const len = b.readUInt32BE(i);
    const type = b.subarray(i + 4, i + 8).toString();
    if (type === 'IDAT') idat.push(b.subarray(i + 8, i + 8 + len));
    i += 12 + len;
  }
  const raw = inflateSync(Buffer.concat(idat));
  let inked = 0;
  for (const x of raw) if (x !== 0 && x !== 255) inked++;
  return { width: b.readUInt32BE(16), height: b.readUInt32BE(20), inked: inked / raw.length };
}

describe('bench/results/README.md', () => {
  test('the committed index is the one generated from the result files (`surge bench index`)', () => {
    const committed = readFileSync(join(RESULTS, 'README.md'), 'utf8');
    assert.equal(
      committed,
      resultsIndexMarkdown(RESULTS),
      'run `npx surge bench index` and commit bench/results/README.md',
    );
    for (const e of latestResults(RESULTS)) assert.ok(existsSync(join(RESULTS, e.path)), `${e.path} exists`);
  });
});

describe('surge bench report', () => {
  const out = mkdtempSync(join(tmpdir(), 'surge-bench-report-'));
  after(() => rmSync(out, { recursive: true, force: true }));

  test('combines the latest result of every benchmark into Markdown, HTML and SVG', () => {
    const r = spawnSync(
      process.execPath,
      [join(PACKAGE_ROOT, 'dist', 'cli', 'surge.js'), 'bench', 'report', '--results', RESULTS, '--out', out],
      { encoding: 'utf8', timeout: 60_000 },
    );
    assert.equal(r.status, 0, r.stderr);
    const entries = latestResults(RESULTS);
    assert.ok(entries.length >= 6, entries.map((e) => e.scenario).join(', '));
    const md = readFileSync(join(out, 'index.md'), 'utf8');
    const html = readFileSync(join(out, 'index.html'), 'utf8');
    for (const e of entries) {
      assert.ok(md.includes(`## ${e.scenario}`), `index.md has ${e.scenario}`);
      assert.ok(html.includes(`id="${e.scenario}"`), `index.html has ${e.scenario}`);
      for (const c of e.charts) assert.ok(existsSync(join(out, `${e.scenario}-${c}`)), `${e.scenario}-${c} copied`);
    }
    assert.ok(existsSync(join(out, 'overview.svg')));
    assert.match(readFileSync(join(out, 'overview.svg'), 'utf8'), /compare: surge/);
  });

  test('the HTML renders in headless Chromium', {
    skip: CHROMIUM ? false : 'chromium is not installed here (.ci/run installs it)',
  }, () => {
    const shot = join(out, 'shot.png');
    const r = spawnSync(
      CHROMIUM as string,
      [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--hide-scrollbars',
        `--screenshot=${shot}`,
        '--window-size=1200,1600',
        `file://${join(out, 'index.html')}`,
      ],
      { encoding: 'utf8', timeout: 120_000 },
    );
    assert.ok(existsSync(shot), `no screenshot: ${r.stderr}`);
    const s = pngStats(shot);
    assert.deepEqual([s.width, s.height], [1200, 1600]);
    assert.ok(s.inked > 0.01, `the page is not blank (${(s.inked * 100).toFixed(2)} % inked bytes)`);
  });
});
