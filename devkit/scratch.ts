// Scratch space on the machine's real Redis and PostgreSQL for tests and benchmarks: a database
// of its own (created and migrated here, dropped afterwards) and a Redis key prefix of its own
// (its keys deleted afterwards). Nothing else on the servers is touched.
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import pg from 'pg';
import { type Config, loadConfig } from '../common/config.js';
import { migrate } from '../common/migrate.js';

const ADMIN_DATABASE_URL = process.env.SURGE_TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
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
  /** A config pointing at this database and prefix, with free ports. */
  config: Config;
  /** The environment variables equivalent to `config`, for child processes. */
  env: Record<string, string>;
  cleanup(): Promise<void>;
}

/** A database + Redis prefix for one test file or benchmark run. Call cleanup() when done. */
export async function createTestEnv(
  overrides: Record<string, string> = {},
  redisUrl: string = TEST_REDIS_URL,
): Promise<TestEnv> {
  const db = await createTestDatabase();
  const prefix = uniquePrefix();
  const env: Record<string, string> = {
    DATABASE_URL: db.url,
    REDIS_URL: redisUrl,
    SURGE_REDIS_PREFIX: prefix,
    SURGE_INGEST_PORT: '0',
    SURGE_INGEST_METRICS_PORT: '0',
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
