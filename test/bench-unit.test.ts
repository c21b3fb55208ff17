// The benchmark suite's own parts, without a Surge stack: the open-model generator's latency is
// measured from the intended send time (coordinated omission), the workload is valid and
// reproducible, the knee and Little's-law arithmetic, Prometheus parsing, headless charts, and the
// whole measure → report path against the sync-INSERT baseline (PostgreSQL only).
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import autocannon from 'autocannon';
import fc from 'fast-check';
import { validateOrder } from '../common/order.js';
import { httpRequestBytes, takeRequestsFrom } from '../bench/autocannon-requests.js';
import { capacitySpec, cpuSpec, latencyVsRateSpec, renderSvg, throughputSpec } from '../bench/charts.js';
import { type CpuUsage, findBottleneck, startCpuSampler } from '../bench/cpu.js';
import { decompose } from '../bench/decompose.js';
import { startLoad } from '../bench/generators.js';
import { AttemptError, Http1Pool } from '../bench/http1.js';
import { KeySet } from '../bench/key-set.js';
import { assertLoopback } from '../bench/loadgen.js';
import { parsePrometheus, sumOf } from '../bench/prom.js';
import {
  describeMachine,
  ledgerCheck,
  ledgerFindings,
  phasesTable,
  standardCharts,
  systemsTable,
  writeReport,
} from '../bench/report.js';
import { measure } from '../bench/run.js';
import { findKnee } from '../bench/scenarios.js';
import { generatorCheck, ledgerOf, littleChecks, type SystemSummary, summarize } from '../bench/summary.js';
import { startSyncBaseline } from '../bench/target.js';
import { DEFAULT_WORKLOAD, orderFor, orderKey, phaseOfKey } from '../bench/workload.js';
import { createTestEnv, type TestEnv } from '../devkit/scratch.js';
import { waitFor } from '../devkit/wait.js';
import { defined } from './support/defined.js';

