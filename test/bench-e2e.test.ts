// bench:e2e run tiny against the machine's Redis and PostgreSQL: one interleaved round
// of 2 s, a fixed-rate round and a backlog drain of ingest alone's orders, then the report must
// carry every column with sane values. Also its --help and its answer to a bad flag.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';

const SCRIPT = fileURLToPath(new URL('../bench/e2e.js', import.meta.url));
/** The fields of a report row the test reads (bench/e2e.ts RoundFigures). */
interface Row {
  phase: string;
  setup: string;
  ordersPerSecond: number;
  accepted: number;
  errors: number;
  applied?: number;
  backlogAtEnd?: number;
  drainSeconds?: number;
  averageBatchSize?: number;
  cpuUsPerOrder: Record<string, number | undefined>;
  backends?: { atEnd: number };
}

const run = (args: string[], timeout = 80_000) =>
  spawnSync(process.execPath, [SCRIPT, ...args], { encoding: 'utf8', timeout, env: { ...process.env } });

describe('bench:e2e', () => {
  const out = mkdtempSync(join(tmpdir(), 'surge-bench-e2e-'));
  after(() => rmSync(out, { recursive: true, force: true }));

  test('--help prints the usage and exits 0; a bad flag exits 2 without a stack trace', () => {
    const help = run(['--help']);
    assert.equal(help.status, 0);
    for (const flag of [
      '--rounds',
      '--duration',
      '--warmup',
      '--connections',
      '--env',
      '--rate-fraction',
      '--fixed-rate',
      '--drain-orders',
    ])
      assert.match(help.stdout, new RegExp(flag));
    for (const bad of [
      ['--bogus'],
      ['--rounds', 'x'],
      ['--env', 'NOEQUALS'],
      ['--rate-fraction', '2'],
      ['--drain-orders', '0'],
    ]) {
      const r = run(bad);
      assert.equal(r.status, 2, bad.join(' '));
      assert.match(r.stderr, /^bench:e2e: /);
      assert.doesNotMatch(r.stderr, /\n\s+at /);
    }
  });

  test('one tiny round: every column, whole ÷ alone > 0, batches ≥ 1, a drain of the same run, live ÷ backlog', () => {
    const r = run([
      '--rounds',
      '1',
      '--duration',
      '2',
      '--warmup',
      '1',
      '--connections',
      '8',
      '--drain-orders',
      '2000',
      '--env',
      'SURGE_BATCH_LINGER_MS=5',
      '--out',
      out,
    ]);
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    const files = readdirSync(out);
    const json = files.find((f) => /^e2e-\d{4}-\d{2}-\d{2}\.json$/.test(f));
    const md = files.find((f) => /^e2e-\d{4}-\d{2}-\d{2}\.md$/.test(f));
    assert.ok(json && md, files.join(', '));
    const s = JSON.parse(readFileSync(join(out, json), 'utf8'));
    assert.match(s.command, /^npm run bench:e2e -- --rounds 1 /);
    assert.deepEqual(s.options.env, { SURGE_BATCH_LINGER_MS: '5' });
    const rows = s.figures as Row[];
    assert.deepEqual(
      rows.map((f) => `${f.phase}/${f.setup}`),
      ['saturated/alone', 'saturated/whole', 'fixed-rate/whole'],
    );
    for (const f of rows) {
      assert.ok(f.ordersPerSecond > 0, JSON.stringify(f));
      assert.ok(f.accepted > 0 && f.errors === 0, JSON.stringify(f));
      for (const p of ['generator', 'ingest', 'redis'])
        assert.ok((f.cpuUsPerOrder[p] ?? 0) > 0, `${p}: ${JSON.stringify(f)}`);
      if (f.setup === 'whole') {
        assert.ok(
          (f.applied ?? 0) > 0 && (f.backlogAtEnd ?? -1) >= 0 && (f.drainSeconds ?? -1) >= 0,
          JSON.stringify(f),
        );
        assert.ok((f.averageBatchSize ?? 0) >= 1, JSON.stringify(f));
        assert.ok((f.cpuUsPerOrder.worker ?? 0) > 0 && (f.cpuUsPerOrder.workerBackends ?? 0) > 0, JSON.stringify(f));
        assert.ok((f.backends?.atEnd ?? 0) >= 1, JSON.stringify(f));
      } else {
        assert.equal(f.cpuUsPerOrder.worker, undefined);
      }
    }
    assert.ok(s.wholeOverAlone.median > 0, JSON.stringify(s.wholeOverAlone));
    assert.ok(s.medians.whole.averageBatchSize >= 1);
    // The drain: a worker on ingest alone's streams, measured over at least the orders asked for.
    assert.equal(s.drains.length, 1, JSON.stringify(s.drains));
    const d = s.drains[0];
    assert.ok(d.applied >= 2000 && d.warmup >= 1 && d.backlogAtStart >= d.applied + d.warmup, JSON.stringify(d));
    assert.ok(d.cpuUsPerOrder.worker > 0 && d.cpuUsPerOrder.workerBackends > 0, JSON.stringify(d));
    assert.ok(d.backends.atEnd >= 1 && d.averageBatchSize >= 1, JSON.stringify(d));
    const live = rows.find((f) => f.phase === 'fixed-rate');
    const us = (x: { cpuUsPerOrder: Record<string, number | undefined> }) =>
      (x.cpuUsPerOrder.worker ?? 0) + (x.cpuUsPerOrder.workerBackends ?? 0);
    assert.ok(live, 'a fixed-rate round');
    const ratio = Number((us(live) / us(d)).toFixed(2));
    assert.ok(Math.abs(s.fixedRate.liveOverBacklog - ratio) <= 0.02, `${s.fixedRate.liveOverBacklog} vs ${ratio}`);
    assert.ok(s.fixedRate.rate >= 1 && s.fixedRate.liveOverBacklog > 0, JSON.stringify(s.fixedRate));
    assert.ok(['generator', 'ingest', 'worker', 'workerBackends', 'redis'].includes(s.limitedBy.process));
    const text = readFileSync(join(out, md), 'utf8');
    assert.match(text, /^# Whole-system benchmark/);
    assert.match(text, /Command: `npm run bench:e2e -- --rounds 1 /);
    assert.match(text, /Machine: /);
    for (const col of [
      'orders/s',
      'whole ÷ alone',
      'backlog at end',
      'avg batch',
      'generator µs/order',
      'ingest µs/order',
      'worker µs/order',
      "worker's PG backends µs/order",
      'Redis µs/order',
    ])
      assert.ok(text.includes(`| ${col} |`), col);
    assert.match(text, /live ÷ backlog \d/);
    assert.ok(text.includes('| drain round | in the streams |'), 'the drain table');
    assert.match(text, /against this run's backlog drains of the same orders/);
    assert.match(text, /What limited it: /);
  });
});
