// Test isolation against the machine's real Redis and PostgreSQL. Each test file gets its own
// database (created and migrated here, dropped afterwards) and its own Redis key prefix (its keys
// are deleted afterwards). Nothing else on the servers is touched.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import pg from 'pg';
import { type Config, loadConfig } from '../../common/config.js';
import { migrate } from '../../common/migrate.js';

export const ADMIN_DATABASE_URL = process.env.SURGE_TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const TEST_REDIS_URL = process.env.SURGE_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

export function uniqueName(kind: string): string {
  return `surge_t_${kind}_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
}

export interface TestDatabase {
  name: string;
  url: string;
  /** Drops the database (terminating its sessions). */
  drop(): Promise<void>;
}

/** A fresh database with Surge's migrations applied. */
export async function createTestDatabase(options: { migrate?: boolean } = {}): Promise<TestDatabase> {
  const name = uniqueName('db');
  const admin = new pg.Client({ connectionString: ADMIN_DATABASE_URL });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
  } finally {
    await admin.end();
  }
  const url = new URL(ADMIN_DATABASE_URL);
  url.pathname = `/${name}`;
  const dbUrl = url.toString();
  if (options.migrate !== false) await migrate(dbUrl);
  return {
    name,
    url: dbUrl,
    async drop() {
      const c = new pg.Client({ connectionString: ADMIN_DATABASE_URL });
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}

export function uniquePrefix(): string {
  return `surge-t-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
}

/** Deletes every key under `prefix:` on the given Redis (SCAN + UNLINK; never FLUSH). */
export async function deleteRedisPrefix(redisUrl: string, prefix: string): Promise<number> {
  const r = new Redis(redisUrl, { maxRetriesPerRequest: 2 });
  let deleted = 0;
  try {
    let cursor = '0';
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) deleted += await r.unlink(...keys);
    } while (cursor !== '0');
  } finally {
    r.disconnect();
  }
  return deleted;
}

export interface TestEnv {
  db: TestDatabase;
  prefix: string;
  redisUrl: string;
  /** A config pointing at this test's database and prefix, with free ports. */
  config: Config;
  /** The environment variables equivalent to `config`, for child processes. */
  env: Record<string, string>;
  cleanup(): Promise<void>;
}

/** A database + Redis prefix for one test file. Call cleanup() in `after`. */
export async function createTestEnv(overrides: Record<string, string> = {}, redisUrl: string = TEST_REDIS_URL): Promise<TestEnv> {
  const db = await createTestDatabase();
  const prefix = uniquePrefix();
  const env: Record<string, string> = {
    DATABASE_URL: db.url,
    REDIS_URL: redisUrl,
    SURGE_REDIS_PREFIX: prefix,
    SURGE_INGEST_PORT: '0',
    SURGE_WORKER_METRICS_PORT: '0',
    SURGE_LAG_EXPORTER_PORT: '0',
    SURGE_MAINTENANCE_METRICS_PORT: '0',
    SURGE_LOG_LEVEL: process.env.SURGE_TEST_LOG_LEVEL ?? 'silent',
    ...overrides,
  };
  return {
    db,
    prefix,
    redisUrl,
    config: loadConfig(env),
    env,
    async cleanup() {
      await deleteRedisPrefix(redisUrl, prefix);
      await db.drop();
    },
  };
}

/** Polls `probe` until it returns a truthy value; fails with `what` after timeoutMs. */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  options: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 20_000;
  const intervalMs = options.intervalMs ?? 25;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? ` (last error: ${(lastError as Error).message})` : ''}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

export async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => resolve(typeof addr === 'object' && addr ? addr.port : 0));
    });
  });
}

export interface RedisServer {
  port: number;
  url: string;
  pid: number;
  dir: string;
  /** SIGKILL the server (data on disk stays, for restart()). */
  kill(): Promise<void>;
  /** Start it again on the same port and dir (after kill or stop). */
  restart(): Promise<void>;
  /** Stop and remove its dir. */
  stop(): Promise<void>;
}

/** Starts a private redis-server on a free loopback port (for fault tests). */
export async function startRedisServer(options: { appendonly?: boolean; appendfsync?: 'always' | 'everysec'; extraArgs?: string[] } = {}): Promise<RedisServer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'surge-redis-'));
  const args = [
    '--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '',
    '--appendonly', options.appendonly ? 'yes' : 'no',
    '--appendfsync', options.appendfsync ?? 'everysec',
    '--maxmemory-policy', 'noeviction',
    ...(options.extraArgs ?? []),
  ];
  let child: ChildProcess | undefined;
  const launch = async () => {
    child = spawn('redis-server', args, { stdio: 'ignore' });
    const probe = new Redis(port, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    try {
      await waitFor(`redis-server on port ${port}`, async () => {
        if (probe.status !== 'ready') {
          probe.disconnect();
          await probe.connect();
        }
        const loading = (await probe.info('persistence')).includes('loading:1');
        return !loading;
      }, { timeoutMs: 10_000, intervalMs: 20 });
    } finally {
      probe.disconnect();
    }
  };
  const exited = () =>
    new Promise<void>((resolve) => {
      if (!child || child.exitCode !== null || child.signalCode !== null) resolve();
      else child.once('exit', () => resolve());
    });
  await launch();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    get pid() {
      return child?.pid ?? -1;
    },
    dir,
    async kill() {
      child?.kill('SIGKILL');
      await exited();
    },
    async restart() {
      await launch();
    },
    async stop() {
      child?.kill('SIGKILL');
      await exited();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
