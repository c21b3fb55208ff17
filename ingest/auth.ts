// API-key authentication with a short cache: `findClientByKey` (hashed, constant-time) is asked
// at most once per key per `ttlMs`; concurrent lookups of one key share one query. Unknown keys
// are cached too (for the same time) so a flood of bad keys costs no more than good ones.
import type { ApiClient } from '../common/clients.js';
import { findClientByKey } from '../common/clients.js';
import type { Pool } from '../common/db.js';

export interface AuthenticatorOptions {
  /** How long a lookup result is reused (SURGE_AUTH_CACHE_MS). 0 = always ask PostgreSQL. */
  ttlMs: number;
  /** Most cached keys; the oldest entry is dropped beyond it. Default 10,000. */
  maxEntries?: number;
}

interface CacheEntry {
  expires: number;
  result: Promise<ApiClient | undefined>;
  /** Set once `result` resolved: lets the hot path answer without a promise. */
  settled?: { client: ApiClient | undefined };
}

/** Parses `Authorization: Bearer <key>`; undefined when absent or another scheme. */
export function bearerToken(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^Bearer[ \t]+([\x21-\x7e]{1,512})[ \t]*$/i.exec(header);
  return m ? m[1] : undefined;
}

export class Authenticator {
  private readonly cache = new Map<string, CacheEntry>();
  private readonly maxEntries: number;

  constructor(
    private readonly pool: Pool,
    private readonly options: AuthenticatorOptions,
  ) {
    this.maxEntries = options.maxEntries ?? 10_000;
  }

  /**
   * The cached answer for this key, when there is a fresh one that has already arrived:
   * `{ client }` (client undefined = unknown or disabled key). Undefined: ask `lookup`.
   */
  cached(apiKey: string): { client: ApiClient | undefined } | undefined {
    const hit = this.cache.get(apiKey);
    return hit && hit.expires > Date.now() ? hit.settled : undefined;
  }

  /** The active client owning this key, or undefined. Rejects when PostgreSQL cannot be asked. */
  lookup(apiKey: string): Promise<ApiClient | undefined> {
    const now = Date.now();
    const hit = this.cache.get(apiKey);
    if (hit && hit.expires > now) return hit.result;
    const result = findClientByKey(this.pool, apiKey);
    if (this.options.ttlMs > 0) {
      const entry: CacheEntry = { expires: now + this.options.ttlMs, result };
      this.cache.delete(apiKey);
      this.cache.set(apiKey, entry);
      if (this.cache.size > this.maxEntries) {
        const oldest = this.cache.keys().next().value;
        if (oldest !== undefined) this.cache.delete(oldest);
      }
      result.then(
        (client) => {
          entry.settled = { client };
        },
        // A failed lookup (database down) is not cached.
        () => {
          if (this.cache.get(apiKey) === entry) this.cache.delete(apiKey);
        },
      );
    }
    return result;
  }
}
