// The reference client of the Surge HTTP API (`surge/client`): idempotent submission done right.
// One Idempotency-Key per order, kept across every retry; network errors, 409, 429 and 5xx are
// retried after Retry-After (never sooner) plus full jitter, within a deadline; any other 4xx is
// surfaced at once, since sending it again gives the same answer. Needs nothing but Node (fetch).
// The types follow the contract (docs/openapi.json); the order's is the schema's own.
import type { Order } from '../common/order.js';
import type { OrderState } from '../common/outcome.js';

export type { Order, OrderItem } from '../common/order.js';
export type { OrderState } from '../common/outcome.js';

/** A 202's body: the order is queued. */
export interface Accepted {
  order_ref: string;
  idempotency_key: string;
  status: 'queued';
}

/** An RFC 9457 problem as ingest answers it (types: https://surge.dev/problems). */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail?: string;
  errors?: Array<{ path: string; message: string }>;
  instance?: string;
}

/** A submission that ended without a 202: a 4xx at once, or the last retryable answer at the deadline. */
export class SurgeError extends Error {
  constructor(
    message: string,
    /** The HTTP status, or 0 when the last attempt got no answer (network error, timeout). */
    readonly status: number,
    readonly problem: Problem | undefined,
    readonly attempts: number,
  ) {
    super(message);
    this.name = 'SurgeError';
  }
}

export interface RetryPolicy {
  /** First backoff ceiling (ms); doubles per attempt up to maxDelayMs. */
  baseDelayMs: number;
  /** Largest backoff ceiling (ms). Retry-After is honoured even when longer. */
  maxDelayMs: number;
}

const DEFAULT_POLICY: RetryPolicy = { baseDelayMs: 100, maxDelayMs: 5000 };

/** True for answers worth the same request again: no answer (0), 409, 429 and 5xx. */
export function retryable(status: number): boolean {
  return status === 0 || status === 409 || status === 429 || status >= 500;
}

/**
 * The wait before retry `attempt` (0 for the first retry): never less than the server's
 * Retry-After, plus full jitter — a uniform draw from 0 to the exponential ceiling — so clients
 * refused together do not come back together.
 */
export function retryDelayMs(
  policy: RetryPolicy,
  attempt: number,
  retryAfterMs: number | undefined,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.min(attempt, 30));
  return (retryAfterMs ?? 0) + random() * ceiling;
}