describe('bench: workload and arithmetic', () => {
  test('orders are valid, a pure function of the key, and hot orders buy only hot SKUs', () => {
    const w = { ...DEFAULT_WORKLOAD, hotSkus: ['h1', 'h2'], hotFraction: 1 };
    for (let i = 0; i < 200; i++) {
      const key = orderKey('run', 1, 0, i);
      const a = orderFor(key, DEFAULT_WORKLOAD);
      assert.deepEqual(a, orderFor(key, DEFAULT_WORKLOAD));
      assert.ok(validateOrder(a).ok, JSON.stringify(a));
      assert.equal(new Set(a.items.map((x) => x.sku)).size, a.items.length, 'one line per SKU');
      const hot = orderFor(key, w);
      assert.ok(hot.items.every((x) => x.sku === 'h1' || x.sku === 'h2'));
      assert.equal(phaseOfKey(key), 1);
    }
  });

  test('Prometheus text: labels, sums, absent metrics', () => {
    const s = parsePrometheus(
      [
        '# HELP x',
        'surge_consumer_group_backlog{stream="a:{s0}:orders",group="appliers"} 3',
        'surge_consumer_group_backlog{stream="b",group="appliers"} 4',
        'surge_consumer_group_lag_seconds{stream="a"} NaN',
        '',
      ].join('\n'),
    );
    assert.equal(sumOf(s, 'surge_consumer_group_backlog'), 7);
    assert.equal(sumOf(s, 'surge_consumer_group_backlog', { stream: 'b' }), 4);
    assert.equal(sumOf(s, 'surge_consumer_group_lag_seconds'), undefined, 'NaN is absent, not 0');
    assert.equal(s[0]?.labels.stream, 'a:{s0}:orders');
  });

  test("Little's law: consistent occupancy passes, a 4× mismatch fails", () => {
    const samples = Array.from({ length: 10 }, (_, i) => ({
      t: i + 1,
      phase: 0,
      offered: 100,
      accepted: 100,
      replayed: 0,
      failed: 0,
      errors: 0,
      dropped: 0,
      inFlight: 10,
      acceptP50Ms: 0,
      acceptP99Ms: 0,
      generatorLoopDelayMaxMs: 0,
      committed: 100,
      backlog: 50,
      backlogAgeSeconds: 0.5,
      memoryMiB: {},
      draining: false,
    }));
    // λ = 100/s; W accept = 100 ms → L 10 (matches inFlight); W commit = 125 ms → 12.5 vs 50 (4×).
    const [pipeline, client] = littleChecks(samples, 100, 125);
    assert.equal(client?.ok, true);
    assert.equal(client?.predicted, 10);
    assert.equal(pipeline?.ok, false);
    assert.equal(pipeline?.ratio, 4);
  });

  test('the knee is the highest step meeting every bound; the first failing step above it says why', () => {
    const p = (rate: number, acceptP99: number, commitP99: number, failed = 0) => ({
      phase: 0,
      offeredRate: rate,
      durationS: 10,
      offered: rate * 10,
      accepted: rate * 10,
      acceptedRate: rate,
      duplicatesSent: 0,
      replayed: 0,
      failed,
      errors: 0,
      retries: 0,
      dropped: 0,
      abandoned: 0,
      accept: { count: 1, meanMs: 1, p50Ms: 1, p90Ms: 1, p99Ms: acceptP99, p999Ms: 1, maxMs: 1 },
      commit: { count: 1, meanMs: 1, p50Ms: 1, p90Ms: 1, p99Ms: commitP99, p999Ms: 1, maxMs: 1 },
      backlogMax: 0,
      backlogAgeMaxS: 0,
    });
    const bounds = {
      warmupS: 0,
      startRate: 100,
      stepRate: 100,
      maxRate: 400,
      stepS: 10,
      acceptP99Ms: 50,
      commitP99Ms: 500,
      maxBacklogAgeS: 5,
    };
    const s = { phases: [p(100, 5, 50), p(200, 8, 90), p(300, 9, 900), p(400, 200, 50)] } as unknown as SystemSummary;
    const k = findKnee(s, bounds);
    assert.equal(k.maxSustainableRate, 200);
    assert.equal(k.firstFailingRate, 300);
    assert.match(k.reason, /commit p99/);
    const failing = { phases: [p(100, 5, 50, 500)] } as unknown as SystemSummary;
    assert.equal(findKnee(failing, bounds).maxSustainableRate, null);
    // With a warm-up, phase 0 (cold start, slow) does not count.
    const warm = {
      phases: [p(50, 900, 50), p(100, 5, 50)].map((x, i) => ({ ...x, phase: i })),
    } as unknown as SystemSummary;
    assert.equal(findKnee(warm, { ...bounds, warmupS: 1 }).maxSustainableRate, 100);
    // Without it the slow first step is reported as a lower step that missed a bound, not hidden.
    const noisy = findKnee(warm, bounds);
    assert.equal(noisy.maxSustainableRate, 100);
    assert.match(noisy.reason, /lower steps that missed a bound: 50\/s/);
  });

  test('charts render to SVG headless', async () => {
    const svg = await renderSvg(
      throughputSpec({
        label: 'x',
        samples: [{ t: 1, offered: 1, accepted: 1, committed: 1, backlog: 2 }],
      } as unknown as SystemSummary),
    );
    assert.match(svg, /^<svg[\s\S]*<\/svg>$/);
  });

  test('charts a planner can show: whole labels, knee and bounds drawn, CPU per process, no unreached steps', async () => {
    const long = '2 workers, 4 shards, batch 500';
    const cap = await renderSvg(capacitySpec([{ config: long, maxRate: 1250 }]));
    assert.ok(cap.includes(long) && !cap.includes('…'), 'the configuration label is whole');
    const phase = (offeredRate: number, offered: number, p99Ms: number) => ({
      offeredRate,
      offered,
      accepted: offered,
      accept: { p50Ms: p99Ms / 4, p99Ms },
      commit: { p50Ms: 20, p99Ms: 60 },
    });
    const s = {
      label: 'Surge',
      phases: [phase(250, 2500, 20), phase(500, 5000, 90), phase(750, 7500, 400), phase(1000, 0, 0)],
    } as unknown as SystemSummary;
    const spec = latencyVsRateSpec([s], {
      bounds: [{ label: 'accept p99 bound', ms: 100 }],
      knees: [{ label: 'Surge', rate: 500 }],
    });
    const lvr = await renderSvg(spec);
    assert.ok(lvr.includes('knee Surge: 500/s') && lvr.includes('accept p99 bound 100 ms'));
    assert.ok(!JSON.stringify(spec).includes('"rate":1000'), 'the step never reached is not drawn');
    const cpu = await renderSvg(
      cpuSpec({
        label: 'Surge',
        cpu: {
          usage: {
            cpus: 2,
            samples: [1, 2, 3].map((t) => ({
              t,
              dt: 1,
              machineCores: 1.5,
              groups: {
                ingest: { cores: 0.9, mainCores: 0.8, processes: 1 },
                'PostgreSQL backends': { cores: 0.3, mainCores: 0.2, processes: 3 },
              },
            })),
          },
        },
      } as unknown as SystemSummary),
    );
    assert.ok(cpu.includes('ingest') && cpu.includes('PostgreSQL backends'));
    const table = phasesTable(s as SystemSummary);
    assert.deepEqual(
      table.rows.map((r) => r[1]),
      [250, 500, 750],
      'no row for a step never reached',
    );
  });

  test("an answer's latency splits into the generator's, the kernel's, the turn's and ingest's parts", () => {
    // The generator's clock is the host's monotonic clock minus 1,000 ms.
    const timeline = {
      pid: 1,
      monoOffsetMs: 0,
      timeOriginMs: 0,
      execArgv: [],
      stalls: [],
      gcs: [],
      samples: [],
      turns: [[100, 130, 2] as [number, number, number]],
      requestTraces: [
        [90.5, 110, 0, 110.1, 503] as [number, number, number, number, number],
        [101.25, 104, 0, 104.5, 202] as [number, number, number, number, number],
      ],
    };
    const attempts = [
      [1080, 1082, 1085, 1090.5, 1112, 1112.5, 503, 0],
      [1101, 1101, 1101, 1101.25, 1106, 1106, 202, 1],
      // Not traced by ingest (another process, or before the timeline began): left out.
      [1200, 1200, 1200, 1201, 1205, 1205, 202, 0],
    ];
    const [a202, a503] = decompose(timeline, [{ clockOffsetMs: -1000, attempts }]);
    assert.equal(a503?.status, '503');
    assert.equal(a503?.count, 1);
    const p = a503?.parts;
    assert.equal(p?.generatorLate.p50, 7.5, 'timer lateness 2 + writing 5.5');
    assert.equal(p?.connectionWait.p50, 3);
    assert.equal(p?.beforeTurn.p50, 9.5, 'sent at 90.5, its turn began at 100');
    assert.equal(p?.inTurn.p50, 10, 'read 10 ms into the turn');
    assert.equal(p?.ingest.p50, 0.1);
    assert.equal(p?.back.p50, 1.9);
    assert.equal(p?.total.p50, 32.5);
    assert.equal(a503?.turnMs, 30);
    assert.equal(a202?.count, 1);
    assert.equal(a202?.parts.beforeTurn.p50, 0, 'sent during its turn: no wait before it');
    assert.equal(a202?.parts.inTurn.p50, 2.75);
  });

  test('the generator refuses non-loopback targets', () => {
    assert.throws(() => assertLoopback('http://10.0.0.1:8080'), /loopback/);
    assert.throws(() => assertLoopback('http://example.com'), /loopback/);
    assertLoopback('http://127.0.0.1:1');
    assertLoopback('http://localhost:1');
  });
});

