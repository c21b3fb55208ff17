// Request bodies, from bytes to orders ready for Redis: strict UTF-8 and JSON parsing, problem
// details (RFC 9457), the idempotency-key check, and a whole `:batch` body parsed, checked and
// prepared (canonical text, fingerprint, shard, keys). No HTTP and no connections here, so a
// piscina thread can run `prepareBatch` off the event loop (ingest/batch-thread.ts).
import type { Config } from '../common/config.js';
import { checkOrder, type FieldError, idempotencyKeyProblem, inexactNumbers, type Order } from '../common/order.js';
import { type PreparedOrder, prepareOrder } from './writer.js';

const MAX_BATCH_ORDERS = 1000;

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail?: string;
  errors?: FieldError[];
  /** The request id (X-Request-Id) of the answer it was sent in; set by the pipeline. */
  instance?: string;
}

/**
 * Every problem type ingest answers, with its status and the headers that come with it: the one
 * table of problem types. Each is a section of docs/problems.md, the page the type URIs point at
 * (`PROBLEM_BASE` + `#` + slug); a test holds the two equal, and the OpenAPI document
 * (ingest/contract.ts) lists them from here.
 */
export const PROBLEMS = {
  'bad-request': { status: 400, headers: [] },
  'batch-size': { status: 400, headers: [] },
  'body-too-large': { status: 413, headers: ['connection'] },
  'idempotency-key-reused': { status: 422, headers: [] },
  internal: { status: 500, headers: [] },
  'invalid-idempotency-key': { status: 400, headers: [] },
  'invalid-order': { status: 400, headers: [] },
  'invalid-utf8': { status: 400, headers: [] },
  'malformed-batch': { status: 400, headers: [] },
  'malformed-json': { status: 400, headers: [] },
  'not-found': { status: 404, headers: [] },
  'order-not-found': { status: 404, headers: [] },
  overloaded: { status: 503, headers: ['retry-after', 'connection'] },
  'request-in-progress': { status: 409, headers: ['retry-after'] },
  'shutting-down': { status: 503, headers: ['retry-after', 'connection'] },
  unauthorized: { status: 401, headers: ['www-authenticate'] },
  unavailable: { status: 503, headers: ['retry-after'] },
  'unsupported-media-type': { status: 415, headers: [] },
} as const satisfies Record<string, { status: number; headers: readonly ProblemHeader[] }>;

/** Response headers a problem may carry besides X-Request-Id (described in ingest/contract.ts). */
export type ProblemHeader = 'retry-after' | 'www-authenticate' | 'connection';

export type ProblemSlug = keyof typeof PROBLEMS;

export const PROBLEM_SLUGS = Object.keys(PROBLEMS) as ProblemSlug[];

/** Where docs/problems.md is published; a problem's type is this page's anchor for it. */
export const PROBLEM_BASE = 'https://surge.dev/problems';

