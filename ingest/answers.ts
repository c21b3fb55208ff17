// What the ingest routes answer: problems, headers, request ids and the admission rules the
// pipeline (pipeline.ts) applies to every route. Headers are flat lists (name, value, …), the
// form node:http's writeHead takes without walking an object.
import { randomBytes } from 'node:crypto';
import type { ApiClient } from '../common/clients.js';
import type { IngestMetrics } from '../metrics/definitions.js';
import type { Authenticator } from './auth.js';
import type { Backpressure } from './backpressure.js';
import { type Problem, problem } from './requests.js';
import type { WriteOutcome } from './writer.js';

/** Largest body of POST /v1/orders (DESIGN § HTTP API). */
export const SINGLE_BODY_LIMIT = 64 * 1024;
/**
 * Retry-After (s) for 409: the first request is waiting for WAITAOF/WAIT, which is bounded by
 * SURGE_DURABLE_TIMEOUT_MS.
 */
const CONFLICT_RETRY_AFTER = 1;

/** The bounded `route` label of the request metrics. */
export const ROUTES = {
  create: 'POST /v1/orders',
  batch: 'POST /v1/orders:batch',
  get: 'GET /v1/orders/:key',
  healthz: 'GET /healthz',
  readyz: 'GET /readyz',
  openapi: 'GET /openapi.json',
} as const;

const LOCATION_PREFIX = '/v1/orders/';

/**
 * A 202's Location. encodeURIComponent leaves only unreserved characters and `!*'()` (RFC 3986
 * sub-delims), all valid in a path segment as they are; `.` and `..`, the keys no encoding keeps
 * out of dot-segment removal, are refused as new keys (requests.ts keyProblem).
 */
export function location(key: string): string {
  return LOCATION_PREFIX + encodeURIComponent(key);
}

/** 413: the body is over `limit` bytes. */
export function bodyTooLarge(limit: number): Problem {
  return problem(413, 'body-too-large', 'Body too large', `the body is larger than ${limit} bytes`);
}

/** 415: a Content-Type the order routes do not read. */
export function unsupportedMediaType(): Problem {
  return problem(
    415,
    'unsupported-media-type',
    'Unsupported Content-Type',
    'send application/json (or, for :batch, application/x-ndjson)',
  );
}

/** A refusal: the problem and the headers that go with it (Retry-After, WWW-Authenticate). */
export interface Refusal {
  problem: Problem;
  headers: string[];
}

/** What one write outcome answers: status, headers, body (a 202 body) or problem. */
export function answerFor(
  outcome: WriteOutcome,
  key: string,
  retryAfter: number,
): { status: number; headers: string[]; body: string; problem?: Problem } {
  switch (outcome.kind) {
    case 'accepted':
      return { status: 202, headers: ['location', location(key)], body: outcome.body };
    case 'replayed':
      return { status: 202, headers: ['location', location(key), 'idempotent-replayed', 'true'], body: outcome.body };
    case 'mismatch': {
      const p = problem(
        422,
        'idempotency-key-reused',
        'Idempotency-Key reused with another payload',
        'this key was first used with a different order; use a new key for a new order',
      );
      return { status: 422, headers: [], body: JSON.stringify(p), problem: p };
    }
    case 'pending': {
      const p = problem(
        409,
        'request-in-progress',
        'A request with this Idempotency-Key is still being written',
        'retry after the Retry-After delay',
      );
      return {
        status: 409,
        headers: ['retry-after', String(CONFLICT_RETRY_AFTER)],
        body: JSON.stringify(p),
        problem: p,
      };
    }
    case 'unavailable': {
      const p = problem(
        503,
        'unavailable',
        'Order not accepted: storage unavailable',
        `${outcome.reason}; nothing was recorded for this key, retry with the same Idempotency-Key`,
      );
      return { status: 503, headers: ['retry-after', String(retryAfter)], body: JSON.stringify(p), problem: p };
    }
  }
}

/** The `result` label of surge_ingest_orders_total for each write outcome. */
export const ORDER_RESULT: Record<WriteOutcome['kind'], string> = {
  accepted: 'accepted',
  replayed: 'replayed',
  mismatch: 'mismatch',
  pending: 'conflict',
  unavailable: 'unavailable',
};

/**
 * Request ids this process makes: a random per-process prefix and a counter (cheaper than a
 * UUID per request, unique all the same).
 */
const REQUEST_ID_PREFIX = randomBytes(6).toString('hex');
let requestSeq = 0;

