// The API contract (ingest/contract.ts): the OpenAPI document validates with @readme/openapi-parser,
// the committed files are the generated ones, every status and problem type a route can answer is
// in the document and the reverse, and what a live ingest answers matches the document (status,
// media type, headers, body schema).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { compileErrors, dereference, type ParserOptions, validate } from '@readme/openapi-parser';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsImport from 'ajv-formats';
import pg from 'pg';
import { type CreatedClient, createClient } from '../common/clients.js';
import { createLogger } from '../common/log.js';
import { ORDER_SCHEMA, validateOrder } from '../common/order.js';
import { PACKAGE_ROOT } from '../common/paths.js';
import {
  CONTRACT_FILES,
  openApiDocument,
  openApiPath,
  problemType,
  ROUTE_SPECS,
  type RouteSpec,
  routeProblems,
  UNROUTED_PROBLEM,
} from '../ingest/contract.js';
import { PROBLEM_SLUGS, PROBLEMS } from '../ingest/requests.js';
import { type IngestService, startIngest } from '../ingest/server.js';
import { createTestEnv, type TestEnv } from '../devkit/scratch.js';
import { type HttpResponse, http } from './support/http.js';

const addFormats = ((addFormatsImport as unknown as { default?: unknown }).default ?? addFormatsImport) as (
  ajv: Ajv2020,
) => Ajv2020;

interface Operation {
  responses: Record<
    string,
    { headers?: Record<string, unknown>; content?: Record<string, { schema: Record<string, unknown> }> }
  >;
}
type Doc = { paths: Record<string, Record<string, Operation>>; 'x-unrouted': Operation['responses'][string] };

/** `METHOD path status type` of every problem answer the document lists (types from the response's enum). */
function documentedProblems(doc: Doc): string[] {
  const out: string[] = [];
  const typesOf = (r: Operation['responses'][string]): string[] => {
    const schema = r.content?.['application/problem+json']?.schema as
      | { allOf: [unknown, { properties: { type: { enum: string[] } } }] }
      | undefined;
    return schema ? schema.allOf[1].properties.type.enum : [];
  };
  for (const [path, ops] of Object.entries(doc.paths))
    for (const [method, op] of Object.entries(ops))
      for (const [status, r] of Object.entries(op.responses))
        for (const type of typesOf(r)) out.push(`${method.toUpperCase()} ${path} ${status} ${type}`);
  for (const type of typesOf(doc['x-unrouted'])) out.push(`* * 404 ${type}`);
  return out.sort();
}

/** The same list from the code's tables: each route's problems, their statuses from PROBLEMS. */
function codeProblems(): string[] {
  const out: string[] = [];
  for (const spec of Object.values(ROUTE_SPECS) as RouteSpec[])
    for (const slug of routeProblems(spec))
      out.push(`${spec.method} ${openApiPath(spec)} ${PROBLEMS[slug].status} ${problemType(slug)}`);
  out.push(`* * 404 ${problemType(UNROUTED_PROBLEM)}`);
  return out.sort();
}

/** A fresh copy of the document, typed for the parser (it dereferences in place). */
function documentForParser(): Parameters<typeof validate<never, ParserOptions>>[0] {
  return structuredClone(openApiDocument()) as unknown as Parameters<typeof validate<never, ParserOptions>>[0];
}

