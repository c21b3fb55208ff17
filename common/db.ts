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
