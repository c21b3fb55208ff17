// Every scenario of `surge bench` in its quick mode, through the CLI, against a Surge stack it
// starts (ingest + workers + lag exporter via up()) on this test's database and Redis prefix. Each
// report must have its charts and figures that add up: accepted = applied + rejected +
// dead-lettered, nothing missing, no oversell in the flash sale, ratios in compare, a capacity
// table in sweep, memory and drift in soak.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createTestEnv, type TestEnv } from '../devkit/scratch.js';
import { spawnCli } from './support/procs.js';

interface Outcome {
  accepted: number;
  applied: number;
  rejected: number;
  deadLettered: number;
  missing: number;
  landedWithoutAnswer: number;
}
interface Results {
  scenario: string;
  charts: string[];
  checks: Array<{ name: string; ok: boolean; detail: string }>;
  systems: Array<{
    system: string;
    outcome: Outcome;
    phases: Array<{ offeredRate: number; accept: { p99Ms: number | null } }>;
    samples: Array<{ memoryMiB: Record<string, number> }>;
  }>;
  machine: { cpus: number; node: string };
  command: string;
  extra: Record<string, unknown>;
  findings: string[];
}

async function bench(args: string[], env: Record<string, string>): Promise<{ code: number | null; out: string }> {
  const run = spawnCli(['bench', ...args], env);
  const { code } = await run.exited;
  return { code, out: run.output() };
}

function checkReport(dir: string, scenario: string): Results {
  const r = JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8')) as Results;
  const md = readFileSync(join(dir, 'report.md'), 'utf8');
  assert.equal(r.scenario, scenario);
  assert.equal(r.machine.node, process.version);
  assert.ok(r.machine.cpus > 0);
  assert.match(r.command, new RegExp(`bench ${scenario}`));
  assert.ok(
    r.charts.includes('latency-vs-rate.svg') &&
      r.charts.includes('latency-cdf.svg') &&
      r.charts.some((c) => c.startsWith('throughput')),
    r.charts.join(','),
  );
  for (const c of r.charts) {
    const svg = readFileSync(join(dir, c), 'utf8');
    assert.match(svg, /^<svg[\s\S]*<\/svg>$/, `${c} is an SVG`);
    assert.ok(md.includes(`](${c})`), `report.md embeds ${c}`);
  }
  assert.ok(r.systems.length > 0);
  for (const s of r.systems) {
    const o = s.outcome;
    assert.ok(o.accepted > 0, `${s.system} accepted something`);
    assert.equal(o.missing, 0, `${s.system}: nothing accepted is missing`);
    assert.equal(
      o.accepted,
      o.applied + o.rejected + o.deadLettered - o.landedWithoutAnswer,
      `${s.system}: accepted = applied + rejected + dead-lettered`,
    );
  }
  const ledger = r.checks.filter((c) => !c.name.includes("Little's law"));
  assert.ok(ledger.length > 0);
  for (const c of ledger) assert.ok(c.ok, `${c.name}: ${c.detail}`);
  assert.match(md, /## Machine/);
  // Answers lead with each system's ledger, checked.
  const answers = md.slice(md.indexOf('## Answers'), md.indexOf('## Checks'));
  for (const s of r.systems)
    assert.match(
      answers,
      new RegExp(
        `Ledger \\(${s.system === 'surge' ? 'Surge' : '[^)]+'}\\): offered \\d+ = answered .*checked: it balances`,
      ),
    );
  assert.doesNotMatch(answers, /LEDGER DOES NOT BALANCE/);
  // … and name what limited the run, from a CPU table of every process.
  assert.match(answers, /What limited it: /);
  // … and say whether the generator kept up (a quick run's is far from saturated).
  assert.match(answers, /Generator check passed \([^)]+\): kept up: \d+ generator process/);
  assert.match(md, /CPU per process[\s\S]*\| generator \| \d+ \|/);
  return r;
}

