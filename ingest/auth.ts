// API-key authentication with a short cache: `findClientByKey` (hashed, constant-time) is asked
// about once per key per half `ttlMs`; concurrent lookups of one key share one query. Unknown keys
// are cached too (for the same time) so a flood of bad keys costs no more than good ones. An entry
// in use is refreshed ahead of its expiry: past half its life, the first request that finds it
// starts one lookup in the background and every request meanwhile is answered from the entry, so
// no request waits for PostgreSQL while a key is in steady use. An answer is served at most
// `ttlMs` after its lookup began, so a disabled key stops working within `ttlMs`.
import type { ApiClient } from '../common/clients.js';
import { findClientByKey } from '../common/clients.js';
import type { Pool } from '../common/db.js';

export interface AuthenticatorOptions {
  /** How long a lookup result is reused (SURGE_AUTH_CACHE_MS). 0 = always ask PostgreSQL. */
  ttlMs: number;
  /** Most cached keys; the oldest entry is dropped beyond it. Default 10,000. */
  maxEntries?: number;
  /** The clock (ms), for tests. Default Date.now. */
  now?: () => number;
}

interface CacheEntry {
  /** When it stops being served: `ttlMs` after its lookup began. */
  expires: number;
  /** From when a request that finds it starts the refresh: half its life. */
  refreshAt: number;
  result: Promise<ApiClient | undefined>;
  /** Set once `result` resolved: lets the hot path answer without a promise. */
  settled?: { client: ApiClient | undefined };
  /** A refresh was started (once per entry: a failed one is not retried, the entry just expires). */
  refreshStarted?: boolean;
  /** The refresh's lookup while it runs; its answer replaces the entry. */
  refresh?: Promise<ApiClient | undefined> | undefined;
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
  private readonly now: () => number;

  constructor(
    private readonly pool: Pool,
    private readonly options: AuthenticatorOptions,
  ) {
    this.maxEntries = options.maxEntries ?? 10_000;
    this.now = options.now ?? Date.now;
  }

  /**
   * The cached answer for this key, when there is a fresh one that has already arrived:
   * `{ client }` (client undefined = unknown or disabled key). Undefined: ask `lookup`. Past half
   * the entry's life it also starts the entry's refresh (once), and answers from the entry.
   */
  cached(apiKey: string): { client: ApiClient | undefined } | undefined {
    const hit = this.cache.get(apiKey);
    if (hit === undefined) return undefined;
    const now = this.now();
    if (hit.expires <= now) return undefined;
    if (now >= hit.refreshAt && hit.settled && !hit.refreshStarted) this.refresh(apiKey, hit, now);
    return hit.settled;
  }

  /** The active client owning this key, or undefined. Rejects when PostgreSQL cannot be asked. */
  lookup(apiKey: string): Promise<ApiClient | undefined> {
    const now = this.now();
    const hit = this.cache.get(apiKey);
    if (hit && hit.expires > now) return hit.result;
    // Expired while its refresh runs: that lookup began within the TTL; share it.
    if (hit?.refresh) return hit.refresh;
    const result = findClientByKey(this.pool, apiKey);
    if (this.options.ttlMs > 0) {
      const entry = this.entry(now, result);
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

  private entry(now: number, result: Promise<ApiClient | undefined>): CacheEntry {
    const { ttlMs } = this.options;
    return { expires: now + ttlMs, refreshAt: now + ttlMs / 2, result };
  }

  /**
   * Looks the key up again in the background; the answer replaces `entry` (if it is still the
   * key's entry). A failure leaves `entry` to expire: the lookup after it asks again in the
   * foreground, and answers 503 if PostgreSQL is still down.
   */
  private refresh(apiKey: string, entry: CacheEntry, now: number): void {
    entry.refreshStarted = true;
    const result = findClientByKey(this.pool, apiKey);
    entry.refresh = result;
    result.then(
      (client) => {
        entry.refresh = undefined;
        if (this.cache.get(apiKey) !== entry) return;
        const next = this.entry(now, result);
        next.settled = { client };
        this.cache.delete(apiKey);
        this.cache.set(apiKey, next);
      },
      () => {
        entry.refresh = undefined;
      },
    );
  }
}
