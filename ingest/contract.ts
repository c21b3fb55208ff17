// The HTTP contract of ingest: every route's method, path, admission and body rules, and what it
// may answer — the declarations the pipeline (pipeline.ts) serves by and the OpenAPI document is
// generated from, so the two cannot drift. The order's schema comes from common/order.ts, the
// one the code validates with; problem types and their statuses from PROBLEMS (requests.ts).
import { IDEMPOTENCY_KEY_SCHEMA, ORDER_SCHEMA } from '../common/order.js';
import { MAX_WAIT_SECONDS } from '../common/outcome.js';
import { ROUTES, SINGLE_BODY_LIMIT } from './answers.js';
import { PROBLEM_BASE, PROBLEMS, type ProblemHeader, type ProblemSlug } from './requests.js';

/** Largest body of POST /v1/orders:batch: 1,000 orders at up to ~8 KiB each on average. */
const BATCH_BODY_LIMIT = 8 * 1024 * 1024;

/** The Content-Types whose bodies the order routes read. */
const BODY_TYPES: readonly string[] = ['application/json', 'application/x-ndjson', 'application/jsonl'];

/** The version of the contract (`info.version`): the v1 API, revised when the contract changes. */
const API_VERSION = '1.1.0';

type SuccessHeader = 'location' | 'idempotent-replayed';

/** A success answer of a route: its content and headers (X-Request-Id is on every answer). */
interface Success {
  description: string;
  contentType: string;
  /** A components schema name, or an inline schema. */
  schema: string | Record<string, unknown>;
  headers?: readonly SuccessHeader[];
}

/** A query parameter of a route. */
interface QueryParam {
  name: string;
  description: string;
  schema: Record<string, unknown>;
}

/** How a route is served and what it answers: the pipeline's part and the document's. */
export interface RouteSpec {
  method: 'GET' | 'POST';
  /** The exact path; with `param`, the prefix the parameter follows. */
  path: string;
  /** The rest of the path after `path` is one parameter (no `/`). */
  param?: boolean;
  /** The `route` label of the request metrics. */
  label: string;
  /** Needs `Authorization: Bearer <api key>`. */
  auth: boolean;
  /** A write: refused with 503 while ingest sheds load (after auth). */
  shed: boolean;
  /** Reads a body of these Content-Types, up to `limit` bytes. */
  body?: { limit: number; types: readonly string[]; schema: string; description: string };
  operationId: string;
  summary: string;
  description: string;
  /** Request headers besides Authorization and X-Request-Id. */
  idempotencyKeyHeader?: boolean;
  query?: readonly QueryParam[];
  success: Readonly<Record<number, Success>>;
  /** The problems its handler answers (the pipeline's own are added by `routeProblems`). */
  problems: readonly ProblemSlug[];
}

const ORDER_TYPES_DOC = '`application/json`';

