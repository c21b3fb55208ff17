// The one request pipeline (ingest/pipeline.ts) with small stand-ins for its collaborators: every
// route of the table gets the request id, the request metrics, the drain answer and (writes) the
// load-shedding answer; nothing serves a route outside the table; a bug in a handler fails that
// request alone. The routes' behaviour against real Redis and PostgreSQL is in ingest.test.ts.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { ApiClient } from '../common/clients.js';
import { shedProblem } from '../ingest/answers.js';
import { createLogger } from '../common/log.js';
import { createRegistry, ingestMetrics } from '../metrics/definitions.js';
import { buildIngestApp, type IngestAppDeps, ingestRoutes } from '../ingest/app.js';
import type { Authenticator } from '../ingest/auth.js';
import type { Backpressure, OverloadReason } from '../ingest/backpressure.js';
import { Door } from '../ingest/door.js';
import type { Route } from '../ingest/pipeline.js';
import type { Waiter } from '../ingest/outcomes.js';
import { PROBLEM_BASE, PROBLEM_SLUGS } from '../ingest/requests.js';
import type { OrderWriter, PreparedOrder, WriteOutcome } from '../ingest/writer.js';
import { http } from './support/http.js';

const client = { id: 'client-1', name: 'c' } as ApiClient;
const ORDER = JSON.stringify({ customer_id: 'c', currency: 'EUR', items: [{ sku: 'a', qty: 1, unit_price_cents: 1 }] });