describe('bench: CPU per process', () => {
  const usage = (groups: Record<string, { cores: number; main: number }>, machine: number): CpuUsage => ({
    cpus: 2,
    wallSeconds: 5,
    machineBusySeconds: machine * 5,
    groups: Object.keys(groups).map((name) => ({
      name,
      kind: name === 'ingest' ? 'ingest' : 'worker',
      seconds: (groups[name]?.cores ?? 0) * 5,
      pids: [1],
      measured: true,
    })),
    samples: Array.from({ length: 5 }, (_, i) => ({
      t: i + 1,
      dt: 1,
      machineCores: machine,
      groups: Object.fromEntries(
        Object.entries(groups).map(([k, v]) => [k, { cores: v.cores, mainCores: v.main, processes: 1 }]),
      ),
    })),
  });

  test('the bottleneck: a bound thread names its process, all cores busy names the machine, else not CPU', () => {
    const thread = findBottleneck(
      usage({ ingest: { cores: 1.2, main: 0.97 }, worker: { cores: 0.5, main: 0.4 } }, 1.8),
      0,
      5,
    );
    assert.equal(thread.process, 'ingest');
    assert.match(thread.sentence, /ingest, CPU-bound: .* 0\.97 cores of 1/);
    const machine = findBottleneck(
      usage({ ingest: { cores: 0.8, main: 0.7 }, worker: { cores: 1.0, main: 0.6 } }, 1.9),
      0,
      5,
    );
    assert.equal(machine.process, 'machine');
    assert.match(machine.sentence, /the machine's CPU: 1\.90 of 2 cores busy.*largest user was worker/);
    const none = findBottleneck(
      usage({ ingest: { cores: 0.3, main: 0.3 }, worker: { cores: 0.2, main: 0.2 } }, 0.6),
      0,
      5,
    );
    assert.equal(none.resource, 'not CPU');
    assert.match(none.sentence, /not CPU/);
  });

  test('the generator check: near a core, or a late event loop for 3 s, is saturated', () => {
    const gen = (cores: number) => usage({ generator: { cores, main: cores } }, 1);
    const calm = Array.from({ length: 5 }, (_, i) => ({ t: i + 1, p99Ms: 12 }));
    const ok = generatorCheck(gen(0.4), calm, 1, 5);
    assert.equal(ok.saturated, false);
    assert.match(ok.reason, /^kept up: 1 generator process: up to 0\.40 cores each/);
    assert.equal(generatorCheck(gen(0.95), calm, 1, 5).saturated, true);
    const two = gen(1.2);
    for (const x of two.samples) x.groups.generator = { cores: 1.2, mainCores: 0.6, processes: 2 };
    assert.equal(generatorCheck(two, calm, 2, 5).saturated, false, '0.6 cores each of two processes');
    const late = calm.map((d) => (d.t >= 2 && d.t <= 4 ? { ...d, p99Ms: 80 } : d));
    assert.equal(generatorCheck(gen(0.4), late, 1, 5).saturated, true);
    const blip = calm.map((d) => (d.t === 3 ? { ...d, p99Ms: 500 } : d));
    assert.equal(generatorCheck(gen(0.4), blip, 1, 5).saturated, false, 'one late second is not saturation');
    // A single stall is named, though it is no saturation: its answers are that much later.
    const stall = calm.map((d) => ({ ...d, maxMs: d.t === 4 ? 61.5 : 15 }));
    const named = generatorCheck(gen(0.4), stall, 1, 5);
    assert.equal(named.saturated, false);
    assert.equal(named.loopDelayMaxMs, 61.5);
    assert.match(named.reason, /longest single delay 61\.5 ms$/);
    assert.equal(generatorCheck(gen(0.4), stall, 1, 2).loopDelayMaxMs, 15, 'seconds after the window do not count');
  });

  test('a busy child process is read from /proc, from its start', async () => {
    const child = spawn(process.execPath, ['-e', 'const end = Date.now() + 1500; while (Date.now() < end);']);
    const sampler = startCpuSampler(
      [{ name: 'spinner', kind: 'other', pids: () => (child.pid ? [child.pid] : []) }],
      200,
    );
    await new Promise((r) => child.once('exit', r));
    const u = await sampler.stop();
    const g = defined(u.groups[0], 'the group');
    assert.ok(g.measured && g.pids.includes(child.pid ?? -1));
    assert.ok(g.seconds > 0.2, `spinner used ${g.seconds} s`);
    assert.ok(u.samples.some((x) => (x.groups.spinner?.mainCores ?? 0) > 0.2));
  });
});

describe("bench: the generator's HTTP/1.1 client", () => {
  test('reads status, Retry-After, Idempotent-Replayed and a chunked or sized body; times out an attempt', async () => {
    const stamps: Array<string | undefined> = [];
    const server = createServer((req, res) => {
      req.resume();
      stamps.push(req.headers['x-bench-sent'] as string | undefined);
      if (req.url === '/chunked') {
        res.writeHead(503, { 'retry-after': '2', 'content-type': 'text/plain' });
        res.write('over');
        setTimeout(() => res.end('loaded'), 5);
      } else if (req.url === '/slow') setTimeout(() => res.end('late'), 400);
      else {
        res.writeHead(202, { 'idempotent-replayed': 'true' });
        res.end('{}');
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const pool = new Http1Pool(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, 1, 150);
    try {
      const { sentAt, receivedAt, ...shed } = await pool.post('/chunked', '', '{"a":1}');
      assert.deepEqual(shed, { status: 503, retryAfterS: 2, replayed: false, body: 'overloaded' });
      assert.ok(receivedAt - sentAt >= 4, 'the answer is timed from the write to its last chunk');
      // The same connection, kept alive, answers the next request; with a clock offset it carries its send time.
      const { sentAt: okSent, receivedAt: _, ...ok } = await pool.post('/', 'idempotency-key: k\r\n', '{}', 1000);
      assert.deepEqual(ok, { status: 202, retryAfterS: undefined, replayed: true, body: '' });
      assert.deepEqual(stamps, [undefined, (okSent + 1000).toFixed(3)]);
      await assert.rejects(
        pool.post('/slow', '', '{}'),
        (e: unknown) => e instanceof AttemptError && e.kind === 'timeout',
      );
      assert.equal((await pool.post('/', '', '{}')).status, 202, 'a fresh connection after the timeout');
    } finally {
      pool.close();
      server.close();
    }
  });
});

test("bench: the generator's pool opens every connection at once when asked", async () => {
  const server = createServer((req, res) => {
    req.resume();
    res.end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const pool = new Http1Pool(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, 5, 1000);
  try {
    const count = () => new Promise<number>((r) => server.getConnections((_, n) => r(n)));
    pool.openAll();
    await waitFor('five connections open before any request', async () => (await count()) === 5);
    assert.equal((await pool.post('/', '', '{}')).status, 200);
    assert.equal(await count(), 5, 'the request used one of them');
  } finally {
    pool.close();
    server.close();
  }
});

describe('bench: open-model generator', () => {
  let server: ReturnType<typeof createServer>;
  let url: string;
  before(async () => {
    // One request at a time, 100 ms each: a server with a capacity of 10/s.
    let busy = Promise.resolve();
    server = createServer((req, res) => {
      req.resume();
      busy = busy.then(
        () =>
          new Promise<void>((r) =>
            setTimeout(() => {
              res.writeHead(202, { 'content-type': 'application/json' });
              res.end('{}');
              r();
            }, 100),
          ),
      );
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => server.close());

  test('latency counts queueing from the intended send time (no coordinated omission)', async () => {
    // 40 arrivals/s for 1 s against 10/s capacity: the k-th answer comes ≈ (k+1)·100 ms after the
    // start although it was due at k·25 ms. A closed-loop client would report ≈ 100 ms for every
    // request; measured from the intended time the p99 is ≈ 3.9 s − 25·39 ms ≈ 2.9 s.
    const run = startLoad(
      {
        url,
        path: '/v1/orders',
        apiKey: 'k',
        runKey: 'co',
        phases: [{ rate: 40, durationMs: 1000 }],
        maxRequests: 40,
        connections: 4,
        maxInFlight: 1000,
        timeoutMs: 20_000,
        duplicateFraction: 0,
        retry: { max: 0, baseDelayMs: 1, maxDelayMs: 1 },
        workload: DEFAULT_WORKLOAD,
      },
      { generators: 1, seed: 1, onTick: () => {} },
    );
    const r = await run.result;
    const phase = defined(r.phases[0], 'the one phase');
    const h = phase.histogram;
    assert.equal(phase.accepted, 40);
    assert.equal(r.acceptedKeys.length, 40);
    assert.ok(
      h.getValueAtPercentile(99) / 1000 > 1500,
      `p99 ${h.getValueAtPercentile(99) / 1000} ms should include the queueing`,
    );
    assert.ok(h.minNonZeroValue / 1000 >= 90, 'the first answer still takes the service time');
  });

  test('the ledger: every arrival answered 202 or 503, dropped or timed out, and it balances', async () => {
    // Every other request is answered 503, each after 150 ms; 8 may be in flight, so most of the
    // 60 arrivals in 1 s are dropped; a 100 ms timeout on a second server times out the rest.
    let n = 0;
    const mixed = createServer((req, res) => {
      req.resume();
      const status = n++ % 2 === 0 ? 202 : 503;
      setTimeout(() => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end('{}');
      }, 150);
    });
    await new Promise<void>((r) => mixed.listen(0, '127.0.0.1', r));
    try {
      const plan = {
        url: `http://127.0.0.1:${(mixed.address() as AddressInfo).port}`,
        path: '/v1/orders',
        apiKey: 'k',
        runKey: 'ledger',
        phases: [{ rate: 60, durationMs: 1000 }],
        maxRequests: 60,
        connections: 8,
        maxInFlight: 8,
        timeoutMs: 5000,
        duplicateFraction: 0,
        retry: { max: 0, baseDelayMs: 1, maxDelayMs: 1 },
        workload: DEFAULT_WORKLOAD,
      };
      const r = await startLoad(plan, { generators: 1, seed: 1, onTick: () => {} }).result;
      const l = ledgerOf(r);
      assert.equal(l.offered, 60);
      assert.ok(l.dropped > 0, 'the in-flight limit dropped arrivals');
      assert.ok((l.byStatus['202'] ?? 0) > 0 && (l.byStatus['503'] ?? 0) > 0, JSON.stringify(l.byStatus));
      assert.equal(l.answered, (l.byStatus['202'] ?? 0) + (l.byStatus['503'] ?? 0));
      assert.equal(l.discrepancy, 0);
      assert.equal(l.latencyByStatus['503']?.count, l.byStatus['503']);
      assert.ok((l.latencyByStatus['202']?.p50Ms ?? 0) >= 140, 'latency to the final answer');
      const timedOut = ledgerOf(
        await startLoad({ ...plan, timeoutMs: 50 }, { generators: 1, seed: 1, onTick: () => {} }).result,
      );
      assert.ok(timedOut.timedOut > 0 && timedOut.answered === 0, JSON.stringify(timedOut));
      assert.equal(timedOut.discrepancy, 0);

      const s = { label: 'X', ledger: l } as SystemSummary;
      const [head, latency] = ledgerFindings(s, 8);
      assert.match(
        defined(head, 'ledger line'),
        /^Ledger \(X\): offered 60 = answered \d+ \(202: \d+, 503: \d+\) \+ dropped by the generator \d+ .*checked: it balances/,
      );
      assert.match(defined(latency, 'latency line'), /202 p50 [\d.]+ \/ p99 [\d.]+ ms .*503 p50/);
      const off = { label: 'X', ledger: { ...l, discrepancy: 3 } } as SystemSummary;
      assert.match(
        defined(ledgerFindings(off, 8)[0], 'ledger line'),
        /^LEDGER DOES NOT BALANCE \(X\).*3 submissions unaccounted for/,
      );
      assert.equal(ledgerCheck(off).ok, false);
    } finally {
      mixed.close();
    }
  });

  test('waiting for a connection does not time a submission out, so a burst is answered', async () => {
    // 20 arrivals at once on 2 connections to a 10/s server, 500 ms per attempt: the last waits
    // ~2 s for a connection. Queued inside the HTTP client, each would time out and take a
    // connection down with it when its turn came; queued in the generator, each is answered.
    const run = startLoad(
      {
        url,
        path: '/v1/orders',
        apiKey: 'k',
        runKey: 'burst',
        phases: [{ rate: 200, durationMs: 100 }],
        maxRequests: 20,
        connections: 2,
        maxInFlight: 1000,
        timeoutMs: 500,
        duplicateFraction: 0,
        retry: { max: 0, baseDelayMs: 1, maxDelayMs: 1 },
        workload: DEFAULT_WORKLOAD,
      },
      { generators: 1, seed: 1, onTick: () => {} },
    );
    const r = await run.result;
    const phase = defined(r.phases[0], 'the one phase');
    assert.deepEqual(r.attemptCounts, { '202': 20 });
    assert.equal(phase.accepted, 20);
    assert.equal(phase.answers['2xx']?.totalCount, 20);
    assert.ok(phase.histogram.getValueAtPercentile(99) / 1000 > 1500, 'the wait for a connection is in the latency');
    assert.equal(r.distinctKeys, 20);
    assert.equal(
      r.finalAnswersBySecond.reduce((a, n) => a + n, 0),
      20,
    );
  });

  test('a warm-up phase: its own orders, its keys left out of the counted figures', async () => {
    // 20 ordinary orders, then 40 on a hot SKU with half of them duplicates: every body matches
    // its key's phase, duplicates resend keys of their own phase, and only the second counts.
    const bodies: Array<{ key: string; body: string }> = [];
    const fast = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => {
        body += c.toString();
      });
      req.on('end', () => {
        bodies.push({ key: String(req.headers['idempotency-key']), body });
        res.writeHead(202, { 'content-type': 'application/json' });
        res.end('{}');
      });
    });
    await new Promise<void>((r) => fast.listen(0, '127.0.0.1', r));
    try {
      const r = await startLoad(
        {
          url: `http://127.0.0.1:${(fast.address() as AddressInfo).port}`,
          path: '/v1/orders',
          apiKey: 'k',
          runKey: 'warm',
          phases: [
            { rate: 40, durationMs: 500, workload: DEFAULT_WORKLOAD },
            { rate: 80, durationMs: 500 },
          ],
          maxRequests: 60,
          connections: 4,
          maxInFlight: 1000,
          timeoutMs: 5000,
          duplicateFraction: 0.5,
          retry: { max: 0, baseDelayMs: 1, maxDelayMs: 1 },
          workload: { ...DEFAULT_WORKLOAD, hotSkus: ['hot'], hotFraction: 1 },
          countFromPhase: 1,
        },
        { generators: 1, seed: 3, onTick: () => {} },
      ).result;
      const [warm, sale] = [defined(r.phases[0], 'warm-up'), defined(r.phases[1], 'sale')];
      assert.equal(warm.offered + sale.offered, 60);
      assert.equal(bodies.length, 60);
      for (const b of bodies) assert.equal(b.body.includes('"sku":"hot"'), phaseOfKey(b.key) === 1, b.key);
      const saleKeys = new Set(bodies.filter((b) => phaseOfKey(b.key) === 1).map((b) => b.key));
      assert.ok(sale.duplicatesSent > 0, 'the sale resent some of its keys');
      assert.equal(r.distinctKeys, saleKeys.size);
      assert.equal(
        r.acceptedBySecond.reduce((a, n) => a + n, 0),
        sale.accepted,
      );
      assert.equal(
        r.finalAnswersBySecond.reduce((a, n) => a + n, 0),
        saleKeys.size,
      );
    } finally {
      fast.close();
    }
  });
});

describe('bench: measure and report against the sync-INSERT baseline', () => {
  let t: TestEnv;
  const out = mkdtempSync(join(tmpdir(), 'surge-bench-unit-'));
  before(async () => {
    t = await createTestEnv();
  });
  after(async () => {
    await t.cleanup();
    rmSync(out, { recursive: true, force: true });
  });

  test('duplicates collapse to one row each; the ledger and report files add up', async () => {
    const target = await startSyncBaseline({ env: t.env, concurrency: 2, log: () => {} });
    try {
      const run = await measure(target, 'unit-run', {
        label: 'unit',
        phases: [{ rate: 40, durationMs: 1500 }],
        maxRequests: 60,
        connections: 4,
        maxInFlight: 100,
        timeoutMs: 5000,
        duplicateFraction: 0.3,
        retry: { max: 1, baseDelayMs: 10, maxDelayMs: 100 },
        workload: DEFAULT_WORKLOAD,
        generators: 1,
        seed: 3,
        drainTimeoutMs: 10_000,
        sampleMemory: true,
        progress: () => {},
      });
      const s = summarize(target.system, 'sync', target.settings, run);
      assert.ok((s.phases[0]?.duplicatesSent ?? 0) > 0, 'some duplicates were sent');
      assert.equal(s.outcome.accepted, s.phases[0]?.accepted);
      assert.equal(s.outcome.applied, s.outcome.accepted, 'one row per distinct accepted key');
      assert.equal(s.outcome.missing, 0);
      assert.equal(s.commit.count, s.outcome.applied);
      assert.equal(s.ledger.offered, 60);
      assert.equal(s.ledger.discrepancy, 0, JSON.stringify(s.ledger));
      await writeReport(
        {
          scenario: 'unit',
          title: 'unit',
          startedAt: '',
          finishedAt: '',
          command: 'test',
          machine: describeMachine(),
          options: {},
          findings: ['f'],
          tables: [systemsTable([s])],
          checks: [],
          notes: [],
          systems: [s],
          extra: {},
        },
        out,
        standardCharts([s]),
      );
      for (const f of ['report.md', 'results.json', 'throughput.svg', 'latency-vs-rate.svg', 'latency-cdf.svg'])
        assert.ok(existsSync(join(out, f)), f);
      const json = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as {
        machine: { cpus: number; node: string };
        systems: Array<{ outcome: { applied: number } }>;
      };
      assert.equal(json.machine.node, process.version);
      assert.equal(json.systems[0]?.outcome.applied, s.outcome.applied);
      assert.match(readFileSync(join(out, 'report.md'), 'utf8'), /!\[.*\]\(latency-cdf\.svg\)/);
    } finally {
      await target.stop();
    }
  });
});

describe('bench:ingest command line', () => {
  test('--help prints the usage, naming every option the parser accepts, and starts nothing', async () => {
    const { execFile } = await import('node:child_process');
    const script = join(import.meta.dirname, '..', 'bench', 'ingest.js');
    const out = await new Promise<string>((resolve, reject) =>
      execFile(process.execPath, [script, '--help'], { timeout: 10_000 }, (err, stdout) =>
        err ? reject(err) : resolve(stdout),
      ),
    );
    assert.match(out, /^Usage: npm run bench:ingest/);
    const source = readFileSync(script, 'utf8');
    const options = [...source.matchAll(/^\s+'?([a-z-]+)'?: \{ type: '(?:string|boolean)'/gm)]
      .map((m) => defined(m[1], 'option name'))
      .filter((o) => o !== 'serve');
    assert.ok(options.length >= 8, `options found: ${options.join(', ')}`);
    for (const option of options) assert.ok(out.includes(`--${option}`), `--help names --${option}`);
  });
});

describe('bench:ingest-ab (paired A/B of two builds)', () => {
  const script = join(import.meta.dirname, '..', 'bench', 'ingest-ab.js');
  const run = async (args: string[]) => {
    const { execFile } = await import('node:child_process');
    return new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
      execFile(process.execPath, [script, ...args], { timeout: 90_000 }, (err, stdout, stderr) =>
        resolve({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
      ),
    );
  };

  test('--help names every option the parser accepts; without --b it says what is missing', async () => {
    const help = await run(['--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^Usage: npm run bench:ingest-ab/);
    const source = readFileSync(script, 'utf8');
    const options = [...source.matchAll(/^\s+'?([a-z-]+)'?: \{ type: '(?:string|boolean)'/gm)].map((m) =>
      defined(m[1], 'option name'),
    );
    assert.ok(options.length >= 7, `options found: ${options.join(', ')}`);
    for (const option of options) assert.ok(help.stdout.includes(`--${option}`), `--help names --${option}`);
    const missing = await run([]);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /--b: the dist directory of build B is required/);
  });

  test('an A/A run of this build measures both servers and prints the ratios', async () => {
    const dist = join(import.meta.dirname, '..');
    const r = await run([
      '--b',
      dist,
      '--rounds',
      '1',
      '--duration',
      '2',
      '--warmup',
      '1',
      '--rate',
      '200',
      '--connections',
      '4',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const round = /round 1: A (\d+) requests.* \| B (\d+) requests.*B\/A main thread ([\d.]+), process ([\d.]+)/.exec(
      r.stdout,
    );
    assert.ok(round, r.stdout);
    assert.ok(Number(round[1]) > 0 && Number(round[2]) > 0);
    for (const ratio of [Number(round[3]), Number(round[4])]) assert.ok(ratio > 0.2 && ratio < 5, `ratio ${ratio}`);
    assert.match(r.stdout, /median B\/A of CPU per request: main thread [\d.]+, whole process [\d.]+/);
  });
});

describe('bench:ingest request source (--requests template)', () => {
  test('writes the bytes autocannon’s own request builder writes for the same request', async () => {
    const { createRequire } = await import('node:module');
    const require = createRequire(import.meta.url);
    type Builder = (defaults: Record<string, unknown>) => (req: Record<string, unknown>, context: object) => Buffer;
    const requestBuilder = require('autocannon/lib/httpRequestBuilder.js') as Builder;
    const headers = { 'content-type': 'application/json', authorization: 'Bearer sk_test' };
    const body = '{"customer_id":"c-é","currency":"EUR"}';
    const build = requestBuilder({ method: 'POST', path: '/v1/orders', hostname: '127.0.0.1', port: 8123, headers });
    const ours = httpRequestBytes('http://127.0.0.1:8123/v1/orders', 'POST', headers);
    const theirsWithKey = build({ body, headers: { ...headers, 'idempotency-key': 'k-1' } }, {});
    assert.equal(ours(body, ['idempotency-key', 'k-1']).toString('latin1'), theirsWithKey.toString('latin1'));
    assert.equal(ours(`[${body}]`).toString('latin1'), build({ body: `[${body}]` }, {}).toString('latin1'));
  });

  test('drives autocannon: every request arrives whole, each with its own key', async () => {
    const seen: { key: string; body: string }[] = [];
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        seen.push({ key: String(req.headers['idempotency-key']), body: Buffer.concat(chunks).toString('utf8') });
        res.writeHead(202).end('ok');
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/orders`;
      const bytes = httpRequestBytes(url, 'POST', { 'content-type': 'application/json' });
      let n = 0;
      const body = '{"order":"é"}';
      const result = await autocannon({
        url,
        method: 'POST',
        connections: 4,
        amount: 200,
        setupClient: (client) => takeRequestsFrom(client, () => bytes(body, ['idempotency-key', `k-${n++}`])),
      });
      assert.equal(result['2xx'], 200);
      assert.equal(result.errors, 0);
      assert.equal(seen.length, 200);
      assert.equal(new Set(seen.map((s) => s.key)).size, 200, 'no key sent twice');
      assert.ok(seen.every((s) => s.body === body));
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe("bench: the generator's key set", () => {
  test('a KeySet holds what a Set holds, for run keys and any other strings', () => {
    const runKey = fc.tuple(fc.nat({ max: 3 }), fc.nat({ max: 5000 })).map(([p, n]) => orderKey('run', p, 0, n));
    fc.assert(
      fc.property(fc.array(fc.oneof(runKey, fc.string({ maxLength: 3 })), { maxLength: 400 }), (keys) => {
        const expected = new Set<string>();
        const got = new KeySet();
        for (const key of keys) {
          assert.equal(got.has(key), expected.has(key));
          expected.add(key);
          got.add(key);
        }
        assert.equal(got.size, expected.size);
        assert.deepEqual(got.values().sort(), [...expected].sort());
      }),
    );
  });
});