/** Every route ingest serves, keyed by what app.ts calls them. */
export const ROUTE_SPECS = {
  create: {
    method: 'POST',
    path: '/v1/orders',
    label: ROUTES.create,
    auth: true,
    shed: true,
    body: {
      limit: SINGLE_BODY_LIMIT,
      types: BODY_TYPES,
      schema: 'Order',
      description: `One order, as ${ORDER_TYPES_DOC}.`,
    },
    operationId: 'createOrder',
    summary: 'Accept one order',
    description:
      'Writes the order to its shard stream and answers 202 once it is recorded. A retry with the same ' +
      'Idempotency-Key and body answers the first 202 again (`Idempotent-Replayed: true`) and never ' +
      'makes a second order.',
    idempotencyKeyHeader: true,
    success: {
      202: {
        description: 'Accepted: the order is queued. Its outcome: GET the Location.',
        contentType: 'application/json',
        schema: 'Accepted',
        headers: ['location', 'idempotent-replayed'],
      },
    },
    problems: [
      'invalid-idempotency-key',
      'malformed-json',
      'invalid-utf8',
      'invalid-order',
      'request-in-progress',
      'idempotency-key-reused',
      'unavailable',
    ],
  },
  batch: {
    method: 'POST',
    path: '/v1/orders:batch',
    label: ROUTES.batch,
    auth: true,
    shed: true,
    body: {
      limit: BATCH_BODY_LIMIT,
      types: BODY_TYPES,
      schema: 'BatchBody',
      description:
        'A JSON array of 1 to 1,000 orders, each with its `idempotency_key`, or the same as NDJSON ' +
        '(`application/x-ndjson`, one order per line).',
    },
    operationId: 'createOrders',
    summary: 'Accept up to 1,000 orders',
    description:
      'Each order is checked and written on its own; the 207 lists one result per item, in order: ' +
      'a 202 with the body the single route answers, or a problem.',
    success: {
      207: {
        description: 'One result per item of the batch.',
        contentType: 'application/json',
        schema: 'BatchResults',
      },
    },
    problems: ['malformed-json', 'invalid-utf8', 'malformed-batch', 'batch-size', 'unavailable'],
  },
  get: {
    method: 'GET',
    path: '/v1/orders/',
    param: true,
    label: ROUTES.get,
    auth: true,
    shed: false,
    operationId: 'getOrder',
    summary: "An order's state",
    description:
      "The order's state for this client. With `wait`, the answer comes as soon as the order is " +
      'applied, rejected or dead-lettered, or when the wait ends, with its state then.',
    query: [
      {
        name: 'wait',
        description:
          'Wait up to this many seconds for a final state (applied, rejected, dead_lettered); 0 or ' +
          'absent answers at once.',
        schema: { type: 'number', minimum: 0, maximum: MAX_WAIT_SECONDS },
      },
    ],
    success: {
      200: { description: "The order's state.", contentType: 'application/json', schema: 'OrderState' },
    },
    problems: ['invalid-idempotency-key', 'order-not-found', 'unavailable'],
  },
  healthz: {
    method: 'GET',
    path: '/healthz',
    label: ROUTES.healthz,
    auth: false,
    shed: false,
    operationId: 'healthz',
    summary: 'Liveness',
    description: 'The process answers.',
    success: { 200: { description: '`ok`', contentType: 'text/plain', schema: { type: 'string' } } },
    problems: [],
  },
  readyz: {
    method: 'GET',
    path: '/readyz',
    label: ROUTES.readyz,
    auth: false,
    shed: false,
    operationId: 'readyz',
    summary: 'Readiness',
    description: 'Ready to take orders: Redis is reachable and the instance is not stopping.',
    success: {
      200: { description: '`ready`', contentType: 'text/plain', schema: { type: 'string' } },
      503: { description: '`not ready: <why>`', contentType: 'text/plain', schema: { type: 'string' } },
    },
    problems: [],
  },
  openapi: {
    method: 'GET',
    path: '/openapi.json',
    label: ROUTES.openapi,
    auth: false,
    shed: false,
    operationId: 'openapi',
    summary: 'This document',
    description: 'The OpenAPI document of this API.',
    success: {
      200: { description: 'OpenAPI 3.1.', contentType: 'application/json', schema: { type: 'object' } },
    },
    problems: [],
  },
} as const satisfies Record<string, RouteSpec>;

/**
 * Every problem a route can answer: its handler's and the pipeline's (a bug and a stop for every
 * route; auth and its key store; shedding; the body's type and size; the path's encoding).
 */
export function routeProblems(spec: RouteSpec): ProblemSlug[] {
  const all = new Set<ProblemSlug>(spec.problems);
  all.add('internal');
  all.add('shutting-down');
  if (spec.auth) {
    all.add('unauthorized');
    all.add('unavailable');
  }
  if (spec.shed) all.add('overloaded');
  if (spec.body) {
    all.add('unsupported-media-type');
    all.add('body-too-large');
  }
  if (spec.param) all.add('bad-request');
  return [...all];
}

/** The problem answered to a request no route matches (any other method or path). */
export const UNROUTED_PROBLEM: ProblemSlug = 'not-found';

const HEADER_COMPONENT: Record<ProblemHeader | SuccessHeader, string> = {
  'retry-after': 'RetryAfter',
  'www-authenticate': 'WWWAuthenticate',
  connection: 'Connection',
  location: 'Location',
  'idempotent-replayed': 'IdempotentReplayed',
};

const HEADERS = {
  XRequestId: {
    description: "The request's id: the client's `X-Request-Id` when it sent a valid one, else a new one.",
    schema: { type: 'string' },
  },
  RetryAfter: {
    description: 'Seconds to wait before retrying with the same Idempotency-Key (spread on purpose).',
    schema: { type: 'integer', minimum: 0 },
  },
  WWWAuthenticate: { description: 'The Bearer challenge.', schema: { type: 'string' } },
  Connection: {
    description: '`close` when the body was not read or the instance is stopping.',
    schema: { type: 'string', enum: ['close'] },
  },
  Location: { description: "The order's state: GET it (`/v1/orders/<key>`).", schema: { type: 'string' } },
  IdempotentReplayed: {
    description: '`true` when this answers a retry of an order already accepted.',
    schema: { type: 'string', enum: ['true'] },
  },
} as const;

/** The type URI of a problem slug. */
export function problemType(slug: ProblemSlug): string {
  return `${PROBLEM_BASE}#${slug}`;
}