/** A problem of type `slug`; its status must be the table's (checked when compiling). */
export function problem<S extends ProblemSlug>(
  status: (typeof PROBLEMS)[S]['status'],
  slug: S,
  title: string,
  detail?: string,
  errors?: FieldError[],
): Problem {
  return {
    type: `${PROBLEM_BASE}#${slug}`,
    title,
    status,
    ...(detail !== undefined ? { detail } : {}),
    ...(errors !== undefined ? { errors } : {}),
  };
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * `escapeFree`: the text holds no `\u` escape (validateOrder then skips its per-string check).
 * `inexact`: the numbers of the text that would not be stored as sent (inexactNumbers).
 */
type Parsed =
  | { ok: true; value: unknown; escapeFree: boolean; inexact: FieldError[] }
  | { ok: false; problem: Problem };

/** Decodes bytes as strict UTF-8: invalid bytes are an error, not U+FFFD. */
function decodeUtf8(bytes: Uint8Array): { ok: true; text: string } | { ok: false; problem: Problem } {
  try {
    return { ok: true, text: utf8.decode(bytes) };
  } catch {
    return {
      ok: false,
      problem: problem(
        400,
        'invalid-utf8',
        'Body is not valid UTF-8',
        'the request body contains bytes that are not valid UTF-8',
      ),
    };
  }
}

/** True when JSON text holds no `\u` escape: no string parsed from it holds NUL or a lone surrogate. */
function escapeFree(text: string): boolean {
  return !text.includes('\\u');
}

/** Decodes bytes as strict UTF-8 and parses JSON. */
export function parseJson(bytes: Uint8Array): Parsed {
  const decoded = decodeUtf8(bytes);
  if (!decoded.ok) return decoded;
  const text = decoded.text;
  try {
    const value: unknown = JSON.parse(text);
    return { ok: true, value, escapeFree: escapeFree(text), inexact: inexactNumbers(text) };
  } catch (e) {
    return { ok: false, problem: problem(400, 'malformed-json', 'Malformed JSON', (e as Error).message) };
  }
}

/** A single order's body: strict UTF-8, JSON, then the order schema; a 400 problem when it fails. */
export function checkOrderBody(bytes: Uint8Array): { ok: true; order: Order } | { ok: false; problem: Problem } {
  const parsed = parseJson(bytes);
  if (!parsed.ok) return parsed;
  const checked = checkOrder(parsed.value, parsed.escapeFree, parsed.inexact);
  return checked.ok ? checked : { ok: false, problem: invalidOrder(checked.errors) };
}

function invalidOrder(errors: FieldError[]): Problem {
  return problem(400, 'invalid-order', 'Invalid order', `${errors.length} field(s) failed validation`, errors);
}

/**
 * The key an `Idempotency-Key` header names. The header is a Structured Field string (RFC 8941
 * §3.3.3): `"abc"`, whose only escapes are `\"` and `\\`, names the key `abc`; a bare value is
 * taken as the key itself, as clients written before the draft send it. A quoted value that is
 * not a well-formed sf-string (unterminated, another escape, text after the closing quote,
 * parameters) is a 400.
 */
export function idempotencyKeyHeader(raw: string): { ok: true; key: string } | { ok: false; problem: Problem } {
  if (!raw.startsWith('"')) return { ok: true, key: raw };
  let key = '';
  for (let i = 1; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c === 0x5c) {
      const next = raw[++i];
      if (next !== '"' && next !== '\\') break;
      key += next;
    } else if (c === 0x22) {
      if (i === raw.length - 1) return { ok: true, key };
      break;
    } else if (c < 0x20 || c > 0x7e) break;
    else key += raw[i];
  }
  return {
    ok: false,
    problem: problem(
      400,
      'invalid-idempotency-key',
      'Invalid Idempotency-Key',
      'Idempotency-Key is a quoted string that is not a valid Structured Field string (RFC 8941): ' +
        'close the quotes, escape only " and \\, and add nothing after it',
    ),
  };
}

/**
 * Why a key cannot name a new order, or undefined: idempotencyKeyProblem's rules, and not `.` or
 * `..`. Location is `/v1/orders/` + the encoded key, and a client resolving it removes such a
 * dot segment (RFC 3986 § 5.2.4), encoded or not: WHATWG URL parsers take `%2E%2E` for `..`
 * too, and RFC 3986 normalization decodes `%2E`. No Location could lead back to the order.
 */
function newKeyProblem(key: string | undefined): string | undefined {
  const msg = idempotencyKeyProblem(key);
  if (msg !== undefined || (key !== '.' && key !== '..')) return msg;
  return 'cannot be "." or "..": a URL path segment of only dots is removed, so no Location could name the order';
}

/**
 * A 400 for a key that fails the rules, or undefined. `lookup`: the key only names an order to
 * find, which need not be a new order's key (an order accepted under `..` before that rule is
 * found at `/v1/orders/%2E%2E` by a client that sends the path as it is).
 */
export function keyProblem(key: string | undefined, where: string, lookup = false): Problem | undefined {
  const msg = lookup ? idempotencyKeyProblem(key) : newKeyProblem(key);
  if (msg === undefined) return undefined;
  return problem(
    400,
    'invalid-idempotency-key',
    key === undefined || key === '' ? 'Idempotency-Key is required' : 'Invalid Idempotency-Key',
    `${where} ${msg}`,
  );
}

interface AcceptedBody {
  order_ref: string;
  idempotency_key: string;
  status: 'queued';
}

export type BatchResult =
  | { index: number; idempotency_key: string; status: 202; replayed: boolean; location: string; body: AcceptedBody }
  | { index: number; idempotency_key: string | null; status: number; problem: Problem };

type BatchItem =
  | { ok: true; value: unknown; escapeFree: boolean; inexact: FieldError[] }
  | { ok: false; problem: Problem };