describe('the OpenAPI document', () => {
  test('validates as OpenAPI 3.1', async () => {
    const result = await validate(documentForParser());
    assert.ok(result.valid, result.valid ? '' : compileErrors(result));
    assert.equal(result.specification, 'OpenAPI');
    assert.equal((openApiDocument() as { openapi: string }).openapi, '3.1.0');
  });

  test('the committed files are the generated ones (`surge contract --write`)', () => {
    for (const [file, text] of Object.entries(CONTRACT_FILES))
      assert.equal(
        readFileSync(join(PACKAGE_ROOT, file), 'utf8'),
        text(),
        `${file} is stale: run surge contract --write`,
      );
  });

  test('every status and problem type the routes answer is in the document, and the reverse', () => {
    const doc = openApiDocument() as unknown as Doc;
    assert.deepEqual(documentedProblems(doc), codeProblems());
    // Every problem type of the table is answered somewhere, and the document names no other.
    const types = new Set(documentedProblems(doc).map((line) => line.split(' ')[3]));
    assert.deepEqual([...types].sort(), PROBLEM_SLUGS.map(problemType).sort());
    // Success statuses: exactly the routes' own.
    for (const spec of Object.values(ROUTE_SPECS) as RouteSpec[]) {
      const op = doc.paths[openApiPath(spec)]?.[spec.method.toLowerCase()];
      assert.ok(op, `${spec.label} is in the document`);
      const problemStatuses = new Set(routeProblems(spec).map((s) => String(PROBLEMS[s].status)));
      const expected = new Set([...Object.keys(spec.success), ...problemStatuses]);
      assert.deepEqual(Object.keys(op.responses).sort(), [...expected].sort(), spec.label);
    }
    const operations = Object.values(doc.paths).flatMap((ops) => Object.keys(ops));
    assert.equal(operations.length, Object.keys(ROUTE_SPECS).length, 'one operation per route, no other');
  });

  test('the order schema is the one the code validates with', () => {
    const file = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'docs/order.schema.json'), 'utf8')) as Record<
      string,
      unknown
    >;
    const ajv = new Ajv2020({ strict: false });
    addFormats(ajv);
    const check = ajv.compile(file);
    const good = { customer_id: 'c', currency: 'EUR', items: [{ sku: 'a', qty: 1, unit_price_cents: 5 }] };
    const bad = { ...good, items: [], extra: 1 };
    assert.equal(check(good), validateOrder(good).ok);
    assert.equal(check(bad), validateOrder(bad).ok);
    assert.equal(file.$id, ORDER_SCHEMA.$id);
    const doc = openApiDocument() as { components: { schemas: { Order: { properties: unknown } } } };
    assert.deepEqual(doc.components.schemas.Order.properties, ORDER_SCHEMA.properties);
  });
});