const ref = (kind: string, name: string) => ({ $ref: `#/components/${kind}/${name}` });
const schemaOf = (s: string | Record<string, unknown>) => (typeof s === 'string' ? ref('schemas', s) : s);

/** The order schema without its `$id` (inside the document, its place is its address). */
function orderSchema(): Record<string, unknown> {
  const { $id: _id, ...schema } = ORDER_SCHEMA;
  return schema;
}

function components() {
  const order = orderSchema();
  const orderProps = order.properties as Record<string, unknown>;
  const problemSlugs = Object.keys(PROBLEMS) as ProblemSlug[];
  return {
    securitySchemes: { apiKey: { type: 'http', scheme: 'bearer', description: 'The API key of a client.' } },
    parameters: {
      IdempotencyKey: {
        name: 'Idempotency-Key',
        in: 'header',
        required: true,
        description:
          "The order's key: one per order, the same on every retry. Bare (`abc`) or an RFC 8941 " +
          'string (`"abc"`, the same key).',
        schema: { type: 'string' },
      },
      XRequestId: {
        name: 'X-Request-Id',
        in: 'header',
        required: false,
        description: 'Your id for the request (1–128 printable ASCII), echoed back.',
        schema: { type: 'string', pattern: '^[\\x21-\\x7e]{1,128}$' },
      },
      Key: {
        name: 'key',
        in: 'path',
        required: true,
        description: "The order's Idempotency-Key, percent-encoded.",
        schema: IDEMPOTENCY_KEY_SCHEMA,
      },
    },
    headers: HEADERS,
    schemas: {
      Order: order,
      BatchItem: {
        ...order,
        required: [...(order.required as string[]), 'idempotency_key'],
        properties: { ...orderProps, idempotency_key: IDEMPOTENCY_KEY_SCHEMA },
      },
      BatchBody: { type: 'array', minItems: 1, maxItems: 1000, items: ref('schemas', 'BatchItem') },
      Accepted: {
        type: 'object',
        required: ['order_ref', 'idempotency_key', 'status'],
        properties: {
          order_ref: { type: 'string', description: 'Shard and stream entry: `s<shard>-<entry id>`.' },
          idempotency_key: { type: 'string' },
          status: { const: 'queued' },
        },
      },
      BatchResults: {
        type: 'object',
        required: ['results'],
        properties: { results: { type: 'array', items: ref('schemas', 'BatchResult') } },
      },
      BatchResult: {
        oneOf: [
          {
            type: 'object',
            required: ['index', 'idempotency_key', 'status', 'replayed', 'location', 'body'],
            properties: {
              index: { type: 'integer', minimum: 0 },
              idempotency_key: { type: 'string' },
              status: { const: 202 },
              replayed: { type: 'boolean' },
              location: { type: 'string' },
              body: ref('schemas', 'Accepted'),
            },
          },
          {
            type: 'object',
            required: ['index', 'idempotency_key', 'status', 'problem'],
            properties: {
              index: { type: 'integer', minimum: 0 },
              idempotency_key: { type: ['string', 'null'] },
              status: { type: 'integer', minimum: 400, maximum: 599 },
              problem: ref('schemas', 'Problem'),
            },
          },
        ],
      },
      OrderState: {
        type: 'object',
        required: ['idempotency_key', 'status'],
        properties: {
          idempotency_key: { type: 'string' },
          status: { enum: ['queued', 'applied', 'rejected', 'dead_lettered'] },
          order_ref: { type: 'string' },
          reason: { type: 'string', description: 'Why it was rejected (`out_of_stock`) or dead-lettered.' },
          applied_at: { type: 'string', format: 'date-time' },
        },
      },
      FieldError: {
        type: 'object',
        required: ['path', 'message'],
        properties: {
          path: { type: 'string', description: 'JSON pointer of the failing field.' },
          message: { type: 'string' },
        },
      },
      Problem: {
        type: 'object',
        description: 'RFC 9457 problem details; the types are described at https://surge.dev/problems.',
        required: ['type', 'title', 'status'],
        properties: {
          type: { enum: problemSlugs.map(problemType) },
          title: { type: 'string' },
          status: { type: 'integer' },
          detail: { type: 'string' },
          errors: { type: 'array', items: ref('schemas', 'FieldError') },
          instance: { type: 'string', description: 'The request id of the answer.' },
        },
      },
    },
  };
}

/** The responses of a status answered with problems: their types listed, their headers merged. */
function problemResponse(slugs: readonly ProblemSlug[]) {
  const headers: Record<string, unknown> = { 'X-Request-Id': ref('headers', 'XRequestId') };
  for (const slug of slugs)
    for (const h of PROBLEMS[slug].headers) headers[headerName(h)] = ref('headers', HEADER_COMPONENT[h]);
  return {
    description: slugs.map((s) => `[${s}](${problemType(s)})`).join(', '),
    headers,
    content: {
      'application/problem+json': {
        schema: {
          allOf: [ref('schemas', 'Problem'), { properties: { type: { enum: slugs.map(problemType) } } }],
        },
      },
    },
  };
}

