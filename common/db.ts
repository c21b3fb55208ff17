// PostgreSQL pools and database bootstrap.
import pg from 'pg';

export type Pool = pg.Pool;
export type PoolClient = pg.PoolClient;

export interface PoolOptions {
  max?: number;
  applicationName?: string;
  /**
   * Server-side bound (ms) on one statement and on a session idling inside a transaction
   * (`statement_timeout`, `idle_in_transaction_session_timeout`). Workers set it below the claim
   * timeout: a worker that freezes mid-batch (SIGSTOP, a long GC, a partitioned host) would
   * otherwise keep its row locks, and the worker that claims its entries would wait on them
   * forever. Default: none (PostgreSQL's defaults).
   */
  sessionTimeoutMs?: number;
}

export function createPool(databaseUrl: string, options: PoolOptions = {}): pg.Pool {
  const pool = new pg.Pool({
    connectionString: databaseUrl,
    max: options.max ?? 4,
    application_name: options.applicationName ?? 'surge',
    idleTimeoutMillis: 60_000,
    ...(options.sessionTimeoutMs !== undefined
      ? { statement_timeout: options.sessionTimeoutMs, idle_in_transaction_session_timeout: options.sessionTimeoutMs }
      : {}),
  });
  // An idle client that loses its connection emits 'error' on the pool; without a listener the
  // process would crash. The next query gets a fresh connection.
  pool.on('error', () => {});
  return pool;
}

// pg's own parser of timestamptz text (the one a plain `applied_at` column goes through).
const parseTimestamptz = pg.types.getTypeParser(pg.types.builtins.TIMESTAMPTZ) as (text: string) => Date;
// timestamptz text under DateStyle ISO at offset zero (a UTC session): `2026-12-07 15:53:29.123456+00`.
const ZERO_OFFSET_TEXT = /^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2})(\.\d{1,6})?\+00$/;

/**
 * A timestamptz selected as text (`::text`), as pg's Date would print it with toISOString: the
 * same string, without a Date per row when the offset is zero; any other text goes through pg's
 * parser.
 */
export function timestamptzIso(text: string): string {
  const m = ZERO_OFFSET_TEXT.exec(text);
  if (m === null) return parseTimestamptz(text).toISOString();
  // As pg's parser and Date.UTC: the fraction in milliseconds, truncated.
  const ms = m[3] === undefined ? 0 : Math.trunc(1000 * Number.parseFloat(m[3]));
  return `${m[1]}T${m[2]}.${ms < 10 ? '00' : ms < 100 ? '0' : ''}${ms}Z`;
}

/** Creates the database named in the URL if it does not exist (connects to `postgres`). */
export async function ensureDatabase(databaseUrl: string): Promise<boolean> {
  const url = new URL(databaseUrl);
  const name = decodeURIComponent(url.pathname.replace(/^\//, ''));
  if (!name) return false;
  const admin = new URL(databaseUrl);
  admin.pathname = '/postgres';
  const client = new pg.Client({ connectionString: admin.toString() });
  await client.connect();
  try {
    const found = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (found.rowCount) return false;
    try {
      await client.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
    } catch (e) {
      // Another process created it between our check and our CREATE.
      if ((e as { code?: string }).code !== '42P04') throw e;
      return false;
    }
    return true;
  } finally {
    await client.end();
  }
}
