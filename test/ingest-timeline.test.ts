// The opt-in event-loop timeline of ingest (ingest/timeline.ts, SURGE_INGEST_TIMELINE_FILE): a
// loop held busy shows as a stall with its start and the requests read meanwhile, GC pauses and
// samples are recorded, and ingest writes the file when it stops.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createLogger } from '../common/log.js';
import { startIngest } from '../ingest/server.js';
import { LoopTimeline, type TimelineRecord } from '../ingest/timeline.js';
import { createTestEnv, type TestEnv } from '../devkit/scratch.js';
import { waitFor } from '../devkit/wait.js';
import { defined } from './support/defined.js';
import { http } from './support/http.js';

/** Keeps the event loop busy for `ms` (the stall under test). */
function busy(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // spin
  }
}

describe('ingest event-loop timeline', () => {
  test('a busy loop is a stall with its start; GC pauses and samples are recorded', async () => {
    const timeline = new LoopTimeline();
    timeline.start();
    try {
      // Let the probe run once, so the stall is measured from a known last run.
      await waitFor('a first sample', () => timeline.record().samples.length > 0);
      const before = Date.now();
      timeline.request();
      timeline.request();
      busy(60);
      const stall = await waitFor('the stall', () => timeline.record().stalls.find((s) => s.lateMs >= 40));
      assert.ok(stall.atMs <= before + 5 && stall.atMs >= before - 150, `stall at ${stall.atMs}, busy from ${before}`);
      assert.ok(stall.requests >= 2, 'the requests read during the stall are counted');
      // Young-generation garbage until a collection shows up.
      const gc = await waitFor('a GC pause', () => {
        let junk: unknown[] = [];
        for (let i = 0; i < 200_000; i++) junk.push({ i });
        junk = [];
        return timeline.record().gcs[0];
      });
      assert.ok(['minor', 'major', 'incremental', 'weakcb'].includes(gc.kind), gc.kind);
      assert.ok(gc.durationMs >= 0);
      const sample = timeline.record().samples.at(-1);
      assert.ok(sample && sample.heapUsedMiB > 0 && sample.rssMiB > 0 && sample.elu >= 0 && sample.elu <= 1);
    } finally {
      timeline.stop();
    }
  });

  describe('through ingest', () => {
    let env: TestEnv;
    let dir: string;

    before(async () => {
      env = await createTestEnv();
      dir = mkdtempSync(join(tmpdir(), 'surge-timeline-'));
    });
    after(async () => {
      await env?.cleanup();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    test('SURGE_INGEST_TIMELINE_FILE: written when ingest stops, with the requests it read', async () => {
      const file = join(dir, 'timeline.json');
      const ingest = await startIngest(
        { ...env.config, ingestTimelineFile: file },
        { logger: createLogger('silent', 'timeline-test') },
      );
      try {
        for (let i = 0; i < 3; i++) assert.equal((await http(ingest.url, { path: '/healthz' })).status, 200);
        // A load generator's request carries its send time on the host's monotonic clock.
        const sent = Number(process.hrtime.bigint()) / 1e6;
        const stamped = await http(ingest.url, { path: '/nowhere', headers: { 'x-bench-sent': sent.toFixed(3) } });
        assert.equal(stamped.status, 404);
      } finally {
        await ingest.stop();
      }
      const rec = JSON.parse(readFileSync(file, 'utf8')) as TimelineRecord;
      assert.equal(rec.pid, process.pid);
      assert.ok(Array.isArray(rec.stalls) && Array.isArray(rec.gcs));
      const counted = rec.samples.reduce((a, s) => a + s.requests, 0);
      assert.equal(counted, 4, 'every request read is in a sample (the last one taken at stop)');
      // Each request traced: sent (-1 without the header), read, its turn, answered, status.
      assert.equal(rec.requestTraces.length, 4);
      const [sentMs, readMs, turn, doneMs, status] = defined(rec.requestTraces[3], 'the stamped request');
      assert.equal(status, 404);
      assert.ok(sentMs > 0 && readMs >= sentMs && doneMs >= readMs, `sent ${sentMs}, read ${readMs}, done ${doneMs}`);
      const [start, end, requests] = defined(rec.turns[turn], 'its turn');
      assert.ok(start <= readMs && end >= readMs && requests >= 1);
      assert.equal(defined(rec.requestTraces[0], 'the first request')[0], -1);
    });
  });
});