function headerName(h: ProblemHeader | SuccessHeader): string {
  return h
    .split('-')
    .map((w) => (w === 'www' ? 'WWW' : w[0]?.toUpperCase() + w.slice(1)))
    .join('-');
}

/** The OpenAPI path of a route: a parameter route's prefix followed by `{key}`. */
export function openApiPath(spec: RouteSpec): string {
  return spec.param ? `${spec.path}{key}` : spec.path;
}

function operation(spec: RouteSpec) {
  const responses: Record<string, unknown> = {};
  const byStatus = new Map<number, ProblemSlug[]>();
  for (const slug of routeProblems(spec)) {
    const status = PROBLEMS[slug].status;
    byStatus.set(status, [...(byStatus.get(status) ?? []), slug].sort());
  }
  const statuses = [...new Set([...Object.keys(spec.success).map(Number), ...byStatus.keys()])].sort((a, b) => a - b);
  for (const status of statuses) {
    const success = spec.success[status];
    const slugs = byStatus.get(status);
    const headers: Record<string, unknown> = { 'X-Request-Id': ref('headers', 'XRequestId') };
    const content: Record<string, unknown> = {};
    const descriptions: string[] = [];
    if (success) {
      for (const h of success.headers ?? []) headers[headerName(h)] = ref('headers', HEADER_COMPONENT[h]);
      content[success.contentType] = { schema: schemaOf(success.schema) };
      descriptions.push(success.description);
    }
    if (slugs) {
      // A status both answers share (readyz's 503) lists both media types.
      const p = problemResponse(slugs);
      Object.assign(headers, p.headers);
      Object.assign(content, p.content);
      descriptions.push(p.description);
    }
    responses[String(status)] = { description: descriptions.join('; or '), headers, content };
  }
  const parameters: unknown[] = [ref('parameters', 'XRequestId')];
  if (spec.param) parameters.push(ref('parameters', 'Key'));
  if (spec.idempotencyKeyHeader) parameters.push(ref('parameters', 'IdempotencyKey'));
  for (const q of spec.query ?? [])
    parameters.push({ name: q.name, in: 'query', required: false, description: q.description, schema: q.schema });
  return {
    operationId: spec.operationId,
    summary: spec.summary,
    description: spec.description,
    ...(spec.auth ? { security: [{ apiKey: [] }] } : { security: [] }),
    parameters,
    ...(spec.body
      ? {
          requestBody: {
            required: true,
            description: `${spec.body.description} At most ${spec.body.limit} bytes.`,
            content: Object.fromEntries(spec.body.types.map((t) => [t, { schema: ref('schemas', spec.body!.schema) }])),
          },
        }
      : {}),
    responses,
  };
}

/** The OpenAPI 3.1 document of every route, generated from the route table and the schemas. */
export function openApiDocument(): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const spec of Object.values(ROUTE_SPECS) as RouteSpec[]) {
    const path = openApiPath(spec);
    paths[path] ??= {};
    paths[path][spec.method.toLowerCase()] = operation(spec);
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'Surge ingest API',
      version: API_VERSION,
      description:
        'Takes orders over HTTP and applies them to PostgreSQL exactly once per (client, Idempotency-Key). ' +
        'Every error is application/problem+json (RFC 9457). Any other method or path answers 404 ' +
        `[${UNROUTED_PROBLEM}](${problemType(UNROUTED_PROBLEM)}) (x-unrouted).`,
      license: { name: 'MIT', identifier: 'MIT' },
    },
    'x-unrouted': problemResponse([UNROUTED_PROBLEM]),
    security: [{ apiKey: [] }],
    paths,
    components: components(),
  };
}

/** The order's JSON Schema as a file of its own (2020-12; the same schema the code validates with). */
function orderJsonSchema(): Record<string, unknown> {
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    title: 'Surge order (v1)',
    description: 'The body of POST /v1/orders. Generated from common/order.ts.',
    ...ORDER_SCHEMA,
  };
}

/** The OpenAPI document as committed (docs/openapi.json). */
export function openApiText(): string {
  return `${JSON.stringify(openApiDocument(), null, 2)}\n`;
}

/** The committed contract files (package-relative path → text), as `surge contract --write` writes them. */
export const CONTRACT_FILES: Record<string, () => string> = {
  'docs/openapi.json': openApiText,
  'docs/order.schema.json': () => `${JSON.stringify(orderJsonSchema(), null, 2)}\n`,
};