/** Deps whose failures and states the test sets. */
function standIns() {
  const state = {
    draining: false,
    overloaded: undefined as OverloadReason | undefined,
    /** Keys whose preparation throws (a bug in the intake). */
    prepareThrows: new Set<string>(),
    busyMs: 0,
    busySkip: 0,
  };
  const registry = createRegistry({ defaultMetrics: false, role: 'ingest' });
  const metrics = ingestMetrics(registry);
  const writer = {
    prepare: (clientId: string, idempotencyKey: string) => {
      if (state.prepareThrows.has(idempotencyKey)) throw new Error('intake bug');
      return { clientId, idempotencyKey } as unknown as PreparedOrder;
    },
    submit: (p: PreparedOrder, done: (o: WriteOutcome) => void) =>
      done({ kind: 'accepted', body: `{"idempotency_key":"${p.idempotencyKey}"}` } as WriteOutcome),
    flushNow: () => {},
    writeMany: async (orders: readonly PreparedOrder[]) =>
      orders.map((p) => ({ kind: 'accepted', body: `{"idempotency_key":"${p.idempotencyKey}"}` }) as WriteOutcome),
  } as unknown as OrderWriter;
  const deps: IngestAppDeps = {
    config: { shards: 1, redisPrefix: 'x', ingestHeadersTimeoutMs: 10_000, ingestRequestTimeoutMs: 30_000 },
    redis: { get: async () => null } as unknown as IngestAppDeps['redis'],
    pool: { query: async () => ({ rows: [] }) } as unknown as IngestAppDeps['pool'],
    auth: { cached: () => ({ client }), lookup: async () => client } as unknown as Authenticator,
    backpressure: {
      overloaded: () => state.overloaded,
      retryAfterSeconds: 1,
      retryAfterFor: () => 7,
      redisUp: true,
    } as unknown as Backpressure,
    writer,
    metrics,
    logger: createLogger('silent', 'ingest-route-test'),
    prepareBatch: async () => ({ ok: true, count: 0, prepared: [], indexes: [], invalid: [] }),
    outcomes: { wait: () => ({ waiting: false, cancel: () => {} }) as unknown as Waiter, whenReady: (fn) => fn() },
    draining: () => state.draining,
    // Not started: the test sets the event-loop delay it reads.
    door: new Door({ ingestMaxInFlight: 1000, ingestMaxEventLoopDelayMs: 50, ingestMaxTurnMs: 50 }),
    // A long turn, made on demand: the second request read from now on keeps the loop busy this
    // long (ms) before the pipeline takes it.
    onRequest: () => {
      if (state.busyMs === 0 || state.busySkip-- > 0) return;
      const until = performance.now() + state.busyMs;
      state.busyMs = 0;
      while (performance.now() < until);
    },
  };
  return { state, deps, registry };
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** A request that reaches `route`'s handler. */
function requestFor(route: Route, requestId: string) {
  return {
    method: route.method,
    path: route.param ? `${route.path}k-1` : route.path,
    headers: {
      'x-request-id': requestId,
      ...(route.auth ? { authorization: 'Bearer k' } : {}),
      ...(route.body ? { 'content-type': 'application/json', 'idempotency-key': 'k-1' } : {}),
    },
    ...(route.body ? { body: route.path.endsWith(':batch') ? '[]' : ORDER } : {}),
  };
}

describe('ingest: one pipeline for every route', () => {
  const { state, deps, registry } = standIns();
  const routes = ingestRoutes(deps);
  let server: Server;
  let url: string;

  before(async () => {
    server = buildIngestApp(deps);
    url = await listen(server);
  });
  after(() => new Promise<void>((r) => server.close(() => r())));

  const shedCount = async (reason: string): Promise<number> => {
    const metric = await registry.getSingleMetric('surge_ingest_shed_total')?.get();
    return metric?.values.find((v) => v.labels.reason === reason)?.value ?? 0;
  };
  const counted = async (label: string, code: number): Promise<number> => {
    const metric = await registry.getSingleMetric('surge_ingest_requests_total')?.get();
    const value = metric?.values.find((v) => v.labels.route === label && v.labels.code === String(code));
    return value?.value ?? 0;
  };

  test('the route table declares every route: POST, :batch, GET, health, readiness, contract (no /metrics)', () => {
    assert.deepEqual(routes.map((r) => `${r.method} ${r.path}${r.param ? ':key' : ''}`).sort(), [
      'GET /healthz',
      'GET /openapi.json',
      'GET /readyz',
      'GET /v1/orders/:key',
      'POST /v1/orders',
      'POST /v1/orders:batch',
    ]);
  });

  test('each route: its answer carries the request id and is counted under its label', async () => {
    for (const route of routes) {
      const rid = `rid-${route.label.replace(/\W/g, '_')}`;
      const res = await http(url, requestFor(route, rid));
      assert.ok(res.status < 500, `${route.label}: ${res.status} ${res.text}`);
      assert.equal(res.headers['x-request-id'], rid, route.label);
      assert.ok((await counted(route.label, res.status)) > 0, `${route.label} counted`);
    }
  });

  test('each route gets the drain answer; each write gets the load-shedding answer', async () => {
    state.draining = true;
    try {
      for (const route of routes) {
        const res = await http(url, requestFor(route, 'drain'));
        assert.equal(res.status, 503, route.label);
        assert.equal(res.headers.connection, 'close', route.label);
        assert.match(res.text, /problems#shutting-down/, route.label);
        assert.ok((await counted(route.label, 503)) > 0, `${route.label} counted`);
      }
    } finally {
      state.draining = false;
    }
    for (const [reason, overload] of [
      ['backlog', () => (state.overloaded = 'backlog')],
      [
        'event_loop_delay',
        () => {
          deps.door.delayMs = 1000;
          deps.door.inFlight = 100;
        },
      ],
    ] as const) {
      overload();
      try {
        for (const route of routes) {
          const res = await http(url, requestFor(route, 'shed'));
          if (route.shed) {
            assert.equal(res.status, 503, `${route.label} ${reason}`);
            assert.match(res.text, /problems#overloaded/, route.label);
            assert.ok(Number(res.headers['retry-after']) >= 1, route.label);
            // The door writes its 503 from prepared text: the same problem as the one home makes.
            const body = res.json as Record<string, unknown>;
            const detail = String(body.detail).replace(/; nothing was recorded$/, '');
            assert.deepEqual(body, { ...shedProblem(detail), instance: res.headers['x-request-id'] }, route.label);
          } else assert.ok(res.status < 500, `${route.label} is not shed`);
        }
      } finally {
        state.overloaded = undefined;
        deps.door.delayMs = 0;
        deps.door.inFlight = 0;
      }
      assert.equal(await shedCount(reason), 2, `both writes shed for ${reason}, counted once each`);
    }
  });

  test('a shed write with a large body: 503 before the body is read, and the connection is closed', async () => {
    deps.door.delayMs = 1000;
    deps.door.inFlight = 100;
    try {
      const res = await http(url, {
        method: 'POST',
        path: '/v1/orders',
        headers: { authorization: 'Bearer k', 'content-type': 'application/json', 'idempotency-key': 'big' },
        body: 'x'.repeat(200 * 1024),
      });
      assert.equal(res.status, 503);
      assert.equal(res.headers.connection, 'close');
    } finally {
      deps.door.delayMs = 0;
      deps.door.inFlight = 0;
    }
  });

  test('a write read late in a long turn: 503 with Retry-After at once, counted as "turn"', async () => {
    // Two writes sent at once on one connection are read in the same turn; the turn is kept busy
    // past the budget between them, so the second arrives late in it.
    const { port } = server.address() as AddressInfo;
    const head = (key: string) =>
      `POST /v1/orders HTTP/1.1\r\nhost: x\r\nauthorization: Bearer k\r\ncontent-type: application/json\r\n` +
      `idempotency-key: ${key}\r\nx-request-id: turn-${key}\r\ncontent-length: ${Buffer.byteLength(ORDER)}\r\n\r\n`;
    const before = await shedCount('turn');
    deps.door.inFlight = 100;
    state.busyMs = 80;
    state.busySkip = 1;
    let text = '';
    try {
      await new Promise<void>((resolve, reject) => {
        const socket = connect(port, '127.0.0.1', () => socket.write(head('t-1') + ORDER + head('t-2') + ORDER));
        socket.setEncoding('utf8');
        socket.on('data', (chunk: string) => {
          text += chunk;
          if ((text.match(/HTTP\/1\.1 /g) ?? []).length === 2 && /\}$/.test(text)) {
            socket.destroy();
            resolve();
          }
        });
        socket.on('error', reject);
      });
    } finally {
      deps.door.inFlight = 0;
      state.busyMs = 0;
    }
    const [first, second] = text.split(/(?=HTTP\/1\.1 )/);
    assert.match(first ?? '', /^HTTP\/1\.1 202 /, "the first, read at the turn's start, is let in");
    assert.match(second ?? '', /^HTTP\/1\.1 503 /);
    assert.match(second ?? '', /\r\nretry-after: [1-9]\d*\r\n/i);
    assert.match(second ?? '', /SURGE_INGEST_MAX_TURN_MS/);
    assert.match(second ?? '', /"instance":"turn-t-2"/);
    assert.equal(await shedCount('turn'), before + 1);
  });

  test('an unknown path: 404 problem with the request id, counted as "other"', async () => {
    const res = await http(url, { path: '/nowhere', headers: { 'x-request-id': 'rid-404' } });
    assert.equal(res.status, 404);
    assert.equal(res.headers['x-request-id'], 'rid-404');
    assert.deepEqual(res.json, {
      type: `${PROBLEM_BASE}#not-found`,
      title: 'Not found',
      status: 404,
      detail: 'no route GET /nowhere',
      instance: 'rid-404',
    });
    assert.ok((await counted('other', 404)) > 0);
  });

  test('nothing in ingest serves HTTP outside the pipeline: one server, one listener, paths read in one place', () => {
    for (const file of readdirSync('ingest').filter((f) => f.endsWith('.ts'))) {
      if (file === 'pipeline.ts') continue;
      const text = readFileSync(`ingest/${file}`, 'utf8');
      for (const bypass of [/createServer\(/, /\.on\('request'/, /\breq\.url\b/, /from 'fastify'/])
        assert.doesNotMatch(text, bypass, `ingest/${file} serves requests outside pipeline.ts`);
    }
  });
});

test('problem types: each one in the code is a section of docs/problems.md, and each section is one in the code', () => {
  const doc = readFileSync('docs/problems.md', 'utf8');
  const sections = [...doc.matchAll(/^## (.+)$/gm)].map((m) => m[1]);
  assert.deepEqual(sections, [...PROBLEM_SLUGS].sort(), 'one `## <type>` section per type, in order');
  for (const slug of PROBLEM_SLUGS) {
    const body = doc.split(`\n## ${slug}\n`)[1]?.split('\n## ')[0] ?? '';
    assert.match(body, /^\n`[1-5]\d\d`/, `${slug}: starts with its status`);
    assert.match(body, /\*\*Client\*\*:/, `${slug}: says what the client should do`);
  }
  assert.match(doc, new RegExp(`published at \`${PROBLEM_BASE}\``), 'the page says where the type URIs point');
});

describe('ingest: a bug in answering fails that request alone', () => {
  const { state, deps } = standIns();
  let server: Server;
  let url: string;
  let throwOnce = true;

  before(async () => {
    const inc = deps.metrics.orders.inc.bind(deps.metrics.orders);
    // The failure injected: counting the first accepted order throws.
    deps.metrics.orders.inc = ((labels: { result: string }, n?: number) => {
      if (labels.result === 'accepted' && throwOnce) {
        throwOnce = false;
        throw new Error('metrics bug');
      }
      inc(labels, n);
    }) as typeof deps.metrics.orders.inc;
    state.prepareThrows.add('reject');
    server = buildIngestApp(deps);
    url = await listen(server);
  });
  after(() => new Promise<void>((r) => server.close(() => r())));

  const post = (key: string) =>
    http(url, {
      method: 'POST',
      path: '/v1/orders',
      headers: { authorization: 'Bearer k', 'content-type': 'application/json', 'idempotency-key': key },
      body: ORDER,
    });

  // The timeouts turn a request left unanswered into a failure rather than a hung run.
  test('a throw while answering → 500 problem; the next request is answered 202', { timeout: 10_000 }, async () => {
    const first = await post('first');
    assert.equal(first.status, 500);
    assert.match(String(first.headers['content-type']), /^application\/problem\+json/);
    assert.match(first.text, /"type":"https:\/\/surge\.dev\/problems#internal"/);
    const second = await post('second');
    assert.equal(second.status, 202);
    assert.equal(second.headers.location, '/v1/orders/second');
  });

  test('the intake failing (a bug) → 500 problem; the process goes on', { timeout: 10_000 }, async () => {
    const res = await post('reject');
    assert.equal(res.status, 500);
    assert.equal((await post('after')).status, 202);
  });
});