/** Retry-After in ms (delta-seconds or an HTTP date), or undefined. */
function retryAfterMs(header: string | null): number | undefined {
  if (header === null) return undefined;
  const seconds = Number(header);
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000;
  const at = Date.parse(header);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

export interface ClientOptions {
  /**
   * The ingest base URL, e.g. http://127.0.0.1:8080; or a function asked before every attempt
   * (several ingest instances: a retry may go to another one).
   */
  baseUrl: string | (() => string);
  apiKey: string;
  /** How long a submission may take, retries included (ms). Default 30,000. */
  deadlineMs?: number;
  /** One attempt's timeout (ms). Default 10,000. */
  attemptTimeoutMs?: number;
  retry?: RetryPolicy;
  /** Hears every attempt (for logs and tests). */
  onAttempt?: (attempt: { key: string; status: number; retryInMs?: number }) => void;
  /** For tests: the jitter's random source. */
  random?: () => number;
}

export interface SubmitOptions {
  /** The order's Idempotency-Key: one per order, the same on every retry. */
  key: string;
  /** Overrides the client's deadlineMs for this call. */
  deadlineMs?: number;
  signal?: AbortSignal;
}

export interface Submitted {
  body: Accepted;
  /** True when the server had accepted this key before (a retry of an order already written). */
  replayed: boolean;
  attempts: number;
}

/** One order of submitMany. */
export interface BatchOrder {
  key: string;
  order: Order;
}

/** One order's result from submitMany: accepted, or its problem (final, or retryable at the deadline). */
export type BatchOutcome =
  | { key: string; ok: true; body: Accepted; replayed: boolean }
  | { key: string; ok: false; status: number; problem: Problem | undefined };

const FINAL = new Set(['applied', 'rejected', 'dead_lettered']);

/** Longest `?wait` the server takes (s): common/outcome.ts's, repeated since the client imports nothing at run time. */
const MAX_WAIT_SECONDS = 60;

/** Stops a sleep early when the signal aborts. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

interface Answer {
  status: number;
  headers: Headers | undefined;
  json: unknown;
}

export class SurgeClient {
  private readonly policy: RetryPolicy;

  constructor(private readonly options: ClientOptions) {
    this.policy = options.retry ?? DEFAULT_POLICY;
  }

  private base(): string {
    const { baseUrl } = this.options;
    return (typeof baseUrl === 'string' ? baseUrl : baseUrl()).replace(/\/+$/, '');
  }

  /**
   * Submits one order under `key`: resolves with the 202, retrying network errors, 409, 429 and
   * 5xx (same key, same body) until the deadline; rejects with a SurgeError on any other 4xx at
   * once, or with the last answer when the deadline leaves no room for the next retry.
   */
  async submit(order: Order, options: SubmitOptions): Promise<Submitted> {
    const body = JSON.stringify(order);
    const headers = {
      authorization: `Bearer ${this.options.apiKey}`,
      'content-type': 'application/json',
      'idempotency-key': options.key,
    };
    const { answer, attempts } = await this.withRetries(options, () =>
      this.request('POST', '/v1/orders', headers, body, options.signal),
    );
    if (answer.status === 202)
      return {
        body: answer.json as Accepted,
        replayed: answer.headers?.get('idempotent-replayed') === 'true',
        attempts,
      };
    throw failure(answer, attempts);
  }

  /**
   * Submits up to 1,000 orders over `:batch`: one result per order, in order. Orders answered
   * with a retryable status are sent again (in a batch of their own, same keys) until the
   * deadline; a refused order's problem is its result.
   */
  async submitMany(orders: readonly BatchOrder[], options: Omit<SubmitOptions, 'key'> = {}): Promise<BatchOutcome[]> {
    const results = new Map<string, BatchOutcome>();
    let pending = [...orders];
    const deadline = Date.now() + (options.deadlineMs ?? this.options.deadlineMs ?? 30_000);
    for (let attempt = 0; pending.length > 0; attempt++) {
      const headers = { authorization: `Bearer ${this.options.apiKey}`, 'content-type': 'application/json' };
      const body = JSON.stringify(pending.map(({ key, order }) => ({ ...order, idempotency_key: key })));
      const answer = await this.request('POST', '/v1/orders:batch', headers, body, options.signal);
      let retryAfter = retryAfterMs(answer.headers?.get('retry-after') ?? null);
      const again: BatchOrder[] = [];
      if (answer.status === 207) {
        const items = (answer.json as { results: BatchItem[] }).results;
        pending.forEach((p, i) => {
          const item = items[i];
          if (item?.status === 202 && item.body) {
            results.set(p.key, { key: p.key, ok: true, body: item.body, replayed: item.replayed === true });
            return;
          }
          const status = item?.status ?? 0;
          results.set(p.key, { key: p.key, ok: false, status, problem: item?.problem });
          if (retryable(status)) again.push(p);
        });
        // Per-item answers carry no Retry-After: back off as for a conflict.
        retryAfter ??= again.length > 0 ? 1000 : undefined;
      } else if (retryable(answer.status)) {
        for (const p of pending)
          results.set(p.key, { key: p.key, ok: false, status: answer.status, problem: problemOf(answer) });
        again.push(...pending);
      } else {
        throw failure(answer, attempt + 1);
      }
      if (again.length === 0) break;
      const delay = retryDelayMs(this.policy, attempt, retryAfter, this.options.random);
      if (Date.now() + delay >= deadline) break;
      await sleep(delay, options.signal);
      pending = again;
    }
    return orders.map((o) => results.get(o.key) as BatchOutcome);
  }

  /** The order's state now, or — with `waitSeconds` — once final or when the wait ends. */
  async getOrder(key: string, waitSeconds = 0, signal?: AbortSignal): Promise<OrderState> {
    const query = waitSeconds > 0 ? `?wait=${Math.min(MAX_WAIT_SECONDS, Math.ceil(waitSeconds))}` : '';
    const { answer, attempts } = await this.withRetries({ key, ...(signal ? { signal } : {}) }, () =>
      this.request(
        'GET',
        `/v1/orders/${encodeURIComponent(key)}${query}`,
        { authorization: `Bearer ${this.options.apiKey}` },
        undefined,
        signal,
        waitSeconds * 1000,
      ),
    );
    if (answer.status === 200) return answer.json as OrderState;
    throw failure(answer, attempts);
  }

  /**
   * Waits for the order's outcome (applied, rejected or dead_lettered) with long polls, up to
   * `timeoutMs` (default 60 s); resolves with the state at the end, final or not.
   */
  async waitFor(key: string, options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<OrderState> {
    const deadline = Date.now() + (options.timeoutMs ?? 60_000);
    for (;;) {
      const left = deadline - Date.now();
      const asked = Date.now();
      const state = await this.getOrder(key, Math.max(0, left) / 1000, options.signal);
      if (FINAL.has(state.status) || Date.now() >= deadline) return state;
      // A server that answered early without a final state: pace the next ask.
      const early = 250 - (Date.now() - asked);
      if (early > 0) await sleep(Math.min(early, Math.max(0, deadline - Date.now())), options.signal);
    }
  }

  /** Runs `send` until it gets a non-retryable answer or the deadline leaves no room for another try. */
  private async withRetries(
    options: Pick<SubmitOptions, 'key' | 'deadlineMs' | 'signal'>,
    send: () => Promise<Answer>,
  ): Promise<{ answer: Answer; attempts: number }> {
    const deadline = Date.now() + (options.deadlineMs ?? this.options.deadlineMs ?? 30_000);
    for (let attempt = 0; ; attempt++) {
      const answer = await send();
      if (!retryable(answer.status)) {
        this.options.onAttempt?.({ key: options.key, status: answer.status });
        return { answer, attempts: attempt + 1 };
      }
      const wait = retryAfterMs(answer.headers?.get('retry-after') ?? null);
      const delay = retryDelayMs(this.policy, attempt, wait, this.options.random);
      const last = Date.now() + delay >= deadline;
      this.options.onAttempt?.({ key: options.key, status: answer.status, ...(last ? {} : { retryInMs: delay }) });
      if (last) return { answer, attempts: attempt + 1 };
      await sleep(delay, options.signal);
    }
  }

  /** One HTTP exchange; status 0 when there was no answer (network error or attempt timeout). */
  private async request(
    method: 'GET' | 'POST',
    path: string,
    headers: Record<string, string>,
    body: string | undefined,
    signal: AbortSignal | undefined,
    extraTimeoutMs = 0,
  ): Promise<Answer> {
    const timeout = AbortSignal.timeout((this.options.attemptTimeoutMs ?? 10_000) + extraTimeoutMs);
    try {
      const res = await fetch(`${this.base()}${path}`, {
        method,
        headers,
        ...(body !== undefined ? { body } : {}),
        signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
      });
      const text = await res.text();
      let json: unknown;
      try {
        json = text === '' ? undefined : JSON.parse(text);
      } catch {
        json = undefined;
      }
      return { status: res.status, headers: res.headers, json };
    } catch (err) {
      // The caller's own abort ends the submission; anything else is a network error, retried.
      if (signal?.aborted) throw err;
      return { status: 0, headers: undefined, json: undefined };
    }
  }
}

interface BatchItem {
  index: number;
  status: number;
  replayed?: boolean;
  body?: Accepted;
  problem?: Problem;
}

function problemOf(answer: Answer): Problem | undefined {
  const p = answer.json as Problem | undefined;
  return p && typeof p === 'object' && typeof p.type === 'string' ? p : undefined;
}

function failure(answer: Answer, attempts: number): SurgeError {
  const problem = problemOf(answer);
  const what = answer.status === 0 ? 'no answer' : `${answer.status} ${problem?.title ?? ''}`.trim();
  return new SurgeError(
    `${what}${problem?.detail ? `: ${problem.detail}` : ''} (${attempts} attempt(s))`,
    answer.status,
    problem,
    attempts,
  );
}