/** Splits a batch body into items: a JSON array, or NDJSON (one order per line) by Content-Type. */
function parseBatch(
  bytes: Uint8Array,
  contentType: string,
): { ok: true; value: BatchItem[] } | { ok: false; problem: Problem } {
  const ndjson = /^application\/(x-ndjson|jsonl)\b/i.test(contentType);
  if (!ndjson) {
    const parsed = parseJson(bytes);
    if (!parsed.ok) return parsed;
    if (!Array.isArray(parsed.value))
      return {
        ok: false,
        problem: problem(400, 'malformed-batch', 'A batch is a JSON array of orders', 'the body is not an array'),
      };
    const noEscape = parsed.escapeFree;
    // The array's inexact numbers, by item: `/3/metadata/x` is item 3's `/metadata/x`.
    const inexact = new Map<number, FieldError[]>();
    for (const e of parsed.inexact) {
      const m = /^\/(\d+)(.*)$/s.exec(e.path);
      if (m === null) continue;
      const index = Number(m[1]);
      inexact.set(index, [...(inexact.get(index) ?? []), { path: m[2]!, message: e.message }]);
    }
    return {
      ok: true,
      value: parsed.value.map((value, index) => ({
        ok: true,
        value,
        escapeFree: noEscape,
        inexact: inexact.get(index) ?? [],
      })),
    };
  }
  const decoded = decodeUtf8(bytes);
  if (!decoded.ok) return decoded;
  const lines = decoded.text.split('\n').filter((line) => line.trim() !== '');
  const noEscape = escapeFree(decoded.text);
  return {
    ok: true,
    value: lines.map((line) => {
      try {
        const value: unknown = JSON.parse(line);
        return { ok: true, value, escapeFree: noEscape, inexact: inexactNumbers(line) };
      } catch (e) {
        return { ok: false, problem: problem(400, 'malformed-json', 'Malformed JSON', (e as Error).message) };
      }
    }),
  };
}

/** One batch item: `idempotency_key` plus the order's fields. */
function checkBatchItem(item: BatchItem): { key: string; order: Order } | { key?: string; problem: Problem } {
  if (!item.ok) return { problem: item.problem };
  const value = item.value;
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return {
      problem: problem(400, 'invalid-order', 'Invalid order', 'each batch item is an object', [
        { path: '', message: 'must be object' },
      ]),
    };
  }
  const { idempotency_key: rawKey, ...order } = value as Record<string, unknown>;
  const key = typeof rawKey === 'string' ? rawKey : undefined;
  const badKey = keyProblem(key, 'idempotency_key');
  const checked = checkOrder(order, item.escapeFree, item.inexact);
  if (badKey || !checked.ok) {
    const errors: FieldError[] = [
      ...(badKey ? [{ path: '/idempotency_key', message: newKeyProblem(key) as string }] : []),
      ...(checked.ok ? [] : checked.errors),
    ];
    return { ...(key !== undefined ? { key } : {}), problem: invalidOrder(errors) };
  }
  return { key: key as string, order: checked.order };
}

/**
 * A `:batch` body, parsed and checked: the orders to write (prepared, with their item index) and
 * the finished result of every invalid item; or the problem of the whole request.
 */
export type PreparedBatch =
  | { ok: false; problem: Problem }
  | {
      ok: true;
      count: number;
      prepared: PreparedOrder[];
      indexes: number[];
      invalid: Array<{ index: number; result: string }>;
    };

export function prepareBatch(
  bytes: Uint8Array,
  contentType: string,
  clientId: string,
  config: Pick<Config, 'redisPrefix' | 'shards'>,
): PreparedBatch {
  const items = parseBatch(bytes, contentType);
  if (!items.ok) return items;
  const count = items.value.length;
  if (count === 0 || count > MAX_BATCH_ORDERS) {
    return {
      ok: false,
      problem: problem(
        400,
        'batch-size',
        'Wrong number of orders',
        `a batch holds 1 to ${MAX_BATCH_ORDERS} orders; this one has ${count}`,
      ),
    };
  }
  const prepared: PreparedOrder[] = [];
  const indexes: number[] = [];
  const invalid: Array<{ index: number; result: string }> = [];
  for (let index = 0; index < count; index++) {
    const checked = checkBatchItem(items.value[index]!);
    if ('problem' in checked) {
      invalid.push({
        index,
        result: JSON.stringify({
          index,
          idempotency_key: checked.key ?? null,
          status: checked.problem.status,
          problem: checked.problem,
        } satisfies BatchResult),
      });
    } else {
      indexes.push(index);
      prepared.push(prepareOrder(config, clientId, checked.key, checked.order));
    }
  }
  return { ok: true, count, prepared, indexes, invalid };
}
