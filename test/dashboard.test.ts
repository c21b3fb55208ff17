// `surge dashboard` against the real Redis: the page answers, the API lists both queues with
// their job counts, --read-only refuses actions, SIGTERM stops it with exit code 0.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { PACKAGE_ROOT } from '../common/paths.js';
import { createReplayQueue, enqueueReplays } from '../maintenance/dlq.js';
import { bullConnection, createMaintenanceQueue, MAINTENANCE_QUEUE, REPLAY_QUEUE } from '../maintenance/queues.js';
import { createTestEnv, type TestEnv } from '../devkit/scratch.js';
import { waitFor } from '../devkit/wait.js';

const CLI = join(PACKAGE_ROOT, 'dist', 'cli', 'surge.js');

interface BoardQueue {
  name: string;
  counts: Record<string, number>;
  readOnlyMode: boolean;
}

/** Starts `surge dashboard` on a free port; resolves with its URL from the log line. */
async function dashboard(
  t: TestEnv,
  args: string[],
): Promise<{ child: ChildProcess; url: string; exit: Promise<number | null> }> {
  const child = spawn(process.execPath, [CLI, 'dashboard', '--port', '0', ...args], {
    env: { ...process.env, ...t.env, SURGE_LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let out = '';
  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (d: string) => {
    out += d;
  });
  const url = await waitFor(
    'the dashboard log line',
    () => {
      if (child.exitCode !== null) throw new Error(`surge dashboard exited with ${child.exitCode}: ${out}`);
      const line = out.split('\n').find((l) => l.includes('"dashboard on '));
      return line ? (JSON.parse(line) as { url: string }).url : undefined;
    },
    { timeoutMs: 30_000 },
  );
  return { child, url, exit };
}

describe('surge dashboard', () => {
  let t: TestEnv;

  before(async () => {
    t = await createTestEnv();
    // Jobs and no worker: they wait, so the counts are exact.
    const connection = bullConnection(t.config, 'test-dashboard');
    const maintenance = createMaintenanceQueue(t.config, connection);
    const replay = createReplayQueue(t.config, connection);
    try {
      await maintenance.add('trim-streams', {});
      await enqueueReplays(replay, [101, 102, 103], { chunkSize: 1 });
    } finally {
      await maintenance.close();
      await replay.close();
      connection.disconnect();
    }
  });
  after(async () => {
    await t.cleanup();
  });

  test('serves Bull Board on loopback with both queues and their job counts; stops on SIGTERM', async () => {
    const d = await dashboard(t, []);
    try {
      assert.match(d.url, /^http:\/\/127\.0\.0\.1:\d+\/$/, 'loopback by default');
      const page = await fetch(d.url);
      assert.equal(page.status, 200);
      assert.match(page.headers.get('content-type') ?? '', /text\/html/);
      assert.match(await page.text(), /<div id="root">/);

      const api = await fetch(new URL('api/queues', d.url));
      assert.equal(api.status, 200);
      const queues = ((await api.json()) as { queues: BoardQueue[] }).queues;
      assert.deepEqual(queues.map((q) => q.name).sort(), [REPLAY_QUEUE, MAINTENANCE_QUEUE].sort());
      const byName = new Map(queues.map((q) => [q.name, q]));
      assert.equal(byName.get(MAINTENANCE_QUEUE)?.counts.waiting, 1);
      assert.equal(byName.get(REPLAY_QUEUE)?.counts.waiting, 3);
      assert.equal(byName.get(REPLAY_QUEUE)?.readOnlyMode, false);
    } finally {
      d.child.kill('SIGTERM');
    }
    assert.equal(await d.exit, 0, 'graceful stop');
  });

  test('--read-only: the queues say so and an action is refused', async () => {
    const d = await dashboard(t, ['--read-only']);
    try {
      const queues = ((await (await fetch(new URL('api/queues', d.url))).json()) as { queues: BoardQueue[] }).queues;
      assert.ok(queues.length === 2 && queues.every((q) => q.readOnlyMode), 'both queues read-only');
      const clean = await fetch(new URL(`api/queues/${REPLAY_QUEUE}/clean/waiting`, d.url), { method: 'PUT' });
      assert.equal(clean.status, 405, 'Bull Board: ERRORS.QUEUE_READ_ONLY');
      const counts = (
        (await (await fetch(new URL('api/queues', d.url))).json()) as { queues: BoardQueue[] }
      ).queues.find((q) => q.name === REPLAY_QUEUE)?.counts;
      assert.equal(counts?.waiting, 3, 'nothing was removed');
    } finally {
      d.child.kill('SIGTERM');
    }
    assert.equal(await d.exit, 0);
  });
});
