// API clients: keys are random, shown once, stored as SHA-256 hashes; lookups compare in
// constant time.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type pg from 'pg';

export interface ApiClient {
  id: string;
  name: string;
}

export interface CreatedClient extends ApiClient {
  /** The secret key. Printed once; only its hash is stored. */
  apiKey: string;
}

function hashApiKey(apiKey: string): Buffer {
  return createHash('sha256').update(apiKey).digest();
}

type Queryable = Pick<pg.Pool, 'query'> | Pick<pg.Client, 'query'>;

export async function createClient(db: Queryable, name: string): Promise<CreatedClient> {
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(name)) {
    throw new Error(`client name "${name}" is not accepted; accepted: 1–64 characters of A–Z a–z 0–9 _ . -`);
  }
  const id = `c_${randomBytes(6).toString('hex')}`;
  const apiKey = `sk_${randomBytes(24).toString('base64url')}`;
  try {
    await db.query('INSERT INTO api_clients (id, name, key_hash, key_prefix) VALUES ($1, $2, $3, $4)', [
      id,
      name,
      hashApiKey(apiKey),
      apiKey.slice(0, 8),
    ]);
  } catch (e) {
    if ((e as { code?: string }).code === '23505') throw new Error(`a client named "${name}" already exists`);
    throw e;
  }
  return { id, name, apiKey };
}

/** The active client that owns this key, or undefined. */
export async function findClientByKey(db: Queryable, apiKey: string): Promise<ApiClient | undefined> {
  const hash = hashApiKey(apiKey);
  const res = await db.query<{ id: string; name: string; key_hash: Buffer }>(
    'SELECT id, name, key_hash FROM api_clients WHERE key_hash = $1 AND disabled_at IS NULL',
    [hash],
  );
  const row = res.rows[0];
  if (!row || !timingSafeEqual(row.key_hash, hash)) return undefined;
  return { id: row.id, name: row.name };
}

export async function listClients(
  db: Queryable,
): Promise<Array<ApiClient & { keyPrefix: string; createdAt: Date; disabled: boolean }>> {
  const res = await db.query<{
    id: string;
    name: string;
    key_prefix: string;
    created_at: Date;
    disabled_at: Date | null;
  }>('SELECT id, name, key_prefix, created_at, disabled_at FROM api_clients ORDER BY created_at');
  return res.rows.map((r) => ({
    id: r.id,
    name: r.name,
    keyPrefix: r.key_prefix,
    createdAt: r.created_at,
    disabled: r.disabled_at !== null,
  }));
}

export async function disableClient(db: Queryable, name: string): Promise<boolean> {
  const res = await db.query('UPDATE api_clients SET disabled_at = now() WHERE name = $1 AND disabled_at IS NULL', [
    name,
  ]);
  return (res.rowCount ?? 0) > 0;
}