describe('what a live ingest answers is in the document', () => {
  let env: TestEnv;
  let ingest: IngestService;
  let pool: pg.Pool;
  let alice: CreatedClient;
  let doc: Doc;
  const ajv = new Ajv2020({ strict: false });
  addFormats(ajv);

  before(async () => {
    env = await createTestEnv({ SURGE_SHARDS: '2' });
    pool = new pg.Pool({ connectionString: env.db.url, max: 1 });
    alice = await createClient(pool, 'alice');
    ingest = await startIngest(env.config, { logger: createLogger('silent', 'openapi-test') });
    doc = (await dereference(documentForParser())) as unknown as Doc;
  });
  after(async () => {
    await ingest?.stop();
    await pool?.end();
    await env?.cleanup();
  });

  /** Checks one answer against the document's response for `path` and `method`. */
  const conforms = (res: HttpResponse, method: string, path: string): void => {
    const op = doc.paths[path]?.[method];
    assert.ok(op, `${method} ${path} is documented`);
    const response = op.responses[String(res.status)];
    assert.ok(response, `${method} ${path} ${res.status} is documented: ${res.text.slice(0, 200)}`);
    const mediaType = String(res.headers['content-type']).split(';')[0]?.trim() ?? '';
    const content = response.content?.[mediaType];
    assert.ok(content, `${method} ${path} ${res.status} ${mediaType} is documented`);
    for (const header of ['retry-after', 'location', 'idempotent-replayed', 'www-authenticate', 'x-request-id'])
      if (res.headers[header] !== undefined)
        assert.ok(
          Object.keys(response.headers ?? {}).some((h) => h.toLowerCase() === header),
          `${method} ${path} ${res.status}: ${header} is documented`,
        );
    if (mediaType.endsWith('json')) {
      const check = ajv.compile(content.schema);
      assert.ok(check(res.json), `${method} ${path} ${res.status}: ${ajv.errorsText(check.errors)} in ${res.text}`);
    }
  };

  test('each route, its successes and its problems', async () => {
    const auth = { authorization: `Bearer ${alice.apiKey}` };
    const json = { ...auth, 'content-type': 'application/json' };
    const order = { customer_id: 'c', currency: 'EUR', items: [{ sku: 'a', qty: 1, unit_price_cents: 5 }] };
    const cases: Array<[string, string, Promise<HttpResponse>]> = [
      [
        'post',
        '/v1/orders',
        http(ingest.url, {
          method: 'POST',
          path: '/v1/orders',
          headers: { ...json, 'idempotency-key': 'k1' },
          body: JSON.stringify(order),
        }),
      ],
      [
        'post',
        '/v1/orders',
        http(ingest.url, { method: 'POST', path: '/v1/orders', headers: json, body: JSON.stringify(order) }),
      ],
      [
        'post',
        '/v1/orders',
        http(ingest.url, {
          method: 'POST',
          path: '/v1/orders',
          headers: { ...json, 'idempotency-key': 'k2' },
          body: '{"items":[]}',
        }),
      ],
      [
        'post',
        '/v1/orders',
        http(ingest.url, { method: 'POST', path: '/v1/orders', headers: { 'idempotency-key': 'k3' }, body: '{}' }),
      ],
      [
        'post',
        '/v1/orders',
        http(ingest.url, {
          method: 'POST',
          path: '/v1/orders',
          headers: { ...auth, 'content-type': 'text/plain', 'idempotency-key': 'k4' },
          body: 'x',
        }),
      ],
      [
        'post',
        '/v1/orders:batch',
        http(ingest.url, {
          method: 'POST',
          path: '/v1/orders:batch',
          headers: json,
          body: JSON.stringify([{ ...order, idempotency_key: 'b1' }, { idempotency_key: 'b2' }]),
        }),
      ],
      [
        'post',
        '/v1/orders:batch',
        http(ingest.url, { method: 'POST', path: '/v1/orders:batch', headers: json, body: '[]' }),
      ],
      ['get', '/v1/orders/{key}', http(ingest.url, { path: '/v1/orders/nope', headers: auth })],
      ['get', '/v1/orders/{key}', http(ingest.url, { path: '/v1/orders/%ZZ', headers: auth })],
      ['get', '/healthz', http(ingest.url, { path: '/healthz' })],
      ['get', '/readyz', http(ingest.url, { path: '/readyz' })],
      ['get', '/openapi.json', http(ingest.url, { path: '/openapi.json' })],
    ];
    const seen = new Set<string>();
    for (const [method, path, answer] of cases) {
      const res = await answer;
      conforms(res, method, path);
      seen.add(`${method} ${path} ${res.status}`);
    }
    // The key written above, then its replay and its state.
    const replay = await http(ingest.url, {
      method: 'POST',
      path: '/v1/orders',
      headers: { ...json, 'idempotency-key': 'k1' },
      body: JSON.stringify(order),
    });
    conforms(replay, 'post', '/v1/orders');
    assert.equal(replay.headers['idempotent-replayed'], 'true');
    const reused = await http(ingest.url, {
      method: 'POST',
      path: '/v1/orders',
      headers: { ...json, 'idempotency-key': 'k1' },
      body: JSON.stringify({ ...order, customer_id: 'd' }),
    });
    conforms(reused, 'post', '/v1/orders');
    const state = await http(ingest.url, { path: '/v1/orders/k1', headers: auth });
    conforms(state, 'get', '/v1/orders/{key}');
    for (const expected of [
      'post /v1/orders 202',
      'post /v1/orders 400',
      'post /v1/orders 401',
      'post /v1/orders 415',
      'post /v1/orders:batch 207',
      'get /v1/orders/{key} 404',
      'get /v1/orders/{key} 400',
    ])
      assert.ok(seen.has(expected), `${expected} was exercised`);
    assert.equal(reused.status, 422);
    assert.equal(state.status, 200);
    // The document served is the committed one.
    const served = await http(ingest.url, { path: '/openapi.json' });
    assert.deepEqual(served.json, openApiDocument());
    // Unrouted: the x-unrouted answer.
    const lost = await http(ingest.url, { path: '/v2/nothing' });
    assert.equal(lost.status, 404);
    assert.equal((lost.json as { type: string }).type, problemType(UNROUTED_PROBLEM));
  });
});