/** The client's X-Request-Id when it is one printable-ASCII token of up to 128 characters, else a new one. */
export function requestId(req: { headers: Record<string, string | string[] | undefined> }): string {
  const given = req.headers['x-request-id'];
  return typeof given === 'string' && /^[\x21-\x7e]{1,128}$/.test(given)
    ? given
    : `${REQUEST_ID_PREFIX}-${(requestSeq++).toString(36)}`;
}

export interface AdmissionDeps {
  auth: Authenticator;
  backpressure: Backpressure;
  metrics: Pick<IngestMetrics, 'orders' | 'shed'>;
}

/** The problem of a write shed, `detail` saying which limit. */
export function shedProblem(detail: string): Problem {
  return problem(503, 'overloaded', 'Overloaded, retry later', `${detail}; nothing was recorded`);
}

/** Counts a write shed, by reason, and as an unavailable order: every 503 of overload, the door's too. */
export function countShed(metrics: AdmissionDeps['metrics'], reason: string): void {
  metrics.shed.inc({ reason });
  metrics.orders.inc({ result: 'unavailable' });
}

/** The 503 of a write shed to protect the process or the stack (counted by reason, as an unavailable order). */
function shedAnswer(metrics: AdmissionDeps['metrics'], reason: string, detail: string, retryAfter: number): Refusal {
  countShed(metrics, reason);
  return {
    problem: shedProblem(detail),
    headers: ['retry-after', String(retryAfter)],
  };
}

/**
 * Who may go on, when that needs no key lookup — nearly every request: the key's cache entry is
 * settled, so this answers synchronously, with no promise or closure. The API key of
 * `Authorization: Bearer` (`token`, from bearerToken) is looked up in the cache, then, for writes
 * (`shed`), load shedding. Returns the client, or the refusal to send; undefined when the key
 * must be looked up first (`admitLater`).
 */
export function admitNow(
  deps: AdmissionDeps,
  token: string | undefined,
  shed: boolean,
): ApiClient | Refusal | undefined {
  if (!token) {
    return {
      problem: problem(401, 'unauthorized', 'Unauthorized', 'send Authorization: Bearer <api key>'),
      headers: ['www-authenticate', 'Bearer'],
    };
  }
  const hit = deps.auth.cached(token);
  return hit ? decide(deps, hit.client, shed) : undefined;
}

/** A refusal (admitNow's and admitLater's), not a client. */
export function isRefusal(a: ApiClient | Refusal): a is Refusal {
  return (a as Refusal).problem !== undefined;
}

/**
 * admitNow for a key whose answer is not cached: looks it up, then calls `done` once, with the
 * client or the refusal to send; `lookupFailed` hears a key store that could not be asked.
 */
export function admitLater(
  deps: AdmissionDeps,
  token: string,
  shed: boolean,
  done: (decided: ApiClient | Refusal) => void,
  lookupFailed: (err: unknown) => void,
): void {
  deps.auth.lookup(token).then(
    (client) => done(decide(deps, client, shed)),
    (err: unknown) => {
      lookupFailed(err);
      done({
        problem: problem(
          503,
          'unavailable',
          'Authentication unavailable',
          'the key store (PostgreSQL) cannot be reached',
        ),
        headers: ['retry-after', String(deps.backpressure.retryAfterSeconds)],
      });
    },
  );
}

/** The client of a known key, or the refusal: unknown or disabled key, or (writes) load shedding. */
function decide(deps: AdmissionDeps, client: ApiClient | undefined, shed: boolean): ApiClient | Refusal {
  if (!client) {
    return {
      problem: problem(401, 'unauthorized', 'Unauthorized', 'unknown or disabled API key'),
      headers: ['www-authenticate', 'Bearer error="invalid_token"'],
    };
  }
  return (shed ? shedding(deps) : undefined) ?? client;
}

/**
 * Load shedding: the 503 to send when the backlog, Redis memory or Redis itself says so (counted
 * as an unavailable order).
 */
function shedding({ backpressure, metrics }: AdmissionDeps): Refusal | undefined {
  const reason = backpressure.overloaded();
  if (!reason) return undefined;
  const detail = {
    redis_down: 'Redis is unreachable',
    backlog: 'the backlog of unapplied orders is over SURGE_MAX_BACKLOG',
    memory: 'Redis memory use is over its limit',
  }[reason];
  return shedAnswer(metrics, reason, detail, backpressure.retryAfterFor(reason));
}
