// `surge up` (npm start) as a newcomer runs it: the banner's curl line gets a 202, the order
// reaches PostgreSQL, Ctrl-C stops everything. And the embedded-PostgreSQL / own-Redis path.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { PACKAGE_ROOT } from '../common/paths.js';
import { createTestEnv, type TestEnv } from '../devkit/scratch.js';
import { waitFor } from '../devkit/wait.js';
import { defined } from './support/defined.js';

const CLI = join(PACKAGE_ROOT, 'dist', 'cli', 'surge.js');

interface UpProcess {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

/** `surge up` in a process group of its own, as a shell runs a foreground job. */
function startUp(args: string[], env: Record<string, string>): UpProcess {
  const child = spawn(process.execPath, [CLI, 'up', ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, output: () => out, exited };
}

/** Waits for the "Surge is up." banner; fails with the output when surge up exits first or never prints it. */
async function banner(up: UpProcess, timeoutMs: number): Promise<void> {
  await waitFor(
    'the banner (or surge up exiting)',
    () => up.child.exitCode !== null || up.output().includes('Surge is up.'),
    {
      timeoutMs,
    },
  ).catch((e: Error) => {
    throw new Error(`${e.message}; output:\n${up.output()}`);
  });
  assert.ok(
    up.output().includes('Surge is up.'),
    `surge up exited (${up.child.exitCode}) before the banner:\n${up.output()}`,
  );
}

/** Ctrl-C in a terminal: SIGINT to every process of the foreground job's group. */
function ctrlC(up: UpProcess): void {
  if (up.child.pid !== undefined) process.kill(-up.child.pid, 'SIGINT');
}

/** The process's children (Linux). */
function childrenOf(pid: number): number[] {
  return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('surge up', () => {
  let t: TestEnv;
  const dataDir = mkdtempSync(join(tmpdir(), 'surge-up-'));
  before(async () => {
    t = await createTestEnv();
  });
  after(async () => {
    await t.cleanup();
    rmSync(dataDir, { recursive: true, force: true });
  });

  test('the printed curl line gets a 202 and the order is applied; Ctrl-C stops every child', async () => {
    const up = startUp(['--data-dir', dataDir], { ...t.env, SURGE_LOG_LEVEL: 'warn' });
    try {
      await banner(up, 60_000);
      const out = up.output();
      const url = /POST orders to\s+(\S+)/.exec(out)?.[1];
      const key = /Authorization: Bearer (\S+)'/.exec(out)?.[1];
      const body = /-d '(\{.*\})'/.exec(out)?.[1];
      assert.ok(url && key && body, `banner has url, key and body:\n${out}`);
      // Ingest's /metrics is on its own port, not where orders are POSTed.
      const ingestMetrics = /metrics\s+ingest (http:\/\/\S+\/metrics)/.exec(out)?.[1];
      assert.ok(ingestMetrics, `banner has ingest's metrics URL:\n${out}`);
      assert.notEqual(new URL(ingestMetrics).port, new URL(url).port);
      const scraped = await fetch(ingestMetrics);
      assert.equal(scraped.status, 200);
      assert.match(await scraped.text(), /surge_ingest_requests_total/);
      const res = await fetch(url, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'idempotency-key': 'up-test-1', 'content-type': 'application/json' },
        body,
      });
      assert.equal(res.status, 202, await res.text());
      const db = new pg.Client({ connectionString: t.db.url });
      await db.connect();
      try {
        await waitFor('the order in PostgreSQL', async () => {
          const r = await db.query("SELECT status FROM orders WHERE idempotency_key = 'up-test-1'");
          return r.rows[0]?.status === 'applied';
        });
      } finally {
        await db.end();
      }
      ctrlC(up);
      assert.equal(await up.exited, 0, up.output());
      assert.match(up.output(), /stopped\.\n?$/);
      // Each child got one signal, from surge up, and stopped gracefully.
      assert.doesNotMatch(up.output(), /second signal|graceful stop timed out/);
    } finally {
      if (up.child.exitCode === null) up.child.kill('SIGKILL');
    }
  });

  test('killed outright, surge up leaves no child running: each stops by itself', async () => {
    const up = startUp(['--data-dir', dataDir], { ...t.env, SURGE_LOG_LEVEL: 'warn' });
    let children: number[] = [];
    try {
      await banner(up, 60_000);
      children = childrenOf(defined(up.child.pid, 'surge up’s pid'));
      assert.ok(children.length >= 4, `surge up runs its roles: ${children.join(', ')}`);
      up.child.kill('SIGKILL');
      await up.exited;
      await waitFor('every child of the killed surge up gone', () => children.every((pid) => !alive(pid)), {
        timeoutMs: 30_000,
      });
    } finally {
      if (up.child.exitCode === null) up.child.kill('SIGKILL');
      for (const pid of children) if (alive(pid)) process.kill(pid, 'SIGKILL');
    }
  });

  test('with no PostgreSQL/Redis given it starts an embedded PostgreSQL and its own redis-server, and stops them', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'surge-up-embedded-'));
    const env: Record<string, string> = { ...t.env, SURGE_LOG_LEVEL: 'warn' };
    delete env.DATABASE_URL;
    delete env.REDIS_URL;
    const up = startUp(['--data-dir', dir, '--embedded-postgres', '--start-redis', '--roles', 'lag-exporter'], env);
    try {
      await banner(up, 90_000);
      const pgPort = /started embedded PostgreSQL on 127\.0\.0\.1:(\d+)/.exec(up.output())?.[1];
      assert.ok(pgPort, up.output());
      assert.match(up.output(), /started redis-server on redis:\/\/127\.0\.0\.1:\d+/);
      assert.ok(existsSync(join(dir, 'postgres', 'PG_VERSION')));
      const pidFile = join(dir, 'postgres', 'postmaster.pid');
      const pgPid = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
      assert.ok(alive(pgPid));
      const c = new pg.Client({ connectionString: `postgres://postgres:surge-dev@127.0.0.1:${pgPort}/surge` });
      await c.connect();
      const tables = (
        await c.query("SELECT count(*)::int AS n FROM pg_tables WHERE tablename IN ('orders','inventory')")
      ).rows[0] as { n: number };
      await c.end();
      assert.equal(tables.n, 2, 'migrations ran on the embedded database');
      up.child.kill('SIGINT');
      assert.equal(await up.exited, 0, up.output());
      await waitFor('embedded PostgreSQL to stop', () => !alive(pgPid));
    } finally {
      if (up.child.exitCode === null) up.child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