describe('surge bench --quick (every scenario)', () => {
  let t: TestEnv;
  const root = mkdtempSync(join(tmpdir(), 'surge-bench-'));
  before(async () => {
    t = await createTestEnv({ SURGE_BATCH_LINGER_MS: '5' });
  });
  after(async () => {
    await t.cleanup();
    rmSync(root, { recursive: true, force: true });
  });

  const run = async (scenario: string, extra: string[] = []): Promise<Results> => {
    const dir = join(root, scenario);
    const r = await bench([scenario, '--quick', '--out', dir, ...extra], t.env);
    assert.equal(r.code, 0, r.out);
    assert.ok(existsSync(join(dir, 'report.md')), r.out);
    return checkReport(dir, scenario);
  };

  test('steady', async () => {
    const r = await run('steady');
    assert.equal(r.systems[0]?.phases.length, 1);
  });

  test('ramp reports a maximum sustainable rate per the bounds', async () => {
    const r = await run('ramp');
    const knee = r.extra.knee as { maxSustainableRate: number | null; reason: string };
    assert.ok('maxSustainableRate' in knee && knee.reason.length > 0);
    assert.ok((r.systems[0]?.phases.length ?? 0) >= 1);
  });

  test('flash-sale: limited stock, duplicates and retries — no oversell, rejections are out_of_stock', async () => {
    // Traced: each answer's time split into its parts, joined across the generator and ingest.
    const r = await run('flash-sale', ['--trace']);
    const f = r.extra.flash as {
      oversell: number;
      sold: number;
      stock: number;
      rejected: number;
      rejectedReasons: Record<string, number>;
      duplicatesSent: number;
      drainSeconds: number | null;
      offered: number;
      goodputPerS: number;
      distinctAcceptedPerS: number;
    };
    assert.equal(f.oversell, 0);
    assert.ok(f.goodputPerS > f.distinctAcceptedPerS, 'goodput counts every 202, the replays of duplicates too');
    // The warm-up's ordinary orders come first and stay out of the burst's figures.
    assert.ok(r.findings.some((x) => /^Warm-up: \d+ ordinary orders/.test(x)));
    assert.equal(f.offered, 300);
    assert.ok(f.sold <= f.stock);
    assert.ok(f.duplicatesSent > 0, 'duplicates were sent');
    assert.ok(f.rejected > 0, 'demand exceeded stock, so some orders were rejected');
    assert.deepEqual(Object.keys(f.rejectedReasons), ['out_of_stock']);
    assert.notEqual(f.drainSeconds, null);
    assert.ok(r.checks.some((c) => c.name === 'no oversell' && c.ok));
    const goals = r.findings.find((x) => x.startsWith('Goals: '));
    assert.match(
      goals ?? 'no goal line in the answers',
      /goodput \d+ 202s\/s ≥ 0\.9 × .*202 p99 [\d.]+ ms ≤ 250 ms: (NOT )?met; 503 p99 ([\d.]+ ms ≤ 20 ms: (NOT )?met|≤ 20 ms: no sample \(nothing was shed\)); \d+ dropped = 0: (NOT )?met; \d+ attempts timed out = 0: (NOT )?met; final answers [\d.]+ % ≥ 99 %: (NOT )?met; oversell \d+ = 0: (NOT )?met\./,
    );
    assert.ok(r.findings.some((x) => x.startsWith('Shed by ingest (its 503s by reason')));
    // What limited it is judged over the burst alone (1 s of warm-up, 2 s of burst), not the retries after it.
    const { window } = (r.systems[0] as unknown as { cpu: { window: { from: number; to: number } } }).cpu;
    assert.equal(window.from, 1);
    assert.ok(window.to <= 3, `window ends at ${window.to} s`);
    const parts = r.extra.latencyParts as Array<{
      status: string;
      count: number;
      parts: Record<string, { p50: number; p99: number }>;
    }>;
    const accepted = parts.find((c) => c.status === '202');
    assert.ok(accepted && accepted.count > 0, "the 202s of the burst were joined with ingest's reads");
    for (const k of ['generatorLate', 'connectionWait', 'beforeTurn', 'inTurn', 'ingest', 'back', 'total'])
      assert.ok(Number.isFinite(accepted.parts[k]?.p99), k);
    assert.ok(accepted.parts.ingest?.p50 !== undefined && accepted.parts.ingest.p50 > 0, 'ingest takes some time');
  });

  test('soak reports memory and latency drift', async () => {
    const r = await run('soak');
    assert.ok(r.charts.includes('memory.svg') && r.charts.includes('latency-drift.svg'));
    const d = r.extra.drift as { memorySlopeMiBPerMin: Record<string, number> };
    assert.ok(Object.keys(d.memorySlopeMiBPerMin).length > 0, 'memory was sampled');
  });

  test('compare: sync INSERT, BullMQ and Surge in one run, with ratios', async () => {
    const r = await run('compare');
    assert.deepEqual(
      r.systems.map((s) => s.system),
      ['sync-insert', 'bullmq', 'surge'],
    );
    const ratios = r.extra.ratios as Record<
      string,
      { maxSustainableRate: number | null; baselineMaxRate: number | null; acceptP99AtBaselineMax: number | null }
    >;
    assert.ok('sync-insert' in ratios && 'bullmq' in ratios);
    const knees = r.extra.knees as Record<string, { maxSustainableRate: number | null }>;
    const surgeKnee = knees.surge?.maxSustainableRate ?? null;
    for (const base of ['sync-insert', 'bullmq'] as const) {
      const baseKnee = knees[base]?.maxSustainableRate ?? null;
      const own = ratios[base]?.baselineMaxRate ?? null;
      // Each baseline is also compared at the highest rate it sustains, when Surge sustains it too.
      assert.equal(own, baseKnee === null || surgeKnee === null ? null : Math.min(baseKnee, surgeKnee), base);
      if (own === null) continue;
      const p99 = (system: string) =>
        r.systems.find((s) => s.system === system)?.phases.find((p) => p.offeredRate === own)?.accept.p99Ms;
      const [a, b] = [p99('surge'), p99(base)];
      if (a && b) assert.equal(ratios[base]?.acceptP99AtBaselineMax, Math.round((a / b) * 100) / 100, base);
    }
  });

  test('sweep: a capacity table per configuration and a recommendation', async () => {
    const r = await run('sweep');
    const cap = r.extra.capacity as Array<{ batchSize: number; knee: unknown }>;
    assert.deepEqual(
      cap.map((c) => c.batchSize),
      [50, 200],
    );
    assert.equal(typeof r.extra.recommendation, 'string');
    assert.ok(r.charts.includes('capacity.svg'));
  });
});
